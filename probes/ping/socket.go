package ping

import (
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
)

// The socket plumbing the pinger and the TCP and UDP probers share: options, routes,
// filters, sends and reads on non-blocking raw sockets.

// noRouteError marks an errno as ErrNoRoute.
type noRouteError struct{ errno unix.Errno }

func (e noRouteError) Error() string        { return "no route: " + e.errno.Error() }
func (e noRouteError) Unwrap() error        { return e.errno }
func (e noRouteError) Is(target error) bool { return target == ErrNoRoute }

// applyOptions sets the socket options of opts on fd, an IPv4 or (v6) IPv6
// socket.
func applyOptions(fd int, v6 bool, opts Options) error {
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

// recvHopLimit asks for the hop limit of received IPv6 packets as
// ancillary data.
func recvHopLimit(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_RECVHOPLIMIT, 1); err != nil {
		return fmt.Errorf("set IPV6_RECVHOPLIMIT: %w", err)
	}
	return nil
}

// recvTTL asks for the TTL of received IPv4 packets as ancillary data: a
// datagram socket does not see the IP header.
func recvTTL(fd int) error {
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_RECVTTL, 1); err != nil {
		return fmt.Errorf("set IP_RECVTTL: %w", err)
	}
	return nil
}

// attachFilter attaches prog to fd and drops what fd received before.
func attachFilter(fd int, prog filterProgram) error {
	insns := prog.sockFilters()
	fprog := unix.SockFprog{Len: uint16(len(insns)), Filter: &insns[0]}
	if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog); err != nil {
		return fmt.Errorf("attach socket filter: %w", err)
	}
	return drain(fd)
}

