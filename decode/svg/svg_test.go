package svg

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// A container on a docker-like bridge pings a database behind a router
// namespace; the second container shares the bridge.
const inoWeb, inoHost, inoRouter, inoDB = 4026532301, 4026531833, 4026532402, 4026532503

func hop(ns string, inode uint32, ifname string, dir decode.Direction, req bool, dt time.Duration) stats.Hop {
	typ := "reply"
	if req {
		typ = "request"
	}
	h := stats.Hop{Place: stats.Place{Netns: ns, Ifname: ifname, Dir: dir, Type: typ}, Inode: inode, Count: 1}
	if dt > 0 {
		h.Delta = stats.Percentiles{N: 1, P50: dt, P90: dt, P99: dt, Max: dt}
	}
	return h
}

func webToDB() []stats.Hop {
	out, in := decode.Out, decode.In
	us := time.Microsecond
	return []stats.Hop{
		hop("web-1", inoWeb, "eth0", out, true, 0),
		hop("host", inoHost, "veth-web1", in, true, 9*us),
		hop("host", inoHost, "br0", in, true, 4*us),
		hop("host", inoHost, "veth-rtr", out, true, 12*us),
		hop("router", inoRouter, "eth0", in, true, 8*us),
		hop("router", inoRouter, "eth1", out, true, 15*us),
		hop("db-1", inoDB, "eth0", in, true, 8*us),
		hop("db-1", inoDB, "eth0", out, false, 21*us),
		hop("router", inoRouter, "eth1", in, false, 7*us),
		hop("router", inoRouter, "eth0", out, false, 11*us),
		hop("host", inoHost, "veth-rtr", in, false, 8*us),
		hop("host", inoHost, "br0", out, false, 10*us),
		hop("host", inoHost, "veth-web1", out, false, 5*us),
		hop("web-1", inoWeb, "eth0", in, false, 8*us),
	}
}

func droppedAtRouter() stats.Group {
	hops := webToDB()[:5]
	hops[4].LostAfter = 1
	hops[4].Verdicts = []stats.Verdict{{Chain: "filter.FORWARD", Verdict: "DROP", Rule: "rule 7: ip daddr 10.0.2.0/24 icmp type echo-request drop", Count: 1}}
	hops[4].Drops = []stats.Count{{Reason: "NETFILTER_DROP", Count: 1}}
	return stats.Group{Hops: hops, Echoes: 1}
}

func hopsOf(els []testenv.SVGElement) []string {
	var out []string
	for _, e := range testenv.Classed(els, "hop") {
		out = append(out, fmt.Sprintf("%s %s %s %s %s %s", e.Attrs["data-num"], e.Attrs["data-run"], e.Attrs["data-netns"], e.Attrs["data-ifname"], e.Attrs["data-dir"], e.Attrs["data-type"]))
	}
	return out
}

func wantHops(run string, first int, hops []stats.Hop) []string {
	var out []string
	for i, h := range hops {
		out = append(out, fmt.Sprintf("%d %s %s %s %s %s", first+i, run, h.Netns, h.Ifname, h.Dir, h.Type))
	}
	return out
}

// drawn are the hops a test expects drawn, in order: what they are, the run
// of a diff they belong to only, and the time text each must show ("" for
// none).
type drawn struct {
	hops  []stats.Hop
	runs  []string
	times []string
}

func (d *drawn) add(run string, hops []stats.Hop, timeOf func(h *stats.Hop) string) {
	for i := range hops {
		d.hops = append(d.hops, hops[i])
		d.runs = append(d.runs, run)
		d.times = append(d.times, timeOf(&hops[i]))
	}
}

// micros is the time of a hop of one echo as the picture says it: the
// times here are whole microseconds.
func micros(h *stats.Hop) string {
	if h.Delta.N == 0 {
		return ""
	}
	return fmt.Sprintf("+%dµs", h.Delta.P50/time.Microsecond)
}

// checkDrawn checks the ladder against the hops it must show: a column per
// interface, labelled, each badge in its interface's column and in the
// colour of its type, and the times.
func checkDrawn(t *testing.T, els []testenv.SVGElement, want drawn) {
	t.Helper()
	var places []string
	for _, h := range want.hops {
		places = append(places, h.Netns+" "+h.Ifname)
	}
	if got, want := testenv.SVGColumns(els), testenv.WantSVGColumns(places); !slices.Equal(got, want) {
		t.Errorf("columns %q, want %q", got, want)
	}
	got := testenv.SVGHops(t, els)
	if len(got) != len(want.hops) {
		t.Fatalf("%d hops drawn, want %d", len(got), len(want.hops))
	}
	for i, g := range got {
		h := &want.hops[i]
		if g.Column != places[i] {
			t.Errorf("hop %d (%s %s %s): badge in column %q", i+1, places[i], h.Dir, h.Type, g.Column)
		}
		if c := testenv.SVGColour(h.Type, want.runs[i]); g.Colour != c {
			t.Errorf("hop %d (%s %s): colour %s, want %s", i+1, h.Type, want.runs[i], g.Colour, c)
		}
		if w := want.times[i]; w != "" && !slices.Contains(g.Texts, w) {
			t.Errorf("hop %d: texts %q, want %q among them", i+1, g.Texts, w)
		}
	}
}

