package nftrace

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// parseOne decodes the single trace message of a datagram.
func parseOne(t *testing.T, b []byte) traceMsg {
	t.Helper()
	var msgs []traceMsg
	if err := parseTraceMessages(b, func(m *traceMsg) { msgs = append(msgs, *m) }); err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 {
		t.Fatalf("%d trace messages, want 1", len(msgs))
	}
	return msgs[0]
}

const capturedTable = "tracepkt_17596_dff9dad6"

var (
	capturedA4Addr = netip.MustParseAddr("198.19.84.2")
	capturedB4Addr = netip.MustParseAddr("198.19.84.130")
	capturedA6Addr = netip.MustParseAddr("fd00:7470:1233:8f2a::2")
	capturedB6Addr = netip.MustParseAddr("fd00:7470:1233:8f2a:8000::2")
)

func TestParseTrace(t *testing.T) {
	echoRequest := packet{Src: capturedA4Addr, Dst: capturedB4Addr, Echo: true, ICMPType: 8, EchoID: 0x4242, Seq: 1, Cookie: 0x80b6c47c}
	for _, tc := range []struct {
		name string
		msg  []byte
		want traceMsg
	}{
		{"helper rule with headers", capturedA4[0], traceMsg{
			Family: unix.NFPROTO_INET, NFProto: unix.NFPROTO_IPV4, Table: capturedTable, Chain: "output",
			RuleHandle: 5, Type: unix.NFT_TRACETYPE_RULE, Verdict: unix.NFT_CONTINUE, HasVerdict: true,
			ID: 0xe1248abe, Oif: 2, Packet: echoRequest, HasPacket: true,
		}},
		{"end of base chain", capturedA4[1], traceMsg{
			Family: unix.NFPROTO_INET, NFProto: unix.NFPROTO_IPV4, Table: capturedTable, Chain: "output",
			Type: unix.NFT_TRACETYPE_RULE, Verdict: unix.NFT_CONTINUE, HasVerdict: true, ID: 0xe1248abe,
		}},
		{"policy", capturedA4[2], traceMsg{
			Family: unix.NFPROTO_INET, NFProto: unix.NFPROTO_IPV4, Table: capturedTable, Chain: "output",
			Type: unix.NFT_TRACETYPE_POLICY, Policy: 1, HasPolicy: true, ID: 0xe1248abe,
		}},
		{"iptables-nft jump", capturedA4[3], traceMsg{
			Family: unix.NFPROTO_IPV4, NFProto: unix.NFPROTO_IPV4, Table: "filter", Chain: "OUTPUT",
			RuleHandle: 3, Type: unix.NFT_TRACETYPE_RULE, Verdict: unix.NFT_JUMP, HasVerdict: true, Target: "TP_OUT",
			ID: 0xe1248abe, Oif: 2, Packet: echoRequest, HasPacket: true,
		}},
		{"iptables-nft return, no headers", capturedA4[4], traceMsg{
			Family: unix.NFPROTO_IPV4, NFProto: unix.NFPROTO_IPV4, Table: "filter", Chain: "TP_OUT",
			RuleHandle: 4, Type: unix.NFT_TRACETYPE_RULE, Verdict: unix.NFT_RETURN, HasVerdict: true, ID: 0xe1248abe,
		}},
		{"iptables-nft accept", capturedA4[5], traceMsg{
			Family: unix.NFPROTO_IPV4, NFProto: unix.NFPROTO_IPV4, Table: "filter", Chain: "OUTPUT",
			RuleHandle: 5, Type: unix.NFT_TRACETYPE_RULE, Verdict: 1, HasVerdict: true, ID: 0xe1248abe,
		}},
		{"reply at prerouting with link-layer header", capturedA4[6], traceMsg{
			Family: unix.NFPROTO_INET, NFProto: unix.NFPROTO_IPV4, Table: capturedTable, Chain: "prerouting",
			RuleHandle: 2, Type: unix.NFT_TRACETYPE_RULE, Verdict: unix.NFT_CONTINUE, HasVerdict: true,
			ID: 0x8613874f, Iif: 2, HasPacket: true,
			Packet: packet{Src: capturedB4Addr, Dst: capturedA4Addr, Echo: true, ICMPType: 0, EchoID: 0x4242, Seq: 1, Cookie: 0x80b6c47c},
		}},
		{"end of regular chain", capturedR4[4], traceMsg{
			Family: unix.NFPROTO_INET, NFProto: unix.NFPROTO_IPV4, Table: "filt", Chain: "chk",
			Type: unix.NFT_TRACETYPE_RULE, Verdict: unix.NFT_CONTINUE, HasVerdict: true, ID: 0xe4c79fba,
		}},
		{"forwarded ipv6", capturedR6[3], traceMsg{
			Family: unix.NFPROTO_INET, NFProto: unix.NFPROTO_IPV6, Table: "filt", Chain: "forward",
			RuleHandle: 4, Type: unix.NFT_TRACETYPE_RULE, Verdict: 1, HasVerdict: true,
			ID: 0x9f383026, Iif: 2, Oif: 3, HasPacket: true,
			Packet: packet{Src: capturedA6Addr, Dst: capturedB6Addr, Echo: true, ICMPType: 128, EchoID: 0x4242, Seq: 2, Cookie: 0x6b305b85},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parseOne(t, tc.msg); got != tc.want {
				t.Errorf("parsed\n%+v\nwant\n%+v", got, tc.want)
			}
		})
	}
}

