package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
)

// collector keeps the journeys of a run for --stats and --svg, which need
// them all; it prints nothing as they come.
type collector struct {
	journeys []decode.Journey
}

func (c *collector) Journey(j *decode.Journey) error {
	c.journeys = append(c.journeys, *j)
	return nil
}

// statsNames are the namespace names of a run, as stats aligns them: the
// name the table shows and the kind of owner, except that a namespace only
// processes live in goes by their command, not by a pid that changes with
// every run, and the host and an ip netns name need no kind beside them
// (recordings made before owners were recorded have the name alone).
func (rc *renderContext) statsNames() stats.Names {
	n := stats.Names{}
	for inode, name := range rc.names {
		o := rc.owners[inode]
		switch {
		case o.Kind == decode.OwnerProcess && name != decode.HostName:
			n[inode] = stats.Name{Name: o.Comm, Owner: o.Kind}
		case o.Kind == decode.OwnerNetns, name == decode.HostName:
			n[inode] = stats.Name{Name: name}
		default:
			n[inode] = stats.Name{Name: name, Owner: o.Kind}
		}
	}
	// A merge's namespaces go by their machine too.
	for inode, host := range rc.hosts {
		name := n[inode]
		if name.Name == "" {
			name.Name = strconv.FormatUint(uint64(rc.inode(inode)), 10)
		}
		name.Name, name.Host = host+": "+name.Name, host
		n[inode] = name
	}
	return n
}

// writeStats prints the statistics of a run: a table per path, or one
// JSON object.
func writeStats(w io.Writer, s *stats.Summary, rc *renderContext, jsonOut bool) error {
	if jsonOut {
		return json.NewEncoder(w).Encode(statsJSON(s, rc))
	}
	var out strings.Builder
	fmt.Fprintf(&out, "%s to %s: %s", probeCount(s, s.Echoes), probed(s), answers(s, s.Replied, s.Closed))
	if lost := s.Echoes - s.Replied - s.Closed; lost > 0 {
		fmt.Fprintf(&out, ", %d without", lost)
	}
	if len(s.Groups) > 1 {
		fmt.Fprintf(&out, "; they took %d paths", len(s.Groups))
	}
	out.WriteString("\n")
	if s.Unseen > 0 {
		fmt.Fprintf(&out, "%s never reached a network device\n", plural(s.Unseen, "request", "requests"))
	}
	table := newPlainTable()
	for i := range s.Groups {
		g := &s.Groups[i]
		out.WriteString("\n")
		if len(s.Groups) > 1 {
			fmt.Fprintf(&out, "path %d of %d: %s (seq %s), %s\n", i+1, len(s.Groups), probeCount(s, g.Echoes),
				seqRanges(g.Seqs), answers(s, g.Replied, g.Closed))
		}
		text, err := statsTable(table, g, rc)
		if err != nil {
			return err
		}
		out.Write(text)
		if g.Replied > 0 {
			fmt.Fprintf(&out, "round trip p50 %s, p99 %s; kernel path p50 %s, p99 %s: %.0f%% of the round trip\n",
				stats.FormatDuration(g.RTT.P50), stats.FormatDuration(g.RTT.P99),
				stats.FormatDuration(g.Kernel.P50), stats.FormatDuration(g.Kernel.P99), 100*g.KernelShare())
		}
		for j := range g.Hops {
			if h := &g.Hops[j]; h.Outlier {
				fmt.Fprintf(&out, "! hop %d (%s): p99 %s stands out, over %d times the median p99 of the path's hops\n",
					j+1, stats.HopText(h), stats.FormatDuration(h.Delta.P99), stats.OutlierFactor)
			}
		}
	}
	if s.Lost > 0 {
		fmt.Fprintf(&out, "%s lost: the kernel's rings overflowed, hops may be missing\n", plural(int(s.Lost), "event", "events"))
	}
	for _, n := range rc.notes {
		out.WriteString(n + "\n")
	}
	_, err := io.WriteString(w, out.String())
	return err
}

