package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
)

// journeyWriter prints journeys as they complete; live runs and replays share it.
type journeyWriter interface {
	Journey(j *decode.Journey) error
}

// newJourneyWriter returns the table or the JSON writer.
func newJourneyWriter(jsonOut bool, w io.Writer, rc *renderContext) journeyWriter {
	if jsonOut {
		return jsonWriter{json.NewEncoder(w), rc}
	}
	return &tableWriter{w: w, rc: rc}
}

// tableWriter prints one table per echo, then a summary line; a blank line
// separates echoes. The run's notes follow the first summary.
type tableWriter struct {
	w       io.Writer
	rc      *renderContext
	written bool
}

func (t *tableWriter) Journey(j *decode.Journey) error {
	var buf bytes.Buffer
	if t.written {
		buf.WriteByte('\n')
	}
	table := plainTable(&buf)
	withNF := len(j.Netfilter) > 0
	header := []string{"NETWORK NS", "INTERFACE", "DIR", "TYPE", "ADDRESSES", "+TIME"}
	if withNF {
		header = append(header, "NETFILTER", "VERDICT", "RULE")
	}
	table.Header(header)
	first := firstTime(j)
	for _, r := range j.Rows() {
		v := viewOf(j, r, first)
		cells := []string{t.rc.netnsCell(v.netns), v.ifname, v.dir, v.typ, v.src + " -> " + v.dst, v.since}
		if withNF {
			cells = append(cells, v.chain, v.verdict, v.rule)
		}
		if err := table.Append(cells); err != nil {
			return err
		}
	}
	if len(j.Hops)+len(j.Netfilter) > 0 {
		if err := table.Render(); err != nil {
			return err
		}
	}
	var out strings.Builder
	out.WriteString(trimLines(buf.String()))
	out.WriteString(summary(j) + "\n")
	if !t.written {
		for _, n := range t.rc.notes {
			out.WriteString(n + "\n")
		}
	}
	t.written = true
	_, err := io.WriteString(t.w, out.String())
	return err
}

// plainTable is a table without borders, columns two spaces apart.
func plainTable(w io.Writer) *tablewriter.Table {
	return tablewriter.NewTable(w,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Separators: tw.Separators{BetweenColumns: tw.On}, Lines: tw.LinesNone},
		})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
		tablewriter.WithPadding(tw.Padding{Right: "  ", Overwrite: true}),
	)
}

// trimLines drops the blanks the renderer pads the last column with; they
// only get in the way of copy and paste.
func trimLines(s string) string {
	var out strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		out.WriteString(strings.TrimRight(line, " \n"))
		if strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	return out.String()
}

func echoType(request bool) string {
	if request {
		return "request"
	}
	return "reply"
}

// rowView is one row as both renderers show it.
type rowView struct {
	netns                     uint32
	ifname                    string
	ifindex                   uint32
	dir, typ, src, dst, since string
	tNs                       int64
	chain, verdict, rule      string
	nf                        *decode.NetfilterEvent
	hop                       *decode.Record
}

func firstTime(j *decode.Journey) uint64 {
	if len(j.Hops) > 0 {
		return j.Hops[0].Time
	}
	return 0
}

func viewOf(j *decode.Journey, r decode.Row, first uint64) rowView {
	var v rowView
	if r.Time != 0 {
		v.tNs = int64(r.Time - first)
	}
	if h := r.Hop; h != nil {
		v.hop = h
		v.netns, v.ifname, v.ifindex = h.Netns, h.IfName(), h.Ifindex
		v.dir, v.typ = h.Probe.Direction().String(), echoType(h.IsRequest())
		v.src, v.dst = h.Src.String(), h.Dst.String()
		v.since = sinceFirst(time.Duration(v.tNs))
		return v
	}
	e := r.NF
	v.nf = e
	v.netns, v.typ = e.Netns, echoType(e.IsRequest())
	v.src, v.dst = e.Src.String(), e.Dst.String()
	v.ifindex = e.Oif
	if e.Hook != decode.HookOutput && e.Hook != decode.HookPostrouting || e.Oif == 0 {
		v.ifindex = e.Iif
	}
	v.ifname = ifName(j, e.Netns, v.ifindex)
	if e.Time != 0 {
		v.since = sinceFirst(time.Duration(v.tNs))
	}
	v.chain = e.Table + "." + e.Chain
	v.verdict = e.Verdict
	if e.Target != "" {
		v.verdict += " " + e.Target
	}
	v.rule = e.RuleText()
	return v
}

// ifName names an interface of a netfilter row after the hops that crossed it.
func ifName(j *decode.Journey, netns, ifindex uint32) string {
	for i := range j.Hops {
		if h := &j.Hops[i]; h.Netns == netns && h.Ifindex == ifindex && ifindex != 0 {
			return h.IfName()
		}
	}
	if ifindex == 0 {
		return ""
	}
	return "if" + strconv.FormatUint(uint64(ifindex), 10)
}

