package nftrace

import (
	"errors"
	"fmt"
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

// Tracer traces one echo id through the netfilter chains of a set of network namespaces.
// Drain and Close may be called from different goroutines.
type Tracer struct {
	echoID uint16
	table  string
	nft    string // path of nft(8); empty when missing: no rule text

	// wake is an eventfd: Close writes it to end a Drain waiting in ppoll.
	wake    int
	closing atomic.Bool

	mu     sync.Mutex
	closed bool
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

// Open installs the helper table, inet tracepkt_<pid>_<hex>, in every namespace given and
// starts listening to nftrace messages there. Its chains hook prerouting and output at
// priority math.MinInt32 and set meta nftrace on ICMP and ICMPv6 packets whose echo id is
// echoID; the kernel keeps the mark across the later hooks of that namespace. A namespace
// whose path no longer leads to it (its process exited) is skipped. On failure nothing
// is left installed.
func Open(nss []netns.Netns, echoID uint16) (_ *Tracer, err error) {
	name, err := newTableName()
	if err != nil {
		return nil, err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("create eventfd: %w", err)
	}
	t := &Tracer{echoID: echoID, table: name, wake: wake, buf: make([]byte, readBufSize)}
	if p, err := exec.LookPath("nft"); err == nil {
		t.nft = p
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, t.Close())
		}
	}()

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
	err = netns.Do(files, func(i int) error {
		st := t.nss[i]
		fd, err := traceSocket()
		if err != nil {
			return fmt.Errorf("%v: %w", st.ns, err)
		}
		st.fd = fd
		st.owner, st.owned, err = installTable(name, echoID)
		if err != nil {
			return fmt.Errorf("%v: %w", st.ns, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return t, nil
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
		return -1, fmt.Errorf("join NFNLGRP_NFTRACE: %w", err)
	}
	return fd, nil
}

// Lost returns how many times a trace socket overflowed (ENOBUFS) so far: each time, an
// unknown number of trace messages was lost.
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
			// A malformed message ends its datagram; the next one is read on.
			_ = parseTraceMessages(t.buf[:n], func(m *traceMsg) { st.receive(m, t.echoID) })
		}
	}
	return nil
}

// tracedPacket is a traced packet's headers and interfaces: the kernel sends
// them only in the first message of its pass through a hook.
type tracedPacket struct {
	packet   packet
	iif, oif uint32
}

// receive keeps m if it is about our echo and not from a helper table. Messages without
// headers are tied to their packet, and its interfaces, by trace id.
func (st *nsState) receive(m *traceMsg, echoID uint16) {
	if st.packets == nil || len(st.packets) >= maxTraceIDs {
		st.packets = make(map[uint32]tracedPacket)
	}
	if m.HasPacket {
		st.packets[m.ID] = tracedPacket{m.Packet, m.Iif, m.Oif}
	} else if f, ok := st.packets[m.ID]; ok {
		m.Packet, m.Iif, m.Oif = f.packet, f.iif, f.oif
	} else {
		return
	}
	if !m.Packet.Echo || m.Packet.EchoID != echoID || isHelperTable(m.Family, m.Table) {
		return
	}
	st.pending = append(st.pending, *m)
}

// chainKey names a chain.
type chainKey struct {
	Family uint8
	Table  string
	Chain  string
}

// chainInfo is what events need to know about a chain.
type chainInfo struct {
	Base bool
	Hook decode.Hook
}

