package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// udpRow is what the UDP tests compare of a record: a TCP test's row and the
// ports, where the record has them (decode.Record.Ports).
type udpRow struct {
	tcpRow
	Sport, Dport uint16
}

func (r udpRow) String() string { return fmt.Sprintf("%v ports %d>%d", r.tcpRow, r.Sport, r.Dport) }

func udpRowOf(r *decode.Record) udpRow {
	sport, dport, _ := r.Ports()
	return udpRow{tcpRowOf(r), sport, dport}
}

// udpDatagram is a UDP header from sport to dport, checksum 0, before
// payload; length is its length field, 0 for the datagram's own.
func udpDatagram(sport, dport uint16, length int, payload []byte) []byte {
	if length == 0 {
		length = 8 + len(payload)
	}
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(length))
	return append(b, payload...)
}

// TestUDPFilterPackets hands the device programs of a UDP run crafted
// packets, as TestTCPFilterPackets does: the run's requests (the mark at an
// odd offset), then datagrams answering them by their tuple inverted, one of
// them echoing another probe's mark, and ICMP errors quoting requests, over
// IPv4 with and without options and IPv6 with and without extension
// headers, are recorded leaving and entering; datagrams with another cookie
// or echo id, a mark out of place or past the datagram's length, other
// ports between the same hosts, the mark in TCP, and errors quoting such
// datagrams are not.
func TestUDPFilterPackets(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	m, err := decode.NewUDPMark(0x7d01, 0xa5c3e1f7, 9, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	tr := openTracer(t, Config{EchoID: m.EchoID, UDP: &m})
	c4, s4, c6, s6 := n.client4, n.server4, n.client6, n.server6
	const server = 53000
	request := func(sport uint16, k uint16) []byte { return udpDatagram(sport, server, 0, m.Payload(k)) }
	reply := func(dport uint16, payload []byte) []byte { return udpDatagram(server, dport, 0, payload) }
	otherCookie, otherID := m, m
	otherCookie.Cookie++
	otherID.EchoID++
	shifted := append([]byte{0}, m.Payload(1)...)
	nop := []byte{1, 1, 1, 1}
	pong := []byte("pong")
	cases := []filterCase{
		{"request", 4, ipv4Packet(c4, s4, 17, nil, request(40001, 1)), true, 1, 0, 0, 0},
		{"request, IPv4 options", 4, ipv4Packet(c4, s4, 17, nop, request(40002, 2)), true, 2, 0, 0, 0},
		{"request over IPv6", 6, ipv6Packet(c6, s6, 17, request(40003, 3)), true, 3, 0, 0, 0},
		{"request after hop-by-hop options", 6, ipv6Packet(c6, s6, 0, ipv6Options(17, request(40004, 4))), true, 4, 0, 0, 0},

		{"reply", 4, ipv4Packet(s4, c4, 17, nil, reply(40001, pong)), true, 1, decode.UDPAnswer, 0, 0},
		{"reply echoing another probe's mark", 4, ipv4Packet(s4, c4, 17, nil, reply(40002, m.Payload(7))), true, 2, decode.UDPAnswer, 0, 0},
		{"reply, IPv4 options", 4, ipv4Packet(s4, c4, 17, nop, reply(40001, pong)), true, 1, decode.UDPAnswer, 0, 0},
		{"reply over IPv6", 6, ipv6Packet(s6, c6, 17, reply(40003, nil)), true, 3, decode.UDPAnswer, 0, 0},
		{"reply after destination options", 6, ipv6Packet(s6, c6, 60, ipv6Options(17, reply(40004, pong))), true, 4, decode.UDPAnswer, 0, 0},
		{"port unreachable quoting a request", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 17, nil, request(40005, 5)))), true, 5, 0, 3, 0},
		{"ICMPv6 port unreachable quoting a request", 6, ipv6Packet(s6, c6, 58, icmpError(1, 4, ipv6Packet(c6, s6, 17, request(40006, 6)))), true, 6, 0, 1, 0},

		{"another cookie", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40010, server, 0, otherCookie.Payload(1))), false, 0, 0, 0, 0},
		{"another echo id", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40011, server, 0, otherID.Payload(1))), false, 0, 0, 0, 0},
		{"another echo id over IPv6", 6, ipv6Packet(c6, s6, 17, udpDatagram(40011, server, 0, otherID.Payload(1))), false, 0, 0, 0, 0},
		{"the mark one byte late", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40012, server, 0, shifted)), false, 0, 0, 0, 0},
		{"a UDP length that ends inside the mark", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40013, server, 8+m.Offset+decode.MarkLen-1, m.Payload(1))), false, 0, 0, 0, 0},
		{"a request's tuple again, unmarked", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40001, server, 0, []byte("hello"))), false, 0, 0, 0, 0},
		{"other ports between the same hosts", 4, ipv4Packet(c4, s4, 17, nil, udpDatagram(40001, server+1, 0, pong)), false, 0, 0, 0, 0},
		{"their answer", 4, ipv4Packet(s4, c4, 17, nil, udpDatagram(server+1, 40001, 0, pong)), false, 0, 0, 0, 0},
		{"an answer from another server port", 4, ipv4Packet(s4, c4, 17, nil, udpDatagram(server+1, 40002, 0, pong)), false, 0, 0, 0, 0},
		{"an answer over IPv6 to another client port", 6, ipv6Packet(s6, c6, 17, reply(40005, pong)), false, 0, 0, 0, 0},
		{"the mark in TCP", 4, ipv4Packet(c4, s4, 6, nil, udpDatagram(40001, server, 0, m.Payload(1))), false, 0, 0, 0, 0},
		{"unreachable quoting another cookie", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 17, nil, udpDatagram(40010, server, 0, otherCookie.Payload(1))))), false, 0, 0, 0, 0},
		{"unreachable whose IPv4 length ends inside the quoted mark", 4, shortened(ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 17, nil, request(40001, 1))))), false, 0, 0, 0, 0},
		{"ICMPv6 unreachable whose length ends inside the quoted mark", 6, shortened(ipv6Packet(s6, c6, 58, icmpError(1, 4, ipv6Packet(c6, s6, 17, request(40003, 3))))), false, 0, 0, 0, 0},
		{"unreachable quoting the mark in TCP", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 6, nil, request(40001, 1)))), false, 0, 0, 0, 0},
		{"echo request of the run's id", 4, ipv4Packet(c4, s4, 1, nil, []byte{8, 0, 0, 0, 0x7d, 0x01, 0, 1}), false, 0, 0, 0, 0},
	}
	// The last case is ours: once its records come, the others' have had
	// time to.
	cases = append(cases, filterCase{"request, last", 4, ipv4Packet(c4, s4, 17, nil, request(40007, 8)), true, 8, 0, 0, 0})

	want := sendCases(t, n, decode.ProtoUDP, m.EchoID, cases, func(c filterCase, r tcpRow) udpRow {
		sport, dport := sentPorts(c.family, c.icmp, c.packet)
		return udpRow{r, sport, dport}
	})
	checkRows(t, readRows(t, tr, want, 300*time.Millisecond, udpRowOf), want)
}

