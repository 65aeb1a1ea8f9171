package decode

import (
	"net/netip"
	"slices"
	"time"
)

// Journey is what one echo request and its reply did inside the machine.
type Journey struct {
	Target  netip.Addr
	EchoID  uint16
	Seq     uint16
	Replied bool
	// RTT is the round trip the pinger measured, when Replied.
	RTT time.Duration
	// Timeout is how long the pinger waited, when not Replied.
	Timeout time.Duration
	// Hops are the records of this echo in kernel time order.
	Hops []Record
	// Lost counts records the rings dropped while this echo was traced.
	Lost uint64
}

// NewJourney keeps the records of echo (id, seq) among recs, merged across
// CPUs in kernel time order; records of the same instant keep their order.
func NewJourney(target netip.Addr, id, seq uint16, recs []Record) Journey {
	j := Journey{Target: target, EchoID: id, Seq: seq}
	for i := range recs {
		r := &recs[i]
		switch {
		case r.Lost != 0:
			j.Lost += r.Lost
		case r.EchoID == id && r.Seq == seq:
			j.Hops = append(j.Hops, *r)
		}
	}
	slices.SortStableFunc(j.Hops, func(a, b Record) int {
		switch {
		case a.Time < b.Time:
			return -1
		case a.Time > b.Time:
			return 1
		}
		return 0
	})
	return j
}

// Since is the time of hop i since the first hop.
func (j *Journey) Since(i int) time.Duration {
	return time.Duration(j.Hops[i].Time - j.Hops[0].Time)
}

// Crossed counts the distinct network namespaces and interfaces of the hops.
func (j *Journey) Crossed() (namespaces, interfaces int) {
	type iface struct{ netns, ifindex uint32 }
	nss := map[uint32]bool{}
	ifs := map[iface]bool{}
	for _, h := range j.Hops {
		nss[h.Netns] = true
		ifs[iface{h.Netns, h.Ifindex}] = true
	}
	return len(nss), len(ifs)
}

// LastRequest returns the last hop of the echo request, if any was seen.
func (j *Journey) LastRequest() (Record, bool) {
	for i := len(j.Hops) - 1; i >= 0; i-- {
		if j.Hops[i].IsRequest() {
			return j.Hops[i], true
		}
	}
	return Record{}, false
}
