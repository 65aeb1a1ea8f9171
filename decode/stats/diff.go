package stats

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Origin is where and when a run was recorded.
type Origin struct {
	Host, Kernel, BootID string
}

// Run is one side of a diff.
type Run struct {
	Summary Summary
	Origin  Origin
}

// Diff is how run B's path differs from run A's. Runs are compared on their
// main group, the path most of their echoes took.
type Diff struct {
	// Same is true when both runs took the same paths, with the same outcome.
	Same bool
	// Divergence is where the main paths part ways; nil when they do not.
	Divergence *Divergence
	// Verdicts are the netfilter verdicts met by one run and not the other,
	// on the hops both runs crossed.
	Verdicts []VerdictDiff
	// Latency lists the hops whose median moved beyond the noise of both runs.
	Latency []LatencyDiff
	// Paths lists the paths besides the main one taken by some echoes of one
	// run and none of the other.
	Paths []PathDiff
	Notes []string
}

// Divergence is the first place the main paths of A and B part ways.
type Divergence struct {
	// Common is the number of hops both paths share from the start.
	Common int
	// After is the last hop both crossed (in A's terms); nil when they
	// differ from the first hop.
	After *Hop
	// A and B say what each run did next.
	A, B Branch
	Text string
}

// Branch is what one run did after the common part of the paths.
type Branch struct {
	// Next is the hop the run went on to; nil when it stopped.
	Next *Hop
	// Replied says the run's echoes got their reply (its TCP probes their
	// SYN-ACK); Closed that its TCP probes got an RST.
	Replied, Closed bool
	// Answer names what a run that got an answer got: "the reply", "the
	// SYN-ACK" or "an RST".
	Answer string
	// Why says why a run that stopped did: a drop, or "" if nothing said.
	Why string
}

// VerdictDiff is a verdict seen at a hop by one run only.
type VerdictDiff struct {
	Hop     Hop
	Run     string // "A" or "B"
	Verdict Verdict
}

// LatencyDiff is a hop whose time since the previous hop moved.
type LatencyDiff struct {
	Hop  Hop // A's
	A, B Percentiles
}

// PathDiff is a path only one run took.
type PathDiff struct {
	Run    string
	Echoes int
	Hops   []Hop
}

// minEchoesForLatency is the number of echoes each run needs at a hop for
// its latency to be compared: below it, the noise is unknown.
const minEchoesForLatency = 5

// Compare aligns run B on run A hop by hop, by Place.
func Compare(a, b *Run) Diff {
	var d Diff
	if a.Origin.Host != b.Origin.Host || a.Origin.Kernel != b.Origin.Kernel {
		d.Notes = append(d.Notes, fmt.Sprintf("A was recorded on %s (kernel %s), B on %s (kernel %s): hops are matched by namespace name, interface, direction and type, not by inode or ifindex",
			a.Origin.Host, a.Origin.Kernel, b.Origin.Host, b.Origin.Kernel))
	} else if a.Origin.BootID != b.Origin.BootID {
		d.Notes = append(d.Notes, "A and B were recorded in different boots of the machine: hops are matched by namespace name, interface, direction and type, not by inode or ifindex")
	}
	sa, sb := &a.Summary, &b.Summary
	switch {
	case sa.Proto == 0 && sb.Proto == 0 && sa.Target != sb.Target:
		d.Notes = append(d.Notes, fmt.Sprintf("A traced echoes to %s, B to %s", sa.Target, sb.Target))
	case sa.Target != sb.Target || sa.Proto != sb.Proto || sa.Port != sb.Port:
		d.Notes = append(d.Notes, fmt.Sprintf("A traced %s, B %s", sa.probes(), sb.probes()))
	}
	ga, gb := a.Summary.Main(), b.Summary.Main()
	n := 0
	for n < len(ga.Hops) && n < len(gb.Hops) && ga.Hops[n].Place == gb.Hops[n].Place {
		n++
	}
	samePath := n == len(ga.Hops) && n == len(gb.Hops) && (ga.Replied > 0) == (gb.Replied > 0) && (ga.Closed > 0) == (gb.Closed > 0)
	if !samePath {
		d.Divergence = divergence(ga, gb, n)
	}
	for i := range n {
		d.Verdicts = append(d.Verdicts, verdictDiffs(&ga.Hops[i], &gb.Hops[i])...)
		if moved(ga.Hops[i].Delta, gb.Hops[i].Delta) {
			d.Latency = append(d.Latency, LatencyDiff{Hop: ga.Hops[i], A: ga.Hops[i].Delta, B: gb.Hops[i].Delta})
		}
	}
	d.Paths = append(otherPaths("A", &a.Summary, &b.Summary), otherPaths("B", &b.Summary, &a.Summary)...)
	d.Same = samePath && len(d.Paths) == 0
	return d
}