func statsTable(table *plainTable, g *stats.Group, rc *renderContext) ([]byte, error) {
	withDrops, withErrors, withVerdicts := false, false, false
	for _, h := range g.Hops {
		withDrops = withDrops || len(h.Drops) > 0
		withErrors = withErrors || len(h.Errors) > 0
		withVerdicts = withVerdicts || len(h.Verdicts) > 0
	}
	header := []string{"#", "NETWORK NS", "INTERFACE", "DIR", "TYPE", "ECHOES", "P50", "P90", "P99", "MAX", "LOST AFTER"}
	if withDrops {
		header = append(header, "DROPS")
	}
	if withErrors {
		header = append(header, "ICMP ERRORS")
	}
	if withVerdicts {
		header = append(header, "NETFILTER VERDICTS")
	}
	table.start(header)
	for i := range g.Hops {
		h := &g.Hops[i]
		cells := []string{strconv.Itoa(i + 1), rc.netnsCell(h.Inode), h.Ifname, h.Dir.String(), h.Type, strconv.Itoa(h.Count)}
		if h.Delta.N == 0 {
			cells = append(cells, "-", "-", "-", "-")
		} else {
			p99 := stats.FormatDuration(h.Delta.P99)
			if h.Outlier {
				p99 += " !"
			}
			cells = append(cells, stats.FormatDuration(h.Delta.P50), stats.FormatDuration(h.Delta.P90), p99, stats.FormatDuration(h.Delta.Max))
		}
		cells = append(cells, strconv.Itoa(h.LostAfter))
		if withDrops {
			cells = append(cells, countsCell(h.Drops))
		}
		if withErrors {
			cells = append(cells, countsCell(h.Errors))
		}
		if withVerdicts {
			var vs []string
			for _, v := range h.Verdicts {
				text := fmt.Sprintf("%s %s (%s)", v.Chain, v.Verdict, v.Rule)
				if v.Count != h.Count {
					text += fmt.Sprintf(" ×%d", v.Count)
				}
				vs = append(vs, text)
			}
			cells = append(cells, strings.Join(vs, "; "))
		}
		if err := table.row(cells); err != nil {
			return nil, err
		}
	}
	return table.appendTo(nil)
}

// countsCell lists counts: "IP_INNOROUTES ×3, NETFILTER_DROP ×1".
func countsCell(counts []stats.Count) string {
	var parts []string
	for _, c := range counts {
		parts = append(parts, fmt.Sprintf("%s ×%d", c.Reason, c.Count))
	}
	return strings.Join(parts, ", ")
}

// seqRanges writes sequence numbers as ranges: "1-12, 15, 20-50".
func seqRanges(seqs []uint16) string {
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if j == i {
			parts = append(parts, strconv.Itoa(int(seqs[i])))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", seqs[i], seqs[j]))
		}
		i = j + 1
	}
	return strings.Join(parts, ", ")
}

// jsonStats is the --stats --json schema; its field names are a contract.
type jsonStats struct {
	Target      string     `json:"target"`
	Family      string     `json:"family"`
	Echoes      int        `json:"echoes"`
	Replied     int        `json:"replied"`
	Unseen      int        `json:"unseen"`
	LostSamples uint64     `json:"lost_samples"`
	Paths       []jsonPath `json:"paths"`
	jsonRunNotes
}

type jsonPath struct {
	Echoes      int           `json:"echoes"`
	Replied     int           `json:"replied"`
	Seqs        []uint16      `json:"seqs"`
	RTTP50Ns    int64         `json:"rtt_p50_ns"`
	RTTP99Ns    int64         `json:"rtt_p99_ns"`
	KernelP50Ns int64         `json:"kernel_p50_ns"`
	KernelP99Ns int64         `json:"kernel_p99_ns"`
	KernelShare float64       `json:"kernel_share"`
	Hops        []jsonStatHop `json:"hops"`
}

