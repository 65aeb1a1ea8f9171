package svg

import (
	"fmt"
	"io"

	"github.com/tracepkt/tracepkt-perf/decode/stats"
)

// Journey draws the path of a group of echoes: with one echo, the time of
// each hop; with more, the median and p99.
func Journey(w io.Writer, h Header, g *stats.Group) error {
	l := &ladder{divider: -1}
	l.layout(g.Hops)
	prev := -1
	for i := range g.Hops {
		hop := &g.Hops[i]
		r := row{hop: *hop, num: i + 1, from: prev, to: l.col(hop), outlier: hop.Outlier, notes: hopNotes(hop, g)}
		r.time, r.sub = hopTime(hop)
		l.rows = append(l.rows, r)
		prev = r.to
	}
	return l.draw(w, h)
}

// Diff draws the main paths of runs A and B over the same namespaces: the
// hops both took once, then where they part, the rest of A's and of B's.
func Diff(w io.Writer, h Header, a, b *stats.Group, d *stats.Diff) error {
	l := &ladder{divider: -1, diff: true}
	l.layout(a.Hops, b.Hops)
	common := len(a.Hops)
	if d.Divergence != nil {
		common = d.Divergence.Common
	}
	prev := -1
	for i := range common {
		ha, hb := &a.Hops[i], &b.Hops[i]
		r := row{hop: *ha, num: i + 1, from: prev, to: l.col(ha)}
		if i > 0 {
			r.time, r.sub = "A "+median(ha), "B "+median(hb)
		}
		r.notes = hopNotes(ha, a)
		for _, v := range d.Verdicts {
			if v.Run == "B" && v.Hop.Place == ha.Place {
				r.notes = append(r.notes, verdictNote(v.Verdict, b.Echoes, "B only: ", "only"))
			}
		}
		l.rows = append(l.rows, r)
		prev = r.to
	}
	if d.Divergence != nil {
		l.divider = len(l.rows)
		l.divText = "Where they part: " + d.Divergence.Text
	}
	for _, side := range []struct {
		run string
		g   *stats.Group
	}{{"A", a}, {"B", b}} {
		from := prev
		for i := common; i < len(side.g.Hops); i++ {
			hop := &side.g.Hops[i]
			r := row{hop: *hop, num: i + 1, from: from, to: l.col(hop), run: side.run, notes: hopNotes(hop, side.g)}
			r.time, r.sub = hopTime(hop)
			l.rows = append(l.rows, r)
			from = r.to
		}
	}
	return l.draw(w, h)
}

// hopTime is the time since the previous hop: its value for one echo, the
// median above and the p99 below for more.
func hopTime(h *stats.Hop) (above, below string) {
	if h.Delta.N > 1 {
		return "p50 " + stats.FormatDuration(h.Delta.P50), "p99 " + stats.FormatDuration(h.Delta.P99)
	}
	return median(h), ""
}

// median is the time since the previous hop: "+12.5µs" for one echo, the
// median of more.
func median(h *stats.Hop) string {
	switch h.Delta.N {
	case 0:
		return ""
	case 1:
		return "+" + stats.FormatDuration(h.Delta.P50)
	}
	return "p50 " + stats.FormatDuration(h.Delta.P50)
}

// isTCP reports whether a packet type is a TCP probe's.
func isTCP(typ string) bool { return typ == "syn" || typ == "syn-ack" || typ == "rst" }

// hopNotes are the lines under a hop of g: its verdicts, its drops and
// ICMP errors, and the echoes (or TCP probes) lost after it that nothing
// explains.
func hopNotes(h *stats.Hop, g *stats.Group) []note {
	var out []note
	echoes := g.Echoes
	dropped := 0
	if h.Side == stats.SideError {
		// The echoes an ICMP error explained end on the error's hops.
		for _, gh := range g.Hops {
			for _, c := range gh.Errors {
				dropped += c.Count
			}
		}
	}
	for _, v := range h.Verdicts {
		out = append(out, verdictNote(v, echoes, "", "verdict"))
		if v.Verdict == "DROP" {
			dropped += v.Count
		}
	}
	for _, c := range h.Drops {
		if c.Reason != "NETFILTER_DROP" {
			out = append(out, note{text: "✕ dropped: " + c.Reason + times(c.Count, echoes), kind: "drop"})
			dropped += c.Count
		}
	}
	for _, c := range h.Errors {
		out = append(out, note{text: "✕ " + c.Reason + times(c.Count, echoes), kind: "drop"})
	}
	if lost := h.LostAfter - dropped; lost > 0 {
		probes, answer := "echoes", "reply"
		if isTCP(g.Hops[0].Type) {
			probes, answer = "probes", "answer"
		}
		text := "✕ last seen here: no " + answer
		if echoes > 1 {
			text = fmt.Sprintf("✕ %d of %d %s last seen here, no %s", lost, echoes, probes, answer)
		}
		out = append(out, note{text: text, kind: "drop"})
	}
	return out
}

func verdictNote(v stats.Verdict, echoes int, prefix, kind string) note {
	text := prefix + v.Chain + " " + v.Verdict
	if v.Rule != "" {
		text += " (" + v.Rule + ")"
	}
	if v.Verdict == "DROP" {
		return note{text: "✕ " + prefix + "dropped by " + v.Chain + " (" + v.Rule + ")" + times(v.Count, echoes), kind: "drop"}
	}
	return note{text: text + times(v.Count, echoes), kind: kind}
}

// times says how many echoes a note is about, when not all of them.
func times(n, echoes int) string {
	if n == echoes {
		return ""
	}
	return fmt.Sprintf(" ×%d", n)
}
