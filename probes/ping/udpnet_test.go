package ping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"golang.org/x/sys/unix"
)

// openUDP opens a UDP prober in the client for target:port with a fresh
// mark (the DNS query to port 53), closed when tb ends.
func (n *tcpNet) openUDP(tb testing.TB, f tcpFamily, target netip.Addr, port uint16) *UDPProber {
	tb.Helper()
	mark, err := decode.NewUDPMark(randomIDs(tb, 1)[0], rand.Uint32(), port, nil)
	if err != nil {
		tb.Fatal(err)
	}
	return openInClient(tb, n, f, target, func() (*UDPProber, error) { return OpenUDP(target, port, mark, Options{}) })
}

// serveUDP answers, in ns, each datagram to addr:port (port 0: an
// ephemeral one) with the datagrams answer returns for it and its source,
// until tb ends; it returns the port. answer runs on one goroutine, a
// datagram at a time.
func serveUDP(tb testing.TB, ns *topology.Netns, addr netip.Addr, port uint16, answer func(req []byte, from netip.AddrPort) [][]byte) uint16 {
	tb.Helper()
	conn := listenUDP(tb, ns, netip.AddrPortFrom(addr, port))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			for _, b := range answer(buf[:n], from) {
				if _, err := conn.WriteToUDPAddrPort(b, from); err != nil {
					tb.Errorf("answer %v: %v", from, err)
				}
			}
		}
	}()
	tb.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port)
}

// listenUDP opens a UDP socket on addr in ns, closed when tb ends.
func listenUDP(tb testing.TB, ns *topology.Netns, addr netip.AddrPort) *net.UDPConn {
	tb.Helper()
	var conn *net.UDPConn
	if err := ns.Do(func() (err error) {
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// echoUDP answers a datagram with itself.
func echoUDP(req []byte, _ netip.AddrPort) [][]byte { return [][]byte{append([]byte(nil), req...)} }

// pong answers a datagram with "pong", which carries no mark.
func pong([]byte, netip.AddrPort) [][]byte { return [][]byte{[]byte("pong")} }

// heldUntil answers as answer does, but holds the answers until the nth
// datagram came, then sends them all, in order; later ones at once.
func heldUntil(n int, answer func([]byte, netip.AddrPort) [][]byte) func([]byte, netip.AddrPort) [][]byte {
	var held [][]byte
	return func(req []byte, from netip.AddrPort) [][]byte {
		held = append(held, answer(req, from)...)
		if n--; n > 0 {
			return nil
		}
		out := held
		held = nil
		return out
	}
}

// expectUDP receives the next answer from p and checks it is probe seq's
// from from, with ICMP error e, or else a UDP reply of size bytes, sent by
// the server's kernel.
func expectUDP(tb testing.TB, p *UDPProber, seq uint16, from netip.Addr, size int, e *ICMPError) Reply {
	tb.Helper()
	flags := uint8(decode.UDPAnswer)
	if e != nil {
		flags = 0
	}
	r := expectAnswer(tb, p, seq, from, flags, e)
	if e == nil && r.Size != size {
		tb.Errorf("reply to probe %d of %d bytes, want %d", seq, r.Size, size)
	}
	return r
}

// send sends probes seqs, returning when the last was sent.
func send(tb testing.TB, p *UDPProber, seqs ...uint16) time.Time {
	tb.Helper()
	var sent time.Time
	for _, seq := range seqs {
		var err error
		if sent, err = p.Send(seq); err != nil {
			tb.Fatal(err)
		}
	}
	return sent
}

// expectQuiet checks that p receives nothing more for a while.
func expectQuiet(tb testing.TB, p *UDPProber) {
	tb.Helper()
	if r, err := p.Receive(time.Now().Add(quietPeriod)); !errors.Is(err, os.ErrDeadlineExceeded) {
		tb.Errorf("extra answer %+v, error %v; want %v", r, err, os.ErrDeadlineExceeded)
	}
}

// unreachable is the ICMP error of a closed port (v6: ICMPv6).
func unreachable(v6 bool) *ICMPError {
	if v6 {
		return &ICMPError{Type: icmpv6DestUnreach, Code: 4}
	}
	return &ICMPError{Type: icmpv4DestUnreach, Code: 3}
}

// TestUDPEcho: an echo server's replies carry the mark, so each says which
// probe it answers: the server holds its echo of probe 0 until probe 1
// came, and sends both.
func TestUDPEcho(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := serveUDP(t, n.server, f.server, 0, heldUntil(2, echoUDP))
			p := n.openUDP(t, f, f.server, port)
			sent := send(t, p, 0, 1)
			for seq := range uint16(2) {
				r := expectUDP(t, p, seq, f.server, decode.MarkLen, nil)
				if r.Received.Before(sent) {
					t.Errorf("answer received at %v, sent %v", r.Received, sent)
				}
			}
			send(t, p, 2)
			expectUDP(t, p, 2, f.server, decode.MarkLen, nil)
			expectIgnored(t, p, 0)
		})
	}
}

