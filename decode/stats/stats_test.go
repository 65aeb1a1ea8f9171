package stats

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// The literal journeys below go A -> R -> B and back; R is a router.
const (
	inoA, inoR, inoB = 4026532100, 4026532200, 4026532300
)

var routerNames = Names{inoA: {Name: "a"}, inoR: {Name: "r"}, inoB: {Name: "b"}}

type hopSpec struct {
	netns  uint32
	ifname string
	dir    decode.Direction
	req    bool
	dt     uint64 // ns since the previous hop
}

func routerPath(via string, dts ...uint64) []hopSpec {
	out, in := decode.Out, decode.In
	p := []hopSpec{
		{inoA, "eth0", out, true, 0}, {inoR, "eth0", in, true, 0}, {inoR, via, out, true, 0}, {inoB, "eth0", in, true, 0},
		{inoB, "eth0", out, false, 0}, {inoR, via, in, false, 0}, {inoR, "eth0", out, false, 0}, {inoA, "eth0", in, false, 0},
	}
	for i := range p {
		p[i].dt = 10000
		if i < len(dts) {
			p[i].dt = dts[i]
		}
	}
	p[0].dt = 0
	return p
}

// journey builds echo seq over hops; replied echoes get a round trip of
// the kernel path plus 50µs.
func journey(seq uint16, replied bool, hops []hopSpec, nf ...decode.NetfilterEvent) decode.Journey {
	j := decode.Journey{Outcome: decode.Outcome{Target: netip.MustParseAddr("10.0.1.2"), EchoID: 7, Seq: seq, Replied: replied, Timeout: time.Second}}
	t := uint64(seq) * 1e9
	for _, h := range hops {
		t += h.dt
		r := decode.Record{Time: t, Netns: h.netns, Family: 4, EchoID: 7, Seq: seq, Probe: decode.ProbeNetifReceiveSkb}
		if h.dir == decode.Out {
			r.Probe = decode.ProbeNetDevQueue
		}
		if !h.req {
			r.ICMPType = 0
		} else {
			r.ICMPType = 8
		}
		copy(r.Ifname[:], h.ifname)
		j.Hops = append(j.Hops, r)
	}
	for _, e := range nf {
		e.EchoID, e.Seq = 7, seq
		j.Netfilter = append(j.Netfilter, e)
	}
	if replied {
		j.RTT = time.Duration(j.Hops[len(j.Hops)-1].Time-j.Hops[0].Time) + 50*time.Microsecond
	}
	return j
}

func forwardDrop() decode.NetfilterEvent {
	return decode.NetfilterEvent{Netns: inoR, Table: "filter", Chain: "FORWARD", Hook: decode.HookForward, Type: decode.TraceRule,
		Verdict: "DROP", RuleHandle: 7, Rule: "icmp type echo-request drop", ICMPType: 8, Iif: 2, Source: "nftrace"}
}

func outputAccept() decode.NetfilterEvent {
	return decode.NetfilterEvent{Netns: inoA, Table: "filter", Chain: "OUTPUT", Hook: decode.HookOutput, Type: decode.TracePolicy,
		Verdict: "ACCEPT", ICMPType: 8, Source: "nftrace"}
}

func TestPercentilesNearestRank(t *testing.T) {
	var hundred []time.Duration
	for i := 100; i >= 1; i-- {
		hundred = append(hundred, time.Duration(i))
	}
	for _, tc := range []struct {
		in   []time.Duration
		want Percentiles
	}{
		{nil, Percentiles{}},
		{[]time.Duration{5}, Percentiles{1, 5, 5, 5, 5}},
		{[]time.Duration{2, 1}, Percentiles{2, 1, 2, 2, 2}},
		{hundred, Percentiles{100, 50, 90, 99, 100}},
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 1000}, Percentiles{10, 5, 9, 1000, 1000}},
	} {
		if got := percentiles(slices.Clone(tc.in)); got != tc.want {
			t.Errorf("percentiles(%v) = %+v, want %+v", tc.in, got, tc.want)
		}
	}
}

