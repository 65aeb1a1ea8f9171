package decode

import (
	"encoding/binary"
	"net/netip"
)

// A TCP probe cannot be marked by its ports: NAT rewrites them. It is marked
// by its initial sequence number, which NAT leaves alone: probe k of a run
// sends a SYN with ISN = Cookie + 2k. The answer to it acknowledges ISN+1
// (a SYN-ACK, or an RST from the target or a REJECT), and the prober's
// kernel answers a SYN-ACK with an RST whose sequence number is ISN+1. An
// ICMP error quotes the SYN's first 8 bytes, ports and sequence number.
// So every packet of probe k carries Cookie + 2k or Cookie + 2k + 1, and the
// in-kernel test is one subtraction and one unsigned comparison.

// TCP flags, byte 13 of the TCP header (RFC 9293).
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// IP protocol numbers a probe can use.
const (
	ProtoICMP = 1
	ProtoTCP  = 6
)

// TCPMark is what marks the TCP packets of one run: the run's echo id (the
// id its records carry, as an echo's do), its cookie, and its span, twice
// the number of probes it may send (at most 2^17: sequences wrap at 2^16).
type TCPMark struct {
	EchoID uint16
	Cookie uint32
	Span   uint32
}

// MaxTCPSpan is the span of a run of 65,536 probes or more.
const MaxTCPSpan = 2 << 16

// NewTCPMark returns the mark of a run of count probes with a random cookie
// rnd, moved down so that no sequence number of the run wraps past 2^32:
// the nftables rules test a plain range.
func NewTCPMark(echoID uint16, rnd uint32, count int) TCPMark {
	span := uint32(MaxTCPSpan)
	if count > 0 && count < MaxTCPSpan/2 {
		span = 2 * uint32(count)
	}
	if rnd > ^uint32(0)-span {
		rnd -= span + 1
	}
	return TCPMark{EchoID: echoID, Cookie: rnd, Span: span}
}

// ISN is the initial sequence number of probe seq.
func (m TCPMark) ISN(seq uint16) uint32 { return m.Cookie + 2*uint32(seq) }

// Key is the number a TCP header of flags, seq and ack is tested by: the
// acknowledgement less one where it has ACK, the sequence number of a bare
// SYN, the sequence number less one otherwise (the prober's own RST).
func Key(flags uint8, seq, ack uint32) uint32 {
	switch {
	case flags&TCPAck != 0:
		return ack - 1
	case flags&TCPSyn != 0:
		return seq
	}
	return seq - 1
}

// Probe returns the probe a key or a quoted SYN's sequence number is of,
// and whether it is of this run.
func (m TCPMark) Probe(key uint32) (seq uint16, ok bool) {
	d := key - m.Cookie
	if d >= m.Span || d&1 != 0 {
		return 0, false
	}
	return uint16(d >> 1), true
}

// IsTCPRequest reports whether TCP flags are those of a packet the prober's
// side sends: its SYN, or its kernel's RST (never with ACK).
func IsTCPRequest(flags uint8) bool { return flags&TCPAck == 0 }

// TCPResult names what a TCP packet answering a SYN says: "open" for a
// SYN-ACK, "closed" for an RST.
func TCPResult(flags uint8) string {
	if flags&TCPRst != 0 {
		return "closed"
	}
	return "open"
}

// TCPType names a TCP packet of ours by its flags: "syn", "syn-ack" or "rst".
func TCPType(flags uint8) string {
	switch {
	case flags&TCPRst != 0:
		return "rst"
	case flags&(TCPSyn|TCPAck) == TCPSyn|TCPAck:
		return "syn-ack"
	case flags&TCPSyn != 0:
		return "syn"
	}
	return "tcp"
}

// packetType names a packet of ours: an echo's as PacketType does, a TCP
// probe's by its flags, and an ICMP error quoting either by its Result.
func packetType(family, proto, icmpType, tcpFlags uint8) string {
	switch {
	case icmpType != 0:
	case proto == ProtoTCP:
		return TCPType(tcpFlags)
	case proto == ProtoUDP:
		return UDPType(tcpFlags)
	}
	return PacketType(family, icmpType)
}

// PacketType names the record's packet: "request", "reply", "syn",
// "syn-ack", "rst", or an ICMP error's Result.
func (r *Record) PacketType() string { return packetType(r.Family, r.Proto, r.ICMPType, r.TCPFlags) }

// PacketType names the dropped packet as Record.PacketType does.
func (d *Drop) PacketType() string { return packetType(d.Family, d.Proto, d.ICMPType, d.TCPFlags) }

// PacketType names the event's packet as Record.PacketType does.
func (e *NetfilterEvent) PacketType() string {
	return packetType(familyOf(e.Src), e.Proto, e.ICMPType, e.TCPFlags)
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}

// Ports returns the ports of a device or drop record of a TCP or UDP packet
// of ours, read from its captured bytes; ok is false for other packets, and
// where the L4 header is behind IPv6 extension headers or was not captured.
func (r *Record) Ports() (src, dst uint16, ok bool) {
	if (r.Proto != ProtoTCP && r.Proto != ProtoUDP) || r.ICMPType != 0 {
		return 0, 0, false
	}
	p := r.Inner()
	var l4 int
	switch {
	case r.Family == 4 && len(p) >= 20:
		l4 = int(p[0]&0xf) * 4
	case r.Family == 6 && len(p) >= 40 && p[6] == r.Proto:
		l4 = 40
	default:
		return 0, 0, false
	}
	if l4 < 20 || len(p) < l4+4 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(p[l4:]), binary.BigEndian.Uint16(p[l4+2:]), true
}
