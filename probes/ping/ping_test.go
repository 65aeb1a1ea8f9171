package ping

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"golang.org/x/sys/unix"
)

// replyTimeout only guards against hangs: loopback replies take microseconds.
const replyTimeout = 5 * time.Second

// quietPeriod is how long a test waits to conclude that nothing more arrives.
const quietPeriod = 500 * time.Millisecond

var loopbacks = []struct {
	name   string
	addr   netip.Addr
	ttlSys string // where the kernel takes the TTL / hop limit of its echo replies
}{
	{"ipv4", netip.MustParseAddr("127.0.0.1"), "/proc/sys/net/ipv4/ip_default_ttl"},
	{"ipv6", netip.MustParseAddr("::1"), "/proc/sys/net/ipv6/conf/lo/hop_limit"},
}

func readSysctlInt(tb testing.TB, path string) int {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatalf("%s: %v", path, err)
	}
	return n
}

func TestRandomID(t *testing.T) {
	for range 1000 {
		id, err := RandomID()
		if err != nil {
			t.Fatal(err)
		}
		if id == 0 {
			t.Fatal("RandomID returned 0")
		}
	}
}

func TestOpenInvalidTarget(t *testing.T) {
	if _, err := Open(netip.Addr{}, 1, Options{}); err == nil {
		t.Fatal("Open(zero Addr) succeeded")
	}
}

// TestReceiveSkipsForeignPackets feeds Receive through a socketpair, so needs
// no root: packets that are not replies to this run are counted and skipped.
func TestReceiveSkipsForeignPackets(t *testing.T) {
	foreignCookie := cat(echoReplyV6)
	foreignCookie[echoHeaderLen] ^= 0xff
	foreignID := cat(echoReplyV6)
	foreignID[5] ^= 0xff

	for _, tc := range []struct {
		name    string
		target  netip.Addr
		foreign [][]byte
		reply   []byte
	}{
		{"ipv6", netip.MustParseAddr("::1"), [][]byte{foreignCookie, foreignID, echoRequestV6, {0x81}, nil}, echoReplyV6},
		{"ipv4", netip.MustParseAddr("127.0.0.1"), [][]byte{
			cat(ipv4Header, echoRequestV4),
			cat(ipv4Header[:10]),
			cat(ipv4HeaderOptions[:20], echoReplyV4), // IHL 6 says the ICMP header starts 4 bytes in
		}, cat(ipv4HeaderOptions, echoReplyV4)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			peer := fds[1]
			t.Cleanup(func() { unix.Close(peer) })
			to, err := sockaddr(tc.target)
			if err != nil {
				t.Fatal(err)
			}
			p, err := newPinger(fds[0], tc.target, to, 0x1234, testCookie, payloadLen)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })

			for _, pkt := range append(tc.foreign, tc.reply) {
				if err := unix.Send(peer, pkt, 0); err != nil {
					t.Fatal(err)
				}
			}
			r, err := p.Receive(time.Now().Add(replyTimeout))
			if err != nil {
				t.Fatal(err)
			}
			if r.Seq != 7 || r.Size != 64 {
				t.Errorf("Receive = seq %d size %d, want seq 7 size 64", r.Seq, r.Size)
			}
			if got, want := p.Ignored(), uint64(len(tc.foreign)); got != want {
				t.Errorf("Ignored() = %d, want %d", got, want)
			}
			if _, err := p.Receive(time.Now().Add(50 * time.Millisecond)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Receive on an empty socket: error = %v, want %v", err, os.ErrDeadlineExceeded)
			}
		})
	}
}

func TestPingLoopback(t *testing.T) {
	testenv.RequireRoot(t)
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			wantTTL := readSysctlInt(t, lo.ttlSys)
			id := randomIDs(t, 1)[0]
			p := openPinger(t, lo.addr, id)
			if p.ID() != id {
				t.Fatalf("ID() = %d, want %d", p.ID(), id)
			}
			for seq := uint16(1); seq <= 3; seq++ {
				sent, err := p.Send(seq)
				if err != nil {
					t.Fatal(err)
				}
				r, err := p.Receive(time.Now().Add(replyTimeout))
				if err != nil {
					t.Fatal(err)
				}
				want := Reply{Seq: seq, From: lo.addr, Received: r.Received, TTL: wantTTL, Size: 64}
				if r != want {
					t.Errorf("reply = %+v, want %+v", r, want)
				}
				if r.Received.Before(sent) {
					t.Errorf("reply received at %v, before the request was sent at %v", r.Received, sent)
				}
			}
			expectIgnored(t, p, 0)
		})
	}
}

