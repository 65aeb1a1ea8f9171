package decode

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

func TestTCPMark(t *testing.T) {
	m := NewTCPMark(7, 1000, 3)
	if m.Span != 6 || m.Cookie != 1000 || m.EchoID != 7 {
		t.Fatalf("mark %+v", m)
	}
	isn := m.ISN(2)
	cases := []struct {
		name           string
		flags          uint8
		seq, ack       uint32
		wantSeq        uint16
		wantOurs       bool
		wantRequest    bool
		wantPacketType string
	}{
		{"our SYN", TCPSyn, isn, 0, 2, true, true, "syn"},
		{"SYN-ACK", TCPSyn | TCPAck, 99, isn + 1, 2, true, false, "syn-ack"},
		{"RST answering the SYN", TCPRst | TCPAck, 0, isn + 1, 2, true, false, "rst"},
		{"our kernel's RST to the SYN-ACK", TCPRst, isn + 1, 0, 2, true, true, "rst"},
		{"SYN of a probe past the span", TCPSyn, m.ISN(3), 0, 0, false, true, "syn"},
		{"SYN with an odd key", TCPSyn, isn + 1, 0, 0, false, true, "syn"},
		{"SYN below the cookie", TCPSyn, 999, 0, 0, false, true, "syn"},
		{"answer to another SYN", TCPSyn | TCPAck, 0, isn, 0, false, false, "syn-ack"},
	}
	for _, c := range cases {
		seq, ok := m.Probe(Key(c.flags, c.seq, c.ack))
		if ok != c.wantOurs || ok && seq != c.wantSeq {
			t.Errorf("%s: probe %d %v, want %d %v", c.name, seq, ok, c.wantSeq, c.wantOurs)
		}
		if got := IsTCPRequest(c.flags); got != c.wantRequest {
			t.Errorf("%s: request %v", c.name, got)
		}
		if got := TCPType(c.flags); got != c.wantPacketType {
			t.Errorf("%s: type %q, want %q", c.name, got, c.wantPacketType)
		}
	}
}

func TestNewTCPMarkNeverWraps(t *testing.T) {
	for _, count := range []int{1, 1000, 65536, 1 << 20} {
		m := NewTCPMark(1, ^uint32(0), count)
		if m.Cookie+m.Span < m.Cookie {
			t.Errorf("count %d: cookie %#x span %d wraps", count, m.Cookie, m.Span)
		}
		if want := min(2*uint32(count), MaxTCPSpan); m.Span != want {
			t.Errorf("count %d: span %d, want %d", count, m.Span, want)
		}
		if _, ok := m.Probe(m.ISN(uint16(min(count, 65536) - 1))); !ok {
			t.Errorf("count %d: the last probe is not of the run", count)
		}
	}
}

// tcpHop is a device record of a TCP packet of probe 0, with its IPv4 and
// TCP headers captured.
func tcpHop(ts uint64, netns uint32, p Probe, flags uint8, src, dst string) Record {
	s, d := netip.MustParseAddrPort(src), netip.MustParseAddrPort(dst)
	r := Record{Time: ts, Netns: netns, Ifindex: 2, Probe: p, Family: 4, Proto: ProtoTCP, TCPFlags: flags,
		EchoID: 7, Src: s.Addr(), Dst: d.Addr(), CapLen: 40}
	r.Packet[0] = 0x45
	r.Packet[9] = ProtoTCP
	copy(r.Packet[12:], s.Addr().AsSlice())
	copy(r.Packet[16:], d.Addr().AsSlice())
	binary.BigEndian.PutUint16(r.Packet[20:], s.Port())
	binary.BigEndian.PutUint16(r.Packet[22:], d.Port())
	r.Packet[33] = flags
	return r
}

func TestPorts(t *testing.T) {
	h := tcpHop(1, 1, ProbeNetDevQueue, TCPSyn, "10.0.0.1:40000", "10.96.0.10:80")
	if s, d, ok := h.Ports(); !ok || s != 40000 || d != 80 {
		t.Errorf("ports %d %d %v", s, d, ok)
	}
	h.CapLen = 22
	if _, _, ok := h.Ports(); ok {
		t.Error("ports of a truncated capture")
	}
	h.CapLen, h.ICMPType = 40, 3
	if _, _, ok := h.Ports(); ok {
		t.Error("ports of an ICMP error")
	}
}

