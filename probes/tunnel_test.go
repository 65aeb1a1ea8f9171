package probes

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// tunnelRow is what the tunnel tests compare of a record: a TCP test's row
// (the inner packet's) and where the inner header starts.
type tunnelRow struct {
	tcpRow
	Tunnel uint16
}

func (r tunnelRow) String() string { return fmt.Sprintf("%v tunnel@%d", r.tcpRow, r.Tunnel) }

func tunnelRowOf(r *decode.Record) tunnelRow { return tunnelRow{tcpRowOf(r), r.Tunnel} }

// etherFrame is an Ethernet frame around an IPv4 or IPv6 packet, or of
// EtherType ether if not zero.
func etherFrame(ether uint16, packet []byte) []byte {
	b := []byte{0x02, 0, 0, 0, 0, 0xb1, 0x02, 0, 0, 0, 0, 0xa1, 0, 0}
	if ether == 0 {
		ether = decode.EtherIPv4
		if packet[0]>>4 == 6 {
			ether = decode.EtherIPv6
		}
	}
	binary.BigEndian.PutUint16(b[12:], ether)
	return append(b, packet...)
}

// vxlan is a VXLAN header of vni before frame.
func vxlan(vni uint32, frame []byte) []byte {
	b := []byte{0x08, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	return append(b, frame...)
}

// geneve is a Geneve header of vni, optLen 4-byte words of options
// (options of their own, written as zeros) and protocol proto before
// payload.
func geneve(vni uint32, optLen int, proto uint16, payload []byte) []byte {
	b := make([]byte, 8+4*optLen)
	b[0] = byte(optLen)
	binary.BigEndian.PutUint16(b[2:], proto)
	binary.BigEndian.PutUint32(b[4:], vni<<8)
	return append(b, payload...)
}

// greHeader is a GRE header of flags (checksum, key and sequence bits,
// version) and protocol proto, with a word for each optional field flags
// has, before payload.
func greHeader(flags, proto uint16, key uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, flags)
	b = binary.BigEndian.AppendUint16(b, proto)
	if flags&0x8000 != 0 {
		b = append(b, 0, 0, 0, 0)
	}
	if flags&0x2000 != 0 {
		b = binary.BigEndian.AppendUint32(b, key)
	}
	if flags&0x1000 != 0 {
		b = append(b, 0, 0, 0, 1)
	}
	return append(b, payload...)
}