// TestPingersOnlySeeTheirOwnID runs two pingers with different ids on the same
// loopback. An unfiltered raw socket sees both pingers' replies; each
// pinger's socket sees only its own: Receive returns exactly its own
// sequence numbers, then times out, and never had anything to ignore, so the
// other pinger's replies were dropped by the kernel before reaching the
// socket.
func TestPingersOnlySeeTheirOwnID(t *testing.T) {
	testenv.RequireRoot(t)
	const count = 5
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			witness := openUnfilteredSocket(t, lo.addr)
			ids := randomIDs(t, 2)
			pingers := []*Pinger{openPinger(t, lo.addr, ids[0]), openPinger(t, lo.addr, ids[1])}

			// Both use the same sequence numbers: only the filter tells
			// their replies apart before the cookie check would.
			for seq := uint16(1); seq <= count; seq++ {
				for _, p := range pingers {
					if _, err := p.Send(seq); err != nil {
						t.Fatal(err)
					}
				}
			}
			for _, p := range pingers {
				var got []uint16
				for range count {
					r, err := p.Receive(time.Now().Add(replyTimeout))
					if err != nil {
						t.Fatalf("pinger %d: %v", p.ID(), err)
					}
					got = append(got, r.Seq)
				}
				slices.Sort(got)
				if want := []uint16{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
					t.Errorf("pinger %d received seqs %v, want %v", p.ID(), got, want)
				}
			}
			for _, p := range pingers {
				if r, err := p.Receive(time.Now().Add(quietPeriod)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("pinger %d: extra reply %+v, error %v; want %v", p.ID(), r, err, os.ErrDeadlineExceeded)
				}
				if n := p.Ignored(); n != 0 {
					t.Errorf("pinger %d: %d packets reached the socket past the filter and were ignored, want 0", p.ID(), n)
				}
			}

			seen := witness.replies(t, lo.addr.Is6(), pingers)
			for _, p := range pingers {
				if seen[p.ID()] != count {
					t.Errorf("unfiltered socket saw %d replies to pinger %d, want %d", seen[p.ID()], p.ID(), count)
				}
			}
		})
	}
}

// TestPingersSameIDDifferentRuns runs two pingers that share an echo id: the
// socket filter passes both's replies to both sockets, and the payload cookie
// keeps them apart.
func TestPingersSameIDDifferentRuns(t *testing.T) {
	testenv.RequireRoot(t)
	const count = 3
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			id := randomIDs(t, 1)[0]
			pingers := []*Pinger{openPinger(t, lo.addr, id), openPinger(t, lo.addr, id)}
			for seq := uint16(1); seq <= count; seq++ {
				for i, p := range pingers {
					if _, err := p.Send(seq + uint16(100*i)); err != nil {
						t.Fatal(err)
					}
				}
			}
			for i, p := range pingers {
				for seq := uint16(1); seq <= count; seq++ {
					r, err := p.Receive(time.Now().Add(replyTimeout))
					if err != nil {
						t.Fatalf("pinger %d: %v", i, err)
					}
					if want := seq + uint16(100*i); r.Seq != want {
						t.Errorf("pinger %d: reply seq %d, want %d", i, r.Seq, want)
					}
				}
			}
			for i, p := range pingers {
				if r, err := p.Receive(time.Now().Add(quietPeriod)); !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("pinger %d: extra reply %+v, error %v; want %v", i, r, err, os.ErrDeadlineExceeded)
				}
				if n := p.Ignored(); n != count {
					t.Errorf("pinger %d: Ignored() = %d, want the other run's %d replies", i, n, count)
				}
			}
		})
	}
}

func TestReceiveDeadline(t *testing.T) {
	testenv.RequireRoot(t)
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			p := openPinger(t, lo.addr, randomIDs(t, 1)[0])
			deadline := time.Now().Add(100 * time.Millisecond)
			_, err := p.Receive(deadline)
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Receive error = %v, want %v", err, os.ErrDeadlineExceeded)
			}
			if now := time.Now(); now.Before(deadline) {
				t.Errorf("Receive timed out at %v, before its deadline %v", now, deadline)
			}
			if _, err := p.Receive(time.Now().Add(-time.Second)); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Receive with a past deadline: error = %v, want %v", err, os.ErrDeadlineExceeded)
			}
		})
	}
}

func TestCloseUnblocksReceive(t *testing.T) {
	testenv.RequireRoot(t)
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			p, err := Open(lo.addr, randomIDs(t, 1)[0], Options{})
			if err != nil {
				t.Fatal(err)
			}
			closeDuringReceive(t, p)
			if _, err := p.Send(1); !errors.Is(err, os.ErrClosed) {
				t.Errorf("Send after Close: error = %v, want %v", err, os.ErrClosed)
			}
		})
	}
}

// closeDuringReceive closes p while a Receive without a deadline waits,
// which must then return os.ErrClosed.
func closeDuringReceive(t *testing.T, p interface {
	Receive(time.Time) (Reply, error)
	Close() error
}) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := p.Receive(time.Time{}) // no deadline
		done <- err
	}()
	// Let Receive park in the poller; were it late, it would still have
	// to return os.ErrClosed.
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("Receive after Close: error = %v, want %v", err, os.ErrClosed)
		}
	case <-time.After(replyTimeout):
		t.Fatal("Receive still blocked after Close")
	}
}

