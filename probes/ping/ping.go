package ping

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/caps"
)

// ErrNoRoute matches Send errors saying the kernel has no way to send to the
// target: no route (ENETUNREACH, EHOSTUNREACH) or no source address to send
// from (EADDRNOTAVAIL). The errno stays available to errors.Is.
var ErrNoRoute = errors.New("no route to target")

// TooBigError is a request the kernel refused to send: with path MTU
// discovery set to "do", it is larger than the MTU the kernel knows for the
// path (a "too big" error came back for an earlier one). It wraps EMSGSIZE.
type TooBigError struct {
	// MTU is the path MTU toward the target, 0 if unknown.
	MTU int
}

func (e *TooBigError) Error() string {
	return fmt.Sprintf("message too long for the path mtu %d", e.MTU)
}

func (e *TooBigError) Unwrap() error { return unix.EMSGSIZE }

// recvBufLen holds any reply to our default 64-byte requests, IPv4 options
// included, and any ICMP error quoting them, with room to spare; a pinger
// with a larger payload takes a larger buffer. Longer packets are truncated
// and ignored.
const recvBufLen = 2048

// Options are ping's ways of shaping the request, with ping's meanings.
type Options struct {
	// Size is the payload size (ping -s); 0 means ping's 56. At least MinSize.
	Size int
	// TTL is the IPv4 TTL or IPv6 hop limit (ping -t); 0 keeps the default.
	TTL int
	// PMTUDisc is path MTU discovery (ping -M): "do" (set DF, never
	// fragment), "dont" (fragment as needed), "want" (DF, but fragment a
	// packet larger than the route's MTU); "" keeps the default.
	PMTUDisc string
	// Interface binds the socket to a device (ping -I IFACE); Source to a
	// source address (ping -I ADDR).
	Interface string
	Source    netip.Addr
	// Mark is the socket's fwmark (ping -m); 0 keeps none.
	Mark uint32
	// Cookie starts an echo's payload; all zero draws a random one. A
	// trace given its first bytes keeps an echo whose id a NAT rewrote.
	Cookie [8]byte
}

// Pinger sends ICMP/ICMPv6 echo requests with one echo id and receives the
// replies to them.
//
// Send may be called concurrently with Receive; Receive must not be called
// concurrently with itself.
type Pinger struct {
	file   *os.File
	conn   syscall.RawConn
	target netip.Addr
	to     unix.Sockaddr
	v6     bool
	id     uint16
	cookie cookie
	size   int

	closed  atomic.Bool
	ignored atomic.Uint64
	// sentOnce says a send has succeeded: the kernel accepted this
	// socket's requests as they are.
	sentOnce bool

	// Reused by Receive.
	buf []byte
	oob []byte
}

// Reply is an echo reply to one of our requests, a TCP answer to one of our
// SYNs (TCPFlags set), a UDP reply to one of our datagrams (TCPFlags
// decode.UDPAnswer) or, when Error is set, an ICMP error about any of them.
type Reply struct {
	Seq  uint16
	From netip.Addr
	// Error is the ICMP error that quoted request Seq; nil for an echo reply.
	Error *ICMPError
	// Received is when Receive read the reply from the socket.
	Received time.Time
	// TTL is the IPv4 TTL or the IPv6 hop limit of the reply; 0 if unknown.
	TTL int
	// Size is the length of the ICMP message, header included, like ping's
	// "64 bytes from"; for a TCP answer, of the TCP segment; for a UDP
	// reply, of the UDP payload.
	Size int
	// TCPFlags are the flags of a TCP answer: SYN|ACK from an open port,
	// RST|ACK from a closed one; decode.UDPAnswer for a UDP reply; 0 for an
	// echo reply or an ICMP error.
	TCPFlags uint8
}

// Open opens a raw ICMP (IPv4) or ICMPv6 socket for target in the calling
// thread's network namespace, attaches a BPF socket filter so the socket only
// receives echo replies carrying id and ICMP errors quoting our requests, and
// returns the pinger.
//
// A missing CAP_NET_RAW gives an error matching os.ErrPermission.
func Open(target netip.Addr, id uint16, opts Options) (*Pinger, error) {
	target = target.Unmap()
	if !target.IsValid() {
		return nil, errors.New("open pinger: invalid target address")
	}
	if opts.Size == 0 {
		opts.Size = payloadLen
	}
	if opts.Size < MinSize {
		return nil, fmt.Errorf("open pinger: payload of %d bytes is below %d", opts.Size, MinSize)
	}
	to, err := sockaddr(target)
	if err != nil {
		return nil, fmt.Errorf("open pinger for %s: %w", target, err)
	}
	c := cookie(opts.Cookie)
	if c == (cookie{}) {
		if _, err := rand.Read(c[:]); err != nil {
			return nil, fmt.Errorf("open pinger: read random cookie: %w", err)
		}
	}

	fd, family, name, err := rawSocket(target.Is6())
	if err != nil {
		return nil, err
	}
	if err := setupSocket(fd, family, id); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set up raw %s socket: %w", name, err)
	}
	if err := applyOptions(fd, target.Is6(), opts); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return newPinger(fd, target, to, id, c, opts.Size)
}

