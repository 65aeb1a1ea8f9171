package decode

import (
	"net/netip"
	"slices"
)

// Drop is where and why the kernel dropped a packet of the echo: the free
// that ended its journey, resolved to names when the live run saw it, so a
// replay needs nothing from the machine it runs on.
type Drop struct {
	Time     uint64 // kernel CLOCK_MONOTONIC, ns
	Netns    uint32 // of the device the packet was on, or of its last hop
	Ifindex  uint32
	Ifname   string
	Family   uint8
	ICMPType uint8 // of the dropped packet: request, reply or error
	// Proto and TCPFlags are the Record's, for a TCP probe.
	Proto, TCPFlags uint8
	Src, Dst        netip.Addr
	// Reason is the kernel's enum skb_drop_reason name ("IP_INNOROUTES"),
	// empty on kernels without drop reasons.
	Reason string
	// Location is the function that freed the packet, "ip_error+0x5c".
	Location string
	// In is set when the packet had entered through the device (Ifindex)
	// when it was freed, rather than being on its way out through it.
	In bool
}

// IsRequest reports whether the dropped packet was the echo request.
func (d *Drop) IsRequest() bool { return isRequest(d.Proto, d.ICMPType, d.TCPFlags) }

// DropRecord returns the free that ended the echo, if one did. A free only
// counts as the echo's drop when the packet was not seen going further: no
// later hop of the same packet (request, reply or error), and for a request
// no reply after it. An echo that got its reply has none: the frees then
// are the copies the kernel discards after delivery. notDrop says which
// frees are never drops (a purged socket queue, say); frees of an ICMP error
// that reached the pinger are not drops either.
func (j *Journey) DropRecord(notDrop func(*Record) bool) (*Record, bool) {
	if j.Replied {
		return nil, false
	}
	for i := len(j.Frees) - 1; i >= 0; i-- {
		f := &j.Frees[i]
		if notDrop(f) || j.Error != nil && f.IsError() || j.seenAfter(f) {
			continue
		}
		return f, true
	}
	return nil, false
}

// seenAfter reports whether a hop after free f shows its packet went on.
func (j *Journey) seenAfter(f *Record) bool {
	for i := range j.Hops {
		h := &j.Hops[i]
		if h.Time <= f.Time {
			continue
		}
		same := h.IsRequest() == f.IsRequest() && h.IsError() == f.IsError()
		if same || f.IsRequest() && !h.IsRequest() && !h.IsError() {
			return true
		}
	}
	return false
}

// NewDrop is the drop of free f with its names; where the free's device is
// unknown, the last hop of the same packet before it gives the place.
func (j *Journey) NewDrop(f *Record, reason, location string) Drop {
	d := Drop{Time: f.Time, Netns: f.Netns, Ifindex: f.Ifindex, Ifname: f.IfName(), Family: f.Family,
		ICMPType: f.ICMPType, Proto: f.Proto, TCPFlags: f.TCPFlags, Src: f.Src, Dst: f.Dst, Reason: reason, Location: location}
	h, ok := j.lastBefore(f)
	if ok && d.Netns == 0 {
		d.Netns, d.Ifindex, d.Ifname = h.Netns, h.Ifindex, h.IfName()
	}
	d.In = ok && h.Netns == d.Netns && h.Ifindex == d.Ifindex && h.Probe.Direction() == In
	return d
}

// lastBefore returns the last hop of f's packet before f.
func (j *Journey) lastBefore(f *Record) (Record, bool) {
	for i := len(j.Hops) - 1; i >= 0; i-- {
		h := j.Hops[i]
		if h.Time <= f.Time && h.IsRequest() == f.IsRequest() && h.IsError() == f.IsError() {
			return h, true
		}
	}
	return Record{}, false
}

// Result is the journey's outcome as --json names it: "reply" (for a TCP
// probe "open", and "closed" for an RST; for a UDP probe "closed" for a
// port unreachable no netfilter rule sent), "dropped", "unreachable",
// "ttl-exceeded", "too-big" or "timeout". An ICMP error explains more than
// a drop (a REJECT is both), and "timeout" is left for a loss nothing
// explains.
func (j *Journey) Result() string {
	switch {
	case j.Replied && j.Proto == ProtoTCP:
		return "open"
	case j.Replied:
		return "reply"
	case j.Interrupted:
		return "interrupted"
	case j.Closed():
		return "closed"
	case j.NoSocket():
		return "closed"
	case j.Error != nil:
		return j.Error.Result()
	case j.Drop != nil:
		return "dropped"
	}
	if _, ok := j.NetfilterDrop(); ok {
		return "dropped"
	}
	return "timeout"
}

// Closed reports whether a TCP probe's answer was an RST: the port is
// closed (Result "closed"), an answer though not a reply.
func (j *Journey) Closed() bool {
	return j.Proto == ProtoTCP && !j.Replied && !j.Interrupted && j.TCPFlags&TCPRst != 0
}

// NoSocket reports whether a UDP probe was answered with a port
// unreachable from a stack with no socket on its port, not from a REJECT:
// the kernel freed the datagram for NO_SOCKET, or, where it gives no
// reasons, no netfilter rule dropped it (a REJECT shows as a rule's drop).
func (j *Journey) NoSocket() bool {
	if j.Proto != ProtoUDP || j.Replied || j.Interrupted || j.Error == nil || !j.Error.PortUnreachable() {
		return false
	}
	if j.Drop != nil && j.Drop.Reason != "" {
		return j.Drop.Reason == "NO_SOCKET"
	}
	return !slices.ContainsFunc(j.Rows(), func(r Row) bool { return r.NF != nil && r.NF.Verdict == "DROP" })
}

// Bypassed says, of a journey whose answer netfilter dropped (drop, from
// NetfilterDrop), whether the request never crossed the namespace of the
// drop, whose conntrack therefore holds no connection the answer belongs
// to: the routes are asymmetric. path lists the namespaces the request
// crossed, in order.
func (j *Journey) Bypassed(drop NetfilterEvent) (path []uint32, ok bool) {
	if drop.IsRequest() {
		return nil, false
	}
	for i := range j.Hops {
		h := &j.Hops[i]
		if !h.IsRequest() {
			continue
		}
		if h.Netns == drop.Netns {
			return nil, false
		}
		if len(path) == 0 || path[len(path)-1] != h.Netns {
			path = append(path, h.Netns)
		}
	}
	return path, len(path) > 0
}

// NetfilterDrop returns the netfilter verdict that ended the journey, if one did.
func (j *Journey) NetfilterDrop() (NetfilterEvent, bool) {
	rows := j.Rows()
	for i := len(rows) - 1; i >= 0; i-- {
		if rows[i].Drop != nil {
			continue // the free that follows a DROP verdict
		}
		if e := rows[i].NF; e != nil && e.Verdict == "DROP" {
			return *e, true
		}
		break
	}
	return NetfilterEvent{}, false
}
