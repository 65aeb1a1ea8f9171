package stats

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

const (
	syn    = decode.TCPSyn
	synAck = decode.TCPSyn | decode.TCPAck
	rstAck = decode.TCPRst | decode.TCPAck // the target's RST: the port is closed
	rst    = decode.TCPRst                 // the prober's RST after a SYN-ACK
)

// tcpPath is a TCP probe's packets from A through router R to B and back,
// 10µs apart: the SYN, then for an open port the SYN-ACK and the prober's
// RST, for a closed one the target's RST.
func tcpPath(open bool) []decode.Record {
	type leg struct {
		netns  uint32
		ifname string
		dir    decode.Direction
	}
	there := []leg{{inoA, "eth0", decode.Out}, {inoR, "eth0", decode.In}, {inoR, "eth1", decode.Out}, {inoB, "eth0", decode.In}}
	back := []leg{{inoB, "eth0", decode.Out}, {inoR, "eth1", decode.In}, {inoR, "eth0", decode.Out}, {inoA, "eth0", decode.In}}
	var hops []decode.Record
	add := func(legs []leg, flags uint8) {
		for _, l := range legs {
			r := decode.Record{Netns: l.netns, Family: 4, Proto: decode.ProtoTCP, TCPFlags: flags, EchoID: 7, Probe: decode.ProbeNetifReceiveSkb}
			if l.dir == decode.Out {
				r.Probe = decode.ProbeNetDevQueue
			}
			copy(r.Ifname[:], l.ifname)
			hops = append(hops, r)
		}
	}
	add(there, syn)
	if open {
		add(back, synAck)
		add(there, rst)
	} else {
		add(back, rstAck)
	}
	return hops
}

// tcpJourney is TCP probe seq to port 80 over hops, with the outcome the
// prober saw: open (a SYN-ACK), closed (an RST) or nothing.
func tcpJourney(seq uint16, result string, hops []decode.Record) decode.Journey {
	j := decode.Journey{Outcome: decode.Outcome{Target: netip.MustParseAddr("10.0.1.2"), EchoID: 7, Seq: seq, Timeout: time.Second,
		Proto: decode.ProtoTCP, Port: 80}}
	t := uint64(seq) * 1e9
	for _, h := range hops {
		t += 10000
		h.Time, h.Seq = t, seq
		j.Hops = append(j.Hops, h)
	}
	switch result {
	case "open":
		j.Replied, j.TCPFlags, j.From, j.RTT = true, synAck, j.Target, 100*time.Microsecond
	case "closed":
		j.TCPFlags, j.From = rstAck, j.Target
	}
	return j
}

// TestSummarizeTCP: TCP probes group by the path of their packets; open
// ports count as replies, closed ones apart, and neither is lost; the
// kernel path ends with the SYN-ACK, not the prober's RST after it.
func TestSummarizeTCP(t *testing.T) {
	js := []decode.Journey{
		tcpJourney(1, "open", tcpPath(true)),
		tcpJourney(2, "closed", tcpPath(false)),
		tcpJourney(3, "open", tcpPath(true)),
		tcpJourney(4, "", tcpPath(true)[:2]), // the SYN vanished in R
		tcpJourney(5, "closed", tcpPath(false)),
		tcpJourney(6, "open", tcpPath(true)),
	}
	s := Summarize(js, routerNames)
	if s.Echoes != 6 || s.Replied != 3 || s.Closed != 2 || s.Proto != decode.ProtoTCP || s.Port != 80 || len(s.Groups) != 2 {
		t.Fatalf("summary: %d probes, %d open, %d closed, proto %d port %d, %d groups", s.Echoes, s.Replied, s.Closed, s.Proto, s.Port, len(s.Groups))
	}
	open, closed := s.Groups[0], s.Groups[1]
	if open.Echoes != 4 || open.Replied != 3 || open.Closed != 0 || !slices.Equal(open.Seqs, []uint16{1, 3, 4, 6}) {
		t.Errorf("open group: %d probes, %d open, %d closed, seqs %v", open.Echoes, open.Replied, open.Closed, open.Seqs)
	}
	if closed.Echoes != 2 || closed.Replied != 0 || closed.Closed != 2 || !slices.Equal(closed.Seqs, []uint16{2, 5}) {
		t.Errorf("closed group: %d probes, %d open, %d closed, seqs %v", closed.Echoes, closed.Replied, closed.Closed, closed.Seqs)
	}
	var types []string
	var sides []Side
	for _, h := range open.Hops {
		types, sides = append(types, h.Type), append(sides, h.Side)
	}
	q, a := SideRequest, SideAnswer
	if want := []string{"syn", "syn", "syn", "syn", "syn-ack", "syn-ack", "syn-ack", "syn-ack", "rst", "rst", "rst", "rst"}; !slices.Equal(types, want) {
		t.Errorf("open group's types %v, want %v", types, want)
	}
	if want := []Side{q, q, q, q, a, a, a, a, q, q, q, q}; !slices.Equal(sides, want) {
		t.Errorf("open group's sides %v, want %v", sides, want)
	}
	if h := closed.Hops[4]; h.Place != (Place{Netns: "b", Ifname: "eth0", Dir: decode.Out, Type: "rst", Side: SideAnswer}) {
		t.Errorf("closed group's hop 5: %+v", h.Place)
	}
	for i, h := range closed.Hops {
		if h.LostAfter != 0 {
			t.Errorf("closed group's hop %d: %d lost after it", i+1, h.LostAfter)
		}
	}
	if open.Hops[1].LostAfter != 1 || open.Hops[11].LostAfter != 0 {
		t.Errorf("open group: %d lost after hop 2, %d after hop 12", open.Hops[1].LostAfter, open.Hops[11].LostAfter)
	}
	// First SYN hop to the SYN-ACK entering A: seven hops of 10µs.
	if open.Kernel.P50 != 70*time.Microsecond || open.RTT.P50 != 100*time.Microsecond {
		t.Errorf("kernel path %v, round trip %v", open.Kernel.P50, open.RTT.P50)
	}
	for _, c := range []struct {
		h    *Hop
		want string
	}{
		{&open.Hops[0], "the SYN leaving eth0 in a"},
		{&open.Hops[4], "the SYN-ACK leaving eth0 in b"},
		{&open.Hops[11], "the RST entering eth0 in b"},
		{&closed.Hops[7], "the RST entering eth0 in a"},
	} {
		if got := HopText(c.h); got != c.want {
			t.Errorf("HopText = %q, want %q", got, c.want)
		}
	}
}