// probes says what the run traced: "echoes to 10.0.1.2", "TCP port 80 of
// 10.0.1.2", "UDP port 53 of 10.0.1.2".
func (s *Summary) probes() string {
	if s.Proto != 0 {
		return fmt.Sprintf("%s port %d of %s", strings.ToUpper(decode.ProtoName(s.Proto)), s.Port, s.Target)
	}
	return "echoes to " + s.Target.String()
}

// Main is the group most echoes took; an empty one when no echo reached a
// device.
func (s *Summary) Main() *Group {
	if len(s.Groups) == 0 {
		return &Group{}
	}
	return &s.Groups[0]
}

func divergence(ga, gb *Group, n int) *Divergence {
	dv := &Divergence{Common: n, A: branch(ga, n), B: branch(gb, n)}
	if n > 0 {
		dv.After = &ga.Hops[n-1]
	}
	after := "before the first hop"
	if dv.After != nil {
		after = "after " + HopText(dv.After)
	}
	went := func(run string, b Branch) string {
		switch {
		case b.Next != nil && b.Why != "":
			return run + " went on to " + HopText(b.Next) + " (" + b.Why + ")"
		case b.Next != nil:
			return run + " went on to " + HopText(b.Next)
		case b.Replied || b.Closed:
			return run + " got " + b.Answer
		}
		return run + " stopped too"
	}
	switch {
	case dv.B.Next == nil && dv.A.Next != nil || dv.B.Next == nil && dv.A.Replied && !dv.B.Replied:
		dv.Text = fmt.Sprintf("B stops %s%s, where %s", after, why(dv.B), went("A", dv.A))
	case dv.A.Next == nil && dv.B.Next != nil || dv.A.Next == nil && dv.B.Replied && !dv.A.Replied:
		dv.Text = fmt.Sprintf("A stops %s%s, where %s", after, why(dv.A), went("B", dv.B))
	case dv.After == nil:
		dv.Text = fmt.Sprintf("the paths differ from the first hop: A starts with %s, B with %s", hopOrNothing(dv.A.Next), hopOrNothing(dv.B.Next))
	default:
		dv.Text = fmt.Sprintf("the runs part %s: %s, %s", after, went("A", dv.A), went("B", dv.B))
	}
	return dv
}

func hopOrNothing(h *Hop) string {
	if h == nil {
		return "no hop"
	}
	return HopText(h)
}

func why(b Branch) string {
	if b.Why == "" {
		return ""
	}
	return ": " + b.Why
}

