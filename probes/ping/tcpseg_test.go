package ping

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// testMark is a run of 10 probes: probe k has ISN 0x12345678 + 2k.
var testMark = decode.TCPMark{EchoID: 0x1234, Cookie: 0x12345678, Span: 20}

var (
	testSrc4, testDst4 = netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	testSrc6, testDst6 = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
)

var (
	// Probe 0 of testMark from port 40000 to port 80, MSS 1460 (IPv4) and
	// 1440 (IPv6); checksums computed independently.
	synV4 = []byte{
		0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00,
		0x60, 0x02, 0xfa, 0xf0, 0x13, 0xf5, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4,
	}
	synV6 = []byte{
		0x9c, 0x40, 0x00, 0x50, 0x12, 0x34, 0x56, 0x78, 0x00, 0x00, 0x00, 0x00,
		0x60, 0x02, 0xfa, 0xf0, 0x3c, 0x98, 0x00, 0x00, 0x02, 0x04, 0x05, 0xa0,
	}

	// The SYN-ACK to probe 3 (ISN 0x1234567e): port 80 to port 40000, seq
	// 0xa0b0c0d0, ack 0x1234567f, no options; checksum not checked.
	synAck = []byte{
		0x00, 0x50, 0x9c, 0x40, 0xa0, 0xb0, 0xc0, 0xd0, 0x12, 0x34, 0x56, 0x7f,
		0x50, 0x12, 0xfa, 0xf0, 0x00, 0x00, 0x00, 0x00,
	}

	// 192.0.2.2 -> 192.0.2.1, TTL 64, TCP; the IP checksum is not checked.
	tcpIPv4Header = []byte{
		0x45, 0x00, 0x00, 0x28, 0xab, 0xcd, 0x40, 0x00, 0x40, 0x06,
		0x00, 0x00, 0xc0, 0x00, 0x02, 0x02, 0xc0, 0x00, 0x02, 0x01,
	}
	// The same with IHL 6, one word of options, and TTL 3.
	tcpIPv4HeaderOptions = []byte{
		0x46, 0x00, 0x00, 0x2c, 0xab, 0xcd, 0x40, 0x00, 0x03, 0x06,
		0x00, 0x00, 0xc0, 0x00, 0x02, 0x02, 0xc0, 0x00, 0x02, 0x01,
		0x01, 0x01, 0x01, 0x00,
	}
	// The header of a SYN from 192.0.2.1 to 192.0.2.2, as an ICMP error
	// quotes it.
	synIPv4Header = []byte{
		0x45, 0x00, 0x00, 0x2c, 0x12, 0x34, 0x40, 0x00, 0x40, 0x06,
		0x00, 0x00, 0xc0, 0x00, 0x02, 0x01, 0xc0, 0x00, 0x02, 0x02,
	}
)

// patch returns a copy of b with v written at off.
func patch(b []byte, off int, v ...byte) []byte {
	c := cat(b)
	copy(c[off:], v)
	return c
}

func TestTCPSegmentMarshal(t *testing.T) {
	syn := segment{SrcPort: 40000, DstPort: 80, Seq: testMark.ISN(0), Flags: decode.TCPSyn, Window: synWindow}
	syn.MSS = 1460
	if got := syn.marshal(testSrc4, testDst4); !bytes.Equal(got, synV4) {
		t.Errorf("ipv4 syn:\n got %x\nwant %x", got, synV4)
	}
	syn.MSS = 1440
	if got := syn.marshal(testSrc6, testDst6); !bytes.Equal(got, synV6) {
		t.Errorf("ipv6 syn:\n got %x\nwant %x", got, synV6)
	}
	// Without an MSS the header has no options; a segment with its
	// checksum sums to zero over the pseudo-header.
	bare := segment{SrcPort: 1, DstPort: 2, Seq: 3, Flags: decode.TCPSyn}.marshal(testSrc6, testDst6)
	if len(bare) != tcpHeaderLen || bare[12] != 0x50 {
		t.Errorf("syn without mss: %x, want 20 bytes with data offset 5", bare)
	}
	if sum := tcpChecksum(testSrc6, testDst6, bare); sum != 0 {
		t.Errorf("checksum over a checksummed segment = %#04x, want 0", sum)
	}
}

