package ping

import (
	"encoding/binary"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// ICMPError is an ICMP or ICMPv6 error message (RFC 792, RFC 4443) that
// quoted one of our echo requests, TCP SYNs or UDP probes.
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
	proto, echoReq := uint8(protoICMP), uint8(icmpv4EchoRequest)
	if v6 {
		proto, echoReq = protoICMPv6, icmpv6EchoRequest
	}
	r, quoted, err := parseICMPError(v6, b, proto)
	if err != nil {
		return parsedReply{}, err
	}
	q, err := parseEcho(quoted)
	if err != nil {
		return parsedReply{}, err
	}
	if q.Type != echoReq {
		return parsedReply{}, fmt.Errorf("quoted icmp type %d: %w", q.Type, errNotEchoReply)
	}
	if q.ID != id {
		return parsedReply{}, fmt.Errorf("quoted echo id %d: %w", q.ID, errForeignID)
	}
	if len(q.Payload) >= cookieLen && cookie(q.Payload[:cookieLen]) != c {
		return parsedReply{}, errForeignRun
	}
	r.Seq = q.Seq
	return r, nil
}

// parseICMPError checks that b, as read from a raw socket, is an ICMP or
// ICMPv6 error quoting an IP packet of protocol proto, and returns the error
// with the IPv4 TTL and the message size (Seq is left to the caller), and
// what the quote holds after the quoted IP header. An IPv6 quote must have
// proto as its first next header: our probes carry no extension headers.
func parseICMPError(v6 bool, b []byte, proto uint8) (parsedReply, []byte, error) {
	var r parsedReply
	msg, ttl, err := ipPayload(v6, b)
	if err != nil {
		return r, nil, err
	}
	if len(msg) < icmpErrorHeaderLen {
		return r, nil, fmt.Errorf("icmp error: %w: %d bytes", errTruncated, len(msg))
	}
	e := &ICMPError{Type: msg[0], Code: msg[1]}
	quoted := msg[icmpErrorHeaderLen:]
	if v6 {
		switch e.Type {
		case icmpv6PacketTooBig:
			e.MTU = binary.BigEndian.Uint32(msg[4:])
		case icmpv6DestUnreach, icmpv6TimeExceeded, icmpv6ParamProblem:
		default:
			return r, nil, fmt.Errorf("icmpv6 type %d: %w", e.Type, errNotICMPError)
		}
		if len(quoted) < ipv6HeaderLen {
			return r, nil, fmt.Errorf("quoted ipv6 header: %w", errMalformed)
		}
		if nh := quoted[ipv6NextHdrOffset]; nh != proto {
			return r, nil, fmt.Errorf("quoted ipv6 next header %d: %w", nh, errOtherProtocol)
		}
		quoted = quoted[ipv6HeaderLen:]
	} else {
		switch e.Type {
		case icmpv4DestUnreach:
			if e.Code == 4 { // fragmentation needed and DF set (RFC 1191)
				e.MTU = uint32(binary.BigEndian.Uint16(msg[6:]))
			}
		case icmpv4TimeExceeded, icmpv4ParamProblem:
		default:
			return r, nil, fmt.Errorf("icmp type %d: %w", e.Type, errNotICMPError)
		}
		if len(quoted) < ipv4MinHeaderLen || quoted[0]>>4 != 4 {
			return r, nil, fmt.Errorf("quoted ipv4 header: %w", errMalformed)
		}
		if p := quoted[ipv4ProtoOffset]; p != proto {
			return r, nil, fmt.Errorf("quoted ipv4 protocol %d: %w", p, errOtherProtocol)
		}
		ihl := int(quoted[0]&0x0f) * 4
		if ihl < ipv4MinHeaderLen || len(quoted) < ihl {
			return r, nil, fmt.Errorf("quoted ipv4 header: %w: header length %d", errMalformed, ihl)
		}
		quoted = quoted[ihl:]
	}
	r.TTL, r.Size, r.Error = ttl, len(msg), e
	return r, quoted, nil
}

// errorICMPv6Types are what a TCP or UDP prober's ICMPv6 socket lets
// through: the errors that quote a packet.
var errorICMPv6Types = []int{icmpv6DestUnreach, icmpv6PacketTooBig, icmpv6TimeExceeded, icmpv6ParamProblem}

// openICMPErrorSocket opens the raw ICMP (v6: ICMPv6) socket on which a
// TCP or UDP prober reads the errors about its probes, with opts; probes
// names them in the file's name.
func openICMPErrorSocket(v6 bool, opts Options, probes string) (*os.File, syscall.RawConn, error) {
	fd, family, name, err := rawSocket(v6)
	if err != nil {
		return nil, nil, err
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("%s errors for %s", name, probes))
	if err := setupICMPErrorSocket(fd, family, opts); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("set up raw %s socket: %w", name, err)
	}
	conn, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, conn, nil
}

// setupICMPErrorSocket applies opts to the raw ICMP or ICMPv6 socket fd and
// narrows what it receives to errors quoting a packet.
func setupICMPErrorSocket(fd, family int, opts Options) error {
	if err := applyOptions(fd, family == unix.AF_INET6, opts); err != nil {
		return err
	}
	if family == unix.AF_INET {
		return attachFilter(fd, icmpErrorFilter())
	}
	f := icmpv6Filter(errorICMPv6Types...)
	if err := unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
		return fmt.Errorf("set ICMP6_FILTER: %w", err)
	}
	if err := recvHopLimit(fd); err != nil {
		return err
	}
	return drain(fd)
}
