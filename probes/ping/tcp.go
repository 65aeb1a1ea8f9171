package ping

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// TCPProber sends TCP SYNs to one port, marked by their initial sequence
// numbers (decode.TCPMark: NAT leaves them alone, where it rewrites ports),
// and receives the answers to them: SYN-ACKs, RSTs and ICMP errors.
//
// It holds its source port with a TCP socket that is bound but neither
// listening nor connected, so no other socket takes the port during the
// run, and its kernel answers a SYN-ACK with an RST, ending the half-open
// connection at the target.
//
// Send may be called concurrently with Receive; Receive must not be called
// concurrently with itself.
type TCPProber struct {
	mark   decode.TCPMark
	target netip.Addr
	to     unix.Sockaddr
	port   uint16
	src    netip.Addr
	sport  uint16
	mss    uint16

	hold int      // the TCP socket holding sport
	send *os.File // raw TCP socket: sends the SYNs, reads the answers
	icmp *os.File // raw ICMP or ICMPv6 socket: reads the errors

	sendConn, icmpConn syscall.RawConn
	// sentOnce says a send has succeeded: the kernel accepted this
	// socket's SYNs as they are.
	sentOnce bool

	rx *receiver
}

// Default maximum segment sizes when the path MTU is unknown: RFC 9293's
// for IPv4, and what the IPv6 minimum MTU of 1280 holds.
const (
	defaultMSS4 = 536
	defaultMSS6 = 1280 - ipv6HeaderLen - tcpHeaderLen
)

// OpenTCP opens a TCP prober for target:port in the calling thread's
// network namespace, sending SYNs marked by mark. The source address is the
// one the kernel picks for target under opts (Source, Interface, Mark);
// TTL and PMTUDisc shape the SYNs; Size is not used.
//
// When the kernel has no route or source address for target, the error
// matches ErrNoRoute. A missing CAP_NET_RAW gives an error matching
// os.ErrPermission.
func OpenTCP(target netip.Addr, port uint16, mark decode.TCPMark, opts Options) (*TCPProber, error) {
	target = target.Unmap()
	if !target.IsValid() {
		return nil, errors.New("open tcp prober: invalid target address")
	}
	dst := netip.AddrPortFrom(target, port)
	if port == 0 {
		return nil, fmt.Errorf("open tcp prober for %s: port 0", dst)
	}
	if mark.Span == 0 || mark.Span > decode.MaxTCPSpan {
		return nil, fmt.Errorf("open tcp prober for %s: mark spans %d sequence numbers, want 1 to %d", dst, mark.Span, decode.MaxTCPSpan)
	}
	to, err := sockaddr(target)
	if err != nil {
		return nil, fmt.Errorf("open tcp prober for %s: %w", dst, err)
	}
	rt, err := lookupRoute(to, opts)
	if err != nil {
		return nil, fmt.Errorf("open tcp prober for %s: %w", dst, err)
	}
	p := newTCPProber(target, port, mark)
	p.to, p.src, p.mss = to, addrFrom(rt.src), mssFor(target.Is6(), rt.mtu)
	if err := p.open(rt.src, opts); err != nil {
		p.closeSockets()
		return nil, fmt.Errorf("open tcp prober for %s: %w", dst, err)
	}
	p.start()
	return p, nil
}

// newTCPProber returns a prober without sockets yet.
func newTCPProber(target netip.Addr, port uint16, mark decode.TCPMark) *TCPProber {
	return &TCPProber{mark: mark, target: target, port: port, hold: -1, rx: newReceiver("tcp")}
}

// start starts the readers of the raw sockets.
func (p *TCPProber) start() {
	p.rx.start(p.sendConn, func(pkt packet) (parsedReply, error) {
		return parseTCPAnswer(p.v6(), pkt.data, p.sport, p.mark)
	})
	p.rx.start(p.icmpConn, func(pkt packet) (parsedReply, error) {
		return parseTCPError(p.v6(), pkt.data, p.sport, p.mark)
	})
}

