package decode

import (
	"net/netip"
	"testing"
	"time"
)

// free is a drop probe record of packet icmpType, with reason.
func free(ts uint64, netns, ifindex uint32, icmpType uint8, reason uint32) Record {
	r := devHop(ts, netns, ifindex, ProbeKfreeSkb, icmpType)
	r.Reason, r.Location = reason, 0xffffffff81000000+ts
	return r
}

const (
	reasonPurge    = 104
	reasonNoRoutes = 88
	reasonNoSocket = 3
)

func notPurge(r *Record) bool { return r.Reason == reasonPurge }

func TestDropRecord(t *testing.T) {
	request := []Record{devHop(100, 1, 2, ProbeNetDevQueue, 8), devHop(200, 9, 2, ProbeNetifReceiveSkb, 8)}
	reply := []Record{devHop(300, 9, 2, ProbeNetDevQueue, 0), devHop(400, 1, 2, ProbeNetifReceiveSkb, 0)}
	errorBack := []Record{devHop(300, 9, 2, ProbeNetDevQueue, 3), devHop(400, 1, 2, ProbeNetifReceiveSkb, 3)}
	cat := func(rs ...[]Record) []Record {
		var out []Record
		for _, r := range rs {
			out = append(out, r...)
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		recs     []Record
		replied  bool
		icmpErr  bool
		wantTime uint64 // 0: no drop
	}{
		{"replied: the reply's copy freed after delivery is not a drop", cat(request, reply, []Record{free(450, 1, 0, 0, reasonNoSocket)}), true, false, 0},
		{"request dropped in the router", cat(request, []Record{free(250, 9, 2, 8, reasonNoRoutes)}), false, false, 250},
		{"a copy freed before the request went on", cat([]Record{free(150, 1, 2, 8, 2)}, request), false, false, 0},
		{"a request free before the reply went by", cat(request, []Record{free(250, 9, 2, 8, 2)}, reply[:1]), false, false, 0},
		{"reply dropped on the way back", cat(request, reply[:1], []Record{free(350, 1, 2, 0, 16)}), false, false, 350},
		{"a purged socket queue is not a drop", cat(request, []Record{free(900, 1, 0, 8, reasonPurge)}), false, false, 0},
		{"the error that reached us is not the drop; the request's free is", cat(request, []Record{free(250, 9, 2, 8, reasonNoRoutes)}, errorBack, []Record{free(450, 1, 0, 3, 2)}), false, true, 250},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, tc.recs, nil)
			j.Replied = tc.replied
			if tc.icmpErr {
				j.Error = &ICMPError{Family: 4, Type: 3}
			}
			for _, h := range j.Hops {
				if h.IsFree() {
					t.Fatalf("a free among the hops: %+v", h)
				}
			}
			f, ok := j.DropRecord(notPurge)
			switch {
			case tc.wantTime == 0 && ok:
				t.Errorf("drop at %d, want none", f.Time)
			case tc.wantTime != 0 && (!ok || f.Time != tc.wantTime):
				t.Errorf("drop %v at %+v, want one at %d", ok, f, tc.wantTime)
			}
		})
	}
}

func TestNewDropPlace(t *testing.T) {
	recs := []Record{devHop(100, 1, 2, ProbeNetDevQueue, 8), devHop(200, 9, 5, ProbeNetifReceiveSkb, 8), free(250, 9, 5, 8, reasonNoRoutes)}
	j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, recs, nil)
	d := j.NewDrop(&j.Frees[0], "IP_INNOROUTES", "ip_error+0x5c")
	if d.Netns != 9 || d.Ifindex != 5 || !d.In || !d.IsRequest() || d.Reason != "IP_INNOROUTES" || d.Location != "ip_error+0x5c" {
		t.Errorf("drop %+v", d)
	}
	// A free with no device takes the place of the packet's last hop.
	j.Frees[0].Netns, j.Frees[0].Ifindex = 0, 0
	if d := j.NewDrop(&j.Frees[0], "", "x+0x1"); d.Netns != 9 || d.Ifindex != 5 {
		t.Errorf("drop without a device placed in %d if%d, want 9 if5", d.Netns, d.Ifindex)
	}
}