func TestParseTraceMalformed(t *testing.T) {
	msg := capturedA4[0]
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"length beyond datagram", msg[:len(msg)-8]},
		{"header only", msg[:nlmsgHdrLen+2]},
		{"attribute cut", func() []byte {
			b := slices.Clone(msg[:nlmsgHdrLen+nfgenMsgLen+6])
			b[0] = byte(len(b)) // nlmsg_len: the datagram, which ends inside an attribute
			b[1], b[2], b[3] = 0, 0, 0
			return b
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseTraceMessages(tc.b, func(*traceMsg) { t.Error("callback called on a malformed message") })
			if err == nil {
				t.Error("no error")
			}
		})
	}
	other := slices.Clone(capturedA4[1])
	other[4] = unix.NFT_MSG_NEWRULE // another nf_tables message type is skipped
	if err := parseTraceMessages(other, func(*traceMsg) { t.Error("callback called on a NEWRULE message") }); err != nil {
		t.Error(err)
	}
	two := slices.Concat(capturedA4[1], capturedA4[2])
	var n int
	if err := parseTraceMessages(two, func(*traceMsg) { n++ }); err != nil || n != 2 {
		t.Errorf("two messages in a datagram: %d decoded, error %v", n, err)
	}
	if !errors.Is(parseTrace(nil, new(traceMsg)), errShortMessage) {
		t.Error("parseTrace(nil) does not report a short message")
	}
}

// TestParseConntrack: the conntrack attributes Linux 6.16 adds to a trace
// message with headers (nf_trace_fill_ct_info): the state as a big-endian
// NF_CT_STATE bit, the direction as a byte; none for a packet without a
// conntrack entry.
func TestParseConntrack(t *testing.T) {
	for _, tc := range []struct {
		name    string
		state   uint32
		dir     uint8
		want    decode.CTState
		reply   bool
		present bool
	}{
		{"new", 1 << 3, 0, decode.CTNew, false, true},
		{"established reply", 1 << 1, 1, decode.CTEstablished, true, true},
		{"untracked", 1 << 6, 0, decode.CTUntracked, false, true},
		{"no entry", 0, 0, 0, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ae := netlink.NewAttributeEncoder()
			ae.ByteOrder = binary.BigEndian
			ae.String(unix.NFTA_TRACE_TABLE, "t")
			if tc.present {
				ae.Uint32(nftaTraceCTState, tc.state)
				ae.Uint8(nftaTraceCTDirection, tc.dir)
			}
			attrs, err := ae.Encode()
			if err != nil {
				t.Fatal(err)
			}
			var m traceMsg
			if err := parseTrace(append([]byte{unix.NFPROTO_INET, 0, 0, 0}, attrs...), &m); err != nil {
				t.Fatal(err)
			}
			if m.Table != "t" || m.CT != tc.want || m.CTReply != tc.reply {
				t.Errorf("table %q, ct %v reply %v, want %v %v", m.Table, m.CT, m.CTReply, tc.want, tc.reply)
			}
		})
	}
}