type jsonStatHop struct {
	jsonPlace
	Echoes    int           `json:"echoes"`
	P50Ns     int64         `json:"p50_ns"`
	P90Ns     int64         `json:"p90_ns"`
	P99Ns     int64         `json:"p99_ns"`
	MaxNs     int64         `json:"max_ns"`
	LostAfter int           `json:"lost_after"`
	Outlier   bool          `json:"outlier"`
	Drops     []jsonCount   `json:"drops"`
	Errors    []jsonCount   `json:"icmp_errors"`
	Verdicts  []jsonVerdict `json:"verdicts"`
}

type jsonCount struct {
	Reason string `json:"reason"`
	Count  int    `json:"count"`
}

type jsonVerdict struct {
	Chain   string `json:"chain"`
	Verdict string `json:"verdict"`
	Rule    string `json:"rule"`
	Count   int    `json:"count"`
}

func statsJSON(s *stats.Summary, rc *renderContext) jsonStats {
	out := jsonStats{
		Target: s.Target.String(), Family: family(s.Target), Echoes: s.Echoes, Replied: s.Replied, Unseen: s.Unseen,
		LostSamples: s.Lost, Paths: []jsonPath{}, jsonRunNotes: rc.jsonNotes(),
	}
	for i := range s.Groups {
		g := &s.Groups[i]
		p := jsonPath{
			Echoes: g.Echoes, Replied: g.Replied, Seqs: g.Seqs,
			RTTP50Ns: int64(g.RTT.P50), RTTP99Ns: int64(g.RTT.P99),
			KernelP50Ns: int64(g.Kernel.P50), KernelP99Ns: int64(g.Kernel.P99), KernelShare: g.KernelShare(),
		}
		for j := range g.Hops {
			h := &g.Hops[j]
			jh := jsonStatHop{jsonPlace: place(h, rc), Echoes: h.Count,
				P50Ns: h.Delta.P50.Nanoseconds(), P90Ns: h.Delta.P90.Nanoseconds(), P99Ns: h.Delta.P99.Nanoseconds(), MaxNs: h.Delta.Max.Nanoseconds(),
				LostAfter: h.LostAfter, Outlier: h.Outlier, Drops: jsonCounts(h.Drops), Errors: jsonCounts(h.Errors), Verdicts: []jsonVerdict{}}
			for _, v := range h.Verdicts {
				jh.Verdicts = append(jh.Verdicts, jsonVerdict{v.Chain, v.Verdict, v.Rule, v.Count})
			}
			p.Hops = append(p.Hops, jh)
		}
		out.Paths = append(out.Paths, p)
	}
	return out
}

func jsonCounts(counts []stats.Count) []jsonCount {
	out := []jsonCount{}
	for _, c := range counts {
		out = append(out, jsonCount{c.Reason, c.Count})
	}
	return out
}

func family(a netip.Addr) string {
	if a.Is6() {
		return "ipv6"
	}
	return "ipv4"
}

// probeCount counts a run's probes: "3 echoes", or "3 TCP probes".
func probeCount(s *stats.Summary, n int) string {
	if s.Proto != 0 {
		name := strings.ToUpper(decode.ProtoName(s.Proto))
		return plural(n, name+" probe", name+" probes")
	}
	return plural(n, "echo", "echoes")
}

// probed is what a run probed: its target, with the port of a TCP or UDP
// probe.
func probed(s *stats.Summary) string {
	if s.Proto != 0 {
		return netip.AddrPortFrom(s.Target, s.Port).String()
	}
	return s.Target.String()
}

// answers counts the answers: "2 replies", or "2 open, 1 closed".
func answers(s *stats.Summary, replied, closed int) string {
	if s.Proto == decode.ProtoTCP {
		return fmt.Sprintf("%d open, %d closed", replied, closed)
	}
	return plural(replied, "reply", "replies")
}
