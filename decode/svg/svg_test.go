package svg

import (
	"bytes"
	"fmt"
	"net/netip"
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
	typ, side := "reply", stats.SideAnswer
	if req {
		typ, side = "request", stats.SideRequest
	}
	h := stats.Hop{Place: stats.Place{Netns: ns, Ifname: ifname, Dir: dir, Type: typ, Side: side}, Inode: inode, Count: 1}
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
// colour of its side of the exchange, and the times.
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
		if c := testenv.SVGSideColour(sideNames[h.Side], want.runs[i]); g.Colour != c {
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
		h.Type, h.Side = "unreachable", stats.SideError
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

// tcpJourney is TCP probe seq from web-1 to port 5432 of db-1 through the
// router: the SYN, then for an open port the SYN-ACK and the prober's RST,
// for a closed one db-1's RST; with neither, the SYN's first n hops only.
func tcpJourney(seq uint16, result string, n int) decode.Journey {
	type leg struct {
		netns  uint32
		ifname string
		dir    decode.Direction
	}
	there := []leg{{inoWeb, "eth0", decode.Out}, {inoRouter, "eth0", decode.In}, {inoRouter, "eth1", decode.Out}, {inoDB, "eth0", decode.In}}
	back := []leg{{inoDB, "eth0", decode.Out}, {inoRouter, "eth1", decode.In}, {inoRouter, "eth0", decode.Out}, {inoWeb, "eth0", decode.In}}
	j := decode.Journey{Outcome: decode.Outcome{Target: netip.MustParseAddr("10.0.2.9"), EchoID: 7, Seq: seq, Timeout: time.Second,
		Proto: decode.ProtoTCP, Port: 5432}}
	t := uint64(seq) * 1e9
	add := func(legs []leg, flags uint8) {
		for _, l := range legs {
			t += 9000
			r := decode.Record{Time: t, Netns: l.netns, Family: 4, Proto: decode.ProtoTCP, TCPFlags: flags, EchoID: 7, Seq: seq,
				Probe: decode.ProbeNetifReceiveSkb}
			if l.dir == decode.Out {
				r.Probe = decode.ProbeNetDevQueue
			}
			copy(r.Ifname[:], l.ifname)
			j.Hops = append(j.Hops, r)
		}
	}
	add(there, decode.TCPSyn)
	switch result {
	case "open":
		add(back, decode.TCPSyn|decode.TCPAck)
		add(there, decode.TCPRst)
		j.Replied, j.TCPFlags, j.RTT = true, decode.TCPSyn|decode.TCPAck, 80*time.Microsecond
	case "closed":
		add(back, decode.TCPRst|decode.TCPAck)
		j.TCPFlags = decode.TCPRst | decode.TCPAck
	default:
		j.Hops = j.Hops[:n]
	}
	return j
}

var tcpNames = stats.Names{inoWeb: {Name: "web-1"}, inoRouter: {Name: "router"}, inoDB: {Name: "db-1"}}

// TestJourneyTCP draws TCP probes: the SYN and the prober's RST on the
// request side, the SYN-ACK and the target's RST on the answer side; a
// closed port is an answer, a SYN that vanished a loss.
func TestJourneyTCP(t *testing.T) {
	s := stats.Summarize([]decode.Journey{
		tcpJourney(1, "open", 0), tcpJourney(2, "open", 0), tcpJourney(3, "", 2),
		tcpJourney(4, "closed", 0),
	}, tcpNames)
	open, closed := &s.Groups[0], &s.Groups[1]
	var buf bytes.Buffer
	if err := Journey(&buf, Header{Title: "TCP port 5432 of 10.0.2.9: open"}, open); err != nil {
		t.Fatal(err)
	}
	doc, els := buf.Bytes(), testenv.SVGElements(t, buf.Bytes())
	var drew drawn
	drew.add("", open.Hops, func(h *stats.Hop) string { return "p50 " + stats.FormatDuration(h.Delta.P50) }) // more than one probe
	drew.times[0] = ""
	checkDrawn(t, els, drew)
	var sides []string
	for _, e := range testenv.Classed(els, "hop") {
		sides = append(sides, e.Attrs["data-type"]+" "+e.Attrs["data-side"])
	}
	want := []string{"syn request", "syn request", "syn request", "syn request", "syn-ack answer", "syn-ack answer",
		"syn-ack answer", "syn-ack answer", "rst request", "rst request", "rst request", "rst request"}
	if !slices.Equal(sides, want) {
		t.Errorf("hops %q, want %q", sides, want)
	}
	if !bytes.Contains(doc, []byte(">SYN, the prober&#39;s RST<")) || !bytes.Contains(doc, []byte(">SYN-ACK or RST<")) {
		t.Error("the legend does not name the TCP packets")
	}
	drops := testenv.Classed(els, "drop")
	if len(drops) != 1 || drops[0].Text != "✕ 1 of 3 probes last seen here, no answer" {
		t.Errorf("drops %v", drops)
	}
	testenv.RenderSVG(t, "journey-tcp-open", doc)

	doc, els = drawJourney(t, closed, Header{Title: "TCP port 5432 of 10.0.2.9: closed"})
	if hops := testenv.Classed(els, "hop"); hops[4].Attrs["data-type"] != "rst" || hops[4].Attrs["data-side"] != "answer" {
		t.Errorf("db-1's RST: %v", hops[4].Attrs)
	}
	if drops := testenv.Classed(els, "drop"); len(drops) != 0 {
		t.Errorf("a closed port drawn as a loss: %v", drops)
	}
	testenv.RenderSVG(t, "journey-tcp-closed", doc)
}

// TestDiffTCP: an open port in A, closed in B; they part after the SYN
// entered db-1, and B's RST is drawn as B's own.
func TestDiffTCP(t *testing.T) {
	ra := &stats.Run{Summary: stats.Summarize([]decode.Journey{tcpJourney(1, "open", 0)}, tcpNames)}
	rb := &stats.Run{Summary: stats.Summarize([]decode.Journey{tcpJourney(1, "closed", 0)}, tcpNames)}
	a, b := ra.Summary.Main(), rb.Summary.Main()
	d := stats.Compare(ra, rb)
	var buf bytes.Buffer
	if err := Diff(&buf, Header{Title: "A: open.tpk, B: closed.tpk"}, a, b, &d); err != nil {
		t.Fatal(err)
	}
	els := testenv.SVGElements(t, buf.Bytes())
	want := append(append(wantHops("", 1, a.Hops[:4]), wantHops("A", 5, a.Hops[4:])...), wantHops("B", 5, b.Hops[4:])...)
	if got := hopsOf(els); !slices.Equal(got, want) {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var drew drawn
	none := func(*stats.Hop) string { return "" }
	drew.add("", a.Hops[:4], none)
	drew.add("A", a.Hops[4:], none)
	drew.add("B", b.Hops[4:], none)
	checkDrawn(t, els, drew)
	div := testenv.Classed(els, "divergence")
	if len(div) != 1 || !strings.Contains(strings.Join(strings.Fields(div[0].Text), " "), "A went on to the SYN-ACK leaving eth0 in db-1, B went on to the RST leaving eth0 in db-1") {
		t.Errorf("divergence %v", div)
	}
	testenv.RenderSVG(t, "diff-tcp", buf.Bytes())
}
