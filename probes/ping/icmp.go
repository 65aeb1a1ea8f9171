package ping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ICMP message types used by the pinger (RFC 792, RFC 4443).
const (
	icmpv4EchoReply   = 0
	icmpv4EchoRequest = 8
	icmpv6EchoRequest = 128
	icmpv6EchoReply   = 129
)

const (
	// echoHeaderLen is the echo header: type, code, checksum, id, sequence.
	echoHeaderLen = 8
	// payloadLen matches ping's default, which makes a 64-byte ICMP message.
	payloadLen = 56
	messageLen = echoHeaderLen + payloadLen
	cookieLen  = 8
	// timestampLen follows the cookie in the payload.
	timestampLen = 8
	// MinSize is the smallest payload: the cookie and the send time.
	MinSize = cookieLen + timestampLen
	// ipv4MinHeaderLen is an IPv4 header without options (IHL 5).
	ipv4MinHeaderLen = 20
)

// cookie identifies one pinger, so that replies to an earlier run or to
// another process that happened to pick the same echo id are ignored.
type cookie [cookieLen]byte

// Reasons a received packet is not a reply to this pinger or prober.
// Receive ignores such packets and counts them (see Pinger.Ignored).
var (
	errTruncated    = errors.New("truncated packet")
	errMalformed    = errors.New("malformed packet")
	errNotEchoReply = errors.New("not an echo reply")
	errNotICMPError = errors.New("not an icmp error quoting a packet")
	// errOtherProtocol is a quote of a packet of another protocol than
	// the prober's.
	errOtherProtocol = errors.New("quoted packet of another protocol")
	errForeignID     = errors.New("echo id is not ours")
	// errForeignPort and errForeignMark are a TCP or UDP packet, or the
	// quote of one, to or from a port the prober does not hold, or marked
	// for another run (the TCP sequence number, the UDP payload's mark).
	errForeignPort = errors.New("port is not ours")
	errForeignMark = errors.New("mark is not of this run")
	errForeignRun  = errors.New("payload cookie is not ours")
	errChecksum    = errors.New("bad icmp checksum")
)

// echo is an ICMP or ICMPv6 echo request or reply. Its wire layout must match
// struct icmphdr in <linux/icmp.h> and struct icmp6hdr in <linux/icmpv6.h>
// for echo messages: type, code, checksum, then identifier and sequence
// number, all in network byte order, followed by the payload.
type echo struct {
	Type     uint8
	Code     uint8
	Checksum uint16
	ID       uint16
	Seq      uint16
	Payload  []byte
}

// checksum is the Internet checksum of RFC 1071: the one's complement of the
// one's complement sum of b taken as big-endian 16-bit words, an odd last
// byte padded with zero.
func checksum(b []byte) uint16 {
	var sum uint32
	for ; len(b) >= 2; b = b[2:] {
		sum += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// marshalEchoRequest encodes echo request seq with a payload of size bytes
// (at least MinSize): the cookie, the send time in nanoseconds since the
// Unix epoch, and ping-style filler bytes. For IPv4 it
// fills in the checksum; for ICMPv6 the kernel computes it, since it covers a
// pseudo-header with the source address the kernel chooses.
func marshalEchoRequest(v6 bool, id, seq uint16, c cookie, sent time.Time, size int) []byte {
	b := make([]byte, echoHeaderLen+size)
	b[0] = icmpv4EchoRequest
	if v6 {
		b[0] = icmpv6EchoRequest
	}
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	payload := b[echoHeaderLen:]
	copy(payload, c[:])
	binary.BigEndian.PutUint64(payload[cookieLen:], uint64(sent.UnixNano()))
	for i := cookieLen + timestampLen; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	if !v6 {
		binary.BigEndian.PutUint16(b[2:], checksum(b))
	}
	return b
}

// parseEcho decodes an echo message. Payload aliases b.
func parseEcho(b []byte) (echo, error) {
	if len(b) < echoHeaderLen {
		return echo{}, fmt.Errorf("icmp echo: %w: %d bytes, need %d", errTruncated, len(b), echoHeaderLen)
	}
	return echo{
		Type:     b[0],
		Code:     b[1],
		Checksum: binary.BigEndian.Uint16(b[2:]),
		ID:       binary.BigEndian.Uint16(b[4:]),
		Seq:      binary.BigEndian.Uint16(b[6:]),
		Payload:  b[echoHeaderLen:],
	}, nil
}

// parsedReply is what parseReply learns from one packet.
type parsedReply struct {
	Seq uint16
	// TTL is the IPv4 TTL; 0 for ICMPv6, whose hop limit comes as ancillary
	// data.
	TTL int
	// Size is the length of the ICMP message, header included.
	Size int
	// Error is set when the message is an ICMP error quoting request Seq.
	Error *ICMPError
	// TCPFlags are the flags of a TCP answer.
	TCPFlags uint8
}

// ipPayload returns what follows the IP header of b as read from a raw
// socket (the ICMP message, the TCP segment), and the IPv4 TTL. For IPv4, b
// starts with the IP header; for IPv6 with what follows it.
func ipPayload(v6 bool, b []byte) (msg []byte, ttl int, err error) {
	if v6 {
		return b, 0, nil
	}
	if len(b) < ipv4MinHeaderLen {
		return nil, 0, fmt.Errorf("ipv4 header: %w: %d bytes, need %d", errTruncated, len(b), ipv4MinHeaderLen)
	}
	if version := b[0] >> 4; version != 4 {
		return nil, 0, fmt.Errorf("ipv4 header: %w: version %d", errMalformed, version)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4MinHeaderLen {
		return nil, 0, fmt.Errorf("ipv4 header: %w: header length %d", errMalformed, ihl)
	}
	if len(b) < ihl {
		return nil, 0, fmt.Errorf("ipv4 header: %w: %d bytes, header length %d", errTruncated, len(b), ihl)
	}
	return b[ihl:], int(b[8]), nil
}

// parseReply checks that b, as read from a raw socket, is an echo reply to id
// carrying cookie c and the whole payload of size bytes.
func parseReply(v6 bool, b []byte, id uint16, c cookie, size int) (parsedReply, error) {
	var r parsedReply
	wantType := uint8(icmpv6EchoReply)
	if !v6 {
		wantType = icmpv4EchoReply
	}
	msg, ttl, err := ipPayload(v6, b)
	if err != nil {
		return r, err
	}
	r.TTL = ttl
	e, err := parseEcho(msg)
	if err != nil {
		return r, err
	}
	if e.Type != wantType {
		return r, fmt.Errorf("icmp type %d: %w", e.Type, errNotEchoReply)
	}
	if e.ID != id {
		return r, fmt.Errorf("echo id %d: %w", e.ID, errForeignID)
	}
	// The peer echoes our payload: anything shorter was cut on the way.
	if len(e.Payload) < max(size, cookieLen) {
		return r, fmt.Errorf("echo payload: %w: %d bytes, sent %d", errTruncated, len(e.Payload), size)
	}
	if cookie(e.Payload[:cookieLen]) != c {
		return r, errForeignRun
	}
	// The raw socket sees packets before icmp_rcv() validates them. ICMPv6
	// checksums cover a pseudo-header we do not have here; the cookie is the
	// stronger check anyway.
	if !v6 && checksum(msg) != 0 {
		return r, errChecksum
	}
	r.Seq = e.Seq
	r.Size = len(msg)
	return r, nil
}