func TestResult(t *testing.T) {
	j := Journey{}
	if r := j.Result(); r != "timeout" {
		t.Errorf("nothing known: %q", r)
	}
	j.Drop = &Drop{Reason: "IP_RPFILTER"}
	if r := j.Result(); r != "dropped" {
		t.Errorf("a drop: %q", r)
	}
	for _, tc := range []struct {
		e    ICMPError
		want string
	}{
		{ICMPError{Family: 4, Type: 3, Code: 13}, "unreachable"},
		{ICMPError{Family: 4, Type: 3, Code: 4, MTU: 1280}, "too-big"},
		{ICMPError{Family: 4, Type: 11}, "ttl-exceeded"},
		{ICMPError{Family: 6, Type: 1, Code: 4}, "unreachable"},
		{ICMPError{Family: 6, Type: 2, MTU: 1280}, "too-big"},
		{ICMPError{Family: 6, Type: 3}, "ttl-exceeded"},
	} {
		j.Error = &tc.e
		if r := j.Result(); r != tc.want {
			t.Errorf("%+v: %q, want %q", tc.e, r, tc.want)
		}
	}
	j.Replied = true
	if r := j.Result(); r != "reply" {
		t.Errorf("replied: %q", r)
	}
}

func TestICMPErrorText(t *testing.T) {
	for _, tc := range []struct {
		e        ICMPError
		text     string
		rejected bool
	}{
		{ICMPError{Family: 4, Type: 3, Code: 13}, "destination unreachable: communication administratively prohibited", true},
		{ICMPError{Family: 4, Type: 3, Code: 3}, "destination unreachable: port unreachable", true},
		{ICMPError{Family: 4, Type: 3, Code: 0}, "destination unreachable: network unreachable", false},
		{ICMPError{Family: 4, Type: 3, Code: 99}, "destination unreachable: code 99", false},
		{ICMPError{Family: 4, Type: 11, Code: 0}, "time exceeded: TTL exceeded in transit", false},
		{ICMPError{Family: 6, Type: 1, Code: 1}, "destination unreachable: communication with destination administratively prohibited", true},
		{ICMPError{Family: 6, Type: 1, Code: 3}, "destination unreachable: address unreachable", false},
		{ICMPError{Family: 6, Type: 2}, "packet too big", false},
		{ICMPError{Family: 6, Type: 3}, "time exceeded: hop limit exceeded in transit", false},
	} {
		if got := tc.e.Text(); got != tc.text || tc.e.Rejected() != tc.rejected {
			t.Errorf("%+v: %q rejected %v, want %q %v", tc.e, got, tc.e.Rejected(), tc.text, tc.rejected)
		}
	}
}

// TestStartAndSplit: times count from the first timed row of any kind (a
// kprobe verdict before the first device hop included), and a reply's
// round trip splits at the target.
func TestStartAndSplit(t *testing.T) {
	recs := []Record{devHop(1000, 1, 2, ProbeNetDevQueue, 8), devHop(1300, 9, 2, ProbeNetifReceiveSkb, 8),
		devHop(1700, 9, 2, ProbeNetDevQueue, 0), devHop(2000, 1, 2, ProbeNetifReceiveSkb, 0)}
	nf := []NetfilterEvent{{Time: 400, Netns: 1, ICMPType: 8, EchoID: 7, Seq: 1}}
	j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 7, Seq: 1}, recs, nf)
	if s := j.Start(); s != 400 {
		t.Errorf("start %d, want the verdict's 400", s)
	}
	req, target, rep, ok := j.Split()
	if !ok || req != 300*time.Nanosecond || target != 400*time.Nanosecond || rep != 300*time.Nanosecond {
		t.Errorf("split %v %v %v %v, want 300ns 400ns 300ns", req, target, rep, ok)
	}
	j.Hops = j.Hops[:2]
	if _, _, _, ok := j.Split(); ok {
		t.Error("split without a reply")
	}
}
