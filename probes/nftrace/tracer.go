package nftrace

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/caps"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// Source is decode.NetfilterEvent.Source for events of this package.
const Source = "nftrace"

const (
	// rcvBufSize is the receive buffer asked for each trace socket. One message takes
	// about 1 KiB of it (skb truesize), and one echo makes a few dozen per namespace.
	rcvBufSize = 4 << 20
	// readBufSize holds any one trace message: they are a few hundred bytes.
	readBufSize = 64 << 10
	// maxDrain bounds one Drain when messages keep coming (another tool tracing a flood).
	maxDrain = time.Second
	// maxTraceIDs bounds the per-namespace maps keyed by trace id.
	maxTraceIDs = 4096
)

// ErrClosed is returned by Drain on a closed Tracer, or when Close interrupts it.
var ErrClosed = errors.New("nftrace: tracer closed")

// Match says which packets a Tracer traces: the echoes of EchoID, or, when TCP or UDP is
// set, the packets of the TCP or UDP run it marks. ICMP errors are not traced (see
// traceRules).
type Match struct {
	EchoID uint16
	// EchoCookie, when not 0, also traces an echo whose id a NAT rewrote by its payload's
	// first 4 bytes (big-endian), the pinger's cookie.
	EchoCookie uint32
	TCP        *decode.TCPMark
	UDP        *decode.UDPMark
}

// claimer decides which traced packets are of its match. For a UDP run it also holds the
// prober's source port, once TraceReplies gave it, the probe number of the latest request
// it claimed, which is the number given to replies, and what the seq chain of our helper
// table read of each request it traced.
type claimer struct {
	match   Match
	table   string // the helper table, whose seq chain gives probe numbers (seqRules)
	sport   uint16
	lastSeq uint16
	seqs    map[uint32]uint16 // trace id -> probe number the seq chain read
	// ends are the sources and destinations the run's requests were traced
	// with: a reply comes from one of them or goes to one.
	ends map[netip.AddrPort]struct{}
}

// observe reads, from a message of our own helper table, what the seq chain says of the
// probe number of the request it traces: the jump to seq starts it at 0, each jump to
// seq_bit<i> sets bit i (seqRules).
func (c *claimer) observe(m *traceMsg) {
	if m.Family != unix.NFPROTO_INET || m.Table != c.table || !m.HasVerdict || m.Verdict != unix.NFT_JUMP {
		return
	}
	if m.Target == chainSeq {
		if c.seqs == nil || len(c.seqs) >= maxTraceIDs {
			c.seqs = make(map[uint32]uint16)
		}
		c.seqs[m.ID] = 0
		return
	}
	if i, ok := seqBit(m.Target); ok {
		if seq, started := c.seqs[m.ID]; started {
			c.seqs[m.ID] = seq | 1<<i
		}
	}
}

// claim reports whether p is of the match, and for a TCP or UDP run's packet sets its
// Proto, EchoID and Seq (the probe) as the BPF probes record them, and TCPFlags to
// decode.UDPAnswer for a UDP reply.
//
// id is the packet's trace id, under which observe keeps a probe number the packet does
// not show.
func (c *claimer) claim(p *packet, id uint32) bool {
	switch {
	case c.match.TCP != nil:
		if !p.TCP {
			return false
		}
		k, ok := c.match.TCP.Probe(p.Key)
		if !ok {
			return false
		}
		p.Proto, p.EchoID, p.Seq = decode.ProtoTCP, c.match.EchoID, k
		return true
	case c.match.UDP != nil:
		return c.claimUDP(p, id)
	}
	if !p.Echo || p.EchoID != c.match.EchoID && (c.match.EchoCookie == 0 || p.Cookie != c.match.EchoCookie) {
		return false
	}
	p.EchoID = c.match.EchoID // a NAT may have rewritten it
	return true
}