// TestTunnelFilterPackets hands the device programs of an echo run crafted
// packets in tunnels, as TestTCPFilterPackets does: the run's echoes and an
// error quoting one, carried in VXLAN (both ports), Geneve (with options,
// and carrying IP directly), IPIP, SIT, IP6IP6, GRE (checksum and key) and
// GRETAP, over IPv4 and IPv6, are recorded leaving and entering with the
// inner packet's addresses and where it starts; echoes of another id in a
// tunnel, frames that are not IP, a Geneve header whose option length
// points elsewhere, a datagram that ends inside the inner header, GRE of
// another version, UDP to another port, and a
// tunnel behind IPv4 options are not.
func TestTunnelFilterPackets(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	const id = 0x7e03
	tr := openTracer(t, Config{EchoID: id})
	c4, s4, c6, s6 := n.client4, n.server4, n.client6, n.server6
	// The pods' addresses, in the tunnel only.
	p1, p2 := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.2.7")
	q1, q2 := netip.MustParseAddr("fd00:244:1::5"), netip.MustParseAddr("fd00:244:2::7")
	echo := func(typ uint8, id, seq uint16) []byte {
		return []byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq)}
	}
	inner4 := func(seq uint16) []byte { return ipv4Packet(p1, p2, 1, nil, echo(8, id, seq)) }
	inner6 := func(seq uint16) []byte { return ipv6Packet(q1, q2, 58, echo(128, id, seq)) }
	udp4 := func(dport uint16, payload []byte) []byte {
		return ipv4Packet(c4, s4, 17, nil, udpDatagram(40000, dport, 0, payload))
	}
	udp6 := func(dport uint16, payload []byte) []byte {
		return ipv6Packet(c6, s6, 17, udpDatagram(40000, dport, 0, payload))
	}
	// Where the inner header starts: outer IP, UDP, tunnel and Ethernet headers.
	const vx4, vx6 = 20 + 8 + 8 + 14, 40 + 8 + 8 + 14
	nop := []byte{1, 1, 1, 1}
	cases := []filterCase{
		{"VXLAN", 4, udp4(4789, vxlan(42, etherFrame(0, inner4(1)))), true, 1, 0, 8, vx4},
		{"VXLAN on Linux's old port", 4, udp4(8472, vxlan(1, etherFrame(0, inner4(2)))), true, 2, 0, 8, vx4},
		{"VXLAN over IPv6, IPv6 inside", 6, udp6(4789, vxlan(42, etherFrame(0, inner6(3)))), true, 3, 0, 128, vx6},
		{"VXLAN over IPv6, IPv4 inside", 4, udp6(4789, vxlan(42, etherFrame(0, inner4(4)))), true, 4, 0, 8, vx6},
		{"VXLAN, a reply inside", 4, udp4(4789, vxlan(42, etherFrame(0, ipv4Packet(p2, p1, 1, nil, echo(0, id, 5))))), true, 5, 0, 0, vx4},
		{"VXLAN, unreachable quoting an echo", 4, udp4(4789, vxlan(42, etherFrame(0, ipv4Packet(p2, p1, 1, nil, icmpError(3, 1, inner4(6)))))), true, 6, 0, 3, vx4},
		{"Geneve with options", 4, udp4(6081, geneve(7, 2, decode.EtherTEB, etherFrame(0, inner4(7)))), true, 7, 0, 8, 20 + 8 + 8 + 8 + 14},
		{"Geneve over IPv6 with options", 6, udp6(6081, geneve(7, 3, decode.EtherTEB, etherFrame(0, inner6(8)))), true, 8, 0, 128, 40 + 8 + 8 + 12 + 14},
		{"Geneve carrying IP", 4, udp4(6081, geneve(7, 0, decode.EtherIPv4, inner4(9))), true, 9, 0, 8, 20 + 8 + 8},
		{"IPIP", 4, ipv4Packet(c4, s4, 4, nil, inner4(10)), true, 10, 0, 8, 20},
		{"SIT", 6, ipv4Packet(c4, s4, 41, nil, inner6(11)), true, 11, 0, 128, 20},
		{"IP6IP6", 6, ipv6Packet(c6, s6, 41, inner6(12)), true, 12, 0, 128, 40},
		{"IPv4 in IPv6", 4, ipv6Packet(c6, s6, 4, inner4(13)), true, 13, 0, 8, 40},
		{"GRE with checksum and key", 4, ipv4Packet(c4, s4, 47, nil, greHeader(0xa000, decode.EtherIPv4, 5, inner4(14))), true, 14, 0, 8, 20 + 12},
		{"GRE over IPv6", 6, ipv6Packet(c6, s6, 47, greHeader(0x2000, decode.EtherIPv6, 5, inner6(15))), true, 15, 0, 128, 40 + 8},
		{"GRETAP with sequence numbers", 4, ipv4Packet(c4, s4, 47, nil, greHeader(0x1000, decode.EtherTEB, 0, etherFrame(0, inner4(16)))), true, 16, 0, 8, 20 + 8 + 14},

		{"VXLAN, an echo of another id", 4, udp4(4789, vxlan(42, etherFrame(0, ipv4Packet(p1, p2, 1, nil, echo(8, id+1, 1))))), false, 0, 0, 0, 0},
		{"VXLAN, not IP", 4, udp4(4789, vxlan(42, etherFrame(0x0806, inner4(1)))), false, 0, 0, 0, 0},
		{"Geneve whose options are longer than said", 4, udp4(6081, geneve(7, 1, decode.EtherTEB, append(make([]byte, 4), etherFrame(0, inner4(1))...))), false, 0, 0, 0, 0},
		{"Geneve of another version", 4, append(udp4(6081, geneve(7, 0, decode.EtherIPv4, inner4(1)))[:28:28], append([]byte{0x40}, geneve(7, 0, decode.EtherIPv4, inner4(1))[1:]...)...), false, 0, 0, 0, 0},
		{"VXLAN cut inside the inner header", 4, udp4(4789, vxlan(42, etherFrame(0, inner4(1))[:14+10])), false, 0, 0, 0, 0},
		{"VXLAN-GPE's port", 4, udp4(4790, vxlan(42, etherFrame(0, inner4(1)))), false, 0, 0, 0, 0},
		{"GRE version 1", 4, ipv4Packet(c4, s4, 47, nil, greHeader(0x0001, decode.EtherIPv4, 0, inner4(1))), false, 0, 0, 0, 0},
		{"GRE of another protocol", 4, ipv4Packet(c4, s4, 47, nil, greHeader(0, 0x880b, 0, inner4(1))), false, 0, 0, 0, 0},
		{"VXLAN behind IPv4 options", 4, ipv4Packet(c4, s4, 17, nop, udpDatagram(40000, 4789, 0, vxlan(42, etherFrame(0, inner4(1))))), false, 0, 0, 0, 0},
		{"TCP to the VXLAN port", 4, ipv4Packet(c4, s4, 6, nil, udpDatagram(40000, 4789, 0, vxlan(42, etherFrame(0, inner4(1))))), false, 0, 0, 0, 0},
	}
	// The last case is ours: once its records come, the others' have had
	// time to.
	cases = append(cases, filterCase{"echo, last", 4, ipv4Packet(c4, s4, 1, nil, echo(8, id, 17)), true, 17, 0, 8, 0})

	want := sendCases(t, n, 0, id, cases, func(c filterCase, r tcpRow) tunnelRow { return tunnelRow{r, uint16(c.tunnel)} })
	checkRows(t, readRows(t, tr, want, 300*time.Millisecond, tunnelRowOf), want)
}

