package ping

import (
	"errors"
	"io"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// synAckFlags and rstAckFlags are the answers of an open and a closed port.
const (
	synAckFlags = decode.TCPSyn | decode.TCPAck
	rstAckFlags = decode.TCPRst | decode.TCPAck
)

// serverTTL is the TTL and hop limit of what the server's kernel sends in
// a fresh namespace; the server is one veth away, nothing decrements it.
const serverTTL = 64

// socketpairTCPProber returns a prober of testMark for port 80 from port
// 40000 whose raw sockets are socketpairs, and the peers to write what they
// would read: the TCP answers and the ICMP errors.
func socketpairTCPProber(tb testing.TB, target netip.Addr) (p *TCPProber, tcpPeer, icmpPeer int) {
	tb.Helper()
	p = newTCPProber(target, 80, testMark)
	p.sport = 40000
	p.to, _ = sockaddr(target)
	tcpPeer = socketpair(tb, &p.send, &p.sendConn)
	icmpPeer = socketpair(tb, &p.icmp, &p.icmpConn)
	p.start()
	tb.Cleanup(func() { p.Close() })
	return p, tcpPeer, icmpPeer
}

// socketpair sets *f and *conn to one end of a datagram socketpair, for a
// prober to read as it would a socket, and returns the other end, closed
// when tb ends.
func socketpair(tb testing.TB, f **os.File, conn *syscall.RawConn) int {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fds[1]) })
	*f = os.NewFile(uintptr(fds[0]), "socketpair")
	if *conn, err = (*f).SyscallConn(); err != nil {
		tb.Fatal(err)
	}
	return fds[1]
}

// readersRunning reports whether a goroutine still runs receiver.read a
// second after the call. Close returns once every reader has called Done, in
// its deferred return: a reader may still be on its way out for a moment.
func readersRunning() bool {
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		if !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "ping.(*receiver).read(") {
			return false
		}
		if time.Now().After(deadline) {
			return true
		}
	}
}