// sinceFirst formats a hop's time since the first hop: "0", "+850ns", "+3.1µs".
func sinceFirst(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return "+" + stats.FormatDuration(d)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// summary is the line under each table: the outcome, and where a lost echo was last seen.
func summary(j *decode.Journey) string {
	var b strings.Builder
	if j.Replied {
		nss, ifs := j.Crossed()
		fmt.Fprintf(&b, "reply from %s in %s: crossed %s, %s", j.Target, stats.FormatDuration(j.RTT),
			plural(nss, "network namespace", "network namespaces"), plural(ifs, "interface", "interfaces"))
	} else {
		fmt.Fprintf(&b, "no reply from %s (seq %d) within %s", j.Target, j.Seq, stats.FormatDuration(j.Timeout))
		if drop, ok := lastDrop(j); ok {
			fmt.Fprintf(&b, ": the %s was dropped by %s.%s (%s) in network namespace %d", echoType(drop.IsRequest()), drop.Table, drop.Chain, drop.RuleText(), drop.Netns)
		} else if last, ok := j.LastRequest(); ok {
			verb := "leaving"
			if last.Probe.Direction() == decode.In {
				verb = "entering"
			}
			fmt.Fprintf(&b, ": the request was last seen %s %s in network namespace %d", verb, last.IfName(), last.Netns)
		} else {
			b.WriteString(": the request never reached a network device")
		}
	}
	if j.Lost > 0 {
		fmt.Fprintf(&b, "\n%s lost: the kernel's rings overflowed, rows may be missing", plural(int(j.Lost), "event", "events"))
	}
	return b.String()
}

// lastDrop returns the netfilter verdict that ended the journey, if one did.
func lastDrop(j *decode.Journey) (decode.NetfilterEvent, bool) {
	rows := j.Rows()
	if len(rows) > 0 {
		if e := rows[len(rows)-1].NF; e != nil && e.Verdict == "DROP" {
			return *e, true
		}
	}
	return decode.NetfilterEvent{}, false
}

// jsonWriter prints one JSON object per echo, each on its own line.
type jsonWriter struct {
	enc *json.Encoder
	rc  *renderContext
}

// jsonEcho is the --json schema; its field names are a contract with users' scripts.
type jsonEcho struct {
	Target      string    `json:"target"`
	Family      string    `json:"family"`
	EchoID      uint16    `json:"echo_id"`
	Seq         uint16    `json:"seq"`
	Result      string    `json:"result"`
	RTTNs       int64     `json:"rtt_ns"`
	LostSamples uint64    `json:"lost_samples"`
	Hops        []jsonHop `json:"hops"`
	jsonRunNotes
}

// jsonRunNotes say how the run traced netfilter, and what it could not see.
type jsonRunNotes struct {
	// NetfilterSource is "nftrace", "kprobe" or "off".
	NetfilterSource string   `json:"netfilter_source,omitempty"`
	Notes           []string `json:"notes,omitempty"`
}

func (rc *renderContext) jsonNotes() jsonRunNotes {
	return jsonRunNotes{NetfilterSource: rc.netfilter, Notes: rc.notes}
}

type jsonHop struct {
	TNs       int64  `json:"t_ns"`
	Netns     uint32 `json:"netns"`
	NetnsName string `json:"netns_name,omitempty"`
	Ifname    string `json:"ifname"`
	Ifindex   uint32 `json:"ifindex"`
	Probe     string `json:"probe"`
	Type      string `json:"type"`
	Src       string `json:"src"`
	Dst       string `json:"dst"`
	Dir       string `json:"dir"`
	KtimeNs   uint64 `json:"ktime_ns"`
	CPU       uint32 `json:"cpu"`
	Len       uint32 `json:"len"`
	// Netfilter is set on rows with probe "netfilter".
	Netfilter *jsonNetfilter `json:"netfilter,omitempty"`
}

type jsonNetfilter struct {
	Family     string `json:"family"`
	Table      string `json:"table"`
	Chain      string `json:"chain"`
	Hook       string `json:"hook"`
	Verdict    string `json:"verdict"`
	Target     string `json:"target,omitempty"`
	RuleHandle uint64 `json:"rule_handle"`
	Rule       string `json:"rule"`
	Policy     bool   `json:"policy"`
	Source     string `json:"source"`
}

func (w jsonWriter) Journey(j *decode.Journey) error {
	e := jsonEcho{
		Target:       j.Target.String(),
		Family:       family(j.Target),
		EchoID:       j.EchoID,
		Seq:          j.Seq,
		Result:       "timeout",
		LostSamples:  j.Lost,
		Hops:         []jsonHop{},
		jsonRunNotes: w.rc.jsonNotes(),
	}
	if j.Replied {
		e.Result, e.RTTNs = "reply", j.RTT.Nanoseconds()
	}
	first := firstTime(j)
	for _, r := range j.Rows() {
		v := viewOf(j, r, first)
		h := jsonHop{
			TNs: v.tNs, Netns: v.netns, NetnsName: w.rc.names[v.netns], Ifname: v.ifname, Ifindex: v.ifindex,
			Type: v.typ, Src: v.src, Dst: v.dst, Dir: v.dir, KtimeNs: r.Time,
		}
		if v.hop != nil {
			h.Probe, h.CPU, h.Len = v.hop.Probe.String(), v.hop.CPU, v.hop.Len
		} else {
			nf := v.nf
			h.Probe, h.KtimeNs = "netfilter", nf.Time // t_ns places an nftrace row; ktime_ns is its own time, if known
			h.Netfilter = &jsonNetfilter{
				Family: nf.Family, Table: nf.Table, Chain: nf.Chain, Hook: nf.Hook.String(), Verdict: nf.Verdict,
				Target: nf.Target, RuleHandle: nf.RuleHandle, Rule: nf.Rule, Policy: nf.Type == decode.TracePolicy, Source: nf.Source,
			}
		}
		e.Hops = append(e.Hops, h)
	}
	return w.enc.Encode(e)
}