// claimUDP claims a UDP run's request or reply.
//
// A reply carries no mark: once TraceReplies gave the prober's source port, a datagram to
// that port from another is one when it comes from an address and port a request was
// traced going to, or goes to one a request was traced coming from. It is traced by its
// destination port alone (replyRules), and a router also sees other hosts' flows to the
// same port number: those have other addresses. Before a node undoes its masquerade, a
// reply goes to the node's address, not the prober's, but comes from the endpoint the
// node's chains traced the request going to after its DNAT; after, it goes to the
// prober's address and port. Its Seq is that of the latest
// request claimed, which is the probe the reply answers as long as probes go one at a
// time, each drained before the next is sent.
//
// A request is claimed as surely as its mark (the cookie, 32 random bits, and the echo
// id) tells it: see requestSeq.
func (c *claimer) claimUDP(p *packet, id uint32) bool {
	if !p.UDP {
		return false
	}
	m := c.match.UDP
	if c.sport != 0 && p.Dport == c.sport && p.Sport != c.sport {
		_, from := c.ends[netip.AddrPortFrom(p.Src, p.Sport)]
		if _, to := c.ends[netip.AddrPortFrom(p.Dst, p.Dport)]; !from && !to {
			return false
		}
		p.Proto, p.EchoID, p.Seq, p.TCPFlags = decode.ProtoUDP, m.EchoID, c.lastSeq, decode.UDPAnswer
		return true
	}
	seq, ok := c.requestSeq(p, id)
	if !ok {
		return false
	}
	c.lastSeq = seq
	if c.ends == nil || len(c.ends) >= maxTraceIDs {
		c.ends = make(map[netip.AddrPort]struct{})
	}
	c.ends[netip.AddrPortFrom(p.Src, p.Sport)] = struct{}{}
	c.ends[netip.AddrPortFrom(p.Dst, p.Dport)] = struct{}{}
	p.Proto, p.EchoID, p.Seq, p.TCPFlags = decode.ProtoUDP, m.EchoID, seq, 0
	return true
}

// requestSeq reports whether p, of trace id id, is a request of the run, and returns its
// probe number. A trace shows only the first 12 bytes of the payload (transportHSize):
// where they hold the whole mark (markVisible), the mark says it all; elsewhere (a DNS
// query, a user payload) the packet must have been through our seq chain, which only the
// mark rule jumps to and which read its probe number (observe). Either way its UDP length
// must be the run's, and each byte the trace shows that probe's payload's: the user's
// bytes, the mark's, a DNS query's header with the probe number as its id.
func (c *claimer) requestSeq(p *packet, id uint32) (seq uint16, ok bool) {
	m := c.match.UDP
	visible := p.Payload[:p.Visible]
	if int(p.UDPLen) != udpHeaderLen+len(m.Base) || len(visible) > len(m.Base) {
		return 0, false
	}
	if !markVisible(m) {
		seq, ok = c.seqs[id]
	} else if len(visible) >= m.Offset+decode.MarkLen {
		seq, ok = binary.BigEndian.Uint16(visible[m.Offset+4:]), true
	}
	return seq, ok && bytes.Equal(visible, m.Payload(seq)[:len(visible)])
}

// Tracer traces one echo id, or one TCP or UDP run, through the netfilter chains of a set of
// network namespaces. Drain and Close may be called from different goroutines.
type Tracer struct {
	table string
	nft   string // path of nft(8); empty when missing: no rule text

	// wake is an eventfd: Close writes it to end a Drain waiting in ppoll.
	wake    int
	closing atomic.Bool

	mu     sync.Mutex
	closed bool
	claims claimer
	nss    []*nsState
	buf    []byte
	lost   uint64
}