// TestTunnelFilterUDP: in a UDP run, a request of the run in VXLAN is
// recorded with the inner tuple, and so is its reply, by that tuple; a
// request sent to the VXLAN port itself, which is no VXLAN packet, is still
// a request, outside any tunnel.
func TestTunnelFilterUDP(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	m, err := decode.NewUDPMark(0x7d05, 0xa5c3e1f9, 0, []byte("hi"))
	if err != nil {
		t.Fatal(err)
	}
	tr := openTracer(t, Config{EchoID: m.EchoID, UDP: &m})
	c4, s4 := n.client4, n.server4
	p1, p2 := netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.2.7")
	inVXLAN := func(inner []byte) []byte {
		return ipv4Packet(c4, s4, 17, nil, udpDatagram(40000, decode.PortVXLAN, 0, vxlan(42, etherFrame(0, inner))))
	}
	const vx4 = 20 + 8 + 8 + 14
	cases := []filterCase{
		{"request in VXLAN", 4, inVXLAN(ipv4Packet(p1, p2, 17, nil, udpDatagram(40001, 53, 0, m.Payload(1)))), true, 1, 0, 0, vx4},
		{"its reply in VXLAN", 4, inVXLAN(ipv4Packet(p2, p1, 17, nil, udpDatagram(53, 40001, 0, []byte("pong")))), true, 1, decode.UDPAnswer, 0, vx4},
		{"a reply to another port in VXLAN", 4, inVXLAN(ipv4Packet(p2, p1, 17, nil, udpDatagram(53, 40002, 0, []byte("pong")))), false, 0, 0, 0, 0},
		{"request to the VXLAN port", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40003, decode.PortVXLAN, 0, m.Payload(2))), true, 2, 0, 0, 0},
		{"request to 4790", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40003, 4790, 0, m.Payload(3))), true, 3, 0, 0, 0},
	}
	want := sendCases(t, n, decode.ProtoUDP, m.EchoID, cases, func(c filterCase, r tcpRow) tunnelRow { return tunnelRow{r, uint16(c.tunnel)} })
	checkRows(t, readRows(t, tr, want, 300*time.Millisecond, tunnelRowOf), want)
}