func TestTCPParseSegment(t *testing.T) {
	s, err := parseSegment(synV4)
	if err != nil {
		t.Fatal(err)
	}
	want := segment{SrcPort: 40000, DstPort: 80, Seq: 0x12345678, Flags: decode.TCPSyn, Window: 64240, Len: 24}
	if s != want {
		t.Errorf("parseSegment = %+v, want %+v", s, want)
	}
	for _, tc := range []struct {
		name    string
		b       []byte
		wantErr error
	}{
		{"19 bytes", synAck[:19], errTruncated},
		{"data offset 4", patch(synAck, 12, 0x40), errMalformed},
		{"data offset past the end", patch(synAck, 12, 0x60), errMalformed},
	} {
		if _, err := parseSegment(tc.b); !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: parseSegment error = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
}

func TestTCPParseAnswer(t *testing.T) {
	ackOf := func(k uint16) []byte {
		a := testMark.ISN(k) + 1
		return []byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)}
	}
	for _, tc := range []struct {
		name    string
		v6      bool
		pkt     []byte
		want    parsedReply
		wantErr error
	}{
		{"v4 syn-ack", false, cat(tcpIPv4Header, synAck), parsedReply{Seq: 3, TTL: 64, Size: 20, TCPFlags: 0x12}, nil},
		{"v4 ip options", false, cat(tcpIPv4HeaderOptions, synAck), parsedReply{Seq: 3, TTL: 3, Size: 20, TCPFlags: 0x12}, nil},
		{"v6 syn-ack", true, synAck, parsedReply{Seq: 3, Size: 20, TCPFlags: 0x12}, nil},
		{"v6 rst-ack", true, patch(synAck, 13, 0x14), parsedReply{Seq: 3, Size: 20, TCPFlags: 0x14}, nil},
		{"v6 syn-ack with options", true, cat(patch(synAck, 12, 0x60), []byte{2, 4, 0x05, 0xb4}), parsedReply{Seq: 3, Size: 24, TCPFlags: 0x12}, nil},
		{"v6 probe 0", true, patch(synAck, 8, ackOf(0)...), parsedReply{Seq: 0, Size: 20, TCPFlags: 0x12}, nil},
		{"v6 last probe", true, patch(synAck, 8, ackOf(9)...), parsedReply{Seq: 9, Size: 20, TCPFlags: 0x12}, nil},

		{"v6 other port", true, patch(synAck, 2, 0x9c, 0x41), parsedReply{}, errForeignPort},
		{"v6 a syn to us", true, patch(synAck, 13, decode.TCPSyn), parsedReply{}, errNotAnswer},
		{"v6 an rst without ack", true, patch(synAck, 13, decode.TCPRst), parsedReply{}, errNotAnswer},
		{"v6 a bare ack", true, patch(synAck, 13, decode.TCPAck), parsedReply{}, errNotAnswer},
		{"v6 a fin-ack", true, patch(synAck, 13, decode.TCPFin|decode.TCPAck), parsedReply{}, errNotAnswer},
		{"v6 another run", true, patch(synAck, 8, 0x12, 0x34, 0x56, 0x77), parsedReply{}, errForeignMark},
		{"v6 odd key", true, patch(synAck, 8, 0x12, 0x34, 0x56, 0x80), parsedReply{}, errForeignMark},
		{"v6 past the span", true, patch(synAck, 8, ackOf(10)...), parsedReply{}, errForeignMark},
		{"v4 not ip version 4", false, cat([]byte{0x65}, tcpIPv4Header[1:], synAck), parsedReply{}, errMalformed},
		{"v4 no tcp header", false, tcpIPv4Header, parsedReply{}, errTruncated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTCPAnswer(tc.v6, tc.pkt, 40000, testMark)
			if !parsed(t, err, tc.wantErr) {
				return
			}
			if got != tc.want {
				t.Errorf("parseTCPAnswer = %+v, want %+v", got, tc.want)
			}
		})
	}
	// Every strict prefix of an answer is rejected, without panicking.
	for _, pkt := range [][]byte{cat(tcpIPv4HeaderOptions, synAck), synAck} {
		v6 := len(pkt) == len(synAck)
		for n := range len(pkt) {
			if _, err := parseTCPAnswer(v6, pkt[:n], 40000, testMark); err == nil {
				t.Errorf("parseTCPAnswer accepted the first %d of %d bytes", n, len(pkt))
			}
		}
	}
}