// open opens the prober's sockets, bound to src: the one holding the
// source port, then the raw sockets, filtered on that port. On error the
// caller closes what was opened.
func (p *TCPProber) open(src unix.Sockaddr, opts Options) error {
	v6 := p.v6()
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	// Every socket carries the mark and the device; the raw sockets are
	// bound to the source address, so they only see packets to it.
	bound := Options{Mark: opts.Mark, Interface: opts.Interface, Source: p.src}

	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open tcp socket: %w", err)
	}
	p.hold = fd
	if err := applyOptions(fd, v6, Options{Mark: opts.Mark, Interface: opts.Interface}); err != nil {
		return fmt.Errorf("tcp socket: %w", err)
	}
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind tcp socket to %s: %w", p.src, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("read tcp socket's port: %w", err)
	}
	p.sport = uint16(sockaddrPort(sa))

	if fd, err = openRaw(family, unix.IPPROTO_TCP, "tcp"); err != nil {
		return err
	}
	p.send = os.NewFile(uintptr(fd), fmt.Sprintf("tcp %s", netip.AddrPortFrom(p.target, p.port)))
	shape := bound
	shape.TTL, shape.PMTUDisc = opts.TTL, opts.PMTUDisc
	if err := setupTCPSocket(fd, family, p.sport, shape); err != nil {
		return fmt.Errorf("set up raw tcp socket: %w", err)
	}
	if p.sendConn, err = p.send.SyscallConn(); err != nil {
		return err
	}

	p.icmp, p.icmpConn, err = openICMPErrorSocket(v6, bound, fmt.Sprintf("tcp %s", netip.AddrPortFrom(p.target, p.port)))
	return err
}

// setupTCPSocket applies opts to the raw TCP socket fd and narrows what it
// receives to segments to port.
func setupTCPSocket(fd, family int, port uint16, opts Options) error {
	if err := applyOptions(fd, family == unix.AF_INET6, opts); err != nil {
		return err
	}
	if family == unix.AF_INET6 {
		if err := recvHopLimit(fd); err != nil {
			return err
		}
	}
	prog, err := tcpAnswerFilter(family, port)
	if err != nil {
		return err
	}
	return attachFilter(fd, prog)
}

// mssFor is the MSS a SYN offers on a path of mtu bytes (0 if unknown).
func mssFor(v6 bool, mtu int) uint16 {
	hdr, mss := ipv4MinHeaderLen+tcpHeaderLen, defaultMSS4
	if v6 {
		hdr, mss = ipv6HeaderLen+tcpHeaderLen, defaultMSS6
	}
	if mtu-hdr > mss {
		mss = min(mtu-hdr, 0xffff)
	}
	return uint16(mss)
}

// CheckTCPSocket opens and closes the raw socket a TCP prober would send
// on: nil when this process may open it.
func CheckTCPSocket(v6 bool) error {
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	fd, err := openRaw(family, unix.IPPROTO_TCP, "tcp")
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

func (p *TCPProber) v6() bool { return p.target.Is6() }

// ID returns the echo id of the prober's mark, the id its records carry.
func (p *TCPProber) ID() uint16 { return p.mark.EchoID }

// SourcePort returns the port the prober holds and sends from.
func (p *TCPProber) SourcePort() uint16 { return p.sport }

// Source returns the address the prober sends from.
func (p *TCPProber) Source() netip.Addr { return p.src }

// Ignored returns how many packets reached the prober's sockets but were
// not an answer to this run: another run's mark, a segment that answers
// nothing, an ICMP error about another packet, truncated or corrupt packets.
func (p *TCPProber) Ignored() uint64 { return p.rx.ignored.Load() }

// Send sends SYN seq, whose initial sequence number is the mark's ISN(seq);
// returns the time it was sent. When the target cannot be reached from
// here at all, the error matches ErrNoRoute; a SYN larger than the path MTU
// gives a *TooBigError; a SYN netfilter refused, EPERM.
func (p *TCPProber) Send(seq uint16) (time.Time, error) {
	syn := segment{SrcPort: p.sport, DstPort: p.port, Seq: p.mark.ISN(seq), Flags: decode.TCPSyn, Window: synWindow, MSS: p.mss}
	msg := syn.marshal(p.src, p.target)
	sent := time.Now()
	err := sendError(sendTo(p.sendConn, msg, p.to), p.sentOnce, p.to)
	if err != nil {
		return time.Time{}, fmt.Errorf("send tcp syn %d to %s: %w", seq, netip.AddrPortFrom(p.target, p.port), closedErr(&p.rx.closed, err))
	}
	p.sentOnce = true
	return sent, nil
}

// Receive waits until deadline for the next answer to one of this run's
// SYNs (a SYN-ACK or an RST whose acknowledgement is of the mark) or ICMP
// error quoting one of them, and returns it. A zero deadline waits forever.
//
// On timeout the error matches os.ErrDeadlineExceeded; when the prober is
// closed, including by a Close during Receive, it matches os.ErrClosed.
func (p *TCPProber) Receive(deadline time.Time) (Reply, error) { return p.rx.receive(deadline) }

// Close closes the sockets, releasing the port, and waits for the readers
// to end. A pending Receive returns an error matching os.ErrClosed.
func (p *TCPProber) Close() error { return p.rx.close(p.closeSockets) }

// closeSockets closes what open opened.
func (p *TCPProber) closeSockets() error {
	errs := closeFiles(p.send, p.icmp)
	if p.hold >= 0 {
		errs = append(errs, unix.Close(p.hold))
	}
	return errors.Join(errs...)
}