// resolve turns st's pending messages into events, looking up chains and rule texts that
// are not cached yet.
func (t *Tracer) resolve(st *nsState) ([]decode.NetfilterEvent, error) {
	if len(st.pending) == 0 {
		return nil, nil
	}
	var errs []error
	// Listings are only as good as the ruleset generation they were made in: rule handles
	// restart when a table is deleted and made again.
	if gen, err := rulesetGen(st.owner); err != nil {
		errs = append(errs, fmt.Errorf("ruleset generation in %v: %w", st.ns, err))
	} else if gen != st.gen {
		st.gen, st.chains, st.rules = gen, nil, nil
	}
	for _, m := range st.pending {
		if _, ok := st.chains[chainKey{m.Family, m.Table, m.Chain}]; !ok {
			chains, err := t.listChains(st)
			if err != nil {
				errs = append(errs, err)
			} else {
				st.chains = chains
			}
			break
		}
	}
	if st.lastHook == nil || len(st.lastHook) >= maxTraceIDs {
		st.lastHook = make(map[uint32]decode.Hook)
	}
	events := assemble(st.ns.Inode, st.pending, st.lastHook, func(k chainKey) (chainInfo, bool) {
		c, ok := st.chains[k]
		return c, ok
	})
	st.pending = st.pending[:0]

	if t.nft != "" {
		for _, e := range events {
			if e.RuleHandle == 0 {
				continue
			}
			if _, ok := st.rules[ruleKey{familyCodes[e.Family], e.Table, e.RuleHandle}]; !ok {
				rules, err := t.listRules(st)
				if err != nil {
					errs = append(errs, err)
				} else {
					st.rules = rules
				}
				break
			}
		}
		for i := range events {
			e := &events[i]
			if e.RuleHandle != 0 {
				e.Rule = st.rules[ruleKey{familyCodes[e.Family], e.Table, e.RuleHandle}]
			}
		}
	}
	return events, errors.Join(errs...)
}

// listChains lists the chains of every table in st's namespace, on the socket that made
// the helper table: a socket closed after each listing would wait, on close, for the
// kernel's pending table destructions.
func (t *Tracer) listChains(st *nsState) (map[chainKey]chainInfo, error) {
	chains, err := dumpChains(st.owner)
	if err != nil {
		return nil, fmt.Errorf("list chains in %v: %w", st.ns, err)
	}
	return chains, nil
}

// rulesetGen returns the ruleset generation (NFT_MSG_GETGEN) of the namespace of c: the
// kernel increments it with each change of the ruleset.
func rulesetGen(c *netlink.Conn) (uint32, error) {
	replies, err := nftGet(c, unix.NFT_MSG_GETGEN, 0, unix.NFPROTO_UNSPEC)
	if err != nil {
		return 0, err
	}
	for _, m := range replies {
		ad, err := nfAttributes(m.Data)
		if errors.Is(err, errShortMessage) {
			continue
		}
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_GEN_ID {
				return ad.Uint32(), ad.Err()
			}
		}
	}
	return 0, errors.New("no NFTA_GEN_ID in reply")
}

// dumpChains lists the chains of every table of the namespace of c with NFT_MSG_GETCHAIN.
func dumpChains(c *netlink.Conn) (map[chainKey]chainInfo, error) {
	replies, err := nftGet(c, unix.NFT_MSG_GETCHAIN, netlink.Dump, unix.NFPROTO_UNSPEC) // all families
	if err != nil {
		return nil, err
	}
	out := make(map[chainKey]chainInfo, len(replies))
	for _, m := range replies {
		k, info, err := parseChain(m.Data)
		if err != nil {
			return nil, err
		}
		out[k] = info
	}
	return out, nil
}

// parseChain decodes an NFT_MSG_NEWCHAIN message (after struct nlmsghdr): attributes of
// enum nft_chain_attributes and, nested in NFTA_CHAIN_HOOK, enum nft_hook_attributes, in
// <linux/netfilter/nf_tables.h>. Only base chains have a hook.
func parseChain(b []byte) (chainKey, chainInfo, error) {
	var (
		k    chainKey
		info chainInfo
	)
	ad, err := nfAttributes(b)
	if err != nil {
		return k, info, fmt.Errorf("decode chain: %w", err)
	}
	k.Family = b[0]
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_CHAIN_TABLE:
			k.Table = ad.String()
		case unix.NFTA_CHAIN_NAME:
			k.Chain = ad.String()
		case unix.NFTA_CHAIN_HOOK:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == unix.NFTA_HOOK_HOOKNUM {
						info = chainInfo{Base: true, Hook: hookOf(k.Family, nad.Uint32())}
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return k, info, fmt.Errorf("decode chain: %w", err)
	}
	return k, info, nil
}