func TestTCPParseError(t *testing.T) {
	for _, tc := range []struct {
		name    string
		v6      bool
		pkt     []byte
		want    ICMPError
		wantErr error
	}{
		{"v4 port unreachable", false, cat(tcpIPv4Header, errorV4(3, 3, 0, synIPv4Header, synV4)), ICMPError{Type: 3, Code: 3}, nil},
		{"v4 ttl exceeded quoting 8 bytes", false, cat(tcpIPv4Header, errorV4(11, 0, 0, synIPv4Header, synV4[:8])), ICMPError{Type: 11}, nil},
		{"v4 frag needed quoting ip options", false, cat(tcpIPv4Header, errorV4(3, 4, 1400, cat(patch(synIPv4Header, 0, 0x46), []byte{1, 1, 1, 0}), synV4)), ICMPError{Type: 3, Code: 4, MTU: 1400}, nil},
		{"v6 port unreachable", true, errorV6Quoting(1, 4, 0, decode.ProtoTCP, synV6), ICMPError{Type: 1, Code: 4}, nil},
		{"v6 packet too big", true, errorV6Quoting(2, 0, 1280, decode.ProtoTCP, synV6), ICMPError{Type: 2, MTU: 1280}, nil},

		{"v4 quote of an echo request", false, cat(tcpIPv4Header, errorV4(3, 3, 0, ipv4Header, echoRequestV4)), ICMPError{}, errOtherProtocol},
		{"v6 quote of an echo request", true, errorV6(1, 4, 0, echoRequestV6), ICMPError{}, errOtherProtocol},
		{"v6 quote from another port", true, errorV6Quoting(1, 4, 0, decode.ProtoTCP, patch(synV6, 0, 0x9c, 0x41)), ICMPError{}, errForeignPort},
		{"v6 quote of another run", true, errorV6Quoting(1, 4, 0, decode.ProtoTCP, patch(synV6, 4, 0x12, 0x34, 0x56, 0x76)), ICMPError{}, errForeignMark},
		{"v6 quote of our rst", true, errorV6Quoting(1, 4, 0, decode.ProtoTCP, patch(synV6, 4, 0x12, 0x34, 0x56, 0x79)), ICMPError{}, errForeignMark},
		{"v6 quote of 7 bytes", true, errorV6Quoting(1, 4, 0, decode.ProtoTCP, synV6[:7]), ICMPError{}, errTruncated},
		{"v4 redirect", false, cat(tcpIPv4Header, errorV4(5, 1, 0, synIPv4Header, synV4)), ICMPError{}, errNotICMPError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseTCPError(tc.v6, tc.pkt, 40000, testMark)
			if !parsed(t, err, tc.wantErr) {
				return
			}
			if r.Seq != 0 || r.TCPFlags != 0 || r.Error == nil || *r.Error != tc.want {
				t.Errorf("parseTCPError = seq %d flags %#x, %+v; want seq 0, flags 0, %+v", r.Seq, r.TCPFlags, r.Error, tc.want)
			}
		})
	}
}

func TestTCPMSS(t *testing.T) {
	for _, tc := range []struct {
		v6   bool
		mtu  int
		want uint16
	}{
		{false, 1500, 1460}, {true, 1500, 1440}, {false, 0, 536}, {true, 0, 1220},
		{false, 300, 536}, {false, 65536, 65496}, {true, 1 << 20, 65535},
	} {
		if got := mssFor(tc.v6, tc.mtu); got != tc.want {
			t.Errorf("mssFor(v6 %v, mtu %d) = %d, want %d", tc.v6, tc.mtu, got, tc.want)
		}
	}
}

