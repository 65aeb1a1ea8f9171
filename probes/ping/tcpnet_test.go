package ping

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"golang.org/x/sys/unix"
)

// tcpNet is a client namespace joined to a server namespace by a veth pair,
// and nothing else: the client has no other link and no default route, so
// nothing it sends can reach anything but the server, whatever the machine's
// own firewall and routes are.
type tcpNet struct {
	topo           *topology.Topology
	client, server *topology.Netns
	families       []tcpFamily
}

// tcpFamily is one address family of a tcpNet.
type tcpFamily struct {
	name           string
	client, server netip.Addr
	// vip is assigned nowhere: the client routes it to the server, where
	// a test may DNAT it.
	vip netip.Addr
}

// newTCPNet builds a dual-stack tcpNet, torn down when tb ends.
func newTCPNet(tb testing.TB) *tcpNet {
	tb.Helper()
	testenv.RequireCommands(tb, "ip", "ss", "nft")
	topo := testenv.Topology(tb)
	n := &tcpNet{topo: topo}
	var err error
	if n.client, err = topo.Netns(topology.UniqueName("tpcli")); err != nil {
		tb.Fatal(err)
	}
	if n.server, err = topo.Netns(topology.UniqueName("tpsrv")); err != nil {
		tb.Fatal(err)
	}
	if err := topo.Veth("eth0", n.client, "eth0", n.server); err != nil {
		tb.Fatal(err)
	}
	v4, v6 := topology.TestNets()
	vip4, vip6 := topology.TestNets()
	for _, f := range []struct {
		name     string
		net, vip netip.Prefix
	}{{"ipv4", v4, vip4}, {"ipv6", v6, vip6}} {
		client := f.net.Masked().Addr().Next()
		fam := tcpFamily{name: f.name, client: client, server: client.Next(), vip: f.vip.Masked().Addr().Next()}
		if err := topo.AddAddr("eth0", n.client, netip.PrefixFrom(fam.client, f.net.Bits())); err != nil {
			tb.Fatal(err)
		}
		if err := topo.AddAddr("eth0", n.server, netip.PrefixFrom(fam.server, f.net.Bits())); err != nil {
			tb.Fatal(err)
		}
		if err := topo.AddRoute(n.client, netip.PrefixFrom(fam.vip, fam.vip.BitLen()), fam.server); err != nil {
			tb.Fatal(err)
		}
		n.families = append(n.families, fam)
	}
	return n
}

// openTCP opens a prober in the client for target:port with a fresh mark of
// count probes, closed when tb ends.
func (n *tcpNet) openTCP(tb testing.TB, f tcpFamily, target netip.Addr, port uint16, count int) *TCPProber {
	tb.Helper()
	mark := decode.NewTCPMark(randomIDs(tb, 1)[0], rand.Uint32(), count)
	return openInClient(tb, n, f, target, func() (*TCPProber, error) { return OpenTCP(target, port, mark, Options{}) })
}

// openInClient opens a prober for target in the client with open, closed
// when tb ends, and checks it sends from the client's address. It refuses,
// opening nothing, unless target is reached over the topology's links; the
// VIP, which the server does not route, is checked through the server, its
// gateway.
func openInClient[P interface {
	Source() netip.Addr
	Close() error
}](tb testing.TB, n *tcpNet, f tcpFamily, target netip.Addr, open func() (P, error)) P {
	tb.Helper()
	check := target
	if target == f.vip {
		check = f.server
	}
	if err := n.topo.CheckOwnRoute(n.client, check); err != nil {
		tb.Fatalf("not probing: %v", err)
	}
	var p P
	if err := n.client.Do(func() (err error) {
		p, err = open()
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	if p.Source() != f.client {
		tb.Fatalf("prober sends from %v, want %v", p.Source(), f.client)
	}
	return p
}

// listen opens a TCP listener on addr in the server, closed when tb ends,
// and returns its port.
func (n *tcpNet) listen(tb testing.TB, addr netip.Addr) uint16 {
	tb.Helper()
	var l net.Listener
	if err := n.server.Do(func() (err error) {
		l, err = net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { l.Close() })
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

// ss runs ss -Htan with args in ns and returns its lines.
func ss(tb testing.TB, ns *topology.Netns, args ...string) []string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, "ss", "-Htan"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("ss in %v: %v: %s", ns, err, stderr.String())
	}
	return strings.FieldsFunc(string(out), func(r rune) bool { return r == '\n' })
}

// checkNoConnection fails tb unless, within a second, the server holds no
// half-open connection (SYN-RECV) and no connection at all, only its
// listeners, each with an empty accept queue, and the client holds none.
// Without the client kernel's RST, a SYN-RECV would stay for a minute,
// its SYN-ACK resent.
func (n *tcpNet) checkNoConnection(tb testing.TB) {
	tb.Helper()
	var server []string
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		server = ss(tb, n.server)
		if len(ss(tb, n.server, "state", "syn-recv")) == 0 && allListeners(server) || time.Now().After(deadline) {
			break
		}
	}
	if len(ss(tb, n.server, "state", "syn-recv")) != 0 || !allListeners(server) {
		tb.Errorf("server sockets a second after the answer:\n%s\nwant only listeners with nothing to accept", strings.Join(server, "\n"))
	}
	if client := ss(tb, n.client); len(client) != 0 {
		tb.Errorf("client sockets:\n%s\nwant none", strings.Join(client, "\n"))
	}
}

// allListeners reports whether every ss -Htan line is a listener whose
// accept queue (Recv-Q) is empty.
func allListeners(lines []string) bool {
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "LISTEN" || f[1] != "0" {
			return false
		}
	}
	return true
}

