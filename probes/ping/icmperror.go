package ping

import (
	"encoding/binary"
	"fmt"
)

// ICMPError is an ICMP or ICMPv6 error message (RFC 792, RFC 4443) that
// quoted one of our echo requests.
type ICMPError struct {
	Type, Code uint8
	// MTU is the next-hop MTU of a "fragmentation needed" (IPv4) or "packet
	// too big" (ICMPv6) error; 0 otherwise.
	MTU uint32
}

// parseError checks that b, as read from a raw socket, is an ICMP error
// quoting an echo request with id, and with cookie c when the quote reaches
// the payload (routers may quote as little as the first 8 bytes of the
// ICMP header), and returns the quoted sequence number with the error.
func parseError(v6 bool, b []byte, id uint16, c cookie) (parsedReply, error) {
	var r parsedReply
	msg, ttl, err := icmpMessage(v6, b)
	if err != nil {
		return r, err
	}
	if len(msg) < icmpErrorHeaderLen {
		return r, fmt.Errorf("icmp error: %w: %d bytes", errTruncated, len(msg))
	}
	e := &ICMPError{Type: msg[0], Code: msg[1]}
	quoted := msg[icmpErrorHeaderLen:]
	var echoReq uint8
	if v6 {
		switch e.Type {
		case icmpv6PacketTooBig:
			e.MTU = binary.BigEndian.Uint32(msg[4:])
		case icmpv6DestUnreach, icmpv6TimeExceeded, icmpv6ParamProblem:
		default:
			return r, fmt.Errorf("icmpv6 type %d: %w", e.Type, errNotEchoReply)
		}
		if len(quoted) < ipv6HeaderLen || quoted[ipv6NextHdrOffset] != protoICMPv6 {
			return r, fmt.Errorf("quoted ipv6 header: %w", errMalformed)
		}
		quoted, echoReq = quoted[ipv6HeaderLen:], icmpv6EchoRequest
	} else {
		switch e.Type {
		case icmpv4DestUnreach:
			if e.Code == 4 { // fragmentation needed and DF set (RFC 1191)
				e.MTU = uint32(binary.BigEndian.Uint16(msg[6:]))
			}
		case icmpv4TimeExceeded, icmpv4ParamProblem:
		default:
			return r, fmt.Errorf("icmp type %d: %w", e.Type, errNotEchoReply)
		}
		if len(quoted) < ipv4MinHeaderLen || quoted[0]>>4 != 4 || quoted[ipv4ProtoOffset] != protoICMP {
			return r, fmt.Errorf("quoted ipv4 header: %w", errMalformed)
		}
		ihl := int(quoted[0]&0x0f) * 4
		if ihl < ipv4MinHeaderLen || len(quoted) < ihl {
			return r, fmt.Errorf("quoted ipv4 header: %w: header length %d", errMalformed, ihl)
		}
		quoted, echoReq = quoted[ihl:], icmpv4EchoRequest
	}
	q, err := parseEcho(quoted)
	if err != nil {
		return r, err
	}
	if q.Type != echoReq {
		return r, fmt.Errorf("quoted icmp type %d: %w", q.Type, errNotEchoReply)
	}
	if q.ID != id {
		return r, fmt.Errorf("quoted echo id %d: %w", q.ID, errForeignID)
	}
	if len(q.Payload) >= cookieLen && cookie(q.Payload[:cookieLen]) != c {
		return r, errForeignRun
	}
	r.Seq, r.TTL, r.Size, r.Error = q.Seq, ttl, len(msg), e
	return r, nil
}