func TestParsePacket(t *testing.T) {
	v4 := mustHex("4500005439f440004001cc09c6135402c6135482")
	icmp := mustHex("08000d934242000180b6c47cd9946cd018eb1d54")
	v6 := slices.Concat(mustHex("600000000040"+"3a"+"40"), capturedA6Addr.AsSlice(), capturedB6Addr.AsSlice())
	icmp6 := mustHex("80000000424200020000")
	// TCP segments of probe 2 of a run with cookie 0xc0ffee00: ISN 0xc0ffee04.
	v4tcp := slices.Concat(v4[:9], []byte{6}, v4[10:])
	syn := mustHex("9c4001bb" + "c0ffee04" + "00000000" + "5002faf0" + "00000000")
	synAck := mustHex("01bb9c40" + "11111111" + "c0ffee05" + "5012faf0" + "00000000")
	rst := mustHex("9c4001bb" + "c0ffee05" + "00000000" + "5004faf0" + "00000000")
	rstAck := mustHex("01bb9c40" + "00000000" + "c0ffee05" + "5014faf0" + "00000000")
	// A UDP request from port 40000 to 53, the mark alone: cookie 0xc0ffee00, probe 3, echo
	// id 0x4242; and the first 20 bytes of one with a 504-byte payload.
	v4udp := slices.Concat(v4[:9], []byte{17}, v4[10:])
	udp := mustHex("9c400035" + "0010abcd" + "c0ffee00" + "00034242")
	long := slices.Concat(mustHex("9c400035"+"0208abcd"), []byte("abcdefghijkl"))
	quotedV4 := mustHex("4500003c00004000400600006313540263135482")
	for _, tc := range []struct {
		name               string
		network, transport []byte
		want               packet
	}{
		{"ipv4 echo request", v4, icmp, packet{Src: capturedA4Addr, Dst: capturedB4Addr, Echo: true, ICMPType: 8, EchoID: 0x4242, Seq: 1, Cookie: 0x80b6c47c}},
		{"ipv4 udp", v4udp, udp, packet{Src: capturedA4Addr, Dst: capturedB4Addr, UDP: true, Sport: 40000, Dport: 53, UDPLen: 16,
			Payload: [12]byte{0xc0, 0xff, 0xee, 0x00, 0, 3, 0x42, 0x42}, Visible: 8}},
		{"ipv4 udp, 12 bytes of payload shown", v4udp, long, packet{Src: capturedA4Addr, Dst: capturedB4Addr, UDP: true, Sport: 40000, Dport: 53, UDPLen: 520,
			Payload: [12]byte{'a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k', 'l'}, Visible: 12}},
		{"ipv4 udp header cut", v4udp, udp[:7], packet{Src: capturedA4Addr, Dst: capturedB4Addr}},
		{"ipv4 icmp not echo", v4, slices.Concat([]byte{3}, icmp[1:]), packet{Src: capturedA4Addr, Dst: capturedB4Addr}},
		{"ipv4 icmpv6 echo type", v4, slices.Concat([]byte{128}, icmp[1:]), packet{Src: capturedA4Addr, Dst: capturedB4Addr}},
		{"ipv4 transport cut", v4, icmp[:7], packet{Src: capturedA4Addr, Dst: capturedB4Addr}},
		{"ipv4 cut", v4[:19], icmp, packet{}},
		{"ipv6 echo request", v6, icmp6, packet{Src: capturedA6Addr, Dst: capturedB6Addr, Echo: true, ICMPType: 128, EchoID: 0x4242, Seq: 2}},
		{"ipv6 echo reply behind a hop-by-hop header", slices.Concat(v6[:6], []byte{0}, v6[7:]), slices.Concat([]byte{129}, icmp6[1:], make([]byte, 4)),
			packet{Src: capturedA6Addr, Dst: capturedB6Addr, Echo: true, ICMPType: 129, EchoID: 0x4242, Seq: 2, TCP: true, Key: 0x42420001, // as TCP: no flags, seq 0x42420002
				UDP: true, Sport: 0x8100, UDPLen: 0x4242, Visible: 6}}, // as UDP
		{"ipv6 udp", slices.Concat(v6[:6], []byte{17}, v6[7:]), udp, packet{Src: capturedA6Addr, Dst: capturedB6Addr, UDP: true, Sport: 40000, Dport: 53, UDPLen: 16,
			Payload: [12]byte{0xc0, 0xff, 0xee, 0x00, 0, 3, 0x42, 0x42}, Visible: 8}},
		{"ipv6 icmpv4 echo type", v6, slices.Concat([]byte{8}, icmp6[1:]), packet{Src: capturedA6Addr, Dst: capturedB6Addr}},
		{"ipv6 cut", v6[:39], icmp6, packet{}},
		{"ipv4 SYN", v4tcp, syn, packet{Src: capturedA4Addr, Dst: capturedB4Addr, TCP: true, TCPFlags: 0x02, Key: 0xc0ffee04, Sport: 40000, Dport: 443}},
		{"ipv4 SYN-ACK", v4tcp, synAck, packet{Src: capturedA4Addr, Dst: capturedB4Addr, TCP: true, TCPFlags: 0x12, Key: 0xc0ffee04, Sport: 443, Dport: 40000}},
		{"ipv4 own RST", v4tcp, rst, packet{Src: capturedA4Addr, Dst: capturedB4Addr, TCP: true, TCPFlags: 0x04, Key: 0xc0ffee04, Sport: 40000, Dport: 443}},
		{"ipv4 tcp cut before its flags", v4tcp, syn[:13], packet{Src: capturedA4Addr, Dst: capturedB4Addr}},
		{"ipv4 unreachable quoting a SYN: the trace's 20 bytes end before its seq", v4, slices.Concat([]byte{3, 3, 0xfc, 0xfc, 0, 0, 0, 0}, quotedV4[:12]),
			packet{Src: capturedA4Addr, Dst: capturedB4Addr}},
		{"ipv6 RST|ACK", slices.Concat(v6[:6], []byte{6}, v6[7:]), rstAck, packet{Src: capturedA6Addr, Dst: capturedB6Addr, TCP: true, TCPFlags: 0x14, Key: 0xc0ffee04, Sport: 443, Dport: 40000}},
		{"not ip", []byte{0x20}, icmp, packet{}},
		{"empty", nil, nil, packet{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := parsePacket(tc.network, tc.transport); got != tc.want {
				t.Errorf("parsePacket = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestMatchClaim: a TCP run claims its packets (decode.Key, less the cookie, even and within
// the span), numbering them as the BPF probes do; an echo match claims only echoes of its id.
func TestMatchClaim(t *testing.T) {
	m := decode.TCPMark{EchoID: 0x7c03, Cookie: 0xc0ffee00, Span: 8}
	tcp := Match{EchoID: 0x7c03, TCP: &m}
	for _, tc := range []struct {
		name  string
		match Match
		p     packet
		ours  bool
		seq   uint16
	}{
		{"SYN of probe 2", tcp, packet{TCP: true, TCPFlags: 0x02, Key: 0xc0ffee04}, true, 2},
		{"answer to probe 3", tcp, packet{TCP: true, TCPFlags: 0x12, Key: 0xc0ffee06}, true, 3},
		{"odd key", tcp, packet{TCP: true, TCPFlags: 0x02, Key: 0xc0ffee05}, false, 0},
		{"key past the span", tcp, packet{TCP: true, TCPFlags: 0x02, Key: 0xc0ffee08}, false, 0},
		{"key below the cookie", tcp, packet{TCP: true, TCPFlags: 0x02, Key: 0xc0ffedfe}, false, 0},
		{"echo of the run's id", tcp, packet{Echo: true, ICMPType: 8, EchoID: 0x7c03, Seq: 1}, false, 0},
		{"echo of the id", Match{EchoID: 0x7c03}, packet{Echo: true, ICMPType: 8, EchoID: 0x7c03, Seq: 1}, true, 1},
		{"echo of another id", Match{EchoID: 0x7c03}, packet{Echo: true, ICMPType: 8, EchoID: 0x7c04, Seq: 1}, false, 0},
		{"TCP in an echo run", Match{EchoID: 0x7c03}, packet{TCP: true, TCPFlags: 0x02, Key: 0xc0ffee04}, false, 0},
		{"echo whose id a NAT rewrote, by its cookie", Match{EchoID: 0x7c03, EchoCookie: 0xfeed0001}, packet{Echo: true, ICMPType: 0, EchoID: 0x9911, Seq: 4, Cookie: 0xfeed0001}, true, 4},
		{"echo of another id and cookie", Match{EchoID: 0x7c03, EchoCookie: 0xfeed0001}, packet{Echo: true, ICMPType: 8, EchoID: 0x9911, Seq: 4, Cookie: 0xfeed0002}, false, 0},
		{"another id, a run without cookie", Match{EchoID: 0x7c03}, packet{Echo: true, ICMPType: 8, EchoID: 0x9911, Seq: 4}, false, 0},
	} {
		p := tc.p
		ours := (&claimer{match: tc.match}).claim(&p, 0)
		if ours != tc.ours || ours && (p.Seq != tc.seq || p.EchoID != 0x7c03) {
			t.Errorf("%s: claim = %v, %+v; want %v, seq %d", tc.name, ours, p, tc.ours, tc.seq)
		}
		if ours && tc.match.TCP != nil && p.Proto != decode.ProtoTCP || tc.match.TCP == nil && p.Proto != 0 {
			t.Errorf("%s: proto %d", tc.name, p.Proto)
		}
	}
}

// TestClaimUDP: a UDP run claims a request whose visible payload bytes are its own, taking
// the probe number from the mark where the trace shows it whole, else from the seq chain
// of the helper table, and once TraceReplies gave the prober's port, a datagram to that
// port as a reply to the latest request claimed.
func TestClaimUDP(t *testing.T) {
	const id, cookie, sport = 0x7d00, 0x5eed0000, 40000
	mark := func(port uint16, user []byte) *decode.UDPMark {
		m, err := decode.NewUDPMark(id, cookie, port, user)
		if err != nil {
			t.Fatal(err)
		}
		return &m
	}
	def, dns, user, short := mark(7, nil), mark(decode.DNSPort, nil), mark(7, []byte("abcdefghijkl")), mark(7, []byte("abc"))
	// datagram is what a trace shows of a datagram from src to dst with payload.
	datagram := func(src, dst uint16, payload []byte) packet {
		p := packet{UDP: true, Sport: src, Dport: dst, UDPLen: uint16(udpHeaderLen + len(payload))}
		p.Visible = uint8(copy(p.Payload[:], payload))
		return p
	}
	request := func(m *decode.UDPMark, seq uint16) packet { return datagram(sport, 53, m.Payload(seq)) }
	withByte := func(p packet, i int, b byte) packet { p.Payload[i] = b; return p }
	withLen := func(p packet, n uint16) packet { p.UDPLen = n; return p }

	dnsAnswer := dns.Payload(9)
	dnsAnswer[2] |= 0x80 // QR: a response
	for _, tc := range []struct {
		name  string
		m     *decode.UDPMark
		sport uint16 // given to TraceReplies; 0: not called
		p     packet
		ours  bool
		seq   uint16
		flags uint8
		trace uint32 // the packet's trace id: 7, the one the seq chain read probe 9 of
	}{
		{"default payload", def, 0, request(def, 9), true, 9, 0, 7},
		{"default payload, other cookie", def, 0, withByte(request(def, 9), 3, 1), false, 0, 0, 7},
		{"default payload, other echo id", def, 0, withByte(request(def, 9), 7, 1), false, 0, 0, 7},
		{"default payload, other length", def, 0, withLen(request(def, 9), 17), false, 0, 0, 7},
		{"dns query: seq from the seq chain", dns, 0, request(dns, 9), true, 9, 0, 7},
		{"dns query, id not the seq chain's", dns, 0, request(dns, 10), false, 0, 0, 7},
		{"dns query, not through the seq chain", dns, 0, request(dns, 9), false, 0, 0, 8},
		{"dns query, other flags", dns, 0, withByte(request(dns, 9), 3, 0x20), false, 0, 0, 7},
		{"dns query, two questions", dns, 0, withByte(request(dns, 9), 5, 2), false, 0, 0, 7},
		{"dns answer", dns, 0, datagram(53, sport, dnsAnswer), false, 0, 0, 7},
		{"user payload: mark out of sight, seq from the seq chain", user, 0, request(user, 9), true, 9, 0, 7},
		{"user payload, not through the seq chain", user, 0, request(user, 9), false, 0, 0, 8},
		{"user payload, other bytes", user, 0, withByte(request(user, 9), 0, 'x'), false, 0, 0, 7},
		{"short user payload: mark in sight", short, 0, request(short, 9), true, 9, 0, 7},
		{"short user payload, other cookie", short, 0, withByte(request(short, 9), 3, 0), false, 0, 0, 7},
		{"reply to the prober", dns, sport, datagram(53, sport, []byte("answer")), true, 9, decode.UDPAnswer, 7},
		{"reply before TraceReplies", dns, 0, datagram(53, sport, []byte("answer")), false, 0, 0, 7},
		{"datagram to another port", dns, sport, datagram(53, sport+1, []byte("answer")), false, 0, 0, 7},
		{"request once replies are traced", def, sport, request(def, 10), true, 10, 0, 7},
		{"not udp", def, sport, packet{Echo: true, ICMPType: 8, EchoID: id, Seq: 9}, false, 0, 0, 7},
	} {
		c := &claimer{match: Match{EchoID: id, UDP: tc.m}, table: "tracepkt_1_0badcafe", sport: tc.sport}
		// Trace id 7 went through the seq chain, which read probe 9: the jump to seq, then
		// to seq_bit0 and seq_bit3 (seq_bit16 is none).
		for _, target := range []string{chainSeq, "seq_bit0", "seq_bit3", "seq_bit16"} {
			c.observe(&traceMsg{Family: unix.NFPROTO_INET, Table: c.table, HasVerdict: true, Verdict: unix.NFT_JUMP, Target: target, ID: 7})
		}
		// Another table's jumps say nothing.
		c.observe(&traceMsg{Family: unix.NFPROTO_INET, Table: "tracepkt_1_00000000", HasVerdict: true, Verdict: unix.NFT_JUMP, Target: "seq_bit1", ID: 7})
		// A request of probe 9 claimed first: the probe number of replies.
		if first := request(tc.m, 9); !c.claim(&first, 7) {
			t.Fatalf("%s: probe 9 not claimed", tc.name)
		}
		p := tc.p
		ours := c.claim(&p, tc.trace)
		if ours != tc.ours {
			t.Errorf("%s: claim = %v, want %v", tc.name, ours, tc.ours)
			continue
		}
		if ours && (p.Proto != decode.ProtoUDP || p.EchoID != id || p.Seq != tc.seq || p.TCPFlags != tc.flags) {
			t.Errorf("%s: %+v, want proto udp, echo id %#x, seq %d, flags %#x", tc.name, p, id, tc.seq, tc.flags)
		}
	}
}

func TestVerdictName(t *testing.T) {
	for code, want := range map[int32]string{
		0: "DROP", 1: "ACCEPT", 2: "STOLEN", 3: "QUEUE", 4: "REPEAT", 5: "STOP",
		-1: "CONTINUE", -2: "BREAK", -3: "JUMP", -4: "GOTO", -5: "RETURN",
		3 | 7<<16:         "QUEUE", // NF_QUEUE_NR(7)
		(1 << 16) | 0:     "DROP",  // NF_DROP_ERR(-EPERM)
		-6:                "VERDICT(-6)",
		6:                 "VERDICT(6)",
		int32(0x7fffff06): "VERDICT(2147483398)",
	} {
		if got := verdictName(code); got != want {
			t.Errorf("verdictName(%d) = %q, want %q", code, got, want)
		}
	}
}

func TestFamilyAndHookNames(t *testing.T) {
	for f, want := range map[uint8]string{1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6", 42: "family(42)"} {
		if got := familyName(f); got != want {
			t.Errorf("familyName(%d) = %q, want %q", f, got, want)
		}
		if code, ok := familyCodes[want]; ok && code != f {
			t.Errorf("familyCodes[%q] = %d, want %d", want, code, f)
		}
	}
	for _, tc := range []struct {
		family  uint8
		hooknum uint32
		want    decode.Hook
	}{
		{unix.NFPROTO_INET, 0, decode.HookPrerouting},
		{unix.NFPROTO_IPV4, 1, decode.HookInput},
		{unix.NFPROTO_IPV6, 2, decode.HookForward},
		{unix.NFPROTO_BRIDGE, 3, decode.HookOutput},
		{unix.NFPROTO_INET, 4, decode.HookPostrouting},
		{unix.NFPROTO_INET, 5, decode.HookUnknown},
		{unix.NFPROTO_NETDEV, 0, decode.HookUnknown}, // ingress
		{unix.NFPROTO_ARP, 1, decode.HookUnknown},
	} {
		if got := hookOf(tc.family, tc.hooknum); got != tc.want {
			t.Errorf("hookOf(%d, %d) = %v, want %v", tc.family, tc.hooknum, got, tc.want)
		}
	}
}

// capturedChains is what NFT_MSG_GETCHAIN lists in A and R of the capture.
var capturedChains = map[chainKey]chainInfo{
	{unix.NFPROTO_INET, capturedTable, "prerouting"}: {true, decode.HookPrerouting},
	{unix.NFPROTO_INET, capturedTable, "output"}:     {true, decode.HookOutput},
	{unix.NFPROTO_IPV4, "filter", "OUTPUT"}:          {true, decode.HookOutput},
	{unix.NFPROTO_IPV4, "filter", "TP_OUT"}:          {},
	{unix.NFPROTO_IPV6, "filter", "OUTPUT"}:          {true, decode.HookOutput},
	{unix.NFPROTO_INET, "filt", "forward"}:           {true, decode.HookForward},
	{unix.NFPROTO_INET, "filt", "chk"}:               {},
}

// assembleCaptured runs captured datagrams of one namespace through receive and assemble.
func assembleCaptured(t *testing.T, netns uint32, echoID uint16, chains map[chainKey]chainInfo, datagrams ...[]byte) []decode.NetfilterEvent {
	t.Helper()
	st := &nsState{}
	for _, d := range datagrams {
		if err := parseTraceMessages(d, func(m *traceMsg) { st.receive(m, &claimer{match: Match{EchoID: echoID}}) }); err != nil {
			t.Fatal(err)
		}
	}
	return assemble(netns, st.pending, map[uint32]decode.Hook{}, func(k chainKey) (chainInfo, bool) {
		c, ok := chains[k]
		return c, ok
	})
}

func TestAssembleCaptured(t *testing.T) {
	const a, r = 1001, 1002
	for _, tc := range []struct {
		name      string
		netns     uint32
		datagrams [][]byte
		want      []row
	}{
		{"A ipv4", a, capturedA4, []row{
			{a, "ip", "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "JUMP", "TP_OUT", 3, "", true},
			{a, "ip", "filter", "TP_OUT", decode.HookOutput, decode.TraceRule, "RETURN", "", 4, "", true},
			{a, "ip", "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "ACCEPT", "", 5, "", true},
		}},
		{"R ipv4", r, capturedR4, []row{
			{r, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "JUMP", "chk", 3, "", true},
			{r, "inet", "filt", "chk", decode.HookForward, decode.TraceReturn, "CONTINUE", "", 0, "", true},
			{r, "inet", "filt", "forward", decode.HookForward, decode.TracePolicy, "ACCEPT", "", 0, "", true},
			{r, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "JUMP", "chk", 3, "", false},
			{r, "inet", "filt", "chk", decode.HookForward, decode.TraceReturn, "CONTINUE", "", 0, "", false},
			{r, "inet", "filt", "forward", decode.HookForward, decode.TracePolicy, "ACCEPT", "", 0, "", false},
		}},
		{"A ipv6", a, capturedA6, []row{
			{a, "ip6", "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "ACCEPT", "", 2, "", true},
		}},
		{"R ipv6", r, capturedR6, []row{
			{r, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "ACCEPT", "", 4, "", true},
			{r, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "ACCEPT", "", 4, "", false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkRows(t, assembleCaptured(t, tc.netns, 0x4242, capturedChains, tc.datagrams...), tc.want)
			if ev := assembleCaptured(t, tc.netns, 0x4243, capturedChains, tc.datagrams...); len(ev) != 0 {
				t.Errorf("another echo id: %d events, want none:\n%s", len(ev), rowsString(rows(ev)))
			}
		})
	}
}

// TestAssembleUnknownChains: when the chains cannot be listed, events keep everything but
// the hook, and the end of chk still shows (its base chain is not known to be one).
func TestAssembleUnknownChains(t *testing.T) {
	got := assembleCaptured(t, 7, 0x4242, nil, capturedR4[:7]...)
	want := []row{
		{7, "inet", "filt", "forward", decode.HookUnknown, decode.TraceRule, "JUMP", "chk", 3, "", true},
		{7, "inet", "filt", "chk", decode.HookUnknown, decode.TraceReturn, "CONTINUE", "", 0, "", true},
		{7, "inet", "filt", "forward", decode.HookUnknown, decode.TracePolicy, "ACCEPT", "", 0, "", true},
	}
	checkRows(t, got, want)
}

// TestReceiveWithoutHeaders: a message whose trace id was never seen with headers cannot be
// tied to a packet and is dropped.
func TestReceiveWithoutHeaders(t *testing.T) {
	if ev := assembleCaptured(t, 7, 0x4242, capturedChains, capturedA4[4:6]...); len(ev) != 0 {
		t.Errorf("%d events from messages without headers, want none", len(ev))
	}
}

func TestEventFields(t *testing.T) {
	ev := assembleCaptured(t, 1001, 0x4242, capturedChains, capturedR6...)
	want := decode.NetfilterEvent{
		Netns: 1001, Family: "inet", Table: "filt", Chain: "forward", Hook: decode.HookForward,
		Type: decode.TraceRule, Verdict: "ACCEPT", RuleHandle: 4, Iif: 2, Oif: 3, TraceID: 0x9f383026,
		ICMPType: 128, EchoID: 0x4242, Seq: 2, Src: capturedA6Addr, Dst: capturedB6Addr, Source: "nftrace",
	}
	if len(ev) == 0 || ev[0] != want {
		t.Errorf("first event %+v, want %+v", ev, want)
	}
}

// capturedA4: messages read in namespace A during an IPv4 echo with id 0x4242.
var capturedA4 = [][]byte{
	// tracepkt_17596_dff9dad6 output type 3 handle 5 id e1248abe
	mustHex("ac000000110a000000000000000000000100000008000f0000000002080004000000000308000600e1248abe0b0002006f757470757400001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000050c00050008000100ffffffff08000c000000000206000d0000010000180008004500005439f440004001cc09c6135402c61354821800090008000d934242000180b6c47cd9946cd018eb1d54"),
	// tracepkt_17596_dff9dad6 output type 3 handle 0 id e1248abe
	mustHex("60000000110a000000000000000000000100000008000f0000000002080004000000000308000600e1248abe0b0002006f757470757400001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 output type 1 handle 0 id e1248abe
	mustHex("5c000000110a000000000000000000000100000008000f0000000002080004000000000108000600e1248abe0b0002006f757470757400001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
	// filter OUTPUT type 3 handle 3 id e1248abe
	mustHex("a8000000110a000000000000000000000200000008000f0000000002080004000000000308000600e1248abe0b0002004f555450555400000b00010066696c74657200000c00030000000000000000031800050008000100fffffffd0b00020054505f4f5554000008000c000000000206000d0000010000180008004500005439f440004001cc09c6135402c61354821800090008000d934242000180b6c47cd9946cd018eb1d54"),
	// filter TP_OUT type 3 handle 4 id e1248abe
	mustHex("5c000000110a000000000000000000000200000008000f0000000002080004000000000308000600e1248abe0b00020054505f4f555400000b00010066696c74657200000c00030000000000000000040c00050008000100fffffffb"),
	// filter OUTPUT type 3 handle 5 id e1248abe
	mustHex("5c000000110a000000000000000000000200000008000f0000000002080004000000000308000600e1248abe0b0002004f555450555400000b00010066696c74657200000c00030000000000000000050c0005000800010000000001"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 2 id 8613874f
	mustHex("c4000000110a000000000000000000000100000008000f00000000020800040000000003080006008613874f0f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000020c00050008000100ffffffff08000a000000000206000b0000010000180008004500005492fd00003f01b400c6135482c613540218000900000015934242000180b6c47cd9946cd018eb1d5412000700c2298637e8dd76d27a3a34df08000000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 0 id 8613874f
	mustHex("64000000110a000000000000000000000100000008000f00000000020800040000000003080006008613874f0f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 prerouting type 1 handle 0 id 8613874f
	mustHex("60000000110a000000000000000000000100000008000f00000000020800040000000001080006008613874f0f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
}

// capturedR4: messages read in namespace R during an IPv4 echo with id 0x4242.
var capturedR4 = [][]byte{
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 2 id e4c79fba
	mustHex("c4000000110a000000000000000000000100000008000f0000000002080004000000000308000600e4c79fba0f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000020c00050008000100ffffffff08000a000000000206000b0000010000180008004500005439f440004001cc09c6135402c61354821800090008000d934242000180b6c47cd9946cd018eb1d541200070076d27a3a34dfc2298637e8dd08000000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 0 id e4c79fba
	mustHex("64000000110a000000000000000000000100000008000f0000000002080004000000000308000600e4c79fba0f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 prerouting type 1 handle 0 id e4c79fba
	mustHex("60000000110a000000000000000000000100000008000f0000000002080004000000000108000600e4c79fba0f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
	// filt forward type 3 handle 3 id e4c79fba
	mustHex("c8000000110a000000000000000000000100000008000f0000000002080004000000000308000600e4c79fba0c000200666f7277617264000900010066696c74000000000c00030000000000000000031400050008000100fffffffd0800020063686b0008000a000000000206000b000001000008000c000000000306000d0000010000180008004500005439f440003f01cd09c6135402c61354821800090008000d934242000180b6c47cd9946cd018eb1d541200070076d27a3a34dfc2298637e8dd08000000"),
	// filt chk type 3 handle 0 id e4c79fba
	mustHex("4c000000110a000000000000000000000100000008000f0000000002080004000000000308000600e4c79fba0800020063686b000900010066696c74000000000c00050008000100ffffffff"),
	// filt forward type 3 handle 0 id e4c79fba
	mustHex("50000000110a000000000000000000000100000008000f0000000002080004000000000308000600e4c79fba0c000200666f7277617264000900010066696c74000000000c00050008000100ffffffff"),
	// filt forward type 1 handle 0 id e4c79fba
	mustHex("4c000000110a000000000000000000000100000008000f0000000002080004000000000108000600e4c79fba0c000200666f7277617264000900010066696c74000000000800100000000001"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 2 id ffdeafa4
	mustHex("c4000000110a000000000000000000000100000008000f0000000002080004000000000308000600ffdeafa40f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000020c00050008000100ffffffff08000a000000000306000b0000010000180008004500005492fd00004001b300c6135482c613540218000900000015934242000180b6c47cd9946cd018eb1d54120007003e2acdf2e2797e9a516ccfb008000000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 0 id ffdeafa4
	mustHex("64000000110a000000000000000000000100000008000f0000000002080004000000000308000600ffdeafa40f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 prerouting type 1 handle 0 id ffdeafa4
	mustHex("60000000110a000000000000000000000100000008000f0000000002080004000000000108000600ffdeafa40f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
	// filt forward type 3 handle 3 id ffdeafa4
	mustHex("c8000000110a000000000000000000000100000008000f0000000002080004000000000308000600ffdeafa40c000200666f7277617264000900010066696c74000000000c00030000000000000000031400050008000100fffffffd0800020063686b0008000a000000000306000b000001000008000c000000000206000d0000010000180008004500005492fd00003f01b400c6135482c613540218000900000015934242000180b6c47cd9946cd018eb1d54120007003e2acdf2e2797e9a516ccfb008000000"),
	// filt chk type 3 handle 0 id ffdeafa4
	mustHex("4c000000110a000000000000000000000100000008000f0000000002080004000000000308000600ffdeafa40800020063686b000900010066696c74000000000c00050008000100ffffffff"),
	// filt forward type 3 handle 0 id ffdeafa4
	mustHex("50000000110a000000000000000000000100000008000f0000000002080004000000000308000600ffdeafa40c000200666f7277617264000900010066696c74000000000c00050008000100ffffffff"),
	// filt forward type 1 handle 0 id ffdeafa4
	mustHex("4c000000110a000000000000000000000100000008000f0000000002080004000000000108000600ffdeafa40c000200666f7277617264000900010066696c74000000000800100000000001"),
}

// capturedA6: messages read in namespace A during an IPv6 echo with id 0x4242.
var capturedA6 = [][]byte{
	// tracepkt_17596_dff9dad6 output type 3 handle 6 id e64b9d08
	mustHex("c0000000110a000000000000000000000100000008000f000000000a080004000000000308000600e64b9d080b0002006f757470757400001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000060c00050008000100ffffffff08000c000000000206000d00000100002c000800600f92c100403a40fd00747012338f2a0000000000000002fd00747012338f2a800000000000000218000900800003e0424200026b305b85c6d73a2718eb1d54"),
	// tracepkt_17596_dff9dad6 output type 3 handle 0 id e64b9d08
	mustHex("60000000110a000000000000000000000100000008000f000000000a080004000000000308000600e64b9d080b0002006f757470757400001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 output type 1 handle 0 id e64b9d08
	mustHex("5c000000110a000000000000000000000100000008000f000000000a080004000000000108000600e64b9d080b0002006f757470757400001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
	// filter OUTPUT type 3 handle 2 id e64b9d08
	mustHex("b0000000110a000000000000000000000a00000008000f000000000a080004000000000308000600e64b9d080b0002004f555450555400000b00010066696c74657200000c00030000000000000000020c000500080001000000000108000c000000000206000d00000100002c000800600f92c100403a40fd00747012338f2a0000000000000002fd00747012338f2a800000000000000218000900800003e0424200026b305b85c6d73a2718eb1d54"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 3 id d7e6a712
	mustHex("d8000000110a000000000000000000000100000008000f000000000a080004000000000308000600d7e6a7120f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000030c00050008000100ffffffff08000a000000000206000b00000100002c0008006009ea0d00403a3ffd00747012338f2a8000000000000002fd00747012338f2a000000000000000218000900810002e0424200026b305b85c6d73a2718eb1d5412000700c2298637e8dd76d27a3a34df86dd0000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 0 id d7e6a712
	mustHex("64000000110a000000000000000000000100000008000f000000000a080004000000000308000600d7e6a7120f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 prerouting type 1 handle 0 id d7e6a712
	mustHex("60000000110a000000000000000000000100000008000f000000000a080004000000000108000600d7e6a7120f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
}

// capturedR6: messages read in namespace R during an IPv6 echo with id 0x4242.
var capturedR6 = [][]byte{
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 3 id 9f383026
	mustHex("d8000000110a000000000000000000000100000008000f000000000a0800040000000003080006009f3830260f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000030c00050008000100ffffffff08000a000000000206000b00000100002c000800600f92c100403a40fd00747012338f2a0000000000000002fd00747012338f2a800000000000000218000900800003e0424200026b305b85c6d73a2718eb1d541200070076d27a3a34dfc2298637e8dd86dd0000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 0 id 9f383026
	mustHex("64000000110a000000000000000000000100000008000f000000000a0800040000000003080006009f3830260f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 prerouting type 1 handle 0 id 9f383026
	mustHex("60000000110a000000000000000000000100000008000f000000000a0800040000000001080006009f3830260f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
	// filt forward type 3 handle 4 id 9f383026
	mustHex("d4000000110a000000000000000000000100000008000f000000000a0800040000000003080006009f3830260c000200666f7277617264000900010066696c74000000000c00030000000000000000040c000500080001000000000108000a000000000206000b000001000008000c000000000306000d00000100002c000800600f92c100403a3ffd00747012338f2a0000000000000002fd00747012338f2a800000000000000218000900800003e0424200026b305b85c6d73a2718eb1d541200070076d27a3a34dfc2298637e8dd86dd0000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 3 id 9f466ab6
	mustHex("d8000000110a000000000000000000000100000008000f000000000a0800040000000003080006009f466ab60f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00030000000000000000030c00050008000100ffffffff08000a000000000306000b00000100002c0008006009ea0d00403a40fd00747012338f2a8000000000000002fd00747012338f2a000000000000000218000900810002e0424200026b305b85c6d73a2718eb1d54120007003e2acdf2e2797e9a516ccfb086dd0000"),
	// tracepkt_17596_dff9dad6 prerouting type 3 handle 0 id 9f466ab6
	mustHex("64000000110a000000000000000000000100000008000f000000000a0800040000000003080006009f466ab60f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000c00050008000100ffffffff"),
	// tracepkt_17596_dff9dad6 prerouting type 1 handle 0 id 9f466ab6
	mustHex("60000000110a000000000000000000000100000008000f000000000a0800040000000001080006009f466ab60f000200707265726f7574696e6700001c0001007472616365706b745f31373539365f6466663964616436000800100000000001"),
	// filt forward type 3 handle 4 id 9f466ab6
	mustHex("d4000000110a000000000000000000000100000008000f000000000a0800040000000003080006009f466ab60c000200666f7277617264000900010066696c74000000000c00030000000000000000040c000500080001000000000108000a000000000306000b000001000008000c000000000206000d00000100002c0008006009ea0d00403a3ffd00747012338f2a8000000000000002fd00747012338f2a000000000000000218000900810002e0424200026b305b85c6d73a2718eb1d54120007003e2acdf2e2797e9a516ccfb086dd0000"),
}
