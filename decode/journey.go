package decode

import (
	"cmp"
	"net/netip"
	"slices"
	"time"
)

// Outcome is how one echo request ended: what the pinger saw and, for a
// loss, what the live run found out about it.
type Outcome struct {
	Target  netip.Addr
	EchoID  uint16
	Seq     uint16
	Replied bool
	// RTT is the round trip the pinger measured, when Replied.
	RTT time.Duration
	// Timeout is how long the pinger waited, when not Replied.
	Timeout time.Duration
	// Interrupted: a signal ended the wait for the reply, after Timeout.
	Interrupted bool
	// Proto is ProtoTCP or ProtoUDP for a TCP or UDP probe to Port of
	// Target, 0 for an echo.
	Proto uint8
	Port  uint16
	// TCPFlags are the flags of the TCP answer that reached the prober:
	// SYN|ACK for an open port (then Replied), RST for a closed one;
	// UDPAnswer for a UDP reply.
	TCPFlags uint8
	// From is the address the TCP or UDP answer came from.
	From netip.Addr
	// Source is the address and port a TCP or UDP probe was sent from, as
	// the prober's socket holds them: NAT in the prober's own namespace
	// rewrites them before the first hop can see them. Invalid for an
	// echo, and in recordings made before the tool kept it.
	Source netip.AddrPort
	// NetfilterLost counts the netfilter trace messages lost while this
	// echo was traced (socket overflows, unparsable messages); the journey
	// adds them to its Lost.
	NetfilterLost uint64
	// Notes say what went wrong while this echo was traced, without
	// losing what was seen of it.
	Notes []string
	// Error is the ICMP error about the request that reached the pinger.
	Error *ICMPError
	// Drop is the free that ended the journey, when one did.
	Drop *Drop
	// Hint is the state that explains a loss, read at the time in the
	// namespace where it happened (route lookup, sysctls, neighbour, link).
	Hint string
}

// Journey is what one echo request and its reply did inside the machine.
type Journey struct {
	Outcome
	// Hops are the records of this echo in kernel time order.
	Hops []Record
	// Netfilter are the chain verdicts on this echo, in the order they came.
	Netfilter []NetfilterEvent
	// Lost counts records the rings dropped while this echo was traced,
	// and the netfilter trace messages lost (Outcome.NetfilterLost).
	Lost uint64
	// Frees are the drop probe's records of this echo's packets, in kernel
	// time order; most are not drops (see DropRecord).
	Frees []Record
}

// NewJourney keeps the records and netfilter events of echo o among recs
// and nf: live runs and replays build journeys here alike. Records are
// merged across CPUs in kernel time order (records of the same instant keep
// their order); of the netfilter events, the rules that only let the packet
// continue (counters, logs) are left out.
func NewJourney(o Outcome, recs []Record, nf []NetfilterEvent) Journey {
	j := Journey{Outcome: o, Lost: o.NetfilterLost}
	id, seq := o.EchoID, o.Seq
	for _, e := range nf {
		if e.EchoID == id && e.Seq == seq && !(e.Type == TraceRule && e.Verdict == "CONTINUE") {
			j.Netfilter = append(j.Netfilter, e)
		}
	}
	for i := range recs {
		r := &recs[i]
		switch {
		case r.Lost != 0:
			j.Lost += r.Lost
		case r.EchoID != id || r.Seq != seq:
		case r.IsNetfilter():
			j.Netfilter = append(j.Netfilter, r.NetfilterEvent())
		case r.IsFree():
			j.Frees = append(j.Frees, *r)
		default:
			j.Hops = append(j.Hops, *r)
		}
	}
	byTime := func(a, b Record) int { return cmp.Compare(a.Time, b.Time) }
	slices.SortStableFunc(j.Hops, byTime)
	slices.SortStableFunc(j.Frees, byTime)
	return j
}

// Start is the kernel time of the journey's first timed row of any kind
// (hop, netfilter event with a time, drop), which times are counted from;
// 0 when none has one.
func (j *Journey) Start() uint64 {
	var start uint64
	earliest := func(t uint64) {
		if t != 0 && (start == 0 || t < start) {
			start = t
		}
	}
	if len(j.Hops) > 0 {
		earliest(j.Hops[0].Time)
	}
	for i := range j.Netfilter {
		earliest(j.Netfilter[i].Time)
	}
	if j.Drop != nil {
		earliest(j.Drop.Time)
	}
	return start
}

