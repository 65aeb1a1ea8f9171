package decode

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
)

// A UDP probe cannot be marked by its ports either: NAT rewrites them. Its
// request carries a mark in its payload, which NAT leaves alone: MarkLen
// bytes at a fixed offset of the payload, the run's cookie, the probe's
// number and the run's echo id. An ICMP error quotes the request, payload
// and all (Linux quotes up to 576 bytes of IPv4, 1280 of IPv6), so it
// carries the mark too. A reply carries no mark of ours: the in-kernel side
// keeps the tuple of each request as it sees it, before and after each NAT,
// and keeps a datagram whose tuple is one of those inverted.

// ProtoUDP is the IP protocol number of UDP.
const ProtoUDP = 17

// UDPAnswer, in a UDP record's TCPFlags byte, marks a datagram kept by its
// tuple: an answer to a request of ours. A request has none.
const UDPAnswer = 0x80

// MarkLen is the length of the mark in a UDP probe's payload: the cookie
// (be32), the probe's number (be16) and the run's echo id (be16).
const MarkLen = 8

// MaxPayload bounds a UDP probe's payload, mark included: it stays in one
// unfragmented datagram on any path, and within what an ICMP error quotes.
const MaxPayload = 512

// DNSPort is the port whose default payload is a DNS query.
const DNSPort = 53

// UDPMark is what marks the UDP requests of one run: the run's echo id and
// cookie, and where the mark sits in a payload built from Base.
type UDPMark struct {
	EchoID uint16
	Cookie uint32
	// Offset is where the mark starts in the payload.
	Offset int
	// Base is the payload with room for the mark at Offset; DNS says it is
	// a DNS query, whose id is set to the probe's number too.
	Base []byte
	DNS  bool
}

// NewUDPMark returns the mark of a run to port with cookie rnd. A payload
// given by the user (user non-nil) is sent as it is with the mark after it.
// Without one, a probe to DNSPort is a DNS query for the root's NS records
// whose EDNS client cookie (RFC 7873) is the mark, and a probe to any other
// port carries the mark alone.
func NewUDPMark(echoID uint16, rnd uint32, port uint16, user []byte) (UDPMark, error) {
	m := UDPMark{EchoID: echoID, Cookie: rnd}
	switch {
	case user != nil:
		if len(user)+MarkLen > MaxPayload {
			return UDPMark{}, fmt.Errorf("payload of %d bytes: at most %d (%d with the probe's %d-byte mark)", len(user), MaxPayload-MarkLen, MaxPayload, MarkLen)
		}
		m.Offset = len(user)
		m.Base = append(bytes.Clone(user), make([]byte, MarkLen)...)
	case port == DNSPort:
		m.Base, m.Offset, m.DNS = dnsQuery(), dnsCookieOffset, true
	default:
		m.Base = make([]byte, MarkLen)
	}
	return m, nil
}

// dnsCookieOffset is where the client cookie sits in dnsQuery.
const dnsCookieOffset = 12 + 5 + 11 + 4

// dnsQuery is a DNS query (RFC 1035) for the NS records of the root, with
// recursion desired and an EDNS OPT record (RFC 6891) holding an 8-byte
// client cookie option (RFC 7873), zero until the mark is written.
func dnsQuery() []byte {
	b := []byte{
		0, 0, // id, the probe's number
		0x01, 0x00, // flags: recursion desired
		0, 1, 0, 0, 0, 0, 0, 1, // one question, one additional record
		0,          // name: the root
		0, 2, 0, 1, // NS, IN
		0,     // OPT: the root
		0, 41, // type OPT
		0x04, 0xd0, // UDP payload size 1232
		0, 0, 0, 0, // extended rcode, version, flags
		0, 12, // rdata length
		0, 10, 0, 8, // option COOKIE, 8 bytes
	}
	return append(b, make([]byte, MarkLen)...)
}

// Payload returns probe seq's payload.
func (m UDPMark) Payload(seq uint16) []byte {
	p := bytes.Clone(m.Base)
	if m.DNS {
		binary.BigEndian.PutUint16(p, seq)
	}
	binary.BigEndian.PutUint32(p[m.Offset:], m.Cookie)
	binary.BigEndian.PutUint16(p[m.Offset+4:], seq)
	binary.BigEndian.PutUint16(p[m.Offset+6:], m.EchoID)
	return p
}

// Find returns the probe whose mark a payload carries anywhere (an echo
// server's reply, a DNS server's echoed client cookie), and whether one was
// found.
func (m UDPMark) Find(payload []byte) (seq uint16, ok bool) {
	var cookie [4]byte
	binary.BigEndian.PutUint32(cookie[:], m.Cookie)
	for rest := payload; ; {
		i := bytes.Index(rest, cookie[:])
		if i < 0 || len(rest) < i+MarkLen {
			return 0, false
		}
		if binary.BigEndian.Uint16(rest[i+6:]) == m.EchoID {
			return binary.BigEndian.Uint16(rest[i+4:]), true
		}
		rest = rest[i+1:]
	}
}

// ParsePayload reads --payload: hex digits (spaces and colons between bytes
// allowed), or @FILE for a file's bytes.
func ParsePayload(s string, readFile func(string) ([]byte, error)) ([]byte, error) {
	if name, ok := strings.CutPrefix(s, "@"); ok {
		b, err := readFile(name)
		if err != nil {
			return nil, err
		}
		if b == nil {
			b = []byte{}
		}
		return b, nil
	}
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", ":", "").Replace(s))
	if err != nil {
		return nil, fmt.Errorf("not hex bytes or @FILE: %w", err)
	}
	return b, nil
}

// ProtoName names a probe protocol as --json does: "tcp", "udp", or "" for
// an echo run's 0.
func ProtoName(proto uint8) string {
	switch proto {
	case ProtoTCP:
		return "tcp"
	case ProtoUDP:
		return "udp"
	}
	return ""
}

// UDPType names a UDP datagram of ours by its TCPFlags byte: "request", or
// "reply" for an answer kept by its tuple.
func UDPType(flags uint8) string {
	if flags&UDPAnswer != 0 {
		return "reply"
	}
	return "request"
}