// expectAnswer receives the next answer from p, a TCP or UDP prober, and
// checks it is probe seq's from from, with TCP flags (decode.UDPAnswer for a
// UDP reply) and ICMP error e, sent by the server's kernel.
func expectAnswer(tb testing.TB, p interface {
	Receive(time.Time) (Reply, error)
}, seq uint16, from netip.Addr, flags uint8, e *ICMPError) Reply {
	tb.Helper()
	r, err := p.Receive(time.Now().Add(replyTimeout))
	if err != nil {
		tb.Fatalf("no answer to probe %d: %v", seq, err)
	}
	if r.Seq != seq || r.From != from || r.TCPFlags != flags || r.TTL != serverTTL ||
		(r.Error == nil) != (e == nil) || e != nil && *r.Error != *e {
		tb.Errorf("answer %+v (error %+v), want seq %d from %v flags %#02x ttl %d error %+v", r, r.Error, seq, from, flags, serverTTL, e)
	}
	return r
}

// sendTCPFrom sends seg from src to dst on a raw socket in ns: a segment
// the prober did not ask for.
func sendTCPFrom(tb testing.TB, ns *topology.Netns, src, dst netip.Addr, seg segment) {
	tb.Helper()
	err := ns.Do(func() error {
		family := unix.AF_INET
		if dst.Is6() {
			family = unix.AF_INET6
		}
		fd, err := openRaw(family, unix.IPPROTO_TCP, "tcp")
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		from, err := sockaddr(src)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, from); err != nil {
			return err
		}
		to, err := sockaddr(dst)
		if err != nil {
			return err
		}
		return unix.Sendto(fd, seg.marshal(src, dst), 0, to)
	})
	if err != nil {
		tb.Fatalf("send %+v from %v to %v: %v", seg, src, dst, err)
	}
}

// TestTCPOpenPort: a listener answers with a SYN-ACK, and the client
// kernel's RST to it leaves nothing half-open at the server.
func TestTCPOpenPort(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := n.listen(t, f.server)
			p := n.openTCP(t, f, f.server, port, 1)
			sent, err := p.Send(0)
			if err != nil {
				t.Fatal(err)
			}
			r := expectAnswer(t, p, 0, f.server, synAckFlags, nil)
			if r.Received.Before(sent) || r.Size < tcpHeaderLen {
				t.Errorf("answer received at %v (sent %v), %d bytes", r.Received, sent, r.Size)
			}
			n.checkNoConnection(t)
			expectIgnored(t, p, 0)
		})
	}
}

// TestTCPProbesAnsweredApart: each probe's answer says which it answers.
func TestTCPProbesAnsweredApart(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := n.listen(t, f.server)
			p := n.openTCP(t, f, f.server, port, 2)
			for seq := range uint16(2) {
				if _, err := p.Send(seq); err != nil {
					t.Fatal(err)
				}
			}
			var got []uint16
			for range 2 {
				r, err := p.Receive(time.Now().Add(replyTimeout))
				if err != nil {
					t.Fatal(err)
				}
				if r.TCPFlags != synAckFlags || r.From != f.server {
					t.Errorf("answer %+v, want a SYN-ACK from %v", r, f.server)
				}
				got = append(got, r.Seq)
			}
			slices.Sort(got)
			if !slices.Equal(got, []uint16{0, 1}) {
				t.Errorf("answered probes %v, want [0 1]", got)
			}
			n.checkNoConnection(t)
		})
	}
}

func TestTCPClosedPort(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			// The server namespace is new: nothing listens on port 9.
			p := n.openTCP(t, f, f.server, 9, 1)
			if _, err := p.Send(0); err != nil {
				t.Fatal(err)
			}
			expectAnswer(t, p, 0, f.server, rstAckFlags, nil)
		})
	}
}