// listRules lists the text of every rule in st's namespace with nft.
func (t *Tracer) listRules(st *nsState) (map[ruleKey]string, error) {
	var out []byte
	err := netns.Do([]*os.File{st.file}, func(int) error {
		var err error
		out, err = listRuleset(t.nft)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("rule texts in %v: %w", st.ns, err)
	}
	return parseRuleset(out), nil
}

// assemble turns the messages on our echo of namespace netns, in the order the kernel sent
// them, into events. lastHook carries, per trace id, the hook of the latest base chain: a
// regular chain, entered by a jump or goto, runs at the hook of the base chain before it.
//
// A message with a rule handle is about that rule (decode.TraceRule, whatever type the kernel
// gave it). A message without a rule handle that is not a policy reports the end of a chain: before
// a base chain's policy message it is left out (the policy says it all), otherwise it is
// the end of a regular chain, returned as decode.TraceReturn.
func assemble(netns uint32, msgs []traceMsg, lastHook map[uint32]decode.Hook, chain func(chainKey) (chainInfo, bool)) []decode.NetfilterEvent {
	events := make([]decode.NetfilterEvent, 0, len(msgs))
	for i := range msgs {
		m := &msgs[i]
		info, known := chain(chainKey{m.Family, m.Table, m.Chain})
		var hook decode.Hook
		if known && info.Base {
			hook = info.Hook
			lastHook[m.ID] = hook
		} else {
			hook = lastHook[m.ID]
		}
		typ := decode.TraceType(m.Type)
		if m.RuleHandle != 0 {
			// A rule decided. Kernels differ in how they type a rule whose
			// verdict is return (6.1 says return, 6.18 says rule).
			typ = decode.TraceRule
		} else if m.Type != unix.NFT_TRACETYPE_POLICY {
			if beforePolicy(msgs[i+1:], m) {
				continue
			}
			typ = decode.TraceReturn
		}
		var verdict string
		switch {
		case m.Type == unix.NFT_TRACETYPE_POLICY && m.HasPolicy:
			verdict = verdictName(int32(m.Policy))
		case m.HasVerdict:
			verdict = verdictName(m.Verdict)
		}
		events = append(events, decode.NetfilterEvent{
			Netns:      netns,
			Family:     familyName(m.Family),
			Table:      m.Table,
			Chain:      m.Chain,
			Hook:       hook,
			Type:       typ,
			Verdict:    verdict,
			Target:     m.Target,
			RuleHandle: m.RuleHandle,
			Iif:        m.Iif,
			Oif:        m.Oif,
			TraceID:    m.ID,
			ICMPType:   m.Packet.ICMPType,
			EchoID:     m.Packet.EchoID,
			Seq:        m.Packet.Seq,
			Src:        m.Packet.Src,
			Dst:        m.Packet.Dst,
			Source:     Source,
		})
	}
	return events
}

// beforePolicy reports whether the next message of m's trace id in rest is the policy of
// m's chain.
func beforePolicy(rest []traceMsg, m *traceMsg) bool {
	for i := range rest {
		n := &rest[i]
		if n.ID != m.ID {
			continue
		}
		return n.Type == unix.NFT_TRACETYPE_POLICY && n.Family == m.Family && n.Table == m.Table && n.Chain == m.Chain
	}
	return false
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
	for _, st := range t.nss {
		if st.owner == nil || del == nil {
			continue
		}
		if err := sendBatch(st.owner, del); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete table inet %s in %v: %w", t.table, st.ns, err))
		}
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