// TestUDPReplyWithoutMark: a reply that does not echo the mark answers the
// latest probe sent. The server answers probe 0 only once probe 1 came:
// both replies are taken as probe 1's.
func TestUDPReplyWithoutMark(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := serveUDP(t, n.server, f.server, 0, heldUntil(2, pong))
			p := n.openUDP(t, f, f.server, port)
			send(t, p, 0, 1)
			expectUDP(t, p, 1, f.server, 4, nil)
			expectUDP(t, p, 1, f.server, 4, nil)
			expectQuiet(t, p)
		})
	}
}

// TestUDPClosedPort: the server's kernel answers each probe to a closed
// port with a port unreachable quoting it.
func TestUDPClosedPort(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			// The server namespace is new: nothing listens on port 9.
			p := n.openUDP(t, f, f.server, 9)
			for seq := range uint16(2) {
				send(t, p, seq)
				expectUDP(t, p, seq, f.server, 0, unreachable(f.server.Is6()))
			}
			expectIgnored(t, p, 0)
		})
	}
}

// TestUDPFirewall: the server's nftables reject probes to a port that has
// a listener, so only the rule can be what answered.
func TestUDPFirewall(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := serveUDP(t, n.server, f.server, 0, echoUDP)
			testenv.Nft(t, n.server, fmt.Sprintf(`table inet tpudp_%s {
	chain input {
		type filter hook input priority filter; policy accept;
		udp dport %d reject with icmpx admin-prohibited
	}
}
`, f.name, port))
			prohibited := &ICMPError{Type: icmpv4DestUnreach, Code: 13}
			if f.server.Is6() {
				prohibited = &ICMPError{Type: icmpv6DestUnreach, Code: 1}
			}
			p := n.openUDP(t, f, f.server, port)
			send(t, p, 4)
			expectUDP(t, p, 4, f.server, 0, prohibited)
		})
	}
}

// dnsAnswer is what a DNS server answers query: the same id, QR set, the
// question and, when cookie, the query's OPT record with the client cookie
// (RFC 7873 servers echo it, followed by their own server cookie).
func dnsAnswer(tb testing.TB, query []byte, cookie bool) []byte {
	tb.Helper()
	// The query is decode's: a header, the root's NS question, an OPT.
	const question = 12 + 5
	if len(query) < question || query[2]&dnsResponse != 0 {
		tb.Errorf("not a dns query: % x", query)
		return nil
	}
	b := append([]byte(nil), query[:question]...)
	b[2], b[3] = dnsResponse|query[2], 0x80 // QR, RD as asked; RA
	binary.BigEndian.PutUint16(b[10:], 0)   // no additional record
	if !cookie {
		return b
	}
	binary.BigEndian.PutUint16(b[10:], 1)
	opt := append([]byte(nil), query[question:]...)
	binary.BigEndian.PutUint16(opt[9:], binary.BigEndian.Uint16(opt[9:])+8) // rdata length
	binary.BigEndian.PutUint16(opt[13:], 16)                                // cookie option length
	return append(append(b, opt...), "srvcooki"...)
}

// TestUDPDNS probes port 53 with decode's DNS query. A server echoing the
// client cookie names the probe by the mark; one that does not, by the
// DNS id: the server holds its answer to probe 0 until probe 1 came, and
// the two answers still say which probe each answers.
func TestUDPDNS(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		for _, cookie := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/cookie %v", f.name, cookie), func(t *testing.T) {
				serveUDP(t, n.server, f.server, decode.DNSPort, heldUntil(2, func(q []byte, _ netip.AddrPort) [][]byte {
					return [][]byte{dnsAnswer(t, q, cookie)}
				}))
				p := n.openUDP(t, f, f.server, decode.DNSPort)
				if !p.mark.DNS {
					t.Fatal("the mark of a probe to port 53 is not a DNS query")
				}
				send(t, p, 0, 1)
				size := 12 + 5
				if cookie {
					size = len(p.mark.Base) + 8
				}
				for seq := range uint16(2) {
					expectUDP(t, p, seq, f.server, size, nil)
				}
				expectQuiet(t, p)
			})
		}
	}
}

