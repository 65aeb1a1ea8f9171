package testrecord

import (
	"encoding/binary"
	"net/netip"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// The demo topology of cmd/tracepkt-perf: bridge tpdemo0 and veth tpdemoh in
// the root namespace, the container's eth0 in its own.
const (
	RootNetns = 4026531833
	CtrNetns  = 4026532400
	EchoID    = 0x1234
)

var (
	Host4, Ctr4 = netip.MustParseAddr("172.31.250.1"), netip.MustParseAddr("172.31.250.2")
	Host6, Ctr6 = netip.MustParseAddr("fd00:7470::1"), netip.MustParseAddr("fd00:7470::2")
)

// StartWall and StartKtime are the clocks of the test recordings' header:
// DemoEcho's packets carry timestamps that agree with them.
var StartWall = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC)

const StartKtime = 1_000_000

// Snapshot is the demo topology's namespaces and interfaces.
func Snapshot() *decode.Snapshot {
	return &decode.Snapshot{Namespaces: []decode.Namespace{
		{
			Inode: RootNetns,
			Pids:  []int{1},
			Comms: []string{"systemd"},
			Interfaces: []decode.Interface{
				{Ifindex: 1, Name: "lo", Kind: "loopback", Addrs: []netip.Prefix{
					netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}},
				{Ifindex: 9, Name: "tpdemo0", Kind: "bridge", Addrs: []netip.Prefix{
					netip.MustParsePrefix("172.31.250.1/24"), netip.MustParsePrefix("fd00:7470::1/64")}},
				{Ifindex: 10, Name: "tpdemoh", Kind: "veth", PeerIfindex: 2, PeerNetns: CtrNetns, Master: "tpdemo0"},
			},
		},
		{
			Inode: CtrNetns,
			Names: []string{"tpdemo0-1234"},
			Pids:  []int{1234, 1240},
			Comms: []string{"sleep", "sh"},
			Interfaces: []decode.Interface{
				{Ifindex: 1, Name: "lo", Kind: "loopback"},
				{Ifindex: 2, Name: "eth0", Kind: "veth", PeerIfindex: 10, PeerNetns: RootNetns, Addrs: []netip.Prefix{
					netip.MustParsePrefix("172.31.250.2/24"), netip.MustParsePrefix("fd00:7470::2/64")}},
			},
		},
	}}
}

// ICMPEcho builds an IPv4 or IPv6 ICMP echo request or reply with valid
// checksums, as ping(8) sends it: the payload starts with a timestamp.
func ICMPEcho(src, dst netip.Addr, request bool, id, seq uint16, ipID uint16, sent time.Time) []byte {
	return ICMPEchoSize(src, dst, request, id, seq, ipID, sent, 56)
}

// ICMPEchoSize is ICMPEcho with size bytes of payload.
func ICMPEchoSize(src, dst netip.Addr, request bool, id, seq uint16, ipID uint16, sent time.Time, size int) []byte {
	payload := make([]byte, size)
	binary.LittleEndian.PutUint64(payload[0:], uint64(sent.Unix()))
	binary.LittleEndian.PutUint64(payload[8:], uint64(sent.Nanosecond()/1000))
	for i := 16; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	icmp := make([]byte, 8, 8+len(payload))
	switch {
	case src.Is4() && request:
		icmp[0] = 8
	case src.Is4():
		icmp[0] = 0
	case request:
		icmp[0] = 128
	default:
		icmp[0] = 129
	}
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	icmp = append(icmp, payload...)
	if src.Is4() {
		binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, 0))
		return append(ipHeader(src, dst, 1, len(icmp), ipID), icmp...)
	}
	// The ICMPv6 checksum covers a pseudo-header, as TCP's does.
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, pseudoHeader(src, dst, 58, len(icmp))))
	return append(ipHeader(src, dst, 58, len(icmp), ipID), icmp...)
}

// TCPSegment builds an IPv4 or IPv6 packet holding a bare TCP header (no
// options, no payload) from src to dst, with valid checksums.
func TCPSegment(src, dst netip.AddrPort, flags uint8, seq, ack uint32, ipID uint16) []byte {
	tcp := make([]byte, 20)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	binary.BigEndian.PutUint32(tcp[8:], ack)
	tcp[12] = 5 << 4 // data offset: 20 bytes
	tcp[13] = flags
	if flags&decode.TCPRst == 0 {
		binary.BigEndian.PutUint16(tcp[14:], 64240) // window
	}
	sum := pseudoHeader(src.Addr(), dst.Addr(), decode.ProtoTCP, len(tcp))
	binary.BigEndian.PutUint16(tcp[16:], inetChecksum(tcp, sum))
	return append(ipHeader(src.Addr(), dst.Addr(), decode.ProtoTCP, len(tcp), ipID), tcp...)
}

