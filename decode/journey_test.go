package decode

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func hop(ts uint64, cpu uint32, netns, ifindex uint32, icmpType uint8, seq uint16) Record {
	return Record{Time: ts, CPU: cpu, Netns: netns, Ifindex: ifindex, ICMPType: icmpType, EchoID: 7, Seq: seq, Family: 4}
}

func TestNewJourneyMergesCPUsInTimeOrder(t *testing.T) {
	// As the rings deliver them: all of CPU 1, then all of CPU 0.
	recs := []Record{
		hop(300, 1, 20, 2, 0, 1),
		hop(400, 1, 10, 5, 0, 1),
		{CPU: 1, Lost: 3},
		hop(100, 0, 10, 5, 8, 1),
		hop(200, 0, 20, 2, 8, 1),
		hop(200, 0, 20, 3, 8, 1),                   // same instant: keeps ring order
		hop(150, 0, 10, 5, 8, 2),                   // another echo
		{Time: 50, EchoID: 8, Seq: 1, ICMPType: 8}, // another run's id
	}
	j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, recs, nil)
	var got []uint64
	for _, h := range j.Hops {
		got = append(got, h.Time*100+uint64(h.Ifindex))
	}
	want := []uint64{10005, 20002, 20003, 30002, 40005}
	if len(got) != len(want) {
		t.Fatalf("hops %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("hops %v, want %v", got, want)
		}
	}
	if j.Lost != 3 {
		t.Errorf("lost %d, want 3", j.Lost)
	}
	if nss, ifs := j.Crossed(); nss != 2 || ifs != 3 {
		t.Errorf("crossed %d namespaces %d interfaces, want 2 and 3", nss, ifs)
	}
	if d := time.Duration(j.Hops[4].Time - j.Start()); d != 300*time.Nanosecond {
		t.Errorf("hop 4 at %v since the start", d)
	}
	last, ok := j.LastRequest()
	if !ok || last.Time != 200 || last.Ifindex != 3 {
		t.Errorf("LastRequest = %+v, %v", last, ok)
	}
	if _, ok := (&Journey{}).LastRequest(); ok {
		t.Error("LastRequest of an empty journey")
	}
}

func devHop(ts uint64, netns, ifindex uint32, p Probe, icmpType uint8) Record {
	r := hop(ts, 0, netns, ifindex, icmpType, 1)
	r.Probe = p
	return r
}

func nfEvent(netns uint32, table, chain string, hook Hook, verdict string, icmpType uint8, iif, oif uint32) NetfilterEvent {
	return NetfilterEvent{Netns: netns, Table: table, Chain: chain, Hook: hook, Type: TraceRule, Verdict: verdict,
		ICMPType: icmpType, EchoID: 7, Seq: 1, Iif: iif, Oif: oif, Source: "nftrace"}
}

// rowNames renders rows as "hop:<ifindex><dir>" or "nf:<chain>" for comparison.
func rowNames(rows []Row) string {
	var s []string
	for _, r := range rows {
		if r.Hop != nil {
			s = append(s, fmt.Sprintf("hop:%d%s", r.Hop.Ifindex, r.Hop.Probe.Direction()))
		} else {
			s = append(s, "nf:"+r.NF.Chain)
		}
	}
	return strings.Join(s, " ")
}

func TestRowsPlacesNftraceByHook(t *testing.T) {
	const root, ctr = 10, 20
	out, in := ProbeNetDevQueue, ProbeNetifReceiveSkb
	recs := []Record{
		devHop(100, root, 9, out, 8),  // bridge
		devHop(110, root, 10, out, 8), // its veth port
		devHop(120, ctr, 2, in, 8),    // container eth0
		devHop(130, ctr, 2, out, 0),
		devHop(140, root, 10, in, 0),
		devHop(150, root, 9, in, 0),
	}
	// In the order the per-namespace sockets delivered them.
	nf := []NetfilterEvent{
		nfEvent(ctr, "filter", "INPUT", HookInput, "ACCEPT", 8, 2, 0),
		nfEvent(ctr, "filter", "OUTPUT", HookOutput, "ACCEPT", 0, 0, 2),
		nfEvent(root, "nat", "OUTPUT", HookOutput, "ACCEPT", 8, 0, 9),
		nfEvent(root, "filter", "OUTPUT", HookOutput, "CONTINUE", 8, 0, 9), // a counter: left out
		nfEvent(root, "filter", "OUTPUT", HookOutput, "ACCEPT", 8, 0, 9),
		nfEvent(root, "nat", "POSTROUTING", HookPostrouting, "ACCEPT", 8, 0, 9),
		nfEvent(root, "filter", "INPUT", HookInput, "ACCEPT", 0, 9, 0),
		{Netns: root, Chain: "other-echo", EchoID: 7, Seq: 2, ICMPType: 8},
	}
	j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, recs, nf)
	got := rowNames(j.Rows())
	want := "nf:OUTPUT nf:OUTPUT nf:POSTROUTING hop:9out hop:10out hop:2in nf:INPUT nf:OUTPUT hop:2out hop:10in hop:9in nf:INPUT"
	if got != want {
		t.Errorf("rows\n got %s\nwant %s", got, want)
	}
	if rows := j.Rows(); rows[0].Time != 100 || rows[6].Time != 120 || rows[11].Time != 150 {
		t.Errorf("netfilter rows take their anchor's time: %d %d %d", rows[0].Time, rows[6].Time, rows[11].Time)
	}
}

func TestRowsPlacesDrops(t *testing.T) {
	const a, r = 10, 20
	out, in := ProbeNetDevQueue, ProbeNetifReceiveSkb
	recs := []Record{devHop(100, a, 2, out, 8), devHop(120, r, 2, in, 8)}
	nf := []NetfilterEvent{
		nfEvent(r, "filt", "fwd", HookForward, "DROP", 8, 2, 3),
		nfEvent(a, "filter", "OUTPUT", HookOutput, "ACCEPT", 8, 0, 2),
	}
	j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, recs, nf)
	if got, want := rowNames(j.Rows()), "nf:OUTPUT hop:2out hop:2in nf:fwd"; got != want {
		t.Errorf("forward drop: got %s, want %s", got, want)
	}

	// Dropped in OUTPUT before any device saw it: the journey is that row alone.
	j = NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, nil, []NetfilterEvent{nfEvent(a, "filter", "OUTPUT", HookOutput, "DROP", 8, 0, 0)})
	if got := rowNames(j.Rows()); got != "nf:OUTPUT" {
		t.Errorf("output drop: got %s", got)
	}

	// With kernel times (kprobes), time decides.
	timed := []NetfilterEvent{nfEvent(r, "filter", "FORWARD", HookForward, "DROP", 8, 2, 3), nfEvent(a, "filter", "OUTPUT", HookOutput, "ACCEPT", 8, 0, 0)}
	timed[0].Time, timed[1].Time = 125, 90
	j = NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, recs, timed)
	if got, want := rowNames(j.Rows()), "nf:OUTPUT hop:2out hop:2in nf:FORWARD"; got != want {
		t.Errorf("timed: got %s, want %s", got, want)
	}
}