// drawJourney draws g, checks that every hop is drawn in order, in its
// column, colour and with its time, and returns the SVG and its classed
// elements.
func drawJourney(t *testing.T, g *stats.Group, h Header) ([]byte, []testenv.SVGElement) {
	t.Helper()
	var buf bytes.Buffer
	if err := Journey(&buf, h, g); err != nil {
		t.Fatal(err)
	}
	els := testenv.SVGElements(t, buf.Bytes())
	if got, want := hopsOf(els), wantHops("", 1, g.Hops); !slices.Equal(got, want) {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var want drawn
	want.add("", g.Hops, micros)
	checkDrawn(t, els, want)
	return buf.Bytes(), els
}

func TestJourney(t *testing.T) {
	g := stats.Group{Hops: webToDB(), Echoes: 1, Replied: 1}
	g.Hops[0].Verdicts = []stats.Verdict{{Chain: "filter.OUTPUT", Verdict: "ACCEPT", Rule: "policy", Count: 1}}
	doc, els := drawJourney(t, &g, Header{Title: "echo to 10.0.2.9", Lines: []string{"reply in 175µs"}})
	if got := testenv.SVGBoxes(els); !slices.Equal(got, []string{"web-1", "host", "router", "db-1"}) {
		t.Errorf("namespace boxes %v", got)
	}
	if d := testenv.Classed(els, "drop"); len(d) != 0 {
		t.Errorf("drops in a journey that had none: %v", d)
	}
	if v := testenv.Classed(els, "verdict"); len(v) != 1 || v[0].Text != "filter.OUTPUT ACCEPT (policy)" {
		t.Errorf("verdicts %v", v)
	}
	testenv.RenderSVG(t, "journey", doc)
}

func TestJourneyDrop(t *testing.T) {
	g := droppedAtRouter()
	doc, els := drawJourney(t, &g, Header{Title: "echo to 10.0.2.9"})
	drops := testenv.Classed(els, "drop")
	if len(drops) != 1 || !strings.Contains(drops[0].Text, "dropped by filter.FORWARD (rule 7:") {
		t.Fatalf("drops %v", drops)
	}
	// The drop is drawn under the hop it followed.
	hops := testenv.Classed(els, "hop")
	if last := hops[len(hops)-1]; !strings.Contains(last.Text, "dropped by filter.FORWARD") {
		t.Errorf("the drop is not under the last hop: %q", last.Text)
	}
	testenv.RenderSVG(t, "journey-drop", doc)
}

func TestDiff(t *testing.T) {
	a := stats.Group{Hops: webToDB(), Echoes: 1, Replied: 1}
	b := droppedAtRouter()
	ra := &stats.Run{Summary: stats.Summary{Groups: []stats.Group{a}}}
	rb := &stats.Run{Summary: stats.Summary{Groups: []stats.Group{b}}}
	d := stats.Compare(ra, rb)
	var buf bytes.Buffer
	if err := Diff(&buf, Header{Title: "A: ok.tpk, B: broken.tpk"}, &a, &b, &d); err != nil {
		t.Fatal(err)
	}
	els := testenv.SVGElements(t, buf.Bytes())
	// The common part once, then the rest of A; B has no hop of its own.
	want := append(wantHops("", 1, a.Hops[:5]), wantHops("A", 6, a.Hops[5:])...)
	if got := hopsOf(els); !slices.Equal(got, want) {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var drew drawn
	drew.add("", a.Hops[:5], func(h *stats.Hop) string {
		if h.Delta.N == 0 {
			return ""
		}
		return "A " + micros(h) // B's times are the same
	})
	drew.add("A", a.Hops[5:], func(h *stats.Hop) string { return "A " + micros(h) })
	checkDrawn(t, els, drew)
	div := testenv.Classed(els, "divergence")
	if len(div) != 1 || !strings.Contains(div[0].Text, "B stops after the request entering eth0 in router: dropped by filter.FORWARD") {
		t.Errorf("divergence %v", div)
	}
	if drops := testenv.Classed(els, "drop"); len(drops) != 1 || !strings.Contains(drops[0].Text, "B only: dropped by filter.FORWARD") {
		t.Errorf("drops %v", drops)
	}
	testenv.RenderSVG(t, "diff", buf.Bytes())
}

func TestJourneyICMPError(t *testing.T) {
	hops := webToDB()[:5]
	for _, h := range []stats.Hop{
		hop("router", inoRouter, "eth0", decode.Out, false, 9*time.Microsecond),
		hop("host", inoHost, "veth-rtr", decode.In, false, 8*time.Microsecond),
	} {
		h.Type = "unreachable"
		hops = append(hops, h)
	}
	hops[5].Errors = []stats.Count{{Reason: "destination unreachable: communication administratively prohibited from 10.0.9.1", Count: 1}}
	hops[6].LostAfter = 1
	g := stats.Group{Hops: hops, Echoes: 1}
	doc, els := drawJourney(t, &g, Header{Title: "echo to 10.0.2.9"})
	// The error is said where it was sent, in red, and the echo is not also
	// "last seen" where the error arrived.
	drops := testenv.Classed(els, "drop")
	if len(drops) != 1 || !strings.Contains(drops[0].Text, "communication administratively prohibited from 10.0.9.1") {
		t.Errorf("drops %v", drops)
	}
	testenv.RenderSVG(t, "journey-icmp-error", doc)
}
