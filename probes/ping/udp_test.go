package ping

import (
	"errors"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// prober is what the command uses of a prober: both TCP and UDP probers
// are one.
type prober interface {
	ID() uint16
	SourcePort() uint16
	Source() netip.Addr
	Ignored() uint64
	Send(seq uint16) (time.Time, error)
	Receive(deadline time.Time) (Reply, error)
	Close() error
}

var _, _ prober = (*TCPProber)(nil), (*UDPProber)(nil)

// testUDPMark marks probes with the payload alone; testDNSMark is the DNS
// query the same run sends to port 53.
var (
	testUDPMark = mustUDPMark(7)
	testDNSMark = mustUDPMark(decode.DNSPort)
)

func mustUDPMark(port uint16) decode.UDPMark {
	m, err := decode.NewUDPMark(0x1234, 0xdeadbeef, port, nil)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	// Probe 3 of testUDPMark: cookie, probe, echo id.
	udpProbe3 = []byte{0xde, 0xad, 0xbe, 0xef, 0x00, 0x03, 0x12, 0x34}
	// The UDP header of a probe from port 40000 to port 7 (checksum not
	// checked).
	udpHeader = []byte{0x9c, 0x40, 0x00, 0x07, 0x00, 0x10, 0x00, 0x00}
	// testSrc4 -> testDst4, UDP.
	udpIPv4Header = patch(synIPv4Header, 9, decode.ProtoUDP)
)

func TestParseUDPReply(t *testing.T) {
	target := netip.AddrPortFrom(testDst4, 7)
	elsewhere := netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), 5353)
	targetOtherPort := netip.AddrPortFrom(testDst4, 8)
	// A DNS response: id 2, QR and RD set, no records.
	dnsResponse := []byte{0x00, 0x02, 0x81, 0x00, 0, 0, 0, 0, 0, 0, 0, 0}
	linkLocal := netip.MustParseAddr("fe80::1")
	for _, tc := range []struct {
		name         string
		payload      []byte
		from, target netip.AddrPort
		mark         decode.UDPMark
		latest       uint32
		wantSeq      uint16
		wantErr      error
	}{
		{"echo", udpProbe3, target, target, testUDPMark, 6, 3, nil},
		{"echo after other bytes", cat([]byte("echo: "), udpProbe3), target, target, testUDPMark, 6, 3, nil},
		{"echo from elsewhere", udpProbe3, elsewhere, target, testUDPMark, 6, 3, nil},
		{"echo from another port of the target", udpProbe3, targetOtherPort, target, testUDPMark, 6, 3, nil},
		{"no mark", []byte("pong"), target, target, testUDPMark, 6, 5, nil},
		{"empty", nil, target, target, testUDPMark, 1, 0, nil},
		{"another run's mark", patch(udpProbe3, 0, 0xfe), target, target, testUDPMark, 6, 5, nil},
		{"no mark, not un-NATed", []byte("pong"), elsewhere, target, testUDPMark, 6, 5, nil},
		{"no mark, another port of the target", []byte("pong"), targetOtherPort, target, testUDPMark, 6, 0, errTargetPort},
		{"no mark, another port of a link-local target, zones apart", []byte("pong"),
			netip.AddrPortFrom(linkLocal.WithZone("2"), 8), netip.AddrPortFrom(linkLocal.WithZone("eth0"), 7), testUDPMark, 6, 0, errTargetPort},
		{"no mark, nothing sent", []byte("pong"), target, target, testUDPMark, 0, 0, errNotSent},
		{"dns response", dnsResponse, target, target, testDNSMark, 6, 2, nil},
		{"dns response echoing the cookie", cat(dnsResponse, testDNSMark.Payload(4)[testDNSMark.Offset:]), target, target, testDNSMark, 6, 4, nil},
		{"dns query", patch(dnsResponse, 2, 0x01), target, target, testDNSMark, 6, 5, nil},
		{"dns response cut short", dnsResponse[:11], target, target, testDNSMark, 6, 5, nil},
		{"dns-like reply to a plain probe", dnsResponse, target, target, testUDPMark, 6, 5, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseUDPReply(tc.payload, tc.from, tc.target, tc.mark, tc.latest)
			if !parsed(t, err, tc.wantErr) {
				return
			}
			want := parsedReply{Seq: tc.wantSeq, Size: len(tc.payload), TCPFlags: decode.UDPAnswer}
			if r != want {
				t.Errorf("reply %+v, want %+v", r, want)
			}
		})
	}
}