func TestSummarizeGroupsByPath(t *testing.T) {
	drop := routerPath("eth1")[:2]
	js := []decode.Journey{
		journey(1, true, routerPath("eth1", 0, 20000), outputAccept()),
		journey(2, true, routerPath("eth1", 0, 30000), outputAccept()),
		journey(3, false, drop, outputAccept(), forwardDrop()),
		journey(4, true, routerPath("eth2")),
		journey(5, true, routerPath("eth1", 0, 40000), outputAccept()),
		journey(6, false, nil),
		journey(7, true, routerPath("eth2")),
	}
	s := Summarize(js, routerNames)
	if s.Echoes != 7 || s.Replied != 5 || s.Unseen != 1 || len(s.Groups) != 2 {
		t.Fatalf("summary: %d echoes, %d replied, %d unseen, %d groups", s.Echoes, s.Replied, s.Unseen, len(s.Groups))
	}
	g := s.Groups[0]
	if g.Echoes != 4 || g.Replied != 3 || !slices.Equal(g.Seqs, []uint16{1, 2, 3, 5}) || len(g.Hops) != 8 {
		t.Fatalf("main group: %d echoes %d replied seqs %v, %d hops", g.Echoes, g.Replied, g.Seqs, len(g.Hops))
	}
	h := g.Hops[1]
	if h.Place != (Place{Netns: "r", Ifname: "eth0", Dir: decode.In, Type: "request", Side: SideRequest}) || h.Inode != inoR {
		t.Errorf("hop 1 is %+v", h)
	}
	if h.Count != 4 || h.LostAfter != 1 || h.Delta != (Percentiles{4, 20000, 40000, 40000, 40000}) {
		t.Errorf("hop 1: count %d lost after %d delta %+v", h.Count, h.LostAfter, h.Delta)
	}
	if !slices.Equal(h.Drops, []Count{{"NETFILTER_DROP", 1}}) ||
		!slices.Equal(h.Verdicts, []Verdict{{"filter.FORWARD", "DROP", "rule 7: icmp type echo-request drop", 1}}) {
		t.Errorf("hop 1: drops %v verdicts %v", h.Drops, h.Verdicts)
	}
	// The output chain's verdict belongs to the first hop, before it.
	if !slices.Equal(g.Hops[0].Verdicts, []Verdict{{"filter.OUTPUT", "ACCEPT", "policy", 4}}) || g.Hops[0].Delta.N != 0 {
		t.Errorf("hop 0: verdicts %v delta %+v", g.Hops[0].Verdicts, g.Hops[0].Delta)
	}
	if g.Hops[2].Count != 3 || g.Hops[7].LostAfter != 0 {
		t.Errorf("hop 2 count %d, hop 7 lost after %d", g.Hops[2].Count, g.Hops[7].LostAfter)
	}
	// Kernel path 80µs, 90µs, 100µs; round trips 50µs more.
	if g.Kernel != (Percentiles{3, 90000, 100000, 100000, 100000}) || g.RTT.P50 != 140*time.Microsecond {
		t.Errorf("kernel %+v rtt %+v", g.Kernel, g.RTT)
	}
	if share := g.KernelShare(); share != 90.0/140 {
		t.Errorf("kernel share %v", share)
	}
	r := s.Groups[1]
	if r.Echoes != 2 || r.Hops[2].Ifname != "eth2" || !slices.Equal(r.Seqs, []uint16{4, 7}) {
		t.Errorf("rerouted group: %d echoes, hop 2 %s, seqs %v", r.Echoes, r.Hops[2].Ifname, r.Seqs)
	}
}

func TestSummarizeLostEchoOnItsOwnPath(t *testing.T) {
	s := Summarize([]decode.Journey{journey(1, false, routerPath("eth1")[:3])}, routerNames)
	if len(s.Groups) != 1 || s.Groups[0].Replied != 0 || s.Groups[0].Hops[2].LostAfter != 1 {
		t.Fatalf("%+v", s)
	}
}