// TestUDPForeignDatagram: a datagram to the prober's port from another
// port of the target, without the mark, answers nothing sent: it is
// counted by Ignored, and the reply from the probed port still comes.
func TestUDPForeignDatagram(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := serveUDP(t, n.server, f.server, 0, pong)
			p := n.openUDP(t, f, f.server, port)
			send(t, p, 0)
			expectUDP(t, p, 0, f.server, 4, nil)
			stray := listenUDP(t, n.server, netip.AddrPortFrom(f.server, 0))
			if _, err := stray.WriteToUDPAddrPort([]byte("stray"), netip.AddrPortFrom(f.client, p.SourcePort())); err != nil {
				t.Fatal(err)
			}
			send(t, p, 1)
			// The same socket reads the stray datagram, then the reply.
			expectUDP(t, p, 1, f.server, 4, nil)
			expectIgnored(t, p, 1) // the stray datagram
			expectQuiet(t, p)
		})
	}
}

// TestUDPDNAT probes a VIP that the server DNATs to a responder. A reply
// un-NATed on its way back comes from the VIP; one the responder sends
// from another port, which conntrack does not match, is not un-NATed and
// comes from the server's own address: it is still taken as a reply, and
// From says where from.
func TestUDPDNAT(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			other := listenUDP(t, n.server, netip.AddrPortFrom(f.server, 0))
			port := serveUDP(t, n.server, f.server, 0, func(req []byte, from netip.AddrPort) [][]byte {
				if seq := binary.BigEndian.Uint16(req[4:]); seq == 0 {
					return echoUDP(req, from)
				}
				if _, err := other.WriteToUDPAddrPort([]byte("pong"), from); err != nil {
					t.Errorf("answer from another port: %v", err)
				}
				return nil
			})
			n.dnatVIP(t, f, "udp", 7, port)
			p := n.openUDP(t, f, f.vip, 7)
			send(t, p, 0)
			expectUDP(t, p, 0, f.vip, decode.MarkLen, nil)
			send(t, p, 1)
			expectUDP(t, p, 1, f.server, 4, nil)
			expectIgnored(t, p, 0)
		})
	}
}

// TestUDPOptions: both sockets carry the mark and the device and are bound
// to the source address; the UDP socket, bound to the source port and not
// connected, the TTL and path MTU discovery.
func TestUDPOptions(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			f.client = n.secondClientAddr(t, f)
			port := serveUDP(t, n.server, f.server, 0, echoUDP)
			p := openInClient(t, n, f, f.server, func() (*UDPProber, error) {
				return OpenUDP(f.server, port, testUDPMark, testOptions(f.client))
			})
			if p.ID() != testUDPMark.EchoID {
				t.Errorf("ID() = %#x, want %#x", p.ID(), testUDPMark.EchoID)
			}
			checkSocketOptions(t, "udp", int(p.sock.Fd()), f.client, 9)
			checkSocketOptions(t, "icmp", int(p.icmp.Fd()), f.client, 0)
			if sa, err := unix.Getsockname(int(p.sock.Fd())); err != nil || sockaddrPort(sa) != int(p.SourcePort()) || p.SourcePort() == 0 {
				t.Errorf("udp socket bound to %v (%v), SourcePort() %d", sa, err, p.SourcePort())
			}
			if _, err := unix.Getpeername(int(p.sock.Fd())); !errors.Is(err, unix.ENOTCONN) {
				t.Errorf("udp socket: getpeername error %v, want ENOTCONN", err)
			}
			send(t, p, 0)
			expectUDP(t, p, 0, f.server, decode.MarkLen, nil)
		})
	}
}

// TestUDPTimeExceeded: probes with a TTL of 1 to the VIP, which the server
// would forward (back to the client), expire at the server: its time
// exceeded errors say which probe each quotes.
func TestUDPTimeExceeded(t *testing.T) {
	n := newTCPNet(t)
	if err := n.server.Forwarding(true); err != nil {
		t.Fatal(err)
	}
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			if err := n.topo.AddRoute(n.server, netip.PrefixFrom(f.vip, f.vip.BitLen()), f.client); err != nil {
				t.Fatal(err)
			}
			p := openInClient(t, n, f, f.vip, func() (*UDPProber, error) {
				return OpenUDP(f.vip, 7, testUDPMark, Options{TTL: 1})
			})
			expired := &ICMPError{Type: icmpv4TimeExceeded}
			if f.vip.Is6() {
				expired = &ICMPError{Type: icmpv6TimeExceeded}
			}
			for seq := range uint16(2) {
				send(t, p, seq)
				expectUDP(t, p, seq, f.server, 0, expired)
			}
			expectIgnored(t, p, 0)
		})
	}
}