func TestParseUDPError(t *testing.T) {
	probe := cat(udpHeader, udpProbe3)
	dnsProbe := cat(patch(udpHeader, 2, 0, decode.DNSPort), testDNSMark.Payload(9))
	for _, tc := range []struct {
		name    string
		v6      bool
		pkt     []byte
		mark    decode.UDPMark
		want    parsedReply
		wantErr error
	}{
		{"v4 port unreachable", false, cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, probe)), testUDPMark,
			parsedReply{Seq: 3, TTL: 64, Size: 8 + 20 + 16, Error: &ICMPError{Type: 3, Code: 3}}, nil},
		{"v4 admin prohibited", false, cat(ipv4Header, errorV4(3, 13, 0, udpIPv4Header, probe)), testUDPMark,
			parsedReply{Seq: 3, TTL: 64, Size: 8 + 20 + 16, Error: &ICMPError{Type: 3, Code: 13}}, nil},
		{"v4 fragmentation needed", false, cat(ipv4Header, errorV4(3, 4, 1400, udpIPv4Header, probe)), testUDPMark,
			parsedReply{Seq: 3, TTL: 64, Size: 8 + 20 + 16, Error: &ICMPError{Type: 3, Code: 4, MTU: 1400}}, nil},
		{"v4 time exceeded quoting ip options", false, cat(ipv4HeaderOptions, errorV4(11, 0, 0, patch(tcpIPv4HeaderOptions, 9, decode.ProtoUDP), probe)), testUDPMark,
			parsedReply{Seq: 3, TTL: 3, Size: 8 + 24 + 16, Error: &ICMPError{Type: 11}}, nil},
		{"v4 dns probe", false, cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, dnsProbe)), testDNSMark,
			parsedReply{Seq: 9, TTL: 64, Size: 8 + 20 + len(dnsProbe), Error: &ICMPError{Type: 3, Code: 3}}, nil},
		{"v6 port unreachable", true, errorV6Quoting(1, 4, 0, decode.ProtoUDP, probe), testUDPMark,
			parsedReply{Seq: 3, Size: 8 + 40 + 16, Error: &ICMPError{Type: 1, Code: 4}}, nil},
		{"v6 packet too big", true, errorV6Quoting(2, 0, 1280, decode.ProtoUDP, probe), testUDPMark,
			parsedReply{Seq: 3, Size: 8 + 40 + 16, Error: &ICMPError{Type: 2, MTU: 1280}}, nil},
		{"another source port", false, cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, patch(probe, 0, 0x9c, 0x41))), testUDPMark, parsedReply{}, errForeignPort},
		{"another run's mark", false, cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, patch(probe, 8, 0xfe))), testUDPMark, parsedReply{}, errForeignMark},
		{"quote cut in the mark", true, errorV6Quoting(1, 4, 0, decode.ProtoUDP, probe[:12]), testUDPMark, parsedReply{}, errForeignMark},
		{"quote cut in the udp header", false, cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, probe[:6])), testUDPMark, parsedReply{}, errTruncated},
		{"quoting tcp", false, cat(ipv4Header, errorV4(3, 3, 0, synIPv4Header, probe)), testUDPMark, parsedReply{}, errOtherProtocol},
		{"quoting icmpv6", true, errorV6(1, 4, 0, probe), testUDPMark, parsedReply{}, errOtherProtocol},
		{"echo reply", false, cat(ipv4Header, echoReplyV4), testUDPMark, parsedReply{}, errNotICMPError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := parseUDPError(tc.v6, tc.pkt, 40000, tc.mark)
			if !parsed(t, err, tc.wantErr) {
				return
			}
			if r.Error == nil || *r.Error != *tc.want.Error {
				t.Errorf("error %+v, want %+v", r.Error, tc.want.Error)
			}
			r.Error = tc.want.Error
			if r != tc.want {
				t.Errorf("reply %+v, want %+v", r, tc.want)
			}
		})
	}
}