// ipHeader is the IPv4 header (with its checksum, don't fragment, TTL 64) or
// IPv6 header (hop limit 64) of a packet of n bytes of protocol proto.
func ipHeader(src, dst netip.Addr, proto uint8, n int, ipID uint16) []byte {
	if src.Is4() {
		ip := make([]byte, 20, 20+n)
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+n))
		binary.BigEndian.PutUint16(ip[4:], ipID)
		ip[6] = 0x40 // don't fragment
		ip[8] = 64   // TTL
		ip[9] = proto
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip, 0))
		return ip
	}
	ip := make([]byte, 40, 40+n)
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(n))
	ip[6] = proto
	ip[7] = 64 // hop limit
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	return ip
}

// pseudoHeader is the sum of the pseudo-header a TCP or ICMPv6 checksum
// covers: the addresses, the protocol and the length n.
func pseudoHeader(src, dst netip.Addr, proto uint8, n int) uint32 {
	var sum uint32
	for _, a := range [][]byte{src.AsSlice(), dst.AsSlice()} {
		for i := 0; i < len(a); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(a[i:]))
		}
	}
	return sum + uint32(n) + uint32(proto)
}

// checksum is the Internet checksum (RFC 1071) of b, starting from sum.
func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// HopRecord is the record a probe takes of pkt, as Record.Decode returns it:
// for an ICMP echo, its id and sequence number; for a TCP segment, the probe
// TCPMark says its sequence numbers are of.
func HopRecord(ts, skb uint64, netns, ifindex uint32, ifname string, probe decode.Probe, cpu uint32, pkt []byte) decode.Record {
	r := decode.Record{Time: ts, Skb: skb, Netns: netns, Ifindex: ifindex, Len: uint32(len(pkt)) + 14, CPU: cpu, Probe: probe}
	copy(r.Ifname[:], ifname)
	var icmp []byte
	var proto uint8
	if pkt[0]>>4 == 4 {
		r.Family = 4
		r.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		r.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		icmp, proto = pkt[20:], pkt[9]
	} else {
		r.Family = 6
		r.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		r.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		icmp, proto = pkt[40:], pkt[6]
	}
	r.CapLen = uint16(copy(r.Packet[:], pkt))
	if proto == decode.ProtoTCP {
		tcp := icmp
		r.Proto, r.TCPFlags, r.EchoID = decode.ProtoTCP, tcp[13], EchoID
		r.Seq, _ = TCPMark.Probe(decode.Key(tcp[13], binary.BigEndian.Uint32(tcp[4:]), binary.BigEndian.Uint32(tcp[8:])))
		return r
	}
	r.ICMPType = icmp[0]
	r.EchoID = binary.BigEndian.Uint16(icmp[4:])
	r.Seq = binary.BigEndian.Uint16(icmp[6:])
	return r
}

// DemoEcho returns what the rings hold after echo seq of the demo, in the
// order they are drained (CPU by CPU), and its target. Every tenth echo has
// a lost-sample notice; every third runs the request on CPU 1, so its records
// come after the reply's.
func DemoEcho(family int, seq uint16) (recs []decode.Record, target netip.Addr) {
	src, dst := Host4, Ctr4
	if family == 6 {
		src, dst = Host6, Ctr6
	}
	t0 := 2_000_000 + uint64(seq)*1_000_000_000 + uint64(seq)*7919%5000
	sent := StartWall.Add(time.Duration(t0 - StartKtime))
	req := ICMPEcho(src, dst, true, EchoID, seq, 0x4000+seq*3, sent)
	rep := ICMPEcho(dst, src, false, EchoID, seq, 0x9000+seq*5, sent)
	skbReq := 0xffff888004a1c300 + uint64(seq%64)*0x1900
	skbRep := 0xffff888012f40a00 - uint64(seq%32)*0x0d00
	reqCPU := uint32(0)
	if seq%3 == 0 {
		reqCPU = 1
	}
	request := []decode.Record{
		HopRecord(t0, skbReq, RootNetns, 9, "tpdemo0", decode.ProbeNetDevQueue, reqCPU, req),
		HopRecord(t0+3100, skbReq, RootNetns, 10, "tpdemoh", decode.ProbeNetDevQueue, reqCPU, req),
		HopRecord(t0+9800, skbReq, CtrNetns, 2, "eth0", decode.ProbeNetifReceiveSkb, reqCPU, req),
	}
	reply := []decode.Record{
		HopRecord(t0+21000, skbRep, CtrNetns, 2, "eth0", decode.ProbeNetDevQueue, 0, rep),
		HopRecord(t0+27500, skbRep, RootNetns, 10, "tpdemoh", decode.ProbeNetifReceiveSkb, 0, rep),
		HopRecord(t0+48000, skbRep, RootNetns, 9, "tpdemo0", decode.ProbeNetifReceiveSkb, 0, rep),
	}
	recs = append(request, reply...)
	if reqCPU == 1 {
		recs = append(reply, request...)
	}
	if seq%10 == 0 {
		recs = append(recs, decode.Record{CPU: 1, Lost: uint64(seq/10) + 1})
	}
	return recs, dst
}

