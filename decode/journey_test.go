package decode

import (
	"net/netip"
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
	j := NewJourney(netip.MustParseAddr("10.0.0.2"), 7, 1, recs)
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
	if d := j.Since(4); d != 300*time.Nanosecond {
		t.Errorf("Since(4) = %v", d)
	}
	last, ok := j.LastRequest()
	if !ok || last.Time != 200 || last.Ifindex != 3 {
		t.Errorf("LastRequest = %+v, %v", last, ok)
	}
	if _, ok := (&Journey{}).LastRequest(); ok {
		t.Error("LastRequest of an empty journey")
	}
}