// nsState is the tracer in one network namespace.
type nsState struct {
	ns    netns.Netns
	file  *os.File      // the namespace, kept open to enter it
	owner *netlink.Conn // the socket that created the table
	owned bool          // the table has NFT_TABLE_F_OWNER: closing owner deletes it
	fd    int           // NFNLGRP_NFTRACE socket; -1 when not open

	packets  map[uint32]tracedPacket // trace id -> packet and interfaces of its latest message with headers
	lastHook map[uint32]decode.Hook  // trace id -> hook of its latest base chain
	pending  []traceMsg              // messages on our echo, not yet returned by Drain
	gen      uint32                  // ruleset generation of chains and rules
	chains   map[chainKey]chainInfo  // nil until first needed
	rules    map[ruleKey]string      // nil until first needed
}

// installWorkers bounds the threads installing tables (and deleting them).
const installWorkers = 16

// Open installs the helper table, inet tracepkt_<pid>_<hex>, in every namespace given and
// starts listening to nftrace messages there. Where the kernel refuses the owner flag
// (before 5.12), it also deletes there the helper tables of runs killed before they could.
// Its chains hook prerouting and output at priority math.MinInt32 and set meta nftrace on
// the packets of match (see traceRules); the kernel keeps the mark across the later hooks
// of that namespace. A namespace
// whose path no longer leads to it (its process exited) is skipped. On failure nothing
// is left installed.
func Open(nss []netns.Netns, match Match) (_ *Tracer, err error) {
	if m := match.UDP; m != nil && (m.Offset < 0 || m.Offset+decode.MarkLen > len(m.Base)) {
		return nil, fmt.Errorf("nftrace: UDP mark at byte %d of a %d-byte payload", m.Offset, len(m.Base))
	}
	name, err := newTableName()
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("create eventfd: %w", err)
	}
	t := &Tracer{claims: claimer{match: match, table: name}, table: name, wake: wake, buf: make([]byte, readBufSize)}
	if p, err := exec.LookPath("nft"); err == nil {
		t.nft = p
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()

	batches, err := newInstallBatches(name, match)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, ns := range netns.Dedup(nss) {
		f, err := ns.Open()
		if errors.Is(err, netns.ErrGone) {
			continue
		}
		if err != nil {
			return nil, err
		}
		t.nss = append(t.nss, &nsState{ns: ns, file: f, fd: -1})
		files = append(files, f)
	}
	// Each install commits a table, which waits for the kernel: namespaces
	// in parallel wait together.
	err = netns.DoConcurrently(files, installWorkers, func(i int) error {
		st := t.nss[i]
		fd, err := traceSocket()
		if err != nil {
			return fmt.Errorf("%v: %w", st.ns, err)
		}
		st.fd = fd
		c, err := dial()
		if err != nil {
			return fmt.Errorf("%v: %w", st.ns, err)
		}
		if st.owner, st.owned, err = batches.install(c, name); err != nil {
			return fmt.Errorf("%v: %w", st.ns, err)
		}
		if !st.owned {
			// Without the owner flag, a killed run leaves its table behind.
			if err := sweep(st.owner); err != nil {
				return fmt.Errorf("sweep %v: %w", st.ns, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, explainOffset(err, match)
	}
	return t, nil
}

// Supported returns nil when nftables tracing can be listened to here: a
// trace socket opens, as Open opens one in each namespace. Where nf_tables
// or nfnetlink is neither loaded nor loadable, it says so
// (EPROTONOSUPPORT).
func Supported() error {
	fd, err := traceSocket()
	if err != nil {
		return err
	}
	return unix.Close(fd)
}

// traceSocket opens a netlink socket in the calling thread's network namespace that
// receives the NFNLGRP_NFTRACE group.
func traceSocket() (int, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_NETFILTER)
	if err != nil {
		return -1, fmt.Errorf("open nftrace socket: %w", err)
	}
	// SO_RCVBUFFORCE passes net.core.rmem_max; we are root to install tables anyway.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBufSize); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBufSize)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("bind nftrace socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.NFNLGRP_NFTRACE); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("join NFNLGRP_NFTRACE: %w", caps.Explain(err, caps.TraceNetfilter))
	}
	return fd, nil
}

// Lost returns how many times so far a trace socket overflowed (ENOBUFS: an unknown
// number of trace messages was lost) or a datagram held a message that does not parse.
func (t *Tracer) Lost() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost
}

// Drain reads the trace messages the kernel has queued, waiting until none arrives for
// quiet (but at most a second in all), and returns the events on our echo received since
// the previous Drain: grouped by namespace in the order the namespaces were given to Open,
// in the order the kernel sent them within one namespace. Call it once the echo's reply
// came or its time ran out: the kernel queues a packet's trace messages as the packet
// crosses each hook, so by then only our reading lags.
//
// Hooks and rule texts are looked up here, once per namespace and Drain at most, for
// chains and rules not seen before. When a lookup fails, the events are still returned,
// with Hook or Rule empty, together with the error.
func (t *Tracer) Drain(quiet time.Duration) ([]decode.NetfilterEvent, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.closing.Load() {
		return nil, ErrClosed
	}
	pfds := make([]unix.PollFd, 0, len(t.nss)+1)
	for _, st := range t.nss {
		pfds = append(pfds, unix.PollFd{Fd: int32(st.fd), Events: unix.POLLIN})
	}
	pfds = append(pfds, unix.PollFd{Fd: int32(t.wake), Events: unix.POLLIN})
	ts := unix.NsecToTimespec(quiet.Nanoseconds())
	for deadline := time.Now().Add(maxDrain); ; {
		if err := t.readAll(); err != nil {
			return nil, err
		}
		if t.closing.Load() {
			return nil, ErrClosed
		}
		if time.Now().After(deadline) {
			break
		}
		n, err := unix.Ppoll(pfds, &ts, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("wait for trace messages: %w", err)
		}
		if n == 0 {
			break
		}
	}
	// Namespaces are resolved in parallel: a first lookup runs nft(8), a few ms each.
	evs := make([][]decode.NetfilterEvent, len(t.nss))
	errs := make([]error, len(t.nss))
	var wg sync.WaitGroup
	for i, st := range t.nss {
		if len(st.pending) == 0 {
			continue
		}
		wg.Go(func() { evs[i], errs[i] = t.resolve(st) })
	}
	wg.Wait()
	return slices.Concat(evs...), errors.Join(errs...)
}

// readAll reads every queued message of every trace socket, keeping those on our echo.
func (t *Tracer) readAll() error {
	for _, st := range t.nss {
		for {
			n, _, err := unix.Recvfrom(st.fd, t.buf, unix.MSG_DONTWAIT|unix.MSG_TRUNC)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if errors.Is(err, unix.ENOBUFS) {
				t.lost++
				continue
			}
			if err != nil {
				return fmt.Errorf("read trace messages in %v: %w", st.ns, err)
			}
			if n > len(t.buf) {
				t.lost++ // truncated: cannot happen with trace messages of today's sizes
				continue
			}
			// A malformed message ends its datagram, and counts as lost; the
			// next datagram is read on.
			if err := parseTraceMessages(t.buf[:n], func(m *traceMsg) { st.receive(m, &t.claims) }); err != nil {
				t.lost++
			}
		}
	}
	return nil
}

// tracedPacket is a traced packet's headers and interfaces: the kernel sends
// them only in the first message of its pass through a hook.
type tracedPacket struct {
	packet   packet
	iif, oif uint32
	ct       decode.CTState
	ctReply  bool
}

// receive keeps m if c claims its packet and it is not from a helper table. Messages without
// headers are tied to their packet, and its interfaces, by trace id.
func (st *nsState) receive(m *traceMsg, c *claimer) {
	if st.packets == nil || len(st.packets) >= maxTraceIDs {
		st.packets = make(map[uint32]tracedPacket)
	}
	if m.HasPacket {
		st.packets[m.ID] = tracedPacket{m.Packet, m.Iif, m.Oif, m.CT, m.CTReply}
	} else if f, ok := st.packets[m.ID]; ok {
		m.Packet, m.Iif, m.Oif, m.CT, m.CTReply = f.packet, f.iif, f.oif, f.ct, f.ctReply
	} else {
		return
	}
	c.observe(m)
	if !c.claim(&m.Packet, m.ID) || isHelperTable(m.Family, m.Table) {
		return
	}
	st.pending = append(st.pending, *m)
}

// TraceReplies traces, from now on, the replies to the prober of a UDP run, whose source
// port is sport: known only once the prober has opened, after Open. It adds replyRules to
// the helper table in every namespace (see replyMessages), and from then on a UDP datagram to sport from
// another port is claimed as a reply (see claimer.claimUDP). It may be called once, for a
// UDP match only. When it fails in some namespaces, the rule is in the others and their
// replies are traced; the errors of all namespaces are joined.
func (t *Tracer) TraceReplies(sport uint16) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.closed || t.closing.Load():
		return ErrClosed
	case t.claims.match.UDP == nil:
		return errors.New("nftrace: replies are traced for a UDP run only")
	case sport == 0:
		return errors.New("nftrace: trace replies to port 0")
	case t.claims.sport != 0:
		return fmt.Errorf("nftrace: replies to port %d are traced already", t.claims.sport)
	}
	msgs, err := replyMessages(t.table, sport)
	if err != nil {
		return err
	}
	t.claims.sport = sport
	return t.eachOwner(func(st *nsState) error {
		if err := sendBatch(st.owner, msgs); err != nil {
			return fmt.Errorf("add reply rules to table inet %s in %v: %w", t.table, st.ns, err)
		}
		return nil
	})
}