// rawSocket opens the raw ICMP (v6: ICMPv6) socket a pinger sends on.
func rawSocket(v6 bool) (fd, family int, name string, err error) {
	family, proto, name := unix.AF_INET, unix.IPPROTO_ICMP, "icmp"
	if v6 {
		family, proto, name = unix.AF_INET6, unix.IPPROTO_ICMPV6, "icmpv6"
	}
	fd, err = openRaw(family, proto, name)
	return fd, family, name, err
}

// openRaw opens a non-blocking raw socket of proto, name in errors.
func openRaw(family, proto int, name string) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, fmt.Errorf("open raw %s socket: %w", name, caps.Explain(err, caps.RawSocket))
	}
	return fd, nil
}

// CheckSocket opens and closes the socket a pinger would send on: nil when
// this process may open it.
func CheckSocket(v6 bool) error {
	fd, _, _, err := rawSocket(v6)
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// echoICMPv6Types are what a pinger's ICMPv6 socket lets through before its
// socket filter: echo replies and the errors that quote a packet.
var echoICMPv6Types = []int{icmpv6EchoReply, icmpv6DestUnreach, icmpv6PacketTooBig, icmpv6TimeExceeded, icmpv6ParamProblem}

// setupSocket narrows what the raw socket receives to echo replies carrying
// id and errors quoting our requests, and asks for the IPv6 hop limit.
func setupSocket(fd, family int, id uint16) error {
	if family == unix.AF_INET6 {
		f := icmpv6Filter(echoICMPv6Types...)
		if err := unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
			return fmt.Errorf("set ICMP6_FILTER: %w", err)
		}
		if err := recvHopLimit(fd); err != nil {
			return err
		}
	}
	prog, err := socketFilter(family, id)
	if err != nil {
		return err
	}
	return attachFilter(fd, prog)
}

// newPinger wraps the non-blocking socket fd for the Go runtime poller. It
// owns fd from then on, and closes it on error.
func newPinger(fd int, target netip.Addr, to unix.Sockaddr, id uint16, c cookie, size int) (*Pinger, error) {
	file := os.NewFile(uintptr(fd), "ping "+target.String())
	conn, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, fmt.Errorf("open pinger: %w", err)
	}
	return &Pinger{
		file:   file,
		conn:   conn,
		target: target,
		to:     to,
		v6:     target.Is6(),
		id:     id,
		cookie: c,
		size:   size,
		buf:    make([]byte, max(recvBufLen, size+1024)),
		oob:    make([]byte, unix.CmsgSpace(4)),
	}, nil
}

// ID returns the echo id of the pinger.
func (p *Pinger) ID() uint16 { return p.id }

// Ignored returns how many packets reached the socket but were not a valid
// reply to this pinger: wrong type or id (the socket filter should make these
// zero), another run's cookie, truncated or corrupt packets.
func (p *Pinger) Ignored() uint64 { return p.ignored.Load() }

// Send sends echo request seq with the payload cookie; returns the time it
// was sent. When the target cannot be reached from here at all, the error
// matches ErrNoRoute.
func (p *Pinger) Send(seq uint16) (time.Time, error) {
	sent := time.Now()
	msg := marshalEchoRequest(p.v6, p.id, seq, p.cookie, sent, p.size)
	err := sendError(sendTo(p.conn, msg, p.to), p.sentOnce, p.to)
	if err != nil {
		return time.Time{}, fmt.Errorf("send echo request %d to %s: %w", seq, p.target, closedErr(&p.closed, err))
	}
	p.sentOnce = true
	return sent, nil
}

// Receive waits until deadline for the next valid echo reply to our id
// (checked: type, id, and the payload cookie), or ICMP error quoting one of
// our requests, and returns it. A zero deadline waits forever.
//
// On timeout the error matches os.ErrDeadlineExceeded; when the pinger is
// closed, including by a Close during Receive, it matches os.ErrClosed.
func (p *Pinger) Receive(deadline time.Time) (Reply, error) {
	if err := p.file.SetReadDeadline(deadline); err != nil {
		return Reply{}, fmt.Errorf("receive echo reply: set deadline: %w", closedErr(&p.closed, err))
	}
	for {
		pkt, err := recvPacket(p.conn, p.buf, p.oob)
		if err != nil {
			return Reply{}, fmt.Errorf("receive echo reply: %w", closedErr(&p.closed, err))
		}
		if pkt.truncated {
			p.ignored.Add(1)
			continue
		}
		r, err := parseReply(p.v6, pkt.data, p.id, p.cookie, p.size)
		if errors.Is(err, errNotEchoReply) {
			r, err = parseError(p.v6, pkt.data, p.id, p.cookie)
		}
		if err != nil {
			p.ignored.Add(1)
			continue
		}
		return pkt.reply(r), nil
	}
}

// Close closes the socket. A pending Receive returns an error matching
// os.ErrClosed.
func (p *Pinger) Close() error {
	p.closed.Store(true)
	if err := p.file.Close(); err != nil {
		return fmt.Errorf("close pinger socket: %w", err)
	}
	return nil
}

// RandomID returns a random non-zero echo id (crypto/rand).
func RandomID() (uint16, error) {
	var b [2]byte
	for {
		if _, err := rand.Read(b[:]); err != nil {
			return 0, fmt.Errorf("read random echo id: %w", err)
		}
		if id := binary.BigEndian.Uint16(b[:]); id != 0 {
			return id, nil
		}
	}
}
