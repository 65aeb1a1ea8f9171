package tpk

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

func unzoned(a netip.Addr) netip.Addr {
	if a.Zone() != "" {
		return a.WithZone("")
	}
	return a
}

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		a4 := a.As4()
		return append(append(b, 4), a4[:]...)
	case a.Is6():
		a16 := a.As16()
		return append(append(b, 6), a16[:]...)
	}
	return append(b, 0)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// appendEntry appends a length-prefixed entry built by f, so that readers can
// skip fields appended to it later.
func appendEntry(b []byte, tmp *[]byte, f func([]byte) []byte) []byte {
	*tmp = f((*tmp)[:0])
	b = binary.AppendUvarint(b, uint64(len(*tmp)))
	return append(b, *tmp...)
}

// encodeHeader: ToolVersion KernelRelease Hostname BootID:string
// StartWall:(seconds:varint nanoseconds:uvarint) StartKtime:uvarint
// Args Capabilities:list(string); then, appended for a run of TCP probes
// only (version 3), Proto:u8.
func encodeHeader(b []byte, h *Header) []byte {
	b = appendString(b, h.ToolVersion)
	b = appendString(b, h.KernelRelease)
	b = appendString(b, h.Hostname)
	b = appendString(b, h.BootID)
	b = binary.AppendVarint(b, h.StartWall.Unix())
	b = binary.AppendUvarint(b, uint64(h.StartWall.Nanosecond()))
	b = binary.AppendUvarint(b, h.StartKtime)
	b = appendStrings(b, h.Args)
	b = appendStrings(b, h.Capabilities)
	if h.Proto != 0 {
		b = append(b, h.Proto)
	}
	return b
}

// encodeSnapshot: list(length:uvarint namespace), namespace = Inode:uvarint
// Names:list(string) Pids:list(varint) Comms:list(string)
// Interfaces:list(length:uvarint interface), interface = Ifindex:uvarint
// Name Kind:string PeerIfindex PeerNetns:uvarint Master:string Addrs:list(prefix);
// then, appended to a namespace whose owner is known, Owner = Kind ID
// Name:string Pid:varint Comm:string (a writer that appends more after it
// writes it, empty or not).
func encodeSnapshot(b []byte, s *decode.Snapshot) []byte {
	var nsBuf, ifBuf []byte
	b = binary.AppendUvarint(b, uint64(len(s.Namespaces)))
	for i := range s.Namespaces {
		ns := &s.Namespaces[i]
		b = appendEntry(b, &nsBuf, func(b []byte) []byte {
			b = binary.AppendUvarint(b, uint64(ns.Inode))
			b = appendStrings(b, ns.Names)
			b = binary.AppendUvarint(b, uint64(len(ns.Pids)))
			for _, p := range ns.Pids {
				b = binary.AppendVarint(b, int64(p))
			}
			b = appendStrings(b, ns.Comms)
			b = binary.AppendUvarint(b, uint64(len(ns.Interfaces)))
			for j := range ns.Interfaces {
				ifc := &ns.Interfaces[j]
				b = appendEntry(b, &ifBuf, func(b []byte) []byte {
					b = binary.AppendUvarint(b, uint64(ifc.Ifindex))
					b = appendString(b, ifc.Name)
					b = appendString(b, ifc.Kind)
					b = binary.AppendUvarint(b, uint64(ifc.PeerIfindex))
					b = binary.AppendUvarint(b, uint64(ifc.PeerNetns))
					b = appendString(b, ifc.Master)
					b = binary.AppendUvarint(b, uint64(len(ifc.Addrs)))
					for _, p := range ifc.Addrs {
						b = appendAddr(b, p.Addr())
						b = append(b, byte(p.Bits())) // -1 (invalid) becomes 0xff
					}
					return b
				})
			}
			// Appended: older readers stop before it, and namespaces nobody
			// owns stay as version 1 first wrote them.
			if o := &ns.Owner; o.Kind != "" {
				for _, s := range []string{o.Kind, o.ID, o.Name} {
					b = appendString(b, s)
				}
				b = binary.AppendVarint(b, int64(o.Pid))
				b = appendString(b, o.Comm)
			}
			return b
		})
	}
	return b
}