// eachOwner calls fn for each namespace whose table is in place, on up to installWorkers
// of them at once: each batch waits for its commit, and in parallel the waits overlap.
// The errors are joined.
func (t *Tracer) eachOwner(fn func(*nsState) error) error {
	errs := make([]error, len(t.nss))
	work := make(chan int)
	var wg sync.WaitGroup
	for range min(installWorkers, len(t.nss)) {
		wg.Go(func() {
			for i := range work {
				errs[i] = fn(t.nss[i])
			}
		})
	}
	for i, st := range t.nss {
		if st.owner != nil {
			work <- i
		}
	}
	close(work)
	wg.Wait()
	return errors.Join(errs...)
}

// Close deletes the helper table in every namespace, closes the sockets, and ends a Drain
// in progress. The errors of all namespaces are joined. Calling it again does nothing.
func (t *Tracer) Close() error {
	if !t.closing.Swap(true) {
		var one [8]byte
		one[0] = 1 // eventfd counters are host-endian; 1 on either end is non-zero
		_, _ = unix.Write(t.wake, one[:])
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	// Delete every table first, then close the sockets: closing a netfilter socket waits
	// for the kernel's pending table destructions (an RCU grace period, 5-70 ms here), and
	// one wait then covers the tables of all namespaces.
	del, err := deleteMessages(t.table, nftables.TableFamilyINet)
	if err != nil {
		errs = append(errs, err)
	}
	if del != nil {
		errs = append(errs, t.eachOwner(func(st *nsState) error {
			if err := sendBatch(st.owner, del); err != nil && !errors.Is(err, unix.ENOENT) {
				return fmt.Errorf("delete table inet %s in %v: %w", t.table, st.ns, err)
			}
			return nil
		}))
	}
	for _, st := range t.nss {
		if st.owner != nil {
			if err := st.owner.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close nftables socket in %v: %w", st.ns, err))
			}
			st.owner = nil
		}
		if st.fd >= 0 {
			if err := unix.Close(st.fd); err != nil {
				errs = append(errs, fmt.Errorf("close nftrace socket in %v: %w", st.ns, err))
			}
			st.fd = -1
		}
		if err := st.file.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	if err := unix.Close(t.wake); err != nil {
		errs = append(errs, fmt.Errorf("close eventfd: %w", err))
	}
	return errors.Join(errs...)
}
