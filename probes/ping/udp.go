package ping

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

const (
	// udpHeaderLen is a UDP header: ports, length, checksum.
	udpHeaderLen = 8
	// dnsHeaderLen is a DNS message's header (RFC 1035): id, flags and
	// four counts.
	dnsHeaderLen = 12
	// dnsResponse is the QR bit of a DNS header's first flags byte.
	dnsResponse = 0x80
)

// Reasons a datagram is not a reply to a UDP prober.
var (
	errNotSent    = errors.New("no probe sent yet")
	errTargetPort = errors.New("from another port of the target")
)

// UDPProber sends UDP datagrams to one port, marked in their payloads
// (decode.UDPMark: NAT leaves payloads alone, where it rewrites ports), and
// receives the answers to them: datagrams to its port and ICMP errors.
//
// One UDP socket, bound to the source port for the whole run, sends the
// probes and receives the replies; it is not connected, so it receives a
// datagram to its port from any address. A raw ICMP or ICMPv6 socket reads
// the errors.
//
// Which probe a datagram answers (Reply.Seq):
//   - the probe whose mark it echoes (an echo server, a DNS server
//     returning the client cookie), whatever its source;
//   - else, when the mark is a DNS query's and the datagram a DNS
//     response, the probe its id names (the query's id is the probe's
//     number);
//   - else the latest probe Send was called for, as a reply cannot say.
//
// A datagram without the mark from the target's address but another port
// than the probed one is ignored and counted (Ignored): a reply un-NATed on
// its way back comes from the target's address and port, and one that was
// not from the address (and port) of the endpoint NAT chose, so it answers
// nothing we sent. From any other address it is taken as a reply that was
// not un-NATed, and Reply.From says where it came from. A datagram without
// the mark before the first Send is ignored too.
//
// An ICMP error answers the probe whose mark its quote of the datagram
// carries; one quoting too little of the payload to hold the mark is
// ignored (RFC 792 asks only for the UDP header; Linux quotes all of a
// probe).
//
// Send may be called concurrently with Receive; Receive must not be called
// concurrently with itself.
type UDPProber struct {
	mark   decode.UDPMark
	target netip.Addr
	to     unix.Sockaddr
	port   uint16
	src    netip.Addr
	sport  uint16

	sock *os.File // UDP socket: holds sport, sends the probes, reads the replies
	icmp *os.File // raw ICMP or ICMPv6 socket: reads the errors

	sockConn, icmpConn syscall.RawConn
	// sentOnce says a send has succeeded: the kernel accepted this
	// socket's datagrams as they are.
	sentOnce bool
	// latest is one more than the latest probe Send was called for; 0
	// before the first.
	latest atomic.Uint32

	rx *receiver
}

// OpenUDP opens a UDP prober for target:port in the calling thread's
// network namespace, sending payloads marked by mark. The source address is
// the one the kernel picks for target under opts (Source, Interface, Mark),
// the source port an ephemeral one; TTL and PMTUDisc shape the datagrams;
// Size is not used: the mark's payload is sent as it is.
//
// The UDP socket needs no privilege; the raw ICMP socket needs CAP_NET_RAW,
// as the pinger's does (CheckSocket): without it the error matches
// os.ErrPermission. When the kernel has no route or source address for
// target, the error matches ErrNoRoute.
func OpenUDP(target netip.Addr, port uint16, mark decode.UDPMark, opts Options) (*UDPProber, error) {
	target = target.Unmap()
	if !target.IsValid() {
		return nil, errors.New("open udp prober: invalid target address")
	}
	dst := netip.AddrPortFrom(target, port)
	if port == 0 {
		return nil, fmt.Errorf("open udp prober for %s: port 0", dst)
	}
	if n := len(mark.Base); mark.Offset < 0 || mark.Offset+decode.MarkLen > n || n > decode.MaxPayload {
		return nil, fmt.Errorf("open udp prober for %s: no room for the mark at %d in a payload of %d bytes (at most %d)", dst, mark.Offset, n, decode.MaxPayload)
	}
	to, err := sockaddr(target)
	if err != nil {
		return nil, fmt.Errorf("open udp prober for %s: %w", dst, err)
	}
	rt, err := lookupRoute(to, opts)
	if err != nil {
		return nil, fmt.Errorf("open udp prober for %s: %w", dst, err)
	}
	p := newUDPProber(target, port, mark)
	p.to, p.src = withPort(to, int(port)), addrFrom(rt.src)
	if err := p.open(rt.src, opts); err != nil {
		p.closeSockets()
		return nil, fmt.Errorf("open udp prober for %s: %w", dst, err)
	}
	p.start()
	return p, nil
}