// shortened is an IPv4 or IPv6 packet whose length field leaves its last
// byte out.
func shortened(packet []byte) []byte {
	if packet[0]>>4 == 4 {
		binary.BigEndian.PutUint16(packet[2:], binary.BigEndian.Uint16(packet[2:])-1)
	} else {
		binary.BigEndian.PutUint16(packet[4:], binary.BigEndian.Uint16(packet[4:])-1)
	}
	return packet
}

// sentPorts are the ports the record of a UDP packet of ours (ICMP type
// icmp: an error quoting one) has, taken from the packet as sent.
func sentPorts(family, icmp uint8, packet []byte) (sport, dport uint16) {
	r := decode.Record{Family: family, Proto: decode.ProtoUDP, ICMPType: icmp, CapLen: uint16(min(len(packet), decode.PacketBytes))}
	copy(r.Packet[:], packet)
	sport, dport, _ = r.Ports()
	return sport, dport
}

// TestUDPTracerRecordsThroughNAT traces a UDP run through a router of the
// test's own, A - R - B, whose nftables send the run's port 5353 on R to an
// echo server on B (DNAT) and masquerade what leaves towards B, moving the
// client's port 40000 to 20000. Probe 1's request is recorded at each of
// its four hops with the tuple it has there, and the echo server's reply,
// which echoes the mark, at each of its own as a reply, by its tuple: after
// the masquerade, and after R undoes it. Probe 2, to a closed port of B,
// has its request and the ICMP port unreachable quoting it recorded at each
// hop. Datagrams with another cookie or echo id, and datagrams between the
// same hosts on other ports, are not, nor the server's echoes of them.
func TestUDPTracerRecordsThroughNAT(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "ip", "nft")
	topo := testenv.Topology(t)
	v4, _ := topology.TestNets()
	r, err := topo.Router(topology.UniqueName("tu"), v4, netip.Prefix{})
	if err != nil {
		t.Fatal(err)
	}
	a4, ra4, rb4, b4 := r.A4.Addr(), r.RA4.Addr(), r.RB4.Addr(), r.B4.Addr()
	const client, dnat, echo, closed, masqueraded = 40000, 5353, 7000, 7001, 20000
	testenv.Nft(t, r.R, fmt.Sprintf(`table ip tpudp {
	chain pre {
		type nat hook prerouting priority dstnat; policy accept;
		iifname %q udp dport %d dnat to %v:%d
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		oifname %q udp sport %d masquerade to :%d
		oifname %q masquerade
	}
}
`, r.RLinkA, dnat, b4, echo, r.RLinkB, client, masqueraded, r.RLinkB))
	m, err := decode.NewUDPMark(0x7d02, 0x1e2d3c4b, echo, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := openTracer(t, Config{EchoID: m.EchoID, UDP: &m})

	listen := func(ns *topology.Netns, addr netip.Addr, port uint16) *net.UDPConn {
		t.Helper()
		var c *net.UDPConn
		if err := ns.Do(func() (err error) {
			c, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	server := listen(r.B, b4, echo)
	// exchange sends payload from c to dst and, when echoed, has the
	// server echo it and c read the echo.
	exchange := func(c *net.UDPConn, dst netip.AddrPort, payload []byte, echoed bool) {
		t.Helper()
		if _, err := c.WriteToUDPAddrPort(payload, dst); err != nil {
			t.Fatal(err)
		}
		if !echoed {
			return
		}
		buf := make([]byte, decode.MaxPayload)
		for _, conn := range []*net.UDPConn{server, c} {
			conn.SetReadDeadline(time.Now().Add(3 * time.Second))
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatalf("echo of %x: %v", payload, err)
			}
			if conn == server {
				if _, err := server.WriteToUDPAddrPort(buf[:n], from); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	toDNAT := netip.AddrPortFrom(ra4, dnat)
	otherCookie, otherID := m, m
	otherCookie.Cookie++
	otherID.EchoID++
	exchange(listen(r.A, a4, client+1), toDNAT, otherCookie.Payload(1), true)
	exchange(listen(r.A, a4, client+2), toDNAT, otherID.Payload(1), true)
	exchange(listen(r.A, a4, client+3), netip.AddrPortFrom(b4, echo), []byte("unrelated"), true)
	prober := listen(r.A, a4, client)
	exchange(prober, toDNAT, m.Payload(1), true)
	exchange(prober, netip.AddrPortFrom(b4, closed), m.Payload(2), false)

	ino := map[*topology.Netns]uint32{r.A: threadNetns(t, r.A), r.R: threadNetns(t, r.R), r.B: threadNetns(t, r.B)}
	type hop struct {
		ns   *topology.Netns
		link string
		dir  decode.Direction
	}
	there := []hop{{r.A, r.ALink, decode.Out}, {r.R, r.RLinkA, decode.In}, {r.R, r.RLinkB, decode.Out}, {r.B, r.BLink, decode.In}}
	back := []hop{{r.B, r.BLink, decode.Out}, {r.R, r.RLinkB, decode.In}, {r.R, r.RLinkA, decode.Out}, {r.A, r.ALink, decode.In}}
	var want []udpRow
	// add wants a packet of probe k at each hop, with the tuple it has
	// before R (first two hops) and after R.
	add := func(hops []hop, k uint16, flags, icmp uint8, before, after [2]netip.AddrPort) {
		for i, h := range hops {
			tuple := before
			if i >= 2 {
				tuple = after
			}
			row := udpRow{tcpRow{ino[h.ns], h.link, h.dir, 4, decode.ProtoUDP, flags, icmp, m.EchoID, k, tuple[0].Addr(), tuple[1].Addr()}, tuple[0].Port(), tuple[1].Port()}
			want = append(want, row)
		}
	}
	ap := netip.AddrPortFrom
	add(there, 1, 0, 0, [2]netip.AddrPort{ap(a4, client), toDNAT}, [2]netip.AddrPort{ap(rb4, masqueraded), ap(b4, echo)})
	add(back, 1, decode.UDPAnswer, 0, [2]netip.AddrPort{ap(b4, echo), ap(rb4, masqueraded)}, [2]netip.AddrPort{toDNAT, ap(a4, client)})
	add(there, 2, 0, 0, [2]netip.AddrPort{ap(a4, client), ap(b4, closed)}, [2]netip.AddrPort{ap(rb4, masqueraded), ap(b4, closed)})
	// An ICMP error's record has no ports.
	add(back, 2, 0, 3, [2]netip.AddrPort{ap(b4, 0), ap(rb4, 0)}, [2]netip.AddrPort{ap(b4, 0), ap(a4, 0)})
	checkRows(t, readRows(t, tr, want, 300*time.Millisecond, udpRowOf), want)
}

// TestUDPTupleMapLifetime: a UDP trace's tuple map lives as long as its
// Tracer. Close releases it, and so does an Open that fails after creating
// it (a probe it cannot attach); an echo trace has none.
func TestUDPTupleMapLifetime(t *testing.T) {
	testenv.RequireRoot(t)
	fs, offsets := traceEnv(t)
	m := decode.UDPMark{EchoID: 0x7d03, Cookie: 0x600dcafe}
	probes := []decode.Probe{decode.ProbeNetDevQueue, decode.ProbeKfreeSkb}
	echo, err := Open(fs, offsets, Config{EchoID: m.EchoID, Probes: probes})
	if err != nil {
		t.Fatal(err)
	}
	if echo.attachments.tuples != nil {
		t.Error("an echo trace has a tuple map")
	}
	echo.Close()

	// Map IDs grow: the maps of this test's Opens come after last.
	last := lastMapID(t)
	udp, err := Open(fs, offsets, Config{UDP: &m, Probes: probes})
	if err != nil {
		t.Fatal(err)
	}
	if got := tupleMapsAfter(t, last); got != 1 {
		t.Errorf("UDP trace open: %d tuple maps, want 1", got)
	}
	if err := udp.Close(); err != nil {
		t.Fatal(err)
	}
	waitNoTupleMaps(t, last, "UDP trace closed")

	last = lastMapID(t)
	if _, err := Open(fs, offsets, Config{UDP: &m, Probes: []decode.Probe{decode.ProbeNetDevQueue, decode.Probe(0xffff)}}); err == nil {
		t.Fatal("Open with an unknown probe succeeded")
	}
	waitNoTupleMaps(t, last, "failed Open")
}

// mapIDs calls fn with each map of the kernel whose ID is above after.
func mapIDs(t *testing.T, after ebpf.MapID, fn func(ebpf.MapID, *ebpf.Map)) {
	t.Helper()
	for id := after; ; {
		var err error
		if id, err = ebpf.MapGetNextID(id); err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return
			}
			t.Fatal(err)
		}
		m, err := ebpf.NewMapFromID(id)
		if err != nil {
			continue // gone meanwhile
		}
		fn(id, m)
		m.Close()
	}
}

// lastMapID is the highest ID of the kernel's maps.
func lastMapID(t *testing.T) (last ebpf.MapID) {
	mapIDs(t, 0, func(id ebpf.MapID, _ *ebpf.Map) { last = id })
	return last
}

// tupleMapsAfter counts the tuple maps (TupleMapSpec's name) whose ID is
// above after.
func tupleMapsAfter(t *testing.T, after ebpf.MapID) (count int) {
	mapIDs(t, after, func(_ ebpf.MapID, m *ebpf.Map) {
		if info, err := m.Info(); err == nil && info.Name == TupleMapSpec().Name {
			count++
		}
	})
	return count
}

// waitNoTupleMaps fails t unless the tuple maps whose ID is above after are
// gone within a few seconds: the kernel frees a map once the programs
// holding it are, after an RCU grace period.
func waitNoTupleMaps(t *testing.T, after ebpf.MapID, when string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for got := tupleMapsAfter(t, after); got != 0; got = tupleMapsAfter(t, after) {
		if time.Now().After(deadline) {
			t.Errorf("%s: %d tuple maps left", when, got)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