// The Replied byte of an outcome.
const (
	outcomeTimeout     byte = 0
	outcomeReply       byte = 1
	outcomeInterrupted byte = 2
)

// encodeOutcome: Target:addr EchoID Seq:uvarint Replied:u8 (0 timeout, 1 reply,
// 2 interrupted by a signal) RTT Timeout:varint ns; then the appended fields
// below. Netfilter events and the drop are laid out as version v has them.
func encodeOutcome(b []byte, o *EchoOutcome, v uint16) []byte {
	b = appendAddr(b, unzoned(o.Target))
	b = binary.AppendUvarint(b, uint64(o.EchoID))
	b = binary.AppendUvarint(b, uint64(o.Seq))
	result := outcomeTimeout
	switch {
	case o.Replied:
		result = outcomeReply
	case o.Interrupted:
		result = outcomeInterrupted
	}
	b = append(b, result)
	b = binary.AppendVarint(b, int64(o.RTT))
	b = binary.AppendVarint(b, int64(o.Timeout))
	// Appended fields, only when there is something to say: older readers
	// stop before them, and files without them stay as version 1 first
	// wrote them. Then list(netfilter event), the loss (see appendLoss)
	// and after it, again only when there is something to say,
	// NetfilterLost:uvarint list(Notes:string), and after that, for a TCP
	// or UDP probe (version 3) or where the netfilter events show ports or
	// conntrack states, Proto:u8 Port:uvarint TCPFlags:u8 From:addr; after
	// them, when the probe's source is known or netfilter events show ports
	// or states, Source:addr SourcePort:uvarint (none and 0 for an unknown
	// source); and after that, only in the second case, the netfilter
	// events' ports and states (see appendNetfilterExtra). Older version 3
	// readers stop before each of these.
	extra := hasNetfilterExtra(o.Netfilter)
	tcp := o.Proto != 0 || extra
	more := o.NetfilterLost != 0 || len(o.Notes) > 0 || tcp
	if len(o.Netfilter) == 0 && o.Error == nil && o.Drop == nil && o.Hint == "" && !more {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(o.Netfilter)))
	for i := range o.Netfilter {
		b = appendNetfilter(b, &o.Netfilter[i], v)
	}
	b = appendLoss(b, o, v)
	if !more {
		return b
	}
	b = binary.AppendUvarint(b, o.NetfilterLost)
	b = binary.AppendUvarint(b, uint64(len(o.Notes)))
	for _, n := range o.Notes {
		b = appendString(b, n)
	}
	if !tcp {
		return b
	}
	b = append(b, o.Proto)
	b = binary.AppendUvarint(b, uint64(o.Port))
	b = append(b, o.TCPFlags)
	b = appendAddr(b, unzoned(o.From))
	if !o.Source.IsValid() && !extra {
		return b
	}
	b = appendAddr(b, unzoned(o.Source.Addr()))
	b = binary.AppendUvarint(b, uint64(o.Source.Port()))
	if !extra {
		return b
	}
	return appendNetfilterExtra(b, o.Netfilter)
}

// hasNetfilterExtra reports whether any of events shows ports or a
// conntrack state.
func hasNetfilterExtra(events []decode.NetfilterEvent) bool {
	for i := range events {
		if e := &events[i]; e.Sport != 0 || e.Dport != 0 || e.CT != 0 {
			return true
		}
	}
	return false
}

// ctReplyBit marks, in a netfilter event's conntrack byte, the reply
// direction; the low bits are its decode.CTState, whose bit 7 is unused.
const ctReplyBit = 1 << 7

