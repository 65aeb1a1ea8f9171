package probes

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// tcpNet is two namespaces of a test's own joined by a veth pair: the
// client's end c, the server's end s.
type tcpNet struct {
	client, server       *topology.Netns
	c, s                 string // link names
	client4, server4     netip.Addr
	client6, server6     netip.Addr
	clientIno, serverIno uint32 // /proc/thread-self/ns/net of a thread inside
}

func newTCPNet(t *testing.T) *tcpNet {
	t.Helper()
	topo := testenv.Topology(t)
	name := topology.UniqueName("tp")
	n := &tcpNet{c: name + "c", s: name + "s"}
	var err error
	if n.client, err = topo.Netns(name + "c"); err != nil {
		t.Fatal(err)
	}
	if n.server, err = topo.Netns(name + "s"); err != nil {
		t.Fatal(err)
	}
	if err := topo.Veth(n.c, n.client, n.s, n.server); err != nil {
		t.Fatal(err)
	}
	v4, v6 := topology.TestNets()
	n.client4, n.server4 = v4.Addr().Next(), v4.Addr().Next().Next()
	n.client6, n.server6 = v6.Addr().Next(), v6.Addr().Next().Next()
	for _, a := range []struct {
		link string
		ns   *topology.Netns
		addr netip.Addr
		bits int
	}{{n.c, n.client, n.client4, v4.Bits()}, {n.c, n.client, n.client6, v6.Bits()}, {n.s, n.server, n.server4, v4.Bits()}, {n.s, n.server, n.server6, v6.Bits()}} {
		if err := topo.AddAddr(a.link, a.ns, netip.PrefixFrom(a.addr, a.bits)); err != nil {
			t.Fatal(err)
		}
	}
	n.clientIno, n.serverIno = threadNetns(t, n.client), threadNetns(t, n.server)
	return n
}

