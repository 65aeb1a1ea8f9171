package stats

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Name is what a run knew of a network namespace: its name (from /run/netns,
// a container runtime, ...) and its owner (e.g. "docker"), either possibly "",
// and in a merge of several machines' recordings, its machine's host name.
type Name struct{ Name, Owner, Host string }

// Names gives the Name of each namespace inode the run saw.
type Names map[uint32]Name

// Place is where a hop happened, in terms that hold across reboots and
// machines: never an inode or an ifindex.
type Place struct {
	// Netns is the namespace's name, or "#k" for the k-th unnamed namespace
	// of the journey, in the order the echo met them.
	Netns  string
	Owner  string
	Host   string // the machine, in a merge; else ""
	Ifname string
	Dir    decode.Direction
	// Type is the packet's, as decode.Record.PacketType names it:
	// "request" or "reply" for an echo, "syn", "syn-ack" or "rst" for a
	// TCP probe, or an ICMP error quoting either ("unreachable", ...).
	Type string
	// Side is the side of the exchange the packet is on: a TCP probe has
	// an RST on either side.
	Side Side
}

// Side says which side of a probe's exchange a packet is on.
type Side uint8

const (
	// SideRequest is the prober's own packet: an echo request, a TCP
	// probe's SYN, or the RST its kernel answers a SYN-ACK with.
	SideRequest Side = iota + 1
	// SideAnswer is the target's answer: an echo reply, a SYN-ACK, an RST.
	SideAnswer
	// SideError is an ICMP error quoting the request.
	SideError
)

// sideOf is the side of the exchange the packet of h is on.
func sideOf(h *decode.Record) Side {
	switch {
	case h.IsRequest():
		return SideRequest
	case h.IsError():
		return SideError
	}
	return SideAnswer
}

// IsRequest reports whether the hop carried the prober's own packet.
func (p *Place) IsRequest() bool { return p.Side == SideRequest }

// Hop is one hop of a path, with what the echoes of its group did there.
type Hop struct {
	Place
	// Inode is the namespace of this hop in the first echo of the group, to
	// show beside the name.
	Inode uint32
	// Count is how many echoes crossed this hop.
	Count int
	// Delta is the time since the previous hop; empty for the first hop.
	Delta Percentiles
	// LostAfter counts the echoes seen here last that got no reply.
	LostAfter int
	// Drops counts the drops at or right after this hop, by reason.
	Drops []Count
	// Errors counts the ICMP errors about the request that reached the
	// pinger, by what they said, at the first hop of the error (or the
	// last hop, when the error was not seen on the way).
	Errors []Count
	// Verdicts counts the netfilter verdicts met at or right after this hop
	// (the output chains of the first hop too), by rule.
	Verdicts []Verdict
	// Outlier marks a hop whose p99 stands out among the hops of its path.
	Outlier bool
}

// Count is a number of echoes with something in common.
type Count struct {
	Reason string
	Count  int
}

// Verdict is a netfilter verdict on some echoes.
type Verdict struct {
	Chain   string // table.chain
	Verdict string // ACCEPT, DROP, JUMP target...
	Rule    string // what decided, as decode.NetfilterEvent.RuleText says it
	Count   int
}

// Group is the echoes that took the same path; an echo that was lost on the
// way belongs to the group whose path it started.
type Group struct {
	Hops    []Hop
	Echoes  int
	Replied int // for TCP probes, those that found the port open
	// Closed counts the TCP probes an RST answered: the port is closed.
	Closed int
	Seqs   []uint16
	// RTT is the round trip the pinger measured; Kernel the time from the
	// first hop to the last hop of the answer, of the echoes that got a
	// reply (the SYN-ACK of a TCP probe, not the RST after it).
	RTT, Kernel Percentiles
}

// KernelShare is the part of the median round trip spent between the first
// and the last hop in the kernel.
func (g *Group) KernelShare() float64 {
	if g.RTT.P50 == 0 {
		return 0
	}
	return float64(g.Kernel.P50) / float64(g.RTT.P50)
}

// Path lists the places of the group's hops.
func (g *Group) Path() []Place {
	p := make([]Place, len(g.Hops))
	for i := range g.Hops {
		p[i] = g.Hops[i].Place
	}
	return p
}

// Summary is the statistics of a run's echoes.
type Summary struct {
	Target netip.Addr
	// Proto and Port are the first journey's: decode.ProtoTCP and the
	// port of a run of TCP probes, 0 for echoes.
	Proto   uint8
	Port    uint16
	Echoes  int
	Replied int // for TCP probes, those that found the port open
	// Closed counts the TCP probes an RST answered: the port is closed.
	Closed int
	// Unseen counts echoes whose request never reached a network device.
	Unseen int
	// Lost counts the records the kernel's rings dropped during the run.
	Lost uint64
	// Groups are ordered by echoes, most first; then by first echo.
	Groups []Group
}

// OutlierFactor: a hop is an outlier when its p99 is more than this many
// times the median p99 of the hops of its path (at least minTimedHops).
const (
	OutlierFactor = 3
	minTimedHops  = 3
)

// echo is one journey on its way into a group.
type echo struct {
	j      *decode.Journey
	places []Place
	// verdicts[i] are the netfilter events attributed to hop i.
	verdicts [][]*decode.NetfilterEvent
}

// Summarize groups journeys by path and computes each group's statistics.
func Summarize(journeys []decode.Journey, names Names) Summary {
	var s Summary
	var echoes []echo
	for i := range journeys {
		j := &journeys[i]
		if i == 0 {
			s.Target, s.Proto, s.Port = j.Target, j.Proto, j.Port
		}
		s.Echoes++
		s.Lost += j.Lost
		if j.Replied {
			s.Replied++
		}
		if j.Closed() {
			s.Closed++
		}
		if len(j.Hops) == 0 {
			s.Unseen++
			continue
		}
		echoes = append(echoes, newEcho(j, names))
	}
	// Complete journeys make the groups; then lost ones, longest first, join
	// the group whose path they began, or make one of their own.
	type group struct {
		path    []Place
		members []*echo
		first   int
	}
	var groups []*group
	find := func(e *echo, prefix bool) *group {
		var best *group
		for _, g := range groups {
			if len(e.places) > len(g.path) || !prefix && len(e.places) != len(g.path) ||
				!slices.Equal(e.places, g.path[:len(e.places)]) {
				continue
			}
			if best == nil || len(g.members) > len(best.members) {
				best = g
			}
		}
		return best
	}
	order := make([]int, 0, len(echoes))
	var lost []int
	for i := range echoes {
		if answered(echoes[i].j) {
			order = append(order, i)
		} else {
			lost = append(lost, i)
		}
	}
	slices.SortStableFunc(lost, func(a, b int) int { return len(echoes[b].places) - len(echoes[a].places) })
	for n, i := range append(order, lost...) {
		e := &echoes[i]
		g := find(e, n >= len(order))
		if g == nil {
			g = &group{path: e.places, first: i}
			groups = append(groups, g)
		}
		g.first = min(g.first, i)
		g.members = append(g.members, e)
	}
	slices.SortStableFunc(groups, func(a, b *group) int {
		if c := cmp.Compare(len(b.members), len(a.members)); c != 0 {
			return c
		}
		return cmp.Compare(a.first, b.first)
	})
	for _, g := range groups {
		// Members in echo order, so that the first echo names the inodes.
		slices.SortFunc(g.members, func(a, b *echo) int { return cmp.Compare(a.j.Seq, b.j.Seq) })
		s.Groups = append(s.Groups, summarizeGroup(g.path, g.members))
	}
	return s
}

// answered reports whether the journey is complete: the echo got its reply,
// or the TCP probe its SYN-ACK or RST.
func answered(j *decode.Journey) bool { return j.Replied || j.Closed() }

func newEcho(j *decode.Journey, names Names) echo {
	e := echo{j: j, places: make([]Place, len(j.Hops)), verdicts: make([][]*decode.NetfilterEvent, len(j.Hops))}
	unnamed := map[uint32]string{}
	for i := range j.Hops {
		h := &j.Hops[i]
		n := names[h.Netns]
		if n.Name == "" {
			if _, ok := unnamed[h.Netns]; !ok {
				unnamed[h.Netns] = "#" + strconv.Itoa(len(unnamed)+1)
			}
			n.Name = unnamed[h.Netns]
		}
		e.places[i] = Place{Netns: n.Name, Owner: n.Owner, Host: n.Host, Ifname: h.IfName(), Dir: h.Probe.Direction(), Type: h.PacketType(), Side: sideOf(h)}
	}
	// A verdict belongs to the hop before it, or to the first hop for the
	// output chains the request met before leaving its namespace.
	cur := 0
	seen := 0
	for _, r := range j.Rows() {
		switch {
		case r.Hop != nil:
			cur = seen
			seen++
		case r.NF != nil:
			e.verdicts[cur] = append(e.verdicts[cur], r.NF)
		}
	}
	return e
}

func summarizeGroup(path []Place, members []*echo) Group {
	g := Group{Hops: make([]Hop, len(path)), Echoes: len(members)}
	deltas := make([][]time.Duration, len(path))
	var rtts, kernel []time.Duration
	type vkey struct{ chain, verdict, rule string }
	vcounts := make([]map[vkey]int, len(path))
	drops := make([]map[string]int, len(path))
	errs := make([]map[string]int, len(path))
	for i := range path {
		g.Hops[i].Place = path[i]
		vcounts[i] = map[vkey]int{}
		drops[i] = map[string]int{}
		errs[i] = map[string]int{}
	}
	for _, e := range members {
		j := e.j
		g.Seqs = append(g.Seqs, j.Seq)
		for i := range j.Hops {
			h := &g.Hops[i]
			if h.Count == 0 {
				h.Inode = j.Hops[i].Netns
			}
			h.Count++
			if i > 0 {
				deltas[i] = append(deltas[i], time.Duration(j.Hops[i].Time-j.Hops[i-1].Time))
			}
			for _, v := range e.verdicts[i] {
				verdict := v.Verdict
				if v.Target != "" {
					verdict += " " + v.Target
				}
				vcounts[i][vkey{v.Table + "." + v.Chain, verdict, v.RuleText()}]++
				if v.Verdict == "DROP" {
					drops[i]["NETFILTER_DROP"]++
				}
			}
		}
		// A drop the kernel named counts beside the netfilter drops (which
		// the verdicts count already), after the last hop.
		if d := j.Drop; d != nil && d.Reason != "" && d.Reason != "NETFILTER_DROP" && len(j.Hops) > 0 {
			drops[len(j.Hops)-1][d.Reason]++
		}
		if x := j.Error; x != nil {
			at := len(j.Hops) - 1
			for i := range j.Hops {
				if j.Hops[i].IsError() {
					at = i
					break
				}
			}
			errs[at][ErrorText(x)]++
		}
		switch {
		case j.Replied:
			g.Replied++
			rtts = append(rtts, j.RTT)
			kernel = append(kernel, time.Duration(lastAnswer(j).Time-j.Hops[0].Time))
		case j.Closed():
			g.Closed++
		default:
			g.Hops[len(j.Hops)-1].LostAfter++
		}
	}
	for i := range g.Hops {
		h := &g.Hops[i]
		h.Delta = percentiles(deltas[i])
		for k, n := range vcounts[i] {
			h.Verdicts = append(h.Verdicts, Verdict{Chain: k.chain, Verdict: k.verdict, Rule: k.rule, Count: n})
		}
		slices.SortFunc(h.Verdicts, func(a, b Verdict) int {
			return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Chain, b.Chain),
				strings.Compare(a.Verdict, b.Verdict), strings.Compare(a.Rule, b.Rule))
		})
		h.Drops = sortedCounts(drops[i])
		h.Errors = sortedCounts(errs[i])
	}
	g.RTT, g.Kernel = percentiles(rtts), percentiles(kernel)
	markOutliers(g.Hops)
	return g
}