func branch(g *Group, n int) Branch {
	b := Branch{Replied: g.Replied > 0, Closed: g.Closed > 0, Answer: "the reply"}
	for i := len(g.Hops) - 1; i >= 0; i-- {
		if h := &g.Hops[i]; h.Side == SideAnswer {
			b.Answer = answerText(h.Type)
			break
		}
	}
	if n < len(g.Hops) {
		b.Next = &g.Hops[n]
		// An ICMP error on the way says why the run went elsewhere.
		for i := n; i < len(g.Hops); i++ {
			if len(g.Hops[i].Errors) > 0 {
				b.Why = g.Hops[i].Errors[0].Reason
				break
			}
		}
		return b
	}
	if n > 0 {
		h := &g.Hops[n-1]
		for _, v := range h.Verdicts {
			if v.Verdict == "DROP" {
				b.Why = "dropped by " + v.Chain
				if v.Rule != "" {
					b.Why += " (" + v.Rule + ")"
				}
				return b
			}
		}
		switch {
		case len(h.Drops) > 0:
			b.Why = "dropped: " + h.Drops[0].Reason
		case len(h.Errors) > 0:
			b.Why = h.Errors[0].Reason
		}
	}
	return b
}

// answerText names an answer by its packet type: "the reply", "the
// SYN-ACK", "an RST".
func answerText(typ string) string {
	switch typ {
	case "reply":
		return "the reply"
	case "rst":
		return "an RST"
	}
	return "the " + strings.ToUpper(typ)
}

// HopText names a hop in words: "the request entering eth0 in router", "the
// SYN-ACK leaving eth0 in web".
func HopText(h *Hop) string {
	verb := "leaving"
	if h.Dir == decode.In {
		verb = "entering"
	}
	typ := h.Type
	switch {
	case h.Side == SideError:
		typ = "ICMP error (" + typ + ")"
	case typ != "request" && typ != "reply":
		typ = strings.ToUpper(typ) // a TCP probe's SYN, SYN-ACK or RST
	}
	return fmt.Sprintf("the %s %s %s in %s", typ, verb, h.Ifname, NetnsText(h))
}

// NetnsText names the namespace of a hop: its name, or its inode when it has none.
func NetnsText(h *Hop) string {
	if strings.HasPrefix(h.Netns, "#") {
		return fmt.Sprintf("network namespace %d", h.Inode)
	}
	if h.Owner != "" {
		return h.Netns + " (" + h.Owner + ")"
	}
	return h.Netns
}

func verdictDiffs(a, b *Hop) []VerdictDiff {
	key := func(v Verdict) Verdict { v.Count = 0; return v }
	in := func(vs []Verdict, v Verdict) bool {
		return slices.ContainsFunc(vs, func(w Verdict) bool { return key(w) == key(v) })
	}
	var out []VerdictDiff
	for _, v := range a.Verdicts {
		if !in(b.Verdicts, v) {
			out = append(out, VerdictDiff{Hop: *a, Run: "A", Verdict: v})
		}
	}
	for _, v := range b.Verdicts {
		if !in(a.Verdicts, v) {
			out = append(out, VerdictDiff{Hop: *a, Run: "B", Verdict: v})
		}
	}
	return out
}

// moved reports whether the median moved by more than the spread (p90-p50)
// of both runs together, and by at least a quarter of the smaller median.
func moved(a, b Percentiles) bool {
	if a.N < minEchoesForLatency || b.N < minEchoesForLatency {
		return false
	}
	delta := a.P50 - b.P50
	if delta < 0 {
		delta = -delta
	}
	noise := (a.P90 - a.P50) + (b.P90 - b.P50)
	return delta > noise && delta >= min(a.P50, b.P50)/4 && delta > time.Microsecond
}

// otherPaths lists the paths of run x, besides its main one (the divergence
// covers that), that no group of run y took.
func otherPaths(run string, x, y *Summary) []PathDiff {
	var out []PathDiff
	for i := 1; i < len(x.Groups); i++ {
		p := x.Groups[i].Path()
		if !slices.ContainsFunc(y.Groups, func(g Group) bool { return slices.Equal(g.Path(), p) }) {
			out = append(out, PathDiff{Run: run, Echoes: x.Groups[i].Echoes, Hops: x.Groups[i].Hops})
		}
	}
	return out
}