// TCPMark marks the demo's TCP probes: probe k's SYN has ISN TCPMark.ISN(k).
var TCPMark = decode.TCPMark{EchoID: EchoID, Cookie: 0x5eed0000, Span: decode.MaxTCPSpan}

// TCPPort is the port the demo's TCP probes go to.
const TCPPort = 8080

// DemoTCP returns what the rings hold after TCP probe seq of the demo, and
// its outcome: the SYN from the host to the container's TCPPort, then for
// an open port the SYN-ACK back and the host's RST after it, for a closed
// one the container's RST.
func DemoTCP(family int, seq uint16, open bool) ([]decode.Record, decode.Outcome) {
	src, dst := Host4, Ctr4
	if family == 6 {
		src, dst = Host6, Ctr6
	}
	prober, target := netip.AddrPortFrom(src, 40000+seq), netip.AddrPortFrom(dst, TCPPort)
	t0 := 2_000_000 + uint64(seq)*1_000_000_000
	isn := TCPMark.ISN(seq)
	skbSyn := 0xffff888004a1c300 + uint64(seq%64)*0x1900
	skbAns := 0xffff888012f40a00 - uint64(seq%32)*0x0d00
	out := func(t uint64, skb uint64, pkt []byte) []decode.Record {
		return []decode.Record{
			HopRecord(t, skb, RootNetns, 9, "tpdemo0", decode.ProbeNetDevQueue, 0, pkt),
			HopRecord(t+3100, skb, RootNetns, 10, "tpdemoh", decode.ProbeNetDevQueue, 0, pkt),
			HopRecord(t+9800, skb, CtrNetns, 2, "eth0", decode.ProbeNetifReceiveSkb, 0, pkt),
		}
	}
	back := func(t uint64, skb uint64, pkt []byte) []decode.Record {
		return []decode.Record{
			HopRecord(t, skb, CtrNetns, 2, "eth0", decode.ProbeNetDevQueue, 0, pkt),
			HopRecord(t+6500, skb, RootNetns, 10, "tpdemoh", decode.ProbeNetifReceiveSkb, 0, pkt),
			HopRecord(t+27000, skb, RootNetns, 9, "tpdemo0", decode.ProbeNetifReceiveSkb, 0, pkt),
		}
	}
	o := decode.Outcome{Target: dst, EchoID: EchoID, Seq: seq, Proto: decode.ProtoTCP, Port: TCPPort,
		From: dst, Timeout: time.Second, RTT: 48300 * time.Nanosecond}
	recs := out(t0, skbSyn, TCPSegment(prober, target, decode.TCPSyn, isn, 0, 0x4000+seq*3))
	if !open {
		o.TCPFlags = decode.TCPRst | decode.TCPAck
		return append(recs, back(t0+15000, skbAns, TCPSegment(target, prober, o.TCPFlags, 0, isn+1, 0))...), o
	}
	o.Replied, o.TCPFlags = true, decode.TCPSyn|decode.TCPAck
	recs = append(recs, back(t0+21000, skbAns, TCPSegment(target, prober, o.TCPFlags, 0x7a3b0000+uint32(seq), isn+1, 0))...)
	return append(recs, out(t0+62000, skbSyn+0x100, TCPSegment(prober, target, decode.TCPRst, isn+1, 0, 0x4001+seq*3))...), o
}
