package ping

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
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

// noRouteError marks an errno as ErrNoRoute.
type noRouteError struct{ errno unix.Errno }

func (e noRouteError) Error() string        { return "no route: " + e.errno.Error() }
func (e noRouteError) Unwrap() error        { return e.errno }
func (e noRouteError) Is(target error) bool { return target == ErrNoRoute }

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

// Reply is an echo reply to one of our requests or, when Error is set, an
// ICMP error about one of them.
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
	// "64 bytes from".
	Size int
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
	var c cookie
	if _, err := rand.Read(c[:]); err != nil {
		return nil, fmt.Errorf("open pinger: read random cookie: %w", err)
	}

	fd, family, name, err := rawSocket(target.Is6())
	if err != nil {
		return nil, err
	}
	if err := setupSocket(fd, family, id); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("set up raw %s socket: %w", name, err)
	}
	if err := applyOptions(fd, target, opts); err != nil {
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
	fd, err = unix.Socket(family, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, proto)
	if err != nil {
		return -1, family, name, fmt.Errorf("open raw %s socket: %w", name, caps.Explain(err, caps.RawSocket))
	}
	return fd, family, name, nil
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

// applyOptions sets the socket options of opts on fd, a socket for target.
func applyOptions(fd int, target netip.Addr, opts Options) error {
	v6 := target.Is6()
	if opts.TTL != 0 {
		level, opt := unix.IPPROTO_IP, unix.IP_TTL
		if v6 {
			level, opt = unix.IPPROTO_IPV6, unix.IPV6_UNICAST_HOPS
		}
		if err := unix.SetsockoptInt(fd, level, opt, opts.TTL); err != nil {
			return fmt.Errorf("set ttl %d: %w", opts.TTL, err)
		}
	}
	if opts.PMTUDisc != "" {
		modes := map[string]int{"do": unix.IP_PMTUDISC_DO, "dont": unix.IP_PMTUDISC_DONT, "want": unix.IP_PMTUDISC_WANT}
		level, opt := unix.IPPROTO_IP, unix.IP_MTU_DISCOVER
		if v6 {
			modes = map[string]int{"do": unix.IPV6_PMTUDISC_DO, "dont": unix.IPV6_PMTUDISC_DONT, "want": unix.IPV6_PMTUDISC_WANT}
			level, opt = unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER
		}
		mode, ok := modes[opts.PMTUDisc]
		if !ok {
			return fmt.Errorf("path MTU discovery %q: want do, dont or want", opts.PMTUDisc)
		}
		if err := unix.SetsockoptInt(fd, level, opt, mode); err != nil {
			return fmt.Errorf("set path MTU discovery %s: %w", opts.PMTUDisc, err)
		}
	}
	if opts.Mark != 0 {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_MARK, int(opts.Mark)); err != nil {
			return fmt.Errorf("set mark %d: %w", opts.Mark, err)
		}
	}
	if opts.Interface != "" {
		if err := unix.BindToDevice(fd, opts.Interface); err != nil {
			return fmt.Errorf("bind to interface %s: %w", opts.Interface, err)
		}
	}
	if src := opts.Source.Unmap(); src.IsValid() {
		if src.Is6() != v6 {
			return fmt.Errorf("source %s is not of the target's family", src)
		}
		sa, err := sockaddr(src)
		if err != nil {
			return err
		}
		if err := unix.Bind(fd, sa); err != nil {
			return fmt.Errorf("bind to source %s: %w", src, err)
		}
	}
	return nil
}

// setupSocket narrows what the raw socket receives to echo replies carrying
// id and errors quoting our requests, and asks for the IPv6 hop limit.
func setupSocket(fd, family int, id uint16) error {
	if family == unix.AF_INET6 {
		f := icmpv6Filter()
		if err := unix.SetsockoptICMPv6Filter(fd, unix.SOL_ICMPV6, unix.ICMPV6_FILTER, &f); err != nil {
			return fmt.Errorf("set ICMP6_FILTER: %w", err)
		}
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
			return fmt.Errorf("set IPV6_RECVHOPLIMIT: %w", err)
		}
	}
	prog, err := socketFilter(family, id)
	if err != nil {
		return err
	}
	insns := prog.sockFilters()
	fprog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach socket filter: %w", err)
	}
	// Packets queued between socket() and the filter attach were never
	// filtered: drop them.
	buf := make([]byte, recvBufLen)
	for {
		_, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
		switch {
		case err == nil, errors.Is(err, unix.EINTR):
		case errors.Is(err, unix.EAGAIN):
			return nil
		default:
			return fmt.Errorf("drain unfiltered packets: %w", err)
		}
	}
}