// drain drops what fd received before its filters were set: those packets
// were never filtered.
func drain(fd int) error {
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

// icmpv6Filter is the ICMP6_FILTER value that passes only the ICMPv6 types
// given. It must match struct icmp6_filter in <linux/icmpv6.h>: a set bit
// blocks the ICMPv6 type of that number.
func icmpv6Filter(types ...int) unix.ICMPv6Filter {
	var f unix.ICMPv6Filter
	for i := range f.Data {
		f.Data[i] = ^uint32(0)
	}
	for _, typ := range types {
		f.Data[typ>>5] &^= 1 << (typ & 31)
	}
	return f
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

// sendTo sends msg to to on conn, a non-blocking socket.
func sendTo(conn syscall.RawConn, msg []byte, to unix.Sockaddr) error {
	var serr error
	err := conn.Write(func(fd uintptr) bool {
		for {
			serr = unix.Sendto(int(fd), msg, 0, to)
			if serr != unix.EINTR {
				return serr != unix.EAGAIN
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// sendError gives the error of a send to to its meaning: ErrNoRoute or
// *TooBigError. sentOnce says an earlier send on the socket succeeded.
func sendError(err error, sentOnce bool, to unix.Sockaddr) error {
	switch {
	case err == unix.EINVAL && sentOnce:
		// The same request was accepted before, so what changed is the
		// path: while the device a route leaves by is being deleted, an
		// IPv6 send can fail with EINVAL (seen on 5.10).
		return noRouteError{unix.EINVAL}
	case err == unix.EMSGSIZE:
		return &TooBigError{MTU: pathMTU(to)}
	}
	return noRoute(err)
}

// noRoute marks the errnos saying the kernel has no way to send to a
// target as ErrNoRoute: no route (ENETUNREACH, EHOSTUNREACH) or no source
// address (EADDRNOTAVAIL). It returns any other error as it is.
func noRoute(err error) error {
	switch err {
	case unix.ENETUNREACH, unix.EHOSTUNREACH, unix.EADDRNOTAVAIL:
		return noRouteError{err.(unix.Errno)}
	}
	return err
}

// pathMTU is the MTU the kernel knows for the path to to: a UDP socket
// connected to it (connecting sends nothing) reads it back; 0 when that
// fails.
func pathMTU(to unix.Sockaddr) int {
	r, err := lookupRoute(to, Options{})
	if err != nil {
		return 0
	}
	return r.mtu
}

// route is what the kernel would use to send to an address.
type route struct {
	// src is the source address, with port 0.
	src unix.Sockaddr
	// mtu is the path MTU, 0 if unknown.
	mtu int
}

// lookupRoute asks the kernel how it would send to to: a UDP socket with
// the mark and the device of opts, bound to opts.Source if set, is
// connected to to (which sends nothing) and read back. Errors from the
// connect keep their errno.
func lookupRoute(to unix.Sockaddr, opts Options) (route, error) {
	family, level, opt := unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU
	switch to.(type) {
	case *unix.SockaddrInet4:
	case *unix.SockaddrInet6:
		family, level, opt = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU
	default:
		return route{}, fmt.Errorf("look up route: %w", unix.EAFNOSUPPORT)
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return route{}, fmt.Errorf("look up route: open udp socket: %w", err)
	}
	defer unix.Close(fd)
	if err := applyOptions(fd, family == unix.AF_INET6, Options{Mark: opts.Mark, Interface: opts.Interface, Source: opts.Source}); err != nil {
		return route{}, fmt.Errorf("look up route: %w", err)
	}
	if err := unix.Connect(fd, withPort(to, 9)); err != nil {
		return route{}, fmt.Errorf("look up route: %w", noRoute(err))
	}
	src, err := unix.Getsockname(fd)
	if err != nil {
		return route{}, fmt.Errorf("look up route: read source address: %w", err)
	}
	mtu, err := unix.GetsockoptInt(fd, level, opt)
	if err != nil {
		mtu = 0
	}
	return route{src: withPort(src, 0), mtu: mtu}, nil
}

// withPort returns a copy of sa, an IPv4 or IPv6 socket address, with
// port; any other address as it is.
func withPort(sa unix.Sockaddr, port int) unix.Sockaddr {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		c := *sa
		c.Port = port
		return &c
	case *unix.SockaddrInet6:
		c := *sa
		c.Port = port
		return &c
	}
	return sa
}

// packet is one packet read from a raw or UDP socket.
type packet struct {
	data      []byte // aliases the read buffer
	oob       []byte // ancillary data, aliases the buffer
	truncated bool   // longer than the buffer
	from      unix.Sockaddr
	received  time.Time
}

// recvPacket reads the next packet from conn, a non-blocking socket,
// into buf and oob, waiting as long as conn's read deadline allows.
func recvPacket(conn syscall.RawConn, buf, oob []byte) (packet, error) {
	var (
		n, oobn, flags int
		from           unix.Sockaddr
		rerr           error
	)
	err := conn.Read(func(fd uintptr) bool {
		for {
			n, oobn, flags, from, rerr = unix.Recvmsg(int(fd), buf, oob, 0)
			if rerr != unix.EINTR {
				return rerr != unix.EAGAIN
			}
		}
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		return packet{}, err
	}
	return packet{
		data:      buf[:n],
		oob:       oob[:oobn],
		truncated: flags&unix.MSG_TRUNC != 0,
		from:      from,
		received:  time.Now(),
	}, nil
}

// reply is the Reply that r, parsed from pkt, makes: a TTL not read from
// an IPv4 header (an IPv6 hop limit, a UDP socket's IPv4 TTL) comes from
// the ancillary data.
func (pkt packet) reply(r parsedReply) Reply {
	if r.TTL == 0 {
		r.TTL = ancillaryTTL(pkt.oob)
	}
	return Reply{
		Seq:      r.Seq,
		From:     addrFrom(pkt.from),
		Received: pkt.received,
		TTL:      r.TTL,
		Size:     r.Size,
		Error:    r.Error,
		TCPFlags: r.TCPFlags,
	}
}

// closedErr turns the poller's "use of closed file", which no exported error
// matches, into os.ErrClosed once closed is set.
func closedErr(closed *atomic.Bool, err error) error {
	if closed.Load() && !errors.Is(err, os.ErrClosed) {
		return os.ErrClosed
	}
	return err
}

// ancillaryTTL returns the IPV6_HOPLIMIT or IP_TTL ancillary data in oob,
// or 0.
func ancillaryTTL(oob []byte) int {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0
	}
	for _, m := range msgs {
		h := m.Header
		if (h.Level == unix.IPPROTO_IPV6 && h.Type == unix.IPV6_HOPLIMIT || h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TTL) && len(m.Data) >= 4 {
			return int(int32(binary.NativeEndian.Uint32(m.Data)))
		}
	}
	return 0
}

// sockaddrPort returns the port of an IPv4 or IPv6 socket address, or 0.
func sockaddrPort(sa unix.Sockaddr) int {
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return sa.Port
	case *unix.SockaddrInet6:
		return sa.Port
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