func TestTCPFilterListing(t *testing.T) {
	v4, err := tcpAnswerFilter(unix.AF_INET, 40000)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := tcpAnswerFilter(unix.AF_INET6, 40000)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		prog filterProgram
		want string
	}{
		{"tcp ipv4", v4, `
(000) { 0xb1, 0, 0, 0x00000000 }     ldxb 4*([0]&0xf)               ; X = IPv4 header length, 4*IHL
(001) { 0x48, 0, 0, 0x00000002 }     ldh [x + 2]                    ; A = TCP destination port
(002) { 0x15, 1, 0, 0x00009c40 }     jeq #0x9c40 jt 4 jf 3          ; our port?
(003) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
(004) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
`},
		{"tcp ipv6", v6, `
(000) { 0x28, 0, 0, 0x00000002 }     ldh [2]                        ; A = TCP destination port
(001) { 0x15, 1, 0, 0x00009c40 }     jeq #0x9c40 jt 3 jf 2          ; our port?
(002) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
(003) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
`},
		{"icmp errors", icmpErrorFilter(), `
(000) { 0xb1, 0, 0, 0x00000000 }     ldxb 4*([0]&0xf)               ; X = IPv4 header length, 4*IHL
(001) { 0x50, 0, 0, 0x00000000 }     ldb [x + 0]                    ; A = ICMP type
(002) { 0x15, 3, 0, 0x00000003 }     jeq #0x3 jt 6 jf 3             ; destination unreachable?
(003) { 0x15, 2, 0, 0x0000000b }     jeq #0xb jt 6 jf 4             ; time exceeded?
(004) { 0x15, 1, 0, 0x0000000c }     jeq #0xc jt 6 jf 5             ; parameter problem?
(005) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
(006) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := "\n" + tc.prog.String(); got != tc.want {
				t.Errorf("filter listing changed:\ngot:%s\nwant:%s", got, tc.want)
			}
		})
	}
	if _, err := tcpAnswerFilter(unix.AF_UNIX, 1); !errors.Is(err, unix.EAFNOSUPPORT) {
		t.Errorf("tcpAnswerFilter(AF_UNIX) error = %v, want EAFNOSUPPORT", err)
	}
}

// TestTCPFilterVerdicts runs the filters on literal packets with runFilter;
// the root tests check the kernel agrees.
func TestTCPFilterVerdicts(t *testing.T) {
	v4, err := tcpAnswerFilter(unix.AF_INET, 40000)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := tcpAnswerFilter(unix.AF_INET6, 40000)
	if err != nil {
		t.Fatal(err)
	}
	otherPort := patch(synAck, 2, 0x9c, 0x41)
	for _, tc := range []struct {
		name   string
		prog   filterProgram
		pkt    []byte
		accept bool
	}{
		{"v4 answer", v4, cat(tcpIPv4Header, synAck), true},
		{"v4 answer with ip options", v4, cat(tcpIPv4HeaderOptions, synAck), true},
		{"v4 another port", v4, cat(tcpIPv4Header, otherPort), false},
		{"v4 options read as the port", v4, cat(tcpIPv4HeaderOptions[:20], synAck), false},
		{"v4 truncated before the port", v4, cat(tcpIPv4Header, synAck[:3]), false},
		{"v6 answer", v6, synAck, true},
		{"v6 another port", v6, otherPort, false},
		{"v6 truncated before the port", v6, synAck[:3], false},
		{"icmp port unreachable", icmpErrorFilter(), cat(tcpIPv4Header, errorV4(3, 3, 0, synIPv4Header, synV4)), true},
		{"icmp time exceeded", icmpErrorFilter(), cat(tcpIPv4Header, errorV4(11, 0, 0, synIPv4Header, synV4)), true},
		{"icmp parameter problem", icmpErrorFilter(), cat(tcpIPv4Header, errorV4(12, 0, 0, synIPv4Header, synV4)), true},
		{"icmp echo reply", icmpErrorFilter(), cat(ipv4Header, echoReplyV4), false},
		{"icmp redirect", icmpErrorFilter(), cat(tcpIPv4Header, errorV4(5, 1, 0, synIPv4Header, synV4)), false},
		{"icmp empty", icmpErrorFilter(), nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verdict := runFilter(t, tc.prog.sockFilters(), tc.pkt)
			if got := verdict != 0; got != tc.accept {
				t.Errorf("filter returned %#x, want accept=%v", verdict, tc.accept)
			}
		})
	}
}

func TestErrorICMPv6Filter(t *testing.T) {
	f := icmpv6Filter(errorICMPv6Types...)
	for typ := range 256 {
		blocked := f.Data[typ>>5]&(1<<(typ&31)) != 0
		if want := typ < 1 || typ > 4; blocked != want {
			t.Errorf("ICMPv6 type %d: blocked = %v, want %v", typ, blocked, want)
		}
	}
}