// appendNetfilterExtra: list(Sport Dport:uvarint CT:u8), an entry for each
// netfilter event of the outcome, in their order; CT is the event's
// decode.CTState, with ctReplyBit set for CTReply.
func appendNetfilterExtra(b []byte, events []decode.NetfilterEvent) []byte {
	b = binary.AppendUvarint(b, uint64(len(events)))
	for i := range events {
		e := &events[i]
		b = binary.AppendUvarint(b, uint64(e.Sport))
		b = binary.AppendUvarint(b, uint64(e.Dport))
		ct := byte(e.CT)
		if e.CTReply {
			ct |= ctReplyBit
		}
		b = append(b, ct)
	}
	return b
}

// netfilterExtra decodes what appendNetfilterExtra wrote into events; a
// count that is not theirs is corruption.
func (c *frameCursor) netfilterExtra(events []decode.NetfilterEvent) {
	if c.uvarint() != uint64(len(events)) {
		c.bad = true
		return
	}
	for i := range events {
		e := &events[i]
		e.Sport, e.Dport = c.uvarint16(), c.uvarint16()
		ct := c.byte()
		e.CT, e.CTReply = decode.CTState(ct&^ctReplyBit), ct&ctReplyBit != 0
	}
}

// Flags of the loss fields after an outcome's netfilter events.
const (
	lossError = 1 << iota
	lossDrop
	lossDropIn
	lossHint
)

// appendLoss encodes what explains a lost echo: flags:u8, then the ICMP
// error (family type code:u8 from:addr mtu:uvarint), the drop (time netns
// ifindex:uvarint ifname:string family icmptype:u8 src dst:addr
// reason location:string, and from version 3 on proto tcpflags:u8) and the
// hint (string), each when its flag is set.
func appendLoss(b []byte, o *EchoOutcome, v uint16) []byte {
	e, d := o.Error, o.Drop
	var flags byte
	if e != nil {
		flags |= lossError
	}
	if d != nil {
		flags |= lossDrop
		if d.In {
			flags |= lossDropIn
		}
	}
	if o.Hint != "" {
		flags |= lossHint
	}
	b = append(b, flags)
	if e != nil {
		b = append(b, e.Family, e.Type, e.Code)
		b = appendAddr(b, unzoned(e.From))
		b = binary.AppendUvarint(b, uint64(e.MTU))
	}
	if d != nil {
		b = binary.AppendUvarint(b, d.Time)
		b = binary.AppendUvarint(b, uint64(d.Netns))
		b = binary.AppendUvarint(b, uint64(d.Ifindex))
		b = appendString(b, d.Ifname)
		b = append(b, d.Family, d.ICMPType)
		b = appendAddr(b, unzoned(d.Src))
		b = appendAddr(b, unzoned(d.Dst))
		b = appendString(b, d.Reason)
		b = appendString(b, d.Location)
		if v >= tcpVersion {
			b = append(b, d.Proto, d.TCPFlags)
		}
	}
	if o.Hint != "" {
		b = appendString(b, o.Hint)
	}
	return b
}

// loss decodes what appendLoss wrote for version v into o; a file without
// it has none.
func (c *frameCursor) loss(o *EchoOutcome, v uint16) {
	o.Error, o.Drop, o.Hint = nil, nil, ""
	if c.bad || c.off >= len(c.b) {
		return
	}
	flags := c.byte()
	if flags&lossError != 0 {
		e := &decode.ICMPError{Family: c.byte(), Type: c.byte(), Code: c.byte()}
		e.From = c.addr()
		e.MTU = c.uvarint32()
		o.Error = e
	}
	if flags&lossDrop != 0 {
		d := &decode.Drop{Time: c.uvarint(), Netns: c.uvarint32(), Ifindex: c.uvarint32(), Ifname: c.string()}
		d.Family, d.ICMPType = c.byte(), c.byte()
		d.Src, d.Dst = c.addr(), c.addr()
		d.Reason, d.Location = c.string(), c.string()
		if v >= tcpVersion {
			d.Proto, d.TCPFlags = c.proto(), c.byte()
		}
		d.In = flags&lossDropIn != 0
		o.Drop = d
	}
	if flags&lossHint != 0 {
		o.Hint = c.string()
	}
}