// threadNetns is the inode of the namespace a thread inside ns sees as its own.
func threadNetns(t *testing.T, ns *topology.Netns) uint32 {
	t.Helper()
	var ino uint64
	err := ns.Do(func() error {
		fi, err := os.Stat("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		ino = fi.Sys().(*syscall.Stat_t).Ino
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return uint32(ino)
}

// openTracer opens a Tracer of the device probes for the run cfg.
func openTracer(t *testing.T, cfg Config) *Tracer {
	t.Helper()
	fs, offsets := traceEnv(t)
	cfg.Probes = []decode.Probe{decode.ProbeNetDevQueue, decode.ProbeNetifReceiveSkb}
	tr, err := Open(fs, offsets, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// traceEnv is what Open needs of the running kernel: its tracefs, closed
// when t ends, and its offsets.
func traceEnv(t *testing.T) (*tracefs.FS, Offsets) {
	t.Helper()
	fs, err := tracefs.Open()
	if err != nil {
		testenv.Require(t, err)
	}
	t.Cleanup(func() { fs.Close() })
	offsets, err := KernelOffsets()
	if err != nil {
		testenv.Require(t, err)
	}
	return fs, offsets
}

// tcpRow is what the TCP tests compare of a record.
type tcpRow struct {
	Netns    uint32
	Ifname   string
	Dir      decode.Direction
	Family   uint8
	Proto    uint8
	TCPFlags uint8
	ICMPType uint8
	EchoID   uint16
	Seq      uint16
	Src, Dst netip.Addr
}

func (r tcpRow) String() string {
	return fmt.Sprintf("{net:[%d] %s %v v%d proto=%d flags=%#x icmp=%d id=%#x seq=%d %v>%v}",
		r.Netns, r.Ifname, r.Dir, r.Family, r.Proto, r.TCPFlags, r.ICMPType, r.EchoID, r.Seq, r.Src, r.Dst)
}

// tcpRowOf is what the TCP tests compare of r.
func tcpRowOf(r *decode.Record) tcpRow {
	return tcpRow{r.Netns, r.IfName(), r.Probe.Direction(), r.Family, r.Proto, r.TCPFlags, r.ICMPType, r.EchoID, r.Seq, r.Src, r.Dst}
}

// readRows reads records, as rowOf has them, until every row of want has
// come, then for settle more, or until a deadline; it returns the rows read.
func readRows[R comparable](t *testing.T, tr *Tracer, want []R, settle time.Duration, rowOf func(*decode.Record) R) []R {
	t.Helper()
	var got []R
	missing := slices.Clone(want)
	deadline := time.Now().Add(5 * time.Second)
	for {
		tr.SetDeadline(deadline)
		var r decode.Record
		err := tr.ReadInto(&r)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.Lost != 0 {
			t.Fatalf("%d records lost", r.Lost)
		}
		row := rowOf(&r)
		got = append(got, row)
		if i := slices.Index(missing, row); i >= 0 {
			missing = slices.Delete(missing, i, i+1)
			if len(missing) == 0 {
				deadline = time.Now().Add(settle)
			}
		}
	}
}

// checkRows fails t unless got and want hold the same rows as many times
// each, saying which are missing and which are extra.
func checkRows[R interface {
	comparable
	fmt.Stringer
}](t *testing.T, got, want []R) {
	t.Helper()
	extra := slices.Clone(got)
	var missing []string
	for _, w := range want {
		if i := slices.Index(extra, w); i >= 0 {
			extra = slices.Delete(extra, i, i+1)
		} else {
			missing = append(missing, w.String())
		}
	}
	for _, e := range extra {
		t.Errorf("extra record %v", e)
	}
	if len(missing) > 0 {
		t.Errorf("missing records:\n%s", strings.Join(missing, "\n"))
	}
}

// tcpHeader is a 20-byte TCP header with checksum 0.
func tcpHeader(sport, dport uint16, seq, ack uint32, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	return b
}

// checksum is the Internet checksum (RFC 1071) of the bytes given.
func checksum(parts ...[]byte) uint16 {
	var sum uint32
	for _, b := range parts {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(b[i:]))
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// withTCPChecksum sets the checksum of the segment seg from src to dst.
func withTCPChecksum(src, dst netip.Addr, seg []byte) []byte {
	var pseudo []byte
	pseudo = append(pseudo, src.AsSlice()...)
	pseudo = append(pseudo, dst.AsSlice()...)
	if src.Is4() {
		pseudo = append(pseudo, 0, unix.IPPROTO_TCP, byte(len(seg)>>8), byte(len(seg)))
	} else {
		pseudo = binary.BigEndian.AppendUint32(pseudo, uint32(len(seg)))
		pseudo = append(pseudo, 0, 0, 0, unix.IPPROTO_TCP)
	}
	binary.BigEndian.PutUint16(seg[16:], checksum(pseudo, seg))
	return seg
}

// TestTCPTracerRecords traces two probes of a TCP run between namespaces of
// the test's own: probe 3 to a listener (SYN, SYN-ACK, the client kernel's
// RST) and probe 4 to a closed port (SYN, RST|ACK), over IPv4 and IPv6,
// sent from a raw socket with the run's ISNs. Each packet shows once
// leaving its sender's veth and once entering the other's.
func TestTCPTracerRecords(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	m := decode.NewTCPMark(0x7c01, 0x5a5a0000, 8)
	tr := openTracer(t, Config{EchoID: m.EchoID, TCP: &m})
	const open, closed = 8080, 8081
	var want []tcpRow
	for _, fam := range []struct {
		family         uint8
		client, server netip.Addr
		sport          uint16
	}{{4, n.client4, n.server4, 40003}, {6, n.client6, n.server6, 40006}} {
		// Listening sockets belong to the namespace they are created in.
		var ln net.Listener
		err := n.server.Do(func() (err error) {
			ln, err = net.Listen("tcp", netip.AddrPortFrom(fam.server, open).String())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		domain := unix.AF_INET
		if fam.family == 6 {
			domain = unix.AF_INET6
		}
		var fd int
		err = n.client.Do(func() (err error) {
			fd, err = unix.Socket(domain, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, p := range []struct {
			k     uint16
			dport uint16
		}{{3, open}, {4, closed}} {
			syn := withTCPChecksum(fam.client, fam.server, tcpHeader(fam.sport+p.k, p.dport, m.ISN(p.k), 0, decode.TCPSyn))
			var to unix.Sockaddr = &unix.SockaddrInet6{Addr: fam.server.As16()}
			if fam.family == 4 {
				to = &unix.SockaddrInet4{Addr: fam.server.As4()}
			}
			if err := unix.Sendto(fd, syn, 0, to); err != nil {
				t.Fatalf("send SYN to %v: %v", fam.server, err)
			}
			// Each packet, leaving and entering.
			hop := func(flags uint8, fromClient bool) {
				src, dst := fam.client, fam.server
				out := tcpRow{n.clientIno, n.c, decode.Out, fam.family, decode.ProtoTCP, flags, 0, m.EchoID, p.k, src, dst}
				in := tcpRow{n.serverIno, n.s, decode.In, fam.family, decode.ProtoTCP, flags, 0, m.EchoID, p.k, src, dst}
				if !fromClient {
					out = tcpRow{n.serverIno, n.s, decode.Out, fam.family, decode.ProtoTCP, flags, 0, m.EchoID, p.k, dst, src}
					in = tcpRow{n.clientIno, n.c, decode.In, fam.family, decode.ProtoTCP, flags, 0, m.EchoID, p.k, dst, src}
				}
				want = append(want, out, in)
			}
			hop(decode.TCPSyn, true)
			if p.dport == open {
				hop(decode.TCPSyn|decode.TCPAck, false)
				hop(decode.TCPRst, true)
			} else {
				hop(decode.TCPRst|decode.TCPAck, false)
			}
		}
	}
	checkRows(t, readRows(t, tr, want, 200*time.Millisecond, tcpRowOf), want)
}

// ipv4Packet is an IPv4 packet of proto, with options (a multiple of 4
// bytes), around payload.
func ipv4Packet(src, dst netip.Addr, proto uint8, options, payload []byte) []byte {
	hl := 20 + len(options)
	b := make([]byte, hl, hl+len(payload))
	b[0] = 0x40 | byte(hl/4)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	b[8], b[9] = 64, proto
	copy(b[12:], src.AsSlice())
	copy(b[16:], dst.AsSlice())
	copy(b[20:], options)
	binary.BigEndian.PutUint16(b[10:], checksum(b))
	return append(b, payload...)
}

// ipv6Packet is an IPv6 packet whose next header is next, around payload
// (extension headers included).
func ipv6Packet(src, dst netip.Addr, next uint8, payload []byte) []byte {
	b := make([]byte, 40, 40+len(payload))
	b[0] = 0x60
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6], b[7] = next, 64
	copy(b[8:], src.AsSlice())
	copy(b[24:], dst.AsSlice())
	return append(b, payload...)
}

// ipv6Options is a hop-by-hop or destination options header of 8 bytes
// (PadN) followed by next.
func ipv6Options(next uint8, payload []byte) []byte {
	return append([]byte{next, 0, 1, 4, 0, 0, 0, 0}, payload...)
}

// icmpError is an ICMP or ICMPv6 error of typ and code quoting quoted.
func icmpError(typ, code uint8, quoted []byte) []byte {
	return append([]byte{typ, code, 0, 0, 0, 0, 0, 0}, quoted...)
}

// TestTCPFilterPackets hands the device programs of a TCP run crafted
// packets, sent from a packet socket on one end of a veth pair to a MAC
// address nobody has (the other end records and drops them): the run's
// packets and errors about its SYNs, over IPv4 with and without options and
// IPv6 with and without extension headers, are recorded leaving and
// entering; packets with a key of another run, an odd key, or of another
// protocol are not.
func TestTCPFilterPackets(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	m := decode.NewTCPMark(0x7c02, 0xfffe0100, 20)
	tr := openTracer(t, Config{EchoID: m.EchoID, TCP: &m})
	c4, s4, c6, s6 := n.client4, n.server4, n.client6, n.server6
	syn := func(k uint16) []byte { return tcpHeader(40000, 443, m.ISN(k), 0, decode.TCPSyn) }
	answer := func(k uint16, flags uint8) []byte {
		return tcpHeader(443, 40000, 0x11111111, m.ISN(k)+1, flags)
	}
	nop := []byte{1, 1, 1, 1}
	cases := []filterCase{
		{"SYN", 4, ipv4Packet(c4, s4, 6, nil, syn(0)), true, 0, decode.TCPSyn, 0, 0},
		{"SYN-ACK", 4, ipv4Packet(s4, c4, 6, nil, answer(1, decode.TCPSyn|decode.TCPAck)), true, 1, decode.TCPSyn | decode.TCPAck, 0, 0},
		{"RST|ACK", 4, ipv4Packet(s4, c4, 6, nil, answer(2, decode.TCPRst|decode.TCPAck)), true, 2, decode.TCPRst | decode.TCPAck, 0, 0},
		{"own RST", 4, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, m.ISN(3)+1, 0, decode.TCPRst)), true, 3, decode.TCPRst, 0, 0},
		{"SYN, IPv4 options", 4, ipv4Packet(c4, s4, 6, nop, syn(4)), true, 4, decode.TCPSyn, 0, 0},
		{"SYN-ACK, IPv4 options", 4, ipv4Packet(s4, c4, 6, nop, answer(5, decode.TCPSyn|decode.TCPAck)), true, 5, decode.TCPSyn | decode.TCPAck, 0, 0},
		{"unreachable quoting a SYN", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 6, nil, syn(6)))), true, 6, 0, 3, 0},
		{"time exceeded quoting a SYN, IPv4 options", 4, ipv4Packet(s4, c4, 1, nop, icmpError(11, 0, ipv4Packet(c4, s4, 6, nil, syn(7)))), true, 7, 0, 11, 0},
		{"SYN over IPv6", 6, ipv6Packet(c6, s6, 6, syn(8)), true, 8, decode.TCPSyn, 0, 0},
		{"RST|ACK over IPv6", 6, ipv6Packet(s6, c6, 6, answer(9, decode.TCPRst|decode.TCPAck)), true, 9, decode.TCPRst | decode.TCPAck, 0, 0},
		{"SYN-ACK after hop-by-hop options", 6, ipv6Packet(s6, c6, 0, ipv6Options(6, answer(10, decode.TCPSyn|decode.TCPAck))), true, 10, decode.TCPSyn | decode.TCPAck, 0, 0},
		{"ICMPv6 unreachable quoting a SYN", 6, ipv6Packet(s6, c6, 58, icmpError(1, 4, ipv6Packet(c6, s6, 6, syn(11)))), true, 11, 0, 1, 0},
		{"ICMPv6 too big quoting a SYN, destination options", 6, ipv6Packet(s6, c6, 60, ipv6Options(58, icmpError(2, 0, ipv6Packet(c6, s6, 6, syn(12))))), true, 12, 0, 2, 0},

		{"SYN of another run", 4, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, m.Cookie-2, 0, decode.TCPSyn)), false, 0, 0, 0, 0},
		{"SYN past the span", 4, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, m.Cookie+m.Span, 0, decode.TCPSyn)), false, 0, 0, 0, 0},
		{"SYN, odd key", 4, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, m.ISN(1)+1, 0, decode.TCPSyn)), false, 0, 0, 0, 0},
		{"SYN-ACK acknowledging the ISN itself", 4, ipv4Packet(s4, c4, 6, nil, tcpHeader(443, 40000, 0, m.ISN(1), decode.TCPSyn|decode.TCPAck)), false, 0, 0, 0, 0},
		{"ACK whose seq is an ISN", 4, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, m.ISN(1), 0x01020304, decode.TCPAck)), false, 0, 0, 0, 0},
		{"own RST with the ISN", 4, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, m.ISN(1), 0, decode.TCPRst)), false, 0, 0, 0, 0},
		{"SYN of another run over IPv6, options", 6, ipv6Packet(c6, s6, 0, ipv6Options(6, tcpHeader(40000, 443, 7, 0, decode.TCPSyn))), false, 0, 0, 0, 0},
		{"UDP with an ISN where TCP has its sequence", 4, ipv4Packet(c4, s4, 17, nil, syn(1)), false, 0, 0, 0, 0},
		{"unreachable quoting UDP", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 17, nil, syn(1)))), false, 0, 0, 0, 0},
		{"unreachable quoting a SYN of another run", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 3, ipv4Packet(c4, s4, 6, nil, tcpHeader(40000, 443, 9, 0, decode.TCPSyn)))), false, 0, 0, 0, 0},
		{"echo request of the run's id", 4, ipv4Packet(c4, s4, 1, nil, []byte{8, 0, 0, 0, 0x7c, 0x02, 0, 1}), false, 0, 0, 0, 0},
		{"ICMPv6 echo reply quoting nothing", 6, ipv6Packet(s6, c6, 58, icmpError(129, 0, syn(1))), false, 0, 0, 0, 0},
	}
	// The last case is ours: once its records come, the others' have had
	// time to.
	cases = append(cases, filterCase{"SYN, last", 4, ipv4Packet(c4, s4, 6, nil, syn(13)), true, 13, decode.TCPSyn, 0, 0})

	want := sendCases(t, n, decode.ProtoTCP, m.EchoID, cases, func(_ filterCase, r tcpRow) tcpRow { return r })
	checkRows(t, readRows(t, tr, want, 300*time.Millisecond, tcpRowOf), want)
}