// TestTCPFirewall: the server's nftables answer for ports that have a
// listener, so only the rule can be what answered.
func TestTCPFirewall(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			reset, icmp, drop := n.listen(t, f.server), n.listen(t, f.server), n.listen(t, f.server)
			testenv.Nft(t, n.server, fmt.Sprintf(`table inet tptcp_%s {
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport %d reject with tcp reset
		tcp dport %d reject with icmpx port-unreachable
		tcp dport %d drop
	}
}
`, f.name, reset, icmp, drop))
			unreachable := &ICMPError{Type: icmpv4DestUnreach, Code: 3}
			if f.server.Is6() {
				unreachable = &ICMPError{Type: icmpv6DestUnreach, Code: 4}
			}
			t.Run("reject with tcp reset", func(t *testing.T) {
				p := n.openTCP(t, f, f.server, reset, 1)
				if _, err := p.Send(0); err != nil {
					t.Fatal(err)
				}
				expectAnswer(t, p, 0, f.server, rstAckFlags, nil)
			})
			t.Run("reject with port unreachable", func(t *testing.T) {
				p := n.openTCP(t, f, f.server, icmp, 1)
				if _, err := p.Send(0); err != nil {
					t.Fatal(err)
				}
				expectAnswer(t, p, 0, f.server, 0, unreachable)
			})
			t.Run("drop", func(t *testing.T) {
				p := n.openTCP(t, f, f.server, drop, 1)
				if _, err := p.Send(0); err != nil {
					t.Fatal(err)
				}
				if r, err := p.Receive(time.Now().Add(quietPeriod)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("Receive = %+v, %v; want %v", r, err, os.ErrDeadlineExceeded)
				}
				expectIgnored(t, p, 0)
			})
		})
	}
}

// dnatVIP has the server DNAT what comes to its VIP on proto (tcp, udp)
// port vport to its own address and port.
func (n *tcpNet) dnatVIP(tb testing.TB, f tcpFamily, proto string, vport, port uint16) {
	tb.Helper()
	family, to := "ip", fmt.Sprintf("%s:%d", f.server, port)
	if f.server.Is6() {
		family, to = "ip6", fmt.Sprintf("[%s]:%d", f.server, port)
	}
	testenv.Nft(tb, n.server, fmt.Sprintf(`table %s tpnat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		%s daddr %s %s dport %d dnat to %s
	}
}
`, family, family, f.vip, proto, vport, to))
}

// TestTCPDNAT probes a VIP that the server DNATs to a listener: the answer
// comes back un-NATed, from the VIP and its port, and still says which
// probe it answers.
func TestTCPDNAT(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := n.listen(t, f.server)
			n.dnatVIP(t, f, "tcp", 80, port)
			p := n.openTCP(t, f, f.vip, 80, 2)
			for seq := range uint16(2) {
				if _, err := p.Send(seq); err != nil {
					t.Fatal(err)
				}
				expectAnswer(t, p, seq, f.vip, synAckFlags, nil)
			}
			n.checkNoConnection(t)
		})
	}
}

// TestTCPStaleAnswerIgnored: a SYN-ACK to the prober's port acknowledging
// another run's ISN reaches the prober and is ignored and counted; one to
// another port never reaches it (the socket filter).
func TestTCPStaleAnswerIgnored(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			port := n.listen(t, f.server)
			p := n.openTCP(t, f, f.server, port, 1)
			other := p.mark
			other.Cookie ^= 0x80000000
			stale := segment{SrcPort: port, DstPort: p.SourcePort(), Seq: 1, Ack: other.ISN(0) + 1, Flags: synAckFlags, Window: synWindow}
			sendTCPFrom(t, n.server, f.server, f.client, stale)
			elsewhere := stale
			elsewhere.DstPort, elsewhere.Ack = p.SourcePort()+1, p.mark.ISN(0)+1
			sendTCPFrom(t, n.server, f.server, f.client, elsewhere)
			if _, err := p.Send(0); err != nil {
				t.Fatal(err)
			}
			expectAnswer(t, p, 0, f.server, synAckFlags, nil)
			expectIgnored(t, p, 1) // the stale SYN-ACK
			if r, err := p.Receive(time.Now().Add(quietPeriod)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("extra answer %+v, error %v; want %v", r, err, os.ErrDeadlineExceeded)
			}
		})
	}
}

// TestTCPSendRefused: a SYN the client's own netfilter drops fails to send
// with EPERM, which is not a missing capability nor a missing route.
func TestTCPSendRefused(t *testing.T) {
	n := newTCPNet(t)
	testenv.Nft(t, n.client, `table inet tpout {
	chain output {
		type filter hook output priority filter; policy accept;
		tcp dport 9 drop
	}
}
`)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			p := n.openTCP(t, f, f.server, 9, 1)
			_, err := p.Send(0)
			if !errors.Is(err, unix.EPERM) || errors.Is(err, ErrNoRoute) {
				t.Fatalf("Send error = %v, want EPERM, not ErrNoRoute", err)
			}
			t.Log(err)
		})
	}
}