// appendNetfilter: Time Netns:uvarint Family Table Chain Verdict Target
// Rule Source:string Hook Type ICMPType:u8 RuleHandle Iif Oif TraceID EchoID
// Seq:uvarint Src Dst:addr, and from version 3 on Proto TCPFlags:u8.
func appendNetfilter(b []byte, e *decode.NetfilterEvent, v uint16) []byte {
	b = binary.AppendUvarint(b, e.Time)
	b = binary.AppendUvarint(b, uint64(e.Netns))
	for _, s := range []string{e.Family, e.Table, e.Chain, e.Verdict, e.Target, e.Rule, e.Source} {
		b = appendString(b, s)
	}
	b = append(b, byte(e.Hook), byte(e.Type), e.ICMPType)
	b = binary.AppendUvarint(b, e.RuleHandle)
	b = binary.AppendUvarint(b, uint64(e.Iif))
	b = binary.AppendUvarint(b, uint64(e.Oif))
	b = binary.AppendUvarint(b, uint64(e.TraceID))
	b = binary.AppendUvarint(b, uint64(e.EchoID))
	b = binary.AppendUvarint(b, uint64(e.Seq))
	b = appendAddr(b, unzoned(e.Src))
	b = appendAddr(b, unzoned(e.Dst))
	if v >= tcpVersion {
		b = append(b, e.Proto, e.TCPFlags)
	}
	return b
}

// decodeAppended decodes the fields appended to an outcome frame of a file
// of version v (see encodeOutcome) into o. Its own cursor keeps the
// outcome's on the stack when there are none, the common case.
func decodeAppended(b []byte, o *EchoOutcome, v uint16) bool {
	c := frameCursor{b: b}
	budget := maxItems
	o.Netfilter = readList(&c, &budget, 20, func(c *frameCursor) decode.NetfilterEvent { return c.netfilter(v) })
	c.loss(o, v)
	if !c.bad && c.off < len(c.b) {
		o.NetfilterLost = c.uvarint()
		o.Notes = readList(&c, &budget, 1, (*frameCursor).string)
	}
	if !c.bad && c.off < len(c.b) {
		o.Proto = c.proto()
		o.Port = c.uvarint16()
		o.TCPFlags = c.byte()
		o.From = c.addr()
	}
	if !c.bad && c.off < len(c.b) {
		src, port := c.addr(), c.uvarint16()
		o.Source = netip.AddrPortFrom(src, port)
		// A writer with netfilter ports or states to append writes an
		// unknown source as none and port 0.
		c.bad = c.bad || (!src.IsValid() && port != 0)
	}
	if !c.bad && c.off < len(c.b) {
		c.netfilterExtra(o.Netfilter)
	}
	return !c.bad
}

// proto reads a probe protocol, see validProto.
func (c *frameCursor) proto() uint8 {
	p := c.byte()
	if !validProto(p) {
		c.bad = true
	}
	return p
}

func (c *frameCursor) netfilter(v uint16) decode.NetfilterEvent {
	var e decode.NetfilterEvent
	e.Time = c.uvarint()
	e.Netns = c.uvarint32()
	for _, s := range []*string{&e.Family, &e.Table, &e.Chain, &e.Verdict, &e.Target, &e.Rule, &e.Source} {
		*s = c.string()
	}
	e.Hook, e.Type, e.ICMPType = decode.Hook(c.byte()), decode.TraceType(c.byte()), c.byte()
	e.RuleHandle = c.uvarint()
	e.Iif, e.Oif, e.TraceID = c.uvarint32(), c.uvarint32(), c.uvarint32()
	e.EchoID, e.Seq = c.uvarint16(), c.uvarint16()
	e.Src, e.Dst = c.addr(), c.addr()
	if v >= tcpVersion {
		e.Proto, e.TCPFlags = c.proto(), c.byte()
	}
	return e
}