// filterCase is a crafted packet a filter test sends, and, if it is ours,
// what its records say of it.
type filterCase struct {
	name   string
	family uint8
	packet []byte
	ours   bool
	k      uint16 // ours: the probe
	flags  uint8  // ours: the TCP flags byte recorded
	icmp   uint8  // ours: the ICMP type recorded
	// tunnel is where the inner IP header (of family, which the
	// addresses are taken from) starts in a packet sent in a tunnel.
	tunnel int
}

// sendCases sends the packet of each case, in order, from a packet socket
// on the client's end of n to a MAC address nobody has: the server's end
// records it and drops it, unanswered (the packet's version says whether
// it is sent as IPv4 or IPv6). It returns the rows of the records
// of the cases that are ours, of protocol proto and echo id: leaving, then
// entering, each as row makes it from the case and its tcpRow.
func sendCases[R any](t *testing.T, n *tcpNet, proto uint8, echoID uint16, cases []filterCase, row func(filterCase, tcpRow) R) []R {
	t.Helper()
	var fd, ifindex int
	err := n.client.Do(func() error {
		ifi, err := net.InterfaceByName(n.c)
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var want []R
	for _, c := range cases {
		ether := uint16(unix.ETH_P_IP)
		if c.packet[0]>>4 == 6 {
			ether = unix.ETH_P_IPV6
		}
		// A locally administered address nobody has: the other end keeps
		// it as PACKET_OTHERHOST, and IP drops it unanswered.
		to := &unix.SockaddrLinklayer{Ifindex: ifindex, Protocol: htons(ether), Halen: 6, Addr: [8]byte{0x02, 0, 0, 0x7c, 0, 0x01}}
		if err := unix.Sendto(fd, c.packet, 0, to); err != nil {
			t.Fatalf("%s: send: %v", c.name, err)
		}
		if !c.ours {
			continue
		}
		src, dst := packetAddrs(c.family, c.packet[c.tunnel:])
		out := tcpRow{n.clientIno, n.c, decode.Out, c.family, proto, c.flags, c.icmp, echoID, c.k, src, dst}
		in := out
		in.Netns, in.Ifname, in.Dir = n.serverIno, n.s, decode.In
		want = append(want, row(c, out), row(c, in))
	}
	return want
}

// packetAddrs are the source and destination addresses of an IPv4 or IPv6
// packet.
func packetAddrs(family uint8, packet []byte) (src, dst netip.Addr) {
	if family == 4 {
		return netip.AddrFrom4([4]byte(packet[12:16])), netip.AddrFrom4([4]byte(packet[16:20]))
	}
	return netip.AddrFrom16([16]byte(packet[8:24])), netip.AddrFrom16([16]byte(packet[24:40]))
}

// htons turns a u16 into network order, as a sockaddr_ll's protocol wants it.
func htons(v uint16) uint16 {
	return binary.NativeEndian.Uint16(binary.BigEndian.AppendUint16(nil, v))
}