// TestTCPReceiveSkipsForeignPackets feeds the prober through socketpairs, so
// needs no root: what is not an answer to this run is counted and skipped,
// on both sockets.
func TestTCPReceiveSkipsForeignPackets(t *testing.T) {
	for _, tc := range []struct {
		name        string
		target      netip.Addr
		tcp, icmp   [][]byte // foreign packets
		answer, err []byte
		wantTTL     int
	}{
		{
			"ipv4", testDst4,
			[][]byte{cat(tcpIPv4Header, patch(synAck, 2, 0x9c, 0x41)), cat(tcpIPv4Header, patch(synAck, 8, 0, 0, 0, 1)), cat(tcpIPv4Header[:10])},
			[][]byte{cat(ipv4Header, errorV4(3, 3, 0, ipv4Header, echoRequestV4)), cat(tcpIPv4Header, errorV4(3, 3, 0, synIPv4Header, patch(synV4, 4, 0, 0, 0, 0)))},
			cat(tcpIPv4Header, synAck), cat(tcpIPv4Header, errorV4(3, 3, 0, synIPv4Header, synV4)), serverTTL,
		},
		{
			"ipv6", testDst6,
			[][]byte{patch(synAck, 13, decode.TCPSyn), {0x00}, nil},
			[][]byte{errorV6(1, 4, 0, echoRequestV6)},
			synAck, errorV6Quoting(1, 4, 0, decode.ProtoTCP, synV6), 0, // no hop limit through a socketpair
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, tcpPeer, icmpPeer := socketpairTCPProber(t, tc.target)
			for _, w := range []struct {
				fd   int
				pkts [][]byte
			}{{tcpPeer, append(tc.tcp, tc.answer)}, {icmpPeer, append(tc.icmp, tc.err)}} {
				for _, pkt := range w.pkts {
					if err := unix.Send(w.fd, pkt, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Each reader hands its answer after the foreign packets before it.
			var got []Reply
			for range 2 {
				r, err := p.Receive(time.Now().Add(replyTimeout))
				if err != nil {
					t.Fatal(err)
				}
				r.Received = time.Time{}
				got = append(got, r)
			}
			slices.SortFunc(got, func(a, b Reply) int { return int(b.TCPFlags) - int(a.TCPFlags) })
			wantError := ICMPError{Type: 3, Code: 3}
			if tc.target.Is6() {
				wantError = ICMPError{Type: 1, Code: 4}
			}
			if r := got[0]; r.Seq != 3 || r.TCPFlags != synAckFlags || r.Error != nil || r.TTL != tc.wantTTL || r.Size != len(synAck) {
				t.Errorf("tcp answer %+v, want probe 3, SYN-ACK, ttl %d, %d bytes", r, tc.wantTTL, len(synAck))
			}
			if r := got[1]; r.Seq != 0 || r.TCPFlags != 0 || r.Error == nil || *r.Error != wantError || r.TTL != tc.wantTTL {
				t.Errorf("icmp answer %+v (%+v), want probe 0, %+v, ttl %d", r, r.Error, wantError, tc.wantTTL)
			}
			if got, want := p.Ignored(), uint64(len(tc.tcp)+len(tc.icmp)); got != want {
				t.Errorf("Ignored() = %d, want %d", got, want)
			}
			if _, err := p.Receive(time.Now().Add(50 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Receive with nothing to read: error = %v, want %v", err, os.ErrDeadlineExceeded)
			}
			if _, err := p.Receive(time.Now().Add(-time.Second)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Receive with a past deadline: error = %v, want %v", err, os.ErrDeadlineExceeded)
			}
		})
	}
}

func TestTCPCloseUnblocksReceive(t *testing.T) {
	p, _, _ := socketpairTCPProber(t, testDst4)
	p.src = testSrc4
	checkCloseUnblocksReceive(t, p)
}

// checkCloseUnblocksReceive checks that Close ends a pending Receive and
// the readers of p, a TCP or UDP prober, and that p, closed, refuses
// everything with os.ErrClosed.
func checkCloseUnblocksReceive(t *testing.T, p interface {
	Send(uint16) (time.Time, error)
	Receive(time.Time) (Reply, error)
	Close() error
}) {
	t.Helper()
	closeDuringReceive(t, p)
	if readersRunning() {
		t.Error("a reader goroutine outlived Close")
	}
	if _, err := p.Receive(time.Now().Add(time.Second)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Receive after Close: error = %v, want %v", err, os.ErrClosed)
	}
	if _, err := p.Send(1); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close: error = %v, want %v", err, os.ErrClosed)
	}
	if err := p.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Close: error = %v, want %v", err, os.ErrClosed)
	}
}

func TestTCPOpenInvalid(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	for _, tc := range []struct {
		name   string
		target netip.Addr
		port   uint16
		mark   decode.TCPMark
	}{
		{"no target", netip.Addr{}, 80, testMark},
		{"port 0", lo, 0, testMark},
		{"empty mark", lo, 80, decode.TCPMark{}},
		{"mark too wide", lo, 80, decode.TCPMark{Span: decode.MaxTCPSpan + 2}},
	} {
		if p, err := OpenTCP(tc.target, tc.port, tc.mark, Options{}); err == nil {
			p.Close()
			t.Errorf("%s: OpenTCP succeeded", tc.name)
		}
	}
}

// TestTCPOptions: every socket carries the mark and the device, the raw
// sockets the source address, the send socket the TTL; the port is held by
// a socket bound and neither listening nor connected.
func TestTCPOptions(t *testing.T) {
	n := newTCPNet(t)
	for _, f := range n.families {
		t.Run(f.name, func(t *testing.T) {
			f.client = n.secondClientAddr(t, f)
			port := n.listen(t, f.server)
			p := openInClient(t, n, f, f.server, func() (*TCPProber, error) {
				return OpenTCP(f.server, port, testMark, testOptions(f.client))
			})
			if p.ID() != testMark.EchoID {
				t.Errorf("ID() = %#x, want %#x", p.ID(), testMark.EchoID)
			}
			checkSocketOptions(t, "hold", p.hold, f.client, 0)
			checkSocketOptions(t, "send", int(p.send.Fd()), f.client, 9)
			checkSocketOptions(t, "icmp", int(p.icmp.Fd()), f.client, 0)
			if sa, err := unix.Getsockname(p.hold); err != nil || sockaddrPort(sa) != int(p.SourcePort()) || p.SourcePort() == 0 {
				t.Errorf("hold socket bound to %v (%v), SourcePort() %d", sa, err, p.SourcePort())
			}
			if acc, err := unix.GetsockoptInt(p.hold, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 0 {
				t.Errorf("hold socket: SO_ACCEPTCONN %d (%v), want 0", acc, err)
			}
			if _, err := unix.Getpeername(p.hold); !errors.Is(err, unix.ENOTCONN) {
				t.Errorf("hold socket: getpeername error %v, want ENOTCONN", err)
			}
			if _, err := p.Send(0); err != nil {
				t.Fatal(err)
			}
			expectAnswer(t, p, 0, f.server, synAckFlags, nil)
		})
	}
}

// secondClientAddr adds to the client an address of f the kernel would
// not pick, and returns it.
func (n *tcpNet) secondClientAddr(tb testing.TB, f tcpFamily) netip.Addr {
	tb.Helper()
	src := f.client.Next().Next()
	bits := 24
	if src.Is6() {
		bits = 64
	}
	if err := n.topo.AddAddr("eth0", n.client, netip.PrefixFrom(src, bits)); err != nil {
		tb.Fatal(err)
	}
	return src
}

// testOptions are the options the options tests open a prober with: a TTL
// of 9, path MTU discovery, the device eth0, source src and mark 7.
func testOptions(src netip.Addr) Options {
	return Options{TTL: 9, PMTUDisc: "do", Interface: "eth0", Source: src, Mark: 7}
}

// checkSocketOptions checks that the socket fd carries testOptions(src):
// the mark, the device, bound to src, and the TTL and path MTU discovery
// when ttl is not 0.
func checkSocketOptions(t *testing.T, name string, fd int, src netip.Addr, ttl int) {
	t.Helper()
	mark, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := unix.GetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
	if err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	if mark != 7 || strings.TrimRight(dev, "\x00") != "eth0" || addrFrom(sa) != src {
		t.Errorf("%s socket: mark %d, device %q, bound to %v; want 7, eth0, %v", name, mark, dev, addrFrom(sa), src)
	}
	if ttl == 0 {
		return
	}
	level, ttlOpt, pmtuOpt, do := unix.IPPROTO_IP, unix.IP_TTL, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO
	if src.Is6() {
		level, ttlOpt, pmtuOpt, do = unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO
	}
	if got, err := unix.GetsockoptInt(fd, level, ttlOpt); err != nil || got != ttl {
		t.Errorf("%s socket: ttl %d (%v), want %d", name, got, err, ttl)
	}
	if got, err := unix.GetsockoptInt(fd, level, pmtuOpt); err != nil || got != do {
		t.Errorf("%s socket: path MTU discovery %d (%v), want %d (do)", name, got, err, do)
	}
}

// openFunc opens a TCP or UDP prober for port 9 of target with opts.
type openFunc func(target netip.Addr, opts Options) (io.Closer, error)

func openTCP9(target netip.Addr, opts Options) (io.Closer, error) {
	return asCloser(OpenTCP(target, 9, testMark, opts))
}

func openUDP9(target netip.Addr, opts Options) (io.Closer, error) {
	return asCloser(OpenUDP(target, 9, testUDPMark, opts))
}

// asCloser returns what an open returned: nil on error, never an interface
// holding a nil prober.
func asCloser[P io.Closer](p P, err error) (io.Closer, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

func TestTCPOpenLeaksNoFD(t *testing.T) { testOpenLeaksNoFD(t, openTCP9) }

// testOpenLeaksNoFD: open failing at each step, and Close, leave no file
// descriptor open. Nothing is sent: the target is loopback and no probe
// goes out.
func testOpenLeaksNoFD(t *testing.T, open openFunc) {
	testenv.RequireRoot(t)
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	// The first open also sets up the runtime's poller, which stays.
	p, err := open(lo, Options{})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()
	before := countFDs()
	for _, tc := range []struct {
		name string
		open func() error // fails, but for the first
	}{
		{"open and close", func() error {
			p, err := open(lo, Options{})
			if err != nil {
				return err
			}
			return p.Close()
		}},
		{"no such interface", func() error {
			_, err := open(lo, Options{Interface: "tpnosuch0"})
			return err
		}},
		{"source not local", func() error {
			_, err := open(lo, Options{Source: netip.MustParseAddr("192.0.2.77")})
			return err
		}},
		{"bad ttl on the sending socket", func() error {
			_, err := open(lo, Options{TTL: 300})
			return err
		}},
		{"bad pmtu mode on the sending socket", func() error {
			_, err := open(lo, Options{PMTUDisc: "probe"})
			return err
		}},
		{"no CAP_NET_RAW", func() error {
			return withoutCapability(t, unix.CAP_NET_RAW, func() error {
				_, err := open(lo, Options{})
				if err != nil && !errors.Is(err, os.ErrPermission) {
					t.Errorf("error %v, want one matching %v", err, os.ErrPermission)
				}
				return err
			})
		}},
	} {
		err := tc.open()
		if wantErr := tc.name != "open and close"; (err != nil) != wantErr {
			t.Errorf("%s: error %v, want one: %v", tc.name, err, wantErr)
		}
		t.Logf("%s: %v", tc.name, err)
		if after := countFDs(); after != before {
			t.Errorf("%s: %d file descriptors open, %d before", tc.name, after, before)
		}
	}
}

func TestTCPOpenNoRoute(t *testing.T) { testOpenNoRoute(t, openTCP9) }

// testOpenNoRoute opens probers for loopback in a fresh network namespace,
// whose lo is down: the kernel has no route, and says so before anything
// is sent.
func testOpenNoRoute(t *testing.T, open openFunc) {
	testenv.RequireRoot(t)
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			err := inNewNetns(t, func() error {
				p, err := open(lo.addr, Options{})
				if err == nil {
					p.Close()
				}
				return err
			})
			if !errors.Is(err, ErrNoRoute) {
				t.Fatalf("open error = %v, want one matching ErrNoRoute", err)
			}
			t.Log(err)
		})
	}
}

func TestTCPCheckSocket(t *testing.T) {
	testenv.RequireRoot(t)
	for _, v6 := range []bool{false, true} {
		if err := CheckTCPSocket(v6); err != nil {
			t.Errorf("CheckTCPSocket(%v) = %v", v6, err)
		}
		err := withoutCapability(t, unix.CAP_NET_RAW, func() error { return CheckTCPSocket(v6) })
		if !errors.Is(err, os.ErrPermission) {
			t.Errorf("CheckTCPSocket(%v) without CAP_NET_RAW = %v, want one matching %v", v6, err, os.ErrPermission)
		}
	}
}
