package ping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/tracepkt/tracepkt-perf/decode"
)

const (
	// tcpHeaderLen is a TCP header without options.
	tcpHeaderLen = 20
	// mssOptionLen is the maximum segment size option: kind 2, length 4,
	// the size (RFC 9293).
	mssOptionLen  = 4
	mssOptionKind = 2
	// synLen is a probe: a SYN with an MSS option and no data.
	synLen = tcpHeaderLen + mssOptionLen
	// synWindow is the window a probe offers, the one Linux offers in a SYN
	// over Ethernet.
	synWindow = 64240
	// quotedTCPLen is what an ICMP error quotes of the TCP header at least
	// (RFC 792): the ports and the sequence number.
	quotedTCPLen = 8
)

// errNotAnswer is a TCP segment that answers no SYN.
var errNotAnswer = errors.New("not an answer to a syn")

// segment is a TCP header. Its wire layout must match struct tcphdr in
// <linux/tcp.h>: source and destination port, sequence and acknowledgement
// number, data offset (4 bits, in words) and reserved bits, flags, window,
// checksum, urgent pointer, all in network byte order, then the options.
type segment struct {
	SrcPort, DstPort uint16
	Seq, Ack         uint32
	Flags            uint8
	Window           uint16
	// MSS, when not 0, is sent as the only option.
	MSS uint16
	// Len is the length of the segment, header and data (parseSegment
	// only).
	Len int
}

// marshal encodes s, without data, as sent from src to dst, with its
// checksum.
func (s segment) marshal(src, dst netip.Addr) []byte {
	n := tcpHeaderLen
	if s.MSS != 0 {
		n += mssOptionLen
	}
	b := make([]byte, n)
	binary.BigEndian.PutUint16(b[0:], s.SrcPort)
	binary.BigEndian.PutUint16(b[2:], s.DstPort)
	binary.BigEndian.PutUint32(b[4:], s.Seq)
	binary.BigEndian.PutUint32(b[8:], s.Ack)
	b[12] = byte(n/4) << 4
	b[13] = s.Flags
	binary.BigEndian.PutUint16(b[14:], s.Window)
	if s.MSS != 0 {
		b[20], b[21] = mssOptionKind, mssOptionLen
		binary.BigEndian.PutUint16(b[22:], s.MSS)
	}
	binary.BigEndian.PutUint16(b[16:], tcpChecksum(src, dst, b))
	return b
}

// tcpChecksum is the checksum of seg sent from src to dst: the Internet
// checksum over the pseudo-header of RFC 9293 (IPv4: source, destination,
// zero, protocol, TCP length) or RFC 8200 (IPv6: source, destination,
// 32-bit length, three zero bytes, next header), then the segment with a
// zero checksum field. Raw sockets leave it to us for both families.
func tcpChecksum(src, dst netip.Addr, seg []byte) uint16 {
	var ph []byte
	if src.Is4() {
		s, d := src.As4(), dst.As4()
		ph = append(append(ph, s[:]...), d[:]...)
		ph = append(ph, 0, decode.ProtoTCP, byte(len(seg)>>8), byte(len(seg)))
	} else {
		s, d := src.As16(), dst.As16()
		ph = append(append(ph, s[:]...), d[:]...)
		ph = binary.BigEndian.AppendUint32(ph, uint32(len(seg)))
		ph = append(ph, 0, 0, 0, decode.ProtoTCP)
	}
	return checksum(append(ph, seg...))
}

// parseSegment decodes a TCP header, options skipped.
func parseSegment(b []byte) (segment, error) {
	if len(b) < tcpHeaderLen {
		return segment{}, fmt.Errorf("tcp header: %w: %d bytes, need %d", errTruncated, len(b), tcpHeaderLen)
	}
	if off := int(b[12]>>4) * 4; off < tcpHeaderLen || off > len(b) {
		return segment{}, fmt.Errorf("tcp header: %w: data offset %d in %d bytes", errMalformed, off, len(b))
	}
	return segment{
		SrcPort: binary.BigEndian.Uint16(b[0:]),
		DstPort: binary.BigEndian.Uint16(b[2:]),
		Seq:     binary.BigEndian.Uint32(b[4:]),
		Ack:     binary.BigEndian.Uint32(b[8:]),
		Flags:   b[13],
		Window:  binary.BigEndian.Uint16(b[14:]),
		Len:     len(b),
	}, nil
}

// parseTCPAnswer checks that b, as read from a raw TCP socket, answers a
// SYN of mark m sent from port: a SYN-ACK or an RST, with ACK, to port,
// whose key is of m. The checksum is not checked: a segment that crossed a
// veth may still carry only its pseudo-header sum, and the mark is the
// stronger check.
func parseTCPAnswer(v6 bool, b []byte, port uint16, m decode.TCPMark) (parsedReply, error) {
	var r parsedReply
	msg, ttl, err := ipPayload(v6, b)
	if err != nil {
		return r, err
	}
	s, err := parseSegment(msg)
	if err != nil {
		return r, err
	}
	if s.DstPort != port {
		return r, fmt.Errorf("tcp destination port %d: %w", s.DstPort, errForeignPort)
	}
	if decode.IsTCPRequest(s.Flags) || s.Flags&(decode.TCPSyn|decode.TCPRst) == 0 {
		return r, fmt.Errorf("tcp flags %#02x: %w", s.Flags, errNotAnswer)
	}
	seq, ok := m.Probe(decode.Key(s.Flags, s.Seq, s.Ack))
	if !ok {
		return r, fmt.Errorf("tcp ack %d: %w", s.Ack, errForeignMark)
	}
	r.Seq, r.TTL, r.Size, r.TCPFlags = seq, ttl, s.Len, s.Flags
	return r, nil
}

// parseTCPError checks that b, as read from a raw ICMP or ICMPv6 socket, is
// an ICMP error quoting a SYN of mark m sent from port, and returns the
// probe it quotes with the error.
func parseTCPError(v6 bool, b []byte, port uint16, m decode.TCPMark) (parsedReply, error) {
	r, quoted, err := parseICMPError(v6, b, decode.ProtoTCP)
	if err != nil {
		return parsedReply{}, err
	}
	if len(quoted) < quotedTCPLen {
		return parsedReply{}, fmt.Errorf("quoted tcp header: %w: %d bytes, need %d", errTruncated, len(quoted), quotedTCPLen)
	}
	if sport := binary.BigEndian.Uint16(quoted); sport != port {
		return parsedReply{}, fmt.Errorf("quoted tcp source port %d: %w", sport, errForeignPort)
	}
	isn := binary.BigEndian.Uint32(quoted[4:])
	seq, ok := m.Probe(isn)
	if !ok {
		return parsedReply{}, fmt.Errorf("quoted tcp sequence number %d: %w", isn, errForeignMark)
	}
	r.Seq = seq
	return r, nil
}