// TestSummarizeTCPError: an ICMP error quoting a SYN is on the error side,
// named by its result, and counted where it was first seen.
func TestSummarizeTCPError(t *testing.T) {
	hops := tcpPath(false)[:2]
	unreach := decode.Record{Netns: inoR, Family: 4, Proto: decode.ProtoTCP, ICMPType: 3, Probe: decode.ProbeNetDevQueue}
	copy(unreach.Ifname[:], "eth0")
	j := tcpJourney(1, "", append(hops, unreach))
	j.Error = &decode.ICMPError{Family: 4, Type: 3, Code: 13, From: netip.MustParseAddr("10.0.0.1")}
	g := Summarize([]decode.Journey{j}, routerNames).Groups[0]
	h := g.Hops[2]
	if h.Type != "unreachable" || h.Side != SideError || len(h.Errors) != 1 || h.LostAfter != 1 {
		t.Errorf("error hop %+v", h)
	}
	if got, want := HopText(&h), "the ICMP error (unreachable) leaving eth0 in r"; got != want {
		t.Errorf("HopText = %q, want %q", got, want)
	}
}

func TestCompareTCP(t *testing.T) {
	open := run(here, routerNames, tcpJourney(1, "open", tcpPath(true)), tcpJourney(2, "open", tcpPath(true)))
	closed := run(here, routerNames, tcpJourney(1, "closed", tcpPath(false)))
	if d := Compare(closed, closed); !d.Same {
		t.Errorf("closed against closed: %+v", d)
	}
	d := Compare(open, closed)
	if d.Same || d.Divergence == nil || d.Divergence.Common != 4 {
		t.Fatalf("open against closed: %+v", d)
	}
	want := "the runs part after the SYN entering eth0 in b: A went on to the SYN-ACK leaving eth0 in b, B went on to the RST leaving eth0 in b"
	if d.Divergence.Text != want || !d.Divergence.A.Replied || !d.Divergence.B.Closed {
		t.Errorf("divergence %q\nwant %q", d.Divergence.Text, want)
	}

	// The SYN vanished in R: B stops where A went on.
	lost := run(here, routerNames, tcpJourney(1, "", tcpPath(true)[:2]))
	want = "B stops after the SYN entering eth0 in r, where A went on to the SYN leaving eth1 in r"
	if d := Compare(open, lost); d.Divergence == nil || d.Divergence.Text != want {
		t.Errorf("divergence %+v\nwant %q", d.Divergence, want)
	}
	// B got an answer where A did not: the answer is named.
	if d := Compare(lost, open); d.Divergence == nil || d.Divergence.B.Answer != "the SYN-ACK" {
		t.Errorf("divergence %+v", d.Divergence)
	}

	other := run(here, routerNames, tcpJourney(1, "open", tcpPath(true)))
	other.Summary.Port = 8080
	if d := Compare(open, other); len(d.Notes) != 1 || d.Notes[0] != "A traced TCP port 80 of 10.0.1.2, B TCP port 8080 of 10.0.1.2" {
		t.Errorf("other port: notes %q", d.Notes)
	}
	echoes := run(here, routerNames, journey(1, true, routerPath("eth1")))
	if d := Compare(echoes, open); len(d.Notes) != 1 || d.Notes[0] != "A traced echoes to 10.0.1.2, B TCP port 80 of 10.0.1.2" {
		t.Errorf("echoes against TCP: notes %q", d.Notes)
	}
}