// newUDPProber returns a prober without sockets yet.
func newUDPProber(target netip.Addr, port uint16, mark decode.UDPMark) *UDPProber {
	return &UDPProber{mark: mark, target: target, port: port, rx: newReceiver("udp")}
}

// start starts the readers of the sockets.
func (p *UDPProber) start() {
	p.rx.start(p.sockConn, func(pkt packet) (parsedReply, error) {
		from := netip.AddrPortFrom(addrFrom(pkt.from), uint16(sockaddrPort(pkt.from)))
		return parseUDPReply(pkt.data, from, netip.AddrPortFrom(p.target, p.port), p.mark, p.latest.Load())
	})
	p.rx.start(p.icmpConn, func(pkt packet) (parsedReply, error) {
		return parseUDPError(p.v6(), pkt.data, p.sport, p.mark)
	})
}

// open opens the prober's sockets, bound to src: the UDP socket, on an
// ephemeral port, then the raw socket. On error the caller closes what was
// opened.
func (p *UDPProber) open(src unix.Sockaddr, opts Options) error {
	v6 := p.v6()
	family := unix.AF_INET
	if v6 {
		family = unix.AF_INET6
	}
	dst := netip.AddrPortFrom(p.target, p.port)
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open udp socket: %w", err)
	}
	p.sock = os.NewFile(uintptr(fd), fmt.Sprintf("udp %s", dst))
	shape := Options{TTL: opts.TTL, PMTUDisc: opts.PMTUDisc, Mark: opts.Mark, Interface: opts.Interface}
	if err := applyOptions(fd, v6, shape); err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	ask := recvTTL
	if v6 {
		ask = recvHopLimit
	}
	if err := ask(fd); err != nil {
		return fmt.Errorf("udp socket: %w", err)
	}
	if err := unix.Bind(fd, src); err != nil {
		return fmt.Errorf("bind udp socket to %s: %w", p.src, err)
	}
	sa, err := unix.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("read udp socket's port: %w", err)
	}
	p.sport = uint16(sockaddrPort(sa))
	if p.sockConn, err = p.sock.SyscallConn(); err != nil {
		return err
	}
	// The raw socket carries the mark and the device, and is bound to the
	// source address, so it only sees errors sent to it.
	bound := Options{Mark: opts.Mark, Interface: opts.Interface, Source: p.src}
	p.icmp, p.icmpConn, err = openICMPErrorSocket(v6, bound, fmt.Sprintf("udp %s", dst))
	return err
}

func (p *UDPProber) v6() bool { return p.target.Is6() }

// ID returns the echo id of the prober's mark, the id its records carry.
func (p *UDPProber) ID() uint16 { return p.mark.EchoID }

// SourcePort returns the port the prober holds, sends from and receives
// on.
func (p *UDPProber) SourcePort() uint16 { return p.sport }

// Source returns the address the prober sends from.
func (p *UDPProber) Source() netip.Addr { return p.src }

// Ignored returns how many packets reached the prober's sockets but were
// not an answer to this run: a datagram from another port of the target
// not echoing the mark, or before any probe was sent; an ICMP error about
// another packet; truncated or corrupt packets.
func (p *UDPProber) Ignored() uint64 { return p.rx.ignored.Load() }