func (r *Reader) decodeHeader(body []byte, h *Header) error {
	c := frameCursor{b: body}
	h.ToolVersion = c.string()
	h.KernelRelease = c.string()
	h.Hostname = c.string()
	h.BootID = c.string()
	sec := c.varint()
	nsec := c.uvarint()
	if nsec >= 1e9 {
		c.bad = true
	}
	h.StartWall = time.Unix(sec, int64(nsec)).UTC()
	h.StartKtime = c.uvarint()
	budget := maxItems
	h.Args = readList(&c, &budget, 1, (*frameCursor).string)
	h.Capabilities = readList(&c, &budget, 1, (*frameCursor).string)
	if c.off < len(c.b) {
		h.Proto = c.proto()
	}
	if c.bad {
		return r.corrupt("bad header frame")
	}
	if h.Proto != 0 && r.version < tcpVersion {
		return r.corrupt("a run of TCP probes in a version %d file", r.version)
	}
	return nil
}

func (r *Reader) decodeOutcome(body []byte, o *EchoOutcome) error {
	c := frameCursor{b: body}
	o.Target = c.addr()
	o.EchoID = c.uvarint16()
	o.Seq = c.uvarint16()
	result := c.byte()
	o.Replied, o.Interrupted = result == outcomeReply, result == outcomeInterrupted
	o.RTT = time.Duration(c.varint())
	o.Timeout = time.Duration(c.varint())
	o.Netfilter, o.Error, o.Drop, o.Hint, o.NetfilterLost, o.Notes = nil, nil, nil, "", 0, nil
	o.Proto, o.Port, o.TCPFlags, o.From, o.Source = 0, 0, 0, netip.Addr{}, netip.AddrPort{}
	if !c.bad && c.off < len(c.b) {
		if !decodeAppended(c.b[c.off:], o, r.version) {
			return r.corrupt("bad netfilter events, loss or TCP fields in outcome frame")
		}
	}
	if c.bad {
		return r.corrupt("bad outcome frame")
	}
	if r.version < tcpVersion && (o.Proto != 0 || o.Port != 0 || o.TCPFlags != 0 || o.From.IsValid() || o.Source.IsValid()) {
		return r.corrupt("a TCP probe's outcome in a version %d file", r.version)
	}
	return nil
}

func (r *Reader) decodeSnapshot(body []byte, s *decode.Snapshot) error {
	c := frameCursor{b: body}
	budget := maxItems
	// The minimum sizes are those of entries with empty lists and strings.
	s.Namespaces = readList(&c, &budget, 6, func(c *frameCursor) decode.Namespace {
		e := c.entry()
		var ns decode.Namespace
		ns.Inode = e.uvarint32()
		ns.Names = readList(&e, &budget, 1, (*frameCursor).string)
		ns.Pids = readList(&e, &budget, 1, func(e *frameCursor) int { return int(e.varint()) })
		ns.Comms = readList(&e, &budget, 1, (*frameCursor).string)
		ns.Interfaces = readList(&e, &budget, 8, func(e *frameCursor) decode.Interface {
			f := e.entry()
			var ifc decode.Interface
			ifc.Ifindex = f.uvarint32()
			ifc.Name = f.string()
			ifc.Kind = f.string()
			ifc.PeerIfindex = f.uvarint32()
			ifc.PeerNetns = f.uvarint32()
			ifc.Master = f.string()
			ifc.Addrs = readList(&f, &budget, 2, (*frameCursor).prefix)
			e.bad = e.bad || f.bad
			return ifc
		})
		if e.off < len(e.b) {
			ns.Owner = decode.Owner{Kind: e.string(), ID: e.string(), Name: e.string(), Pid: int(e.varint()), Comm: e.string()}
		}
		c.bad = c.bad || e.bad
		return ns
	})
	if c.bad {
		*s = decode.Snapshot{}
		return r.corrupt("bad snapshot frame")
	}
	return nil
}

// list decodes a list of entries that take at least minSize bytes each: a