func TestUnnamedNamespacesByOrder(t *testing.T) {
	a := Summarize([]decode.Journey{journey(1, true, routerPath("eth1"))}, nil)
	other := routerPath("eth1")
	for i := range other {
		other[i].netns += 7 // the same topology, made again
	}
	b := Summarize([]decode.Journey{journey(1, true, other)}, nil)
	if pa, pb := a.Groups[0].Path(), b.Groups[0].Path(); !slices.Equal(pa, pb) || pa[1].Netns != "#2" || pa[3].Netns != "#3" {
		t.Errorf("paths %v and %v", pa, pb)
	}
	if got := NetnsText(&b.Groups[0].Hops[0]); got != "network namespace 4026532107" {
		t.Errorf("NetnsText = %q", got)
	}
}

func TestOutlier(t *testing.T) {
	var js []decode.Journey
	for seq := uint16(1); seq <= 20; seq++ {
		dts := []uint64{0, 10000, 11000, 9000, 12000, 10000, 10000, 10000}
		if seq == 20 {
			dts[3] = 200000 // one stall at B's input
		}
		js = append(js, journey(seq, true, routerPath("eth1", dts...)))
	}
	g := Summarize(js, routerNames).Groups[0]
	for i, h := range g.Hops {
		if h.Outlier != (i == 3) {
			t.Errorf("hop %d (p99 %v): outlier %v", i, h.Delta.P99, h.Outlier)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0ns", 850: "850ns", 3100: "3.1µs", 21000: "21µs", 123456: "123µs",
		1500 * time.Microsecond: "1.5ms", 2 * time.Second: "2s",
	} {
		if got := FormatDuration(d); got != want {
			t.Errorf("FormatDuration(%d) = %q, want %q", d, got, want)
		}
	}
}

// unreachable is echo seq refused by R: the request enters R, and R's ICMP
// error goes back to A.
func unreachable(seq uint16) decode.Journey {
	p := routerPath("eth1")[:2]
	p = append(p, hopSpec{inoR, "eth0", decode.Out, false, 9000}, hopSpec{inoA, "eth0", decode.In, false, 8000})
	j := journey(seq, false, p)
	for i := 2; i < 4; i++ {
		j.Hops[i].ICMPType = 3
	}
	j.Error = &decode.ICMPError{Family: 4, Type: 3, Code: 13, From: netip.MustParseAddr("10.0.0.1")}
	return j
}

func TestSummarizeDropsAndErrors(t *testing.T) {
	dropped := journey(1, false, routerPath("eth1")[:2])
	dropped.Drop = &decode.Drop{Time: dropped.Hops[1].Time + 5000, Netns: inoR, Ifname: "eth0", Family: 4, ICMPType: 8, Reason: "IP_INNOROUTES", In: true}
	s := Summarize([]decode.Journey{dropped, journey(2, false, routerPath("eth1")[:2])}, routerNames)
	if h := s.Groups[0].Hops[1]; !slices.Equal(h.Drops, []Count{{"IP_INNOROUTES", 1}}) || h.LostAfter != 2 || len(h.Verdicts) != 0 {
		t.Errorf("a kernel drop: %+v", h)
	}
	s = Summarize([]decode.Journey{unreachable(1), unreachable(2)}, routerNames)
	g := s.Groups[0]
	if len(s.Groups) != 1 || len(g.Hops) != 4 || g.Hops[2].Type != "unreachable" || g.Hops[3].LostAfter != 2 {
		t.Fatalf("%+v", s)
	}
	want := []Count{{"destination unreachable: communication administratively prohibited from 10.0.0.1", 2}}
	if !slices.Equal(g.Hops[2].Errors, want) {
		t.Errorf("errors %v", g.Hops[2].Errors)
	}
	if got := HopText(&g.Hops[2]); got != "the ICMP error (unreachable) leaving eth0 in r" {
		t.Errorf("HopText = %q", got)
	}
}