// Send sends probe seq, the mark's Payload(seq), to the target's port;
// returns the time it was sent. From then on, a reply that names no probe
// is taken as seq's. When the target cannot be reached from here at all,
// the error matches ErrNoRoute; a datagram larger than the path MTU gives
// a *TooBigError; a datagram netfilter refused, EPERM.
func (p *UDPProber) Send(seq uint16) (time.Time, error) {
	msg := p.mark.Payload(seq)
	// Set before sending: the reply may be read before the send returns.
	p.latest.Store(uint32(seq) + 1)
	sent := time.Now()
	err := sendError(sendTo(p.sockConn, msg, p.to), p.sentOnce, p.to)
	if err != nil {
		return time.Time{}, fmt.Errorf("send udp probe %d to %s: %w", seq, netip.AddrPortFrom(p.target, p.port), closedErr(&p.rx.closed, err))
	}
	p.sentOnce = true
	return sent, nil
}

// Receive waits until deadline for the next reply to one of this run's
// probes (see UDPProber for which probe a datagram answers) or ICMP error
// quoting one of them, and returns it. A zero deadline waits forever.
//
// On timeout the error matches os.ErrDeadlineExceeded; when the prober is
// closed, including by a Close during Receive, it matches os.ErrClosed.
func (p *UDPProber) Receive(deadline time.Time) (Reply, error) { return p.rx.receive(deadline) }

// Close closes the sockets, releasing the port, and waits for the readers
// to end. A pending Receive returns an error matching os.ErrClosed; so
// does a second Close.
func (p *UDPProber) Close() error { return p.rx.close(p.closeSockets) }

// closeSockets closes what open opened.
func (p *UDPProber) closeSockets() error { return errors.Join(closeFiles(p.sock, p.icmp)...) }

// parseUDPReply checks that payload, a datagram from from to the prober's
// port, answers a probe of mark m to target, and says which (see
// UDPProber). latest is one more than the latest probe sent, 0 if none.
func parseUDPReply(payload []byte, from, target netip.AddrPort, m decode.UDPMark, latest uint32) (parsedReply, error) {
	r := parsedReply{Size: len(payload), TCPFlags: decode.UDPAnswer}
	if seq, ok := m.Find(payload); ok {
		r.Seq = seq
		return r, nil
	}
	if from.Addr().WithZone("") == target.Addr().WithZone("") && from.Port() != target.Port() {
		return parsedReply{}, fmt.Errorf("udp datagram from port %d: %w", from.Port(), errTargetPort)
	}
	switch {
	case m.DNS && len(payload) >= dnsHeaderLen && payload[2]&dnsResponse != 0:
		r.Seq = binary.BigEndian.Uint16(payload)
	case latest == 0:
		return parsedReply{}, errNotSent
	default:
		r.Seq = uint16(latest - 1)
	}
	return r, nil
}

// parseUDPError checks that b, as read from a raw ICMP or ICMPv6 socket, is
// an ICMP error quoting a probe of mark m sent from port, whose payload is
// quoted as far as the mark, and returns the probe with the error.
func parseUDPError(v6 bool, b []byte, port uint16, m decode.UDPMark) (parsedReply, error) {
	r, quoted, err := parseICMPError(v6, b, decode.ProtoUDP)
	if err != nil {
		return parsedReply{}, err
	}
	if len(quoted) < udpHeaderLen {
		return parsedReply{}, fmt.Errorf("quoted udp header: %w: %d bytes, need %d", errTruncated, len(quoted), udpHeaderLen)
	}
	if sport := binary.BigEndian.Uint16(quoted); sport != port {
		return parsedReply{}, fmt.Errorf("quoted udp source port %d: %w", sport, errForeignPort)
	}
	seq, ok := m.Find(quoted[udpHeaderLen:])
	if !ok {
		return parsedReply{}, fmt.Errorf("quoted udp payload: %w", errForeignMark)
	}
	r.Seq = seq
	return r, nil
}