// icmpv6Filter is the ICMP6_FILTER value that passes only echo replies and
// the errors that quote a packet. It must match struct icmp6_filter in
// <linux/icmpv6.h>: a set bit blocks the ICMPv6 type of that number.
func icmpv6Filter() unix.ICMPv6Filter {
	var f unix.ICMPv6Filter
	for i := range f.Data {
		f.Data[i] = ^uint32(0)
	}
	for _, typ := range []int{icmpv6EchoReply, icmpv6DestUnreach, icmpv6PacketTooBig, icmpv6TimeExceeded, icmpv6ParamProblem} {
		f.Data[typ>>5] &^= 1 << (typ & 31)
	}
	return f
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

// sockaddr returns the destination address for target. A zone, as in
// fe80::1%eth0, is resolved in the calling thread's network namespace.
func sockaddr(target netip.Addr) (unix.Sockaddr, error) {
	if target.Is4() {
		return &unix.SockaddrInet4{Addr: target.As4()}, nil
	}
	sa := &unix.SockaddrInet6{Addr: target.As16()}
	if zone := target.Zone(); zone != "" {
		if idx, err := strconv.ParseUint(zone, 10, 32); err == nil {
			sa.ZoneId = uint32(idx)
		} else {
			ifi, err := net.InterfaceByName(zone)
			if err != nil {
				return nil, fmt.Errorf("resolve zone %q: %w", zone, err)
			}
			sa.ZoneId = uint32(ifi.Index)
		}
	}
	return sa, nil
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
	var serr error
	err := p.conn.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendto(int(fd), msg, 0, p.to)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err == nil {
		err = serr
	}
	switch {
	case err == nil:
		p.sentOnce = true
	case err == unix.ENETUNREACH, err == unix.EHOSTUNREACH, err == unix.EADDRNOTAVAIL:
		err = noRouteError{err.(unix.Errno)}
	case err == unix.EINVAL && p.sentOnce:
		// The same request was accepted before, so what changed is the
		// path: while the device a route leaves by is being deleted, an
		// IPv6 send can fail with EINVAL (seen on 5.10).
		err = noRouteError{unix.EINVAL}
	case err == unix.EMSGSIZE:
		err = &TooBigError{MTU: p.pathMTU()}
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("send echo request %d to %s: %w", seq, p.target, p.closedErr(err))
	}
	return sent, nil
}

// pathMTU is the MTU the kernel knows for the path to the target: a UDP
// socket connected to it (connecting sends nothing) reads it back; 0 when
// that fails.
func (p *Pinger) pathMTU() int {
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU
	if p.v6 {
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var to unix.Sockaddr
	switch sa := p.to.(type) {
	case *unix.SockaddrInet4:
		to = &unix.SockaddrInet4{Port: 9, Addr: sa.Addr}
	case *unix.SockaddrInet6:
		to = &unix.SockaddrInet6{Port: 9, Addr: sa.Addr, ZoneId: sa.ZoneId}
	}
	if unix.Connect(fd, to) != nil {
		return 0
	}
	mtu, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		return 0
	}
	return mtu
}

// Receive waits until deadline for the next valid echo reply to our id
// (checked: type, id, and the payload cookie), or ICMP error quoting one of
// our requests, and returns it. A zero deadline waits forever.
//
// On timeout the error matches os.ErrDeadlineExceeded; when the pinger is
// closed, including by a Close during Receive, it matches os.ErrClosed.
func (p *Pinger) Receive(deadline time.Time) (Reply, error) {
	if err := p.file.SetReadDeadline(deadline); err != nil {
		return Reply{}, fmt.Errorf("receive echo reply: set deadline: %w", p.closedErr(err))
	}
	for {
		var (
			n, oobn, flags int
			from           unix.Sockaddr
			rerr           error
		)
		err := p.conn.Read(func(fd uintptr) bool {
			for {
				n, oobn, flags, from, rerr = unix.Recvmsg(int(fd), p.buf, p.oob, 0)
				if rerr != unix.EINTR {
					return rerr != unix.EAGAIN
				}
			}
		})
		if err == nil {
			err = rerr
		}
		if err != nil {
			return Reply{}, fmt.Errorf("receive echo reply: %w", p.closedErr(err))
		}
		received := time.Now()

		if flags&unix.MSG_TRUNC != 0 {
			p.ignored.Add(1)
			continue
		}
		r, err := parseReply(p.v6, p.buf[:n], p.id, p.cookie, p.size)
		if errors.Is(err, errNotEchoReply) {
			r, err = parseError(p.v6, p.buf[:n], p.id, p.cookie)
		}
		if err != nil {
			p.ignored.Add(1)
			continue
		}
		if p.v6 {
			r.TTL = hopLimit(p.oob[:oobn])
		}
		return Reply{
			Seq:      r.Seq,
			From:     addrFrom(from),
			Received: received,
			TTL:      r.TTL,
			Size:     r.Size,
			Error:    r.Error,
		}, nil
	}
}

// closedErr turns the poller's "use of closed file", which no exported error
// matches, into os.ErrClosed.
func (p *Pinger) closedErr(err error) error {
	if p.closed.Load() && !errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	return err
}

// hopLimit returns the IPV6_HOPLIMIT ancillary data in oob, or 0.
func hopLimit(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		if m.Header.Level == unix.IPPROTO_IPV6 && m.Header.Type == unix.IPV6_HOPLIMIT && len(m.Data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return 0
}

// addrFrom converts a received source address. The zone of a link-local
// source is the numeric interface index: names belong to the socket's network
// namespace, which need not be the calling thread's.
func addrFrom(sa unix.Sockaddr) netip.Addr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrFrom4(sa.Addr)
	case *unix.SockaddrInet6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.ZoneId != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.ZoneId), 10))
		}
		return a
	default:
		return netip.Addr{}
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