func TestTranslations(t *testing.T) {
	const client, node, pod = 1, 2, 3
	c, vip, ep, masq := "10.0.0.1:40000", "10.96.0.10:80", "10.244.1.5:8080", "10.244.1.1:61234"
	hops := []Record{
		tcpHop(10, client, ProbeNetDevQueue, TCPSyn, c, vip),
		tcpHop(20, node, ProbeNetifReceiveSkb, TCPSyn, c, vip),
		tcpHop(30, node, ProbeNetDevQueue, TCPSyn, masq, ep), // DNAT and masquerade in node
		tcpHop(40, pod, ProbeNetifReceiveSkb, TCPSyn, masq, ep),
		tcpHop(50, pod, ProbeNetDevQueue, TCPSyn|TCPAck, ep, masq),
		tcpHop(60, node, ProbeNetifReceiveSkb, TCPSyn|TCPAck, ep, masq),
		tcpHop(70, node, ProbeNetDevQueue, TCPSyn|TCPAck, vip, c), // conntrack undoes both
		tcpHop(80, client, ProbeNetifReceiveSkb, TCPSyn|TCPAck, vip, c),
		tcpHop(90, client, ProbeNetDevQueue, TCPRst, c, vip), // the prober's RST: same DNAT again
		tcpHop(100, node, ProbeNetifReceiveSkb, TCPRst, c, vip),
		tcpHop(110, node, ProbeNetDevQueue, TCPRst, masq, ep),
	}
	nf := []NetfilterEvent{
		{Netns: node, Table: "nat", Chain: "KUBE-SEP-XYZ", Hook: HookPrerouting, Type: TraceRule, Verdict: "ACCEPT",
			RuleHandle: 3, Rule: "meta l4proto tcp dnat to 10.244.1.5:8080", Proto: ProtoTCP, TCPFlags: TCPSyn, Src: hops[0].Src},
		{Netns: node, Table: "kube-proxy", Chain: "service-X", Hook: HookPrerouting, Type: TraceRule, Verdict: "JUMP",
			RuleHandle: 5, Rule: "ip saddr != 10.244.0.0/16 jump mark-for-masquerade", Proto: ProtoTCP, TCPFlags: TCPSyn, Src: hops[0].Src},
		{Netns: node, Table: "nat", Chain: "KUBE-POSTROUTING", Hook: HookPostrouting, Type: TraceRule, Verdict: "ACCEPT",
			RuleHandle: 9, Rule: "masquerade fully-random", Proto: ProtoTCP, TCPFlags: TCPSyn, Src: hops[0].Src},
	}
	j := Journey{Outcome: Outcome{Target: netip.MustParseAddr("10.96.0.10"), Port: 80, Proto: ProtoTCP}, Hops: hops, Netfilter: nf}
	var got []string
	for _, tr := range j.Translations() {
		rule := ""
		if tr.Rule != nil {
			rule = " " + tr.Rule.Chain
		}
		got = append(got, tr.Kind+" "+tr.Before.String()+">"+tr.After.String()+" @"+string(rune('0'+tr.Netns))+" hop"+string(rune('0'+tr.Hop))+rule)
	}
	want := []string{
		"DNAT 10.96.0.10:80>10.244.1.5:8080 @2 hop2 KUBE-SEP-XYZ",
		"SNAT 10.0.0.1:40000>10.244.1.1:61234 @2 hop2 KUBE-POSTROUTING",
		"reverse SNAT 10.244.1.1:61234>10.0.0.1:40000 @2 hop6",
		"reverse DNAT 10.244.1.5:8080>10.96.0.10:80 @2 hop6",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("translations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// Where nft could not print the rule's target, the rule of a nat chain
	// at the hook that accepted the packet made it; a chain's end did not.
	j.Netfilter = []NetfilterEvent{
		{Netns: node, Table: "nat", Chain: "KUBE-SEP-XYZ", Hook: HookPrerouting, Type: TraceRule, Verdict: "ACCEPT",
			RuleHandle: 3, Rule: "meta l4proto tcp counter", Proto: ProtoTCP, TCPFlags: TCPSyn, Src: hops[0].Src},
		{Netns: node, Table: "nat", Chain: "KUBE-MARK-MASQ", Hook: HookPrerouting, Type: TraceReturn, Verdict: "CONTINUE",
			Proto: ProtoTCP, TCPFlags: TCPSyn, Src: hops[0].Src},
	}
	if tr := j.Translations(); tr[0].Rule == nil || tr[0].Rule.Chain != "KUBE-SEP-XYZ" || tr[1].Rule != nil {
		t.Errorf("DNAT by a rule without its text: %+v", tr[:2])
	}

	// A DNAT in OUTPUT, where the probe was sent: its first hop already
	// goes to the endpoint.
	j.Hops = []Record{tcpHop(10, client, ProbeNetDevQueue, TCPSyn, c, ep)}
	if tr := j.Translations(); len(tr) != 1 || tr[0].Kind != "DNAT" || tr[0].Netns != client || tr[0].Hop != 0 {
		t.Errorf("OUTPUT DNAT: %+v", tr)
	}
	// Loopback to a published port, masqueraded where it was sent: the
	// first hop already shows both changes, and the source's only shows
	// undone, on the answer (bridge netfilter makes it before the bridge's
	// own receive); the probe's is its inverse, made by the masquerade.
	lo, pub, ctr, gw := "127.0.0.1:40000", "127.0.0.1:8080", "10.88.0.5:80", "10.88.0.1:40000"
	j = Journey{Outcome: Outcome{Target: netip.MustParseAddr("127.0.0.1"), Port: 8080, Proto: ProtoTCP}, Hops: []Record{
		tcpHop(10, node, ProbeNetDevQueue, TCPSyn, gw, ctr),
		tcpHop(20, pod, ProbeNetifReceiveSkb, TCPSyn, gw, ctr),
		tcpHop(30, pod, ProbeNetDevQueue, TCPSyn|TCPAck, ctr, gw),
		tcpHop(40, node, ProbeNetifReceiveSkb, TCPSyn|TCPAck, ctr, gw),
		tcpHop(50, node, ProbeNetifReceiveSkb, TCPSyn|TCPAck, ctr, lo),
	}, Netfilter: []NetfilterEvent{
		{Netns: node, Table: "nat", Chain: "NETAVARK-DN-1", Hook: HookOutput, Type: TraceRule, Verdict: "ACCEPT",
			RuleHandle: 4, Rule: "tcp dport 8080 counter dnat to 10.88.0.5:80", Proto: ProtoTCP, TCPFlags: TCPSyn},
		{Netns: node, Table: "nat", Chain: "NETAVARK-HOSTPORT-MASQ", Hook: HookPostrouting, Type: TraceRule, Verdict: "ACCEPT",
			RuleHandle: 7, Rule: "meta mark & 0x00002000 == 0x00002000 counter masquerade", Proto: ProtoTCP, TCPFlags: TCPSyn},
	}}
	got = nil
	for _, tr := range j.Translations() {
		rule := ""
		if tr.Rule != nil {
			rule = " " + tr.Rule.Chain
		}
		got = append(got, tr.Kind+" "+tr.Before.String()+">"+tr.After.String()+" @"+string(rune('0'+tr.Netns))+" hop"+string(rune('0'+tr.Hop))+rule)
	}
	want = []string{
		"DNAT " + pub + ">" + ctr + " @2 hop0 NETAVARK-DN-1",
		"SNAT " + lo + ">" + gw + " @2 hop0 NETAVARK-HOSTPORT-MASQ",
		"reverse SNAT " + gw + ">" + lo + " @2 hop4",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("loopback masqueraded where sent:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// With the source the probe was sent from, the masquerade is seen
	// where it was made, not inferred from its undoing.
	j.Source = netip.MustParseAddrPort(lo)
	if tr := j.Translations(); len(tr) != 3 || tr[1].Kind != "SNAT" || tr[1].Before.String() != lo || tr[1].After.String() != gw ||
		tr[1].Netns != node || tr[1].Hop != 0 || tr[1].Rule == nil || tr[1].Rule.RuleHandle != 7 {
		t.Errorf("loopback masqueraded where sent, source known: %+v", tr)
	}

	// An echo has none.
	j.Proto = 0
	if tr := j.Translations(); tr != nil {
		t.Errorf("an echo's translations: %+v", tr)
	}
}

// TestTranslationsFromSource: a source NAT in the prober's own namespace,
// before the first hop, shows only against the source the probe was sent
// from: conntrack undoes it on the answer after the answer's last hop.
func TestTranslationsFromSource(t *testing.T) {
	const client, server = 1, 2
	sent, snat, srv := "10.0.0.1:40000", "10.0.0.9:40000", "10.0.1.2:80"
	for _, proto := range []uint8{ProtoTCP, ProtoUDP} {
		request, answer := uint8(TCPSyn), uint8(TCPSyn|TCPAck)
		if proto == ProtoUDP {
			request, answer = 0, UDPAnswer
		}
		hop := func(t uint64, netns uint32, p Probe, flags uint8, src, dst string) Record {
			h := tcpHop(t, netns, p, flags, src, dst)
			h.Proto = proto
			return h
		}
		j := Journey{Outcome: Outcome{Target: netip.MustParseAddr("10.0.1.2"), Port: 80, Proto: proto}, Hops: []Record{
			hop(10, client, ProbeNetDevQueue, request, snat, srv),
			hop(20, server, ProbeNetifReceiveSkb, request, snat, srv),
			hop(30, server, ProbeNetDevQueue, answer, srv, snat),
			hop(40, client, ProbeNetifReceiveSkb, answer, srv, snat),
		}, Netfilter: []NetfilterEvent{
			{Netns: client, Table: "nat", Chain: "postrouting", Hook: HookPostrouting, Type: TraceRule, Verdict: "ACCEPT",
				RuleHandle: 4, Rule: "oifname \"eth0\" snat ip to 10.0.0.9", Proto: proto, TCPFlags: request},
		}}
		if tr := j.Translations(); tr != nil {
			t.Errorf("proto %d, source not known: %+v", proto, tr)
		}
		j.Source = netip.MustParseAddrPort(sent)
		tr := j.Translations()
		if len(tr) != 1 || tr[0].Kind != "SNAT" || tr[0].Before.String() != sent || tr[0].After.String() != snat ||
			tr[0].Netns != client || tr[0].Hop != 0 || tr[0].Rule == nil || tr[0].Rule.RuleHandle != 4 {
			t.Errorf("proto %d: %+v", proto, tr)
		}
	}
}

func TestTCPResult(t *testing.T) {
	j := Journey{Outcome: Outcome{Proto: ProtoTCP, Replied: true, TCPFlags: TCPSyn | TCPAck}}
	if r := j.Result(); r != "open" {
		t.Errorf("SYN-ACK: %q", r)
	}
	j.Replied, j.TCPFlags = false, TCPRst|TCPAck
	if r := j.Result(); r != "closed" {
		t.Errorf("RST: %q", r)
	}
	j.TCPFlags, j.Error = 0, &ICMPError{Family: 4, Type: 3, Code: 3}
	if r := j.Result(); r != "unreachable" {
		t.Errorf("port unreachable: %q", r)
	}
	j.Error = nil
	if r := j.Result(); r != "timeout" {
		t.Errorf("nothing: %q", r)
	}
}

func TestTCPRowsAndSplit(t *testing.T) {
	const client, node = 1, 2
	c, s := "10.0.0.1:40000", "10.0.0.2:80"
	j := Journey{Outcome: Outcome{Proto: ProtoTCP, Replied: true}, Hops: []Record{
		tcpHop(10, client, ProbeNetDevQueue, TCPSyn, c, s),
		tcpHop(20, node, ProbeNetifReceiveSkb, TCPSyn, c, s),
		tcpHop(30, node, ProbeNetDevQueue, TCPSyn|TCPAck, s, c),
		tcpHop(40, client, ProbeNetifReceiveSkb, TCPSyn|TCPAck, s, c),
		tcpHop(50, client, ProbeNetDevQueue, TCPRst, c, s),
		tcpHop(60, node, ProbeNetifReceiveSkb, TCPRst, c, s),
	}}
	// The prober's RST comes after the answer: the split ends at the answer.
	if req, target, rep, ok := j.Split(); !ok || req != 10 || target != 10 || rep != 10 {
		t.Errorf("split %v %v %v %v", req, target, rep, ok)
	}
	// An nftrace verdict on the RST in node is placed after the RST entered
	// node, not after the SYN did.
	j.Netfilter = []NetfilterEvent{
		{Netns: node, Table: "filter", Chain: "INPUT", Hook: HookInput, Type: TracePolicy, Verdict: "ACCEPT",
			Proto: ProtoTCP, TCPFlags: TCPRst, Src: j.Hops[0].Src, Iif: 2},
	}
	rows := j.Rows()
	if rows[len(rows)-1].NF == nil {
		t.Errorf("the RST's verdict is not after its hop: %s", rowNames(rows))
	}
}