// socketpairUDPProber returns a prober of testUDPMark for port 7 from port
// 40000 whose sockets are socketpairs, and the peers to write what they
// would read: the replies and the ICMP errors. What a socketpair delivers
// comes from no IP address.
func socketpairUDPProber(tb testing.TB, target netip.Addr) (p *UDPProber, udpPeer, icmpPeer int) {
	tb.Helper()
	p = newUDPProber(target, 7, testUDPMark)
	p.sport = 40000
	p.to, _ = sockaddr(target)
	udpPeer = socketpair(tb, &p.sock, &p.sockConn)
	icmpPeer = socketpair(tb, &p.icmp, &p.icmpConn)
	p.start()
	tb.Cleanup(func() { p.Close() })
	return p, udpPeer, icmpPeer
}

// TestUDPReceiveSkipsForeignPackets feeds the prober through socketpairs,
// so needs no root: what is not an answer to this run is counted and
// skipped, on both sockets, and a reply without the mark answers the
// latest probe.
func TestUDPReceiveSkipsForeignPackets(t *testing.T) {
	p, udpPeer, icmpPeer := socketpairUDPProber(t, testDst4)
	send := func(fd int, pkts ...[]byte) {
		t.Helper()
		for _, pkt := range pkts {
			if err := unix.Send(fd, pkt, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	receive := func() Reply {
		t.Helper()
		r, err := p.Receive(time.Now().Add(replyTimeout))
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Before any probe: a reply with the mark counts, one without does not.
	send(udpPeer, []byte("early"), udpProbe3)
	if r := receive(); r.Seq != 3 || r.TCPFlags != decode.UDPAnswer || r.Error != nil || r.Size != len(udpProbe3) {
		t.Errorf("echo %+v, want probe 3, a UDP answer of %d bytes", r, len(udpProbe3))
	}
	p.latest.Store(5 + 1) // as Send(5) does, which cannot send on a socketpair
	send(udpPeer, make([]byte, recvBufLen+1), []byte("pong"))
	if r := receive(); r.Seq != 5 || r.TCPFlags != decode.UDPAnswer || r.Size != 4 {
		t.Errorf("reply %+v, want probe 5, the latest, a UDP answer of 4 bytes", r)
	}
	probe := cat(udpHeader, udpProbe3)
	send(icmpPeer,
		cat(ipv4Header, errorV4(3, 3, 0, ipv4Header, echoRequestV4)),
		cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, patch(probe, 0, 0, 1))),
		cat(ipv4Header, errorV4(3, 3, 0, udpIPv4Header, probe)))
	if r := receive(); r.Seq != 3 || r.TCPFlags != 0 || r.Error == nil || *r.Error != (ICMPError{Type: 3, Code: 3}) || r.TTL != serverTTL {
		t.Errorf("error %+v (%+v), want probe 3, port unreachable, ttl %d", r, r.Error, serverTTL)
	}
	// early, the truncated datagram, the error about an echo request and
	// the one about another port's datagram.
	expectIgnored(t, p, 4)
	if r, err := p.Receive(time.Now().Add(50 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Receive with nothing to read: %+v, error %v, want %v", r, err, os.ErrDeadlineExceeded)
	}
}

func TestUDPCloseUnblocksReceive(t *testing.T) {
	p, _, _ := socketpairUDPProber(t, testDst4)
	checkCloseUnblocksReceive(t, p)
}

func TestUDPOpenInvalid(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	noRoom := testUDPMark
	noRoom.Offset = 1
	tooLong := testUDPMark
	tooLong.Base = make([]byte, decode.MaxPayload+1)
	for _, tc := range []struct {
		name   string
		target netip.Addr
		port   uint16
		mark   decode.UDPMark
	}{
		{"no target", netip.Addr{}, 7, testUDPMark},
		{"port 0", lo, 0, testUDPMark},
		{"empty mark", lo, 7, decode.UDPMark{}},
		{"no room for the mark", lo, 7, noRoom},
		{"payload too long", lo, 7, tooLong},
	} {
		if p, err := OpenUDP(tc.target, tc.port, tc.mark, Options{}); err == nil {
			p.Close()
			t.Errorf("%s: OpenUDP succeeded", tc.name)
		}
	}
}

func TestUDPOpenLeaksNoFD(t *testing.T) { testOpenLeaksNoFD(t, openUDP9) }

func TestUDPOpenNoRoute(t *testing.T) { testOpenNoRoute(t, openUDP9) }