// TestSendNoRoute sends to loopback in a fresh network namespace, whose lo is
// down: no packet is created at all. IPv4 finds no route; IPv6 fails earlier,
// in source address selection, as ::1 is not configured while lo is down.
func TestSendNoRoute(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name    string
		target  netip.Addr
		wantErr unix.Errno
	}{
		{"ipv4", loopbacks[0].addr, unix.ENETUNREACH},
		{"ipv6", loopbacks[1].addr, unix.EADDRNOTAVAIL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := inNewNetns(t, func() error {
				p, err := Open(tc.target, 1, Options{})
				if err != nil {
					return fmt.Errorf("unexpected: %w", err)
				}
				defer p.Close()
				_, err = p.Send(1)
				return err
			})
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, ErrNoRoute) {
				t.Fatalf("Send error = %v, want %v matching ErrNoRoute", err, tc.wantErr)
			}
			t.Log(err)
		})
	}
}

func TestOpenWithoutCapNetRaw(t *testing.T) {
	testenv.RequireRoot(t)
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			err := withoutCapability(t, unix.CAP_NET_RAW, func() error {
				p, err := Open(lo.addr, 1, Options{})
				if err == nil {
					p.Close()
				}
				return err
			})
			if !errors.Is(err, os.ErrPermission) {
				t.Fatalf("Open error = %v, want one matching %v", err, os.ErrPermission)
			}
			t.Log(err)
		})
	}
}

// unfilteredSocket is a raw ICMP/ICMPv6 socket without any filter, the
// witness of what reaches the socket layer.
type unfilteredSocket struct{ fd int }

func openUnfilteredSocket(tb testing.TB, target netip.Addr) unfilteredSocket {
	tb.Helper()
	family, proto := unix.AF_INET, unix.IPPROTO_ICMP
	if target.Is6() {
		family, proto = unix.AF_INET6, unix.IPPROTO_ICMPV6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return unfilteredSocket{fd}
}

// replies drains the socket and counts, per echo id, the echo replies
// carrying the cookie of one of pingers.
func (s unfilteredSocket) replies(tb testing.TB, v6 bool, pingers []*Pinger) map[uint16]int {
	tb.Helper()
	seen := map[uint16]int{}
	buf := make([]byte, recvBufLen)
	for {
		n, _, err := unix.Recvfrom(s.fd, buf, 0|unix.MSG_DONTWAIT)
		if errors.Is(err, unix.EAGAIN) {
			return seen
		}
		if err != nil {
			tb.Fatal(err)
		}
		for _, p := range pingers {
			if _, err := parseReply(v6, buf[:n], p.ID(), p.cookie, payloadLen); err == nil {
				seen[p.ID()]++
			}
		}
	}
}

// TestPingLoopbackOptions: ping's shaping options reach the socket, and a
// larger payload comes back whole.
func TestPingLoopbackOptions(t *testing.T) {
	testenv.RequireRoot(t)
	for _, lo := range loopbacks {
		t.Run(lo.name, func(t *testing.T) {
			opts := Options{Size: 1000, TTL: 9, PMTUDisc: "do", Interface: "lo", Source: lo.addr, Mark: 7}
			p, err := Open(lo.addr, randomIDs(t, 1)[0], opts)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { p.Close() })
			level, opt := unix.IPPROTO_IP, unix.IP_TTL
			if lo.addr.Is6() {
				level, opt = unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS
			}
			var ttl, mark int
			var dev string
			var gerr error
			if err := p.conn.Control(func(fd uintptr) {
				ttl, gerr = unix.GetsockoptInt(int(fd), level, opt)
				if gerr == nil {
					mark, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK)
				}
				if gerr == nil {
					dev, gerr = unix.GetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE)
				}
			}); err != nil || gerr != nil {
				t.Fatal(err, gerr)
			}
			if ttl != 9 || mark != 7 || strings.TrimRight(dev, "\x00") != "lo" {
				t.Errorf("socket ttl %d mark %d device %q, want 9, 7, lo", ttl, mark, dev)
			}
			if _, err := p.Send(1); err != nil {
				t.Fatal(err)
			}
			r, err := p.Receive(time.Now().Add(replyTimeout))
			if err != nil {
				t.Fatal(err)
			}
			if r.Seq != 1 || r.Size != echoHeaderLen+1000 || r.Error != nil {
				t.Errorf("reply %+v, want seq 1 of %d bytes", r, echoHeaderLen+1000)
			}
		})
	}
	for _, bad := range []Options{{Size: MinSize - 1}, {PMTUDisc: "probe"}, {Source: netip.MustParseAddr("::1")}} {
		if p, err := Open(netip.MustParseAddr("127.0.0.1"), 1, bad); err == nil {
			p.Close()
			t.Errorf("Open with %+v: no error", bad)
		}
	}
}