// lastAnswer is the last hop of the answer of a replied journey (the
// prober's RST after a SYN-ACK is not), or its last hop if none is seen.
func lastAnswer(j *decode.Journey) *decode.Record {
	for i := len(j.Hops) - 1; i >= 0; i-- {
		if h := &j.Hops[i]; sideOf(h) == SideAnswer {
			return h
		}
	}
	return &j.Hops[len(j.Hops)-1]
}

// ErrorText says what an ICMP error said, and who sent it: "destination
// unreachable: port unreachable from 10.0.1.1".
func ErrorText(e *decode.ICMPError) string {
	if !e.From.IsValid() {
		return fmt.Sprintf("not sent: larger than the path MTU this host learnt (mtu %d)", e.MTU)
	}
	s := e.Text() + " from " + e.From.String()
	if e.MTU != 0 {
		s += fmt.Sprintf(" (mtu %d)", e.MTU)
	}
	return s
}

func sortedCounts(m map[string]int) []Count {
	var out []Count
	for k, n := range m {
		out = append(out, Count{k, n})
	}
	slices.SortFunc(out, func(a, b Count) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), strings.Compare(a.Reason, b.Reason))
	})
	return out
}

// markOutliers marks the hops whose p99 is more than OutlierFactor times the
// median p99 of the path's timed hops.
func markOutliers(hops []Hop) {
	var p99s []time.Duration
	for _, h := range hops {
		if h.Delta.N > 0 {
			p99s = append(p99s, h.Delta.P99)
		}
	}
	if len(p99s) < minTimedHops {
		return
	}
	median := percentiles(p99s).P50
	for i := range hops {
		if hops[i].Delta.N > 0 && hops[i].Delta.P99 > OutlierFactor*median {
			hops[i].Outlier = true
		}
	}
}