// Split divides the round trip the hops show into the request's path (first
// to last request hop), the target's own stack (last request hop to first
// reply hop) and the reply's path (first to last reply hop); ok is false
// without both request and reply hops.
func (j *Journey) Split() (request, target, reply time.Duration, ok bool) {
	var firstReq, lastReq, firstRep, lastRep *Record
	for i := range j.Hops {
		h := &j.Hops[i]
		switch {
		case h.IsRequest() && firstRep != nil && h.Proto == ProtoTCP:
			// The prober's own RST, after a TCP probe's answer.
		case h.IsRequest():
			if firstReq == nil {
				firstReq = h
			}
			lastReq = h
		case !h.IsError():
			if firstRep == nil {
				firstRep = h
			}
			lastRep = h
		}
	}
	if firstReq == nil || firstRep == nil || firstRep.Time < lastReq.Time {
		return 0, 0, 0, false
	}
	return time.Duration(lastReq.Time - firstReq.Time), time.Duration(firstRep.Time - lastReq.Time),
		time.Duration(lastRep.Time - firstRep.Time), true
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

// Row is one line of a journey: a device hop, a netfilter verdict or the drop.
type Row struct {
	Hop  *Record
	NF   *NetfilterEvent
	Drop *Drop
	// Time is the row's kernel time: its own, or for a netfilter event
	// without one, the time of the hop it is placed next to.
	Time uint64
}

// Rows merges hops and netfilter events in the order the packet met them.
// Events with a kernel time are ordered by it. Events without one (nftrace)
// are placed by hook: PREROUTING, INPUT and FORWARD right after the packet
// entered that namespace through the input interface, OUTPUT and POSTROUTING
// right before it left through the output interface.
func (j *Journey) Rows() []Row {
	type slotted struct {
		row     Row
		slot    int // twice the hop index, minus one before it or plus one after it
		arrival int // the row's index in the hops, then the events
	}
	rows := make([]slotted, 0, len(j.Hops)+len(j.Netfilter)+1)
	for i := range j.Hops {
		rows = append(rows, slotted{Row{Hop: &j.Hops[i], Time: j.Hops[i].Time}, 2 * i, len(rows)})
	}
	for i := range j.Netfilter {
		e := &j.Netfilter[i]
		slot, t := j.slotOf(e)
		rows = append(rows, slotted{Row{NF: e, Time: t}, slot, len(rows)})
	}
	if d := j.Drop; d != nil {
		// After the hops before it, and after any verdict placed there: the
		// verdict comes first, the free follows.
		rows = append(rows, slotted{Row{Drop: d, Time: d.Time}, 2*j.hopsUntil(d.Time) - 1, len(rows)})
	}
	slices.SortStableFunc(rows, func(a, b slotted) int {
		if a.slot != b.slot {
			return a.slot - b.slot
		}
		// Between the same hops: kernel time where both have their own
		// (kprobe records come in ring order), else the order they came in.
		if a.row.NF != nil && b.row.NF != nil && a.row.NF.Time != 0 && b.row.NF.Time != 0 && a.row.Time != b.row.Time {
			return cmp.Compare(a.row.Time, b.row.Time)
		}
		return a.arrival - b.arrival
	})
	out := make([]Row, len(rows))
	for i, r := range rows {
		out[i] = r.row
	}
	return out
}

// hopsUntil counts the hops at or before kernel time t.
func (j *Journey) hopsUntil(t uint64) int {
	i, _ := slices.BinarySearchFunc(j.Hops, t, func(h Record, t uint64) int {
		if h.Time <= t {
			return -1
		}
		return 1
	})
	return i
}

// slotOf returns the slot of a netfilter event among the hops (see Rows),
// and the time shown for it.
func (j *Journey) slotOf(e *NetfilterEvent) (int, uint64) {
	if e.Time != 0 {
		return 2*j.hopsUntil(e.Time) - 1, e.Time
	}
	matches := func(h *Record, dir Direction, ifindex uint32) bool {
		// A TCP probe's packets (SYN, answer, the prober's RST) are told
		// apart by their flags; an echo's are 0.
		return h.Netns == e.Netns && h.IsRequest() == e.IsRequest() && h.TCPFlags == e.TCPFlags && h.Probe.Direction() == dir &&
			(ifindex == 0 || h.Ifindex == ifindex)
	}
	if e.Hook == HookOutput || e.Hook == HookPostrouting {
		for i := range j.Hops {
			if matches(&j.Hops[i], Out, e.Oif) {
				return 2*i - 1, j.Hops[i].Time
			}
		}
	}
	// Input side, or an output hook whose packet never left: right after
	// the packet entered this namespace.
	for i := range j.Hops {
		if matches(&j.Hops[i], In, e.Iif) {
			return 2*i + 1, j.Hops[i].Time
		}
	}
	// No hop to anchor to: the packet died in this namespace after its last
	// hop here; or it never had one, because it was born here and died
	// before leaving (a request first, a reply last).
	for i := len(j.Hops) - 1; i >= 0; i-- {
		if j.Hops[i].Netns == e.Netns {
			return 2*i + 1, j.Hops[i].Time
		}
	}
	if e.IsRequest() {
		return -1, 0
	}
	return 2 * len(j.Hops), 0
}
