package nftrace

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// tablePrefix starts the name of every table this package installs:
// tracepkt_<pid>_<8 hex digits>.
const tablePrefix = "tracepkt_"

// Names of the helper table's base chains.
const (
	chainPrerouting = "prerouting"
	chainOutput     = "output"
)

// tableFlagOwner is NFT_TABLE_F_OWNER from <linux/netfilter/nf_tables.h> (Linux 5.12): the
// table belongs to the netlink socket that created it, only that socket may change it, and
// the kernel deletes it when the socket is closed, so a run killed with SIGKILL leaves
// nothing behind.
const tableFlagOwner = 0x2

// batchTimeout bounds the wait for the kernel's answer to a batch: a bound
// against a kernel that never answers, not a measure of a slow one. The first
// batch on a machine may have the kernel load nf_tables and its expressions
// (modprobe through the usermode helper, the batch replayed after each),
// which took over 5 s in an emulated 5.10 guest on a busy host.
const batchTimeout = 30 * time.Second

// newTableName returns a fresh helper table name for this process.
func newTableName() (string, error) {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("read random table suffix: %w", err)
	}
	return fmt.Sprintf("%s%d_%08x", tablePrefix, os.Getpid(), binary.BigEndian.Uint32(b[:])), nil
}

// helperTablePid returns the pid in a helper table name, tracepkt_<pid>_<hex>, and whether
// name is one.
func helperTablePid(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, tablePrefix)
	if !ok {
		return 0, false
	}
	pid, suffix, ok := strings.Cut(rest, "_")
	if !ok || suffix == "" || strings.Trim(suffix, "0123456789abcdef") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(pid)
	if err != nil || n <= 0 || pid != strconv.Itoa(n) {
		return 0, false
	}
	return n, true
}

// isHelperTable reports whether a trace message comes from a table of this package, ours or
// another run's: those rules are our machinery, not the user's ruleset.
func isHelperTable(family uint8, name string) bool {
	_, ok := helperTablePid(name)
	return ok && family == unix.NFPROTO_INET
}

// traceRules returns the expressions of the rules of each helper chain. For the echoes of
// an id:
//
//	meta l4proto icmp      @th,32,16 <id> meta nftrace set 1
//	meta l4proto ipv6-icmp @th,32,16 <id> meta nftrace set 1
//
// Bytes 4-5 of an ICMP or ICMPv6 echo message are its identifier. With Match.EchoCookie,
// also
//
//	meta l4proto icmp      @th,64,32 <cookie> meta nftrace set 1
//	meta l4proto ipv6-icmp @th,64,32 <cookie> meta nftrace set 1
//
// for an echo whose id a NAT rewrote (the payload's first 4 bytes are the pinger's
// cookie; claim takes echoes only). For a TCP run (see
// decode.TCPMark; NewTCPMark keeps cookie + span from wrapping):
//
//	meta l4proto tcp @th,32,32 <cookie>-<cookie + span - 1> meta nftrace set 1
//	meta l4proto tcp @th,64,32 <cookie + 1>-<cookie + span> meta nftrace set 1
//
// The first takes the run's SYNs and the prober's RSTs by sequence number, the second the
// answers by acknowledgement number: a superset of the run's packets (another flow's
// segment falls in the range once in 2^32/span), which Drain narrows to them. ICMP errors
// quoting a SYN of the run are not traced: a rule could find them (the quoted sequence
// number sits at @th,256,32 behind a quoted IPv4 header without options, @th,416,32 behind
// an IPv6 header without extension headers), but a trace message carries only the first
// 20 bytes of the transport header (NFT_TRACETYPE_TRANSPORT_HSIZE), which end inside the
// quoted IP header: Drain could not tell which run, or which probe, an error is about. The
// BPF probes see them.
//
// For a UDP run (see decode.UDPMark), the requests by their mark, 8 + Offset bytes into
// the transport header (Offset 0 for the default payload, 32 for a DNS query, up to
// decode.MaxPayload - decode.MarkLen = 504 behind a user payload: Linux 6.18 loads
// payload at such offsets, TestUDPRun sends one; older kernels may not, see
// maxOldPayloadOffset):
//
//	meta l4proto udp @th,<(8 + Offset) * 8>,32 <cookie> @th,<(8 + Offset + 6) * 8>,16 <echo id> meta nftrace set 1
//
// followed by "jump seq" when a trace would not show the whole mark (see seqRules).
// Replies carry no mark: TraceReplies adds replyRules once the prober's port is known.
func traceRules(match Match) [][]expr.Any {
	if m := match.UDP; m != nil {
		off := uint32(udpHeaderLen + m.Offset)
		rule := slices.Concat(l4proto(unix.IPPROTO_UDP),
			[]expr.Any{payload(off, 4), eq(binary.BigEndian.AppendUint32(nil, m.Cookie))},
			[]expr.Any{payload(off+6, 2), eq(binary.BigEndian.AppendUint16(nil, m.EchoID))},
			setNftrace())
		if !markVisible(m) {
			rule = append(rule, &expr.Verdict{Kind: expr.VerdictJump, Chain: chainSeq})
		}
		return [][]expr.Any{rule}
	}
	// within compares the register with [from, to], in network byte order, as nft does.
	within := func(from, to uint32) []expr.Any {
		return []expr.Any{
			&expr.Cmp{Op: expr.CmpOpGte, Register: 1, Data: binary.BigEndian.AppendUint32(nil, from)},
			&expr.Cmp{Op: expr.CmpOpLte, Register: 1, Data: binary.BigEndian.AppendUint32(nil, to)},
		}
	}
	if m := match.TCP; m != nil {
		first, last := m.Cookie, m.Cookie+m.Span-1
		return [][]expr.Any{
			slices.Concat(l4proto(unix.IPPROTO_TCP), []expr.Any{payload(4, 4)}, within(first, last), setNftrace()),
			slices.Concat(l4proto(unix.IPPROTO_TCP), []expr.Any{payload(8, 4)}, within(first+1, last+1), setNftrace()),
		}
	}
	id := binary.BigEndian.AppendUint16(nil, match.EchoID)
	rule := func(proto byte, off, n uint32, data []byte) []expr.Any {
		return slices.Concat(l4proto(proto), []expr.Any{payload(off, n), eq(data)}, setNftrace())
	}
	rules := [][]expr.Any{rule(unix.IPPROTO_ICMP, 4, 2, id), rule(unix.IPPROTO_ICMPV6, 4, 2, id)}
	if match.EchoCookie != 0 {
		cookie := binary.BigEndian.AppendUint32(nil, match.EchoCookie)
		rules = append(rules, rule(unix.IPPROTO_ICMP, 8, 4, cookie), rule(unix.IPPROTO_ICMPV6, 8, 4, cookie))
	}
	return rules
}

// seqBits is the width of a UDP probe's number.
const seqBits = 16

// chainSeq is the helper chain that reads a UDP request's probe number (seqRules);
// seqBitChain(i) the empty chain it jumps to when bit i is set.
const chainSeq = "seq"

func seqBitChain(i int) string { return fmt.Sprintf("seq_bit%d", i) }

// seqBit returns the bit a seqBitChain stands for, and whether chain is one.
func seqBit(chain string) (int, bool) {
	rest, ok := strings.CutPrefix(chain, "seq_bit")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil && i >= 0 && i < seqBits && seqBitChain(i) == chain
}

// markVisible reports whether a trace shows the whole mark of m's requests: in the first
// 12 bytes of the payload (transportHSize), as with the default payload (Offset 0).
func markVisible(m *decode.UDPMark) bool {
	return m.Offset+decode.MarkLen <= transportHSize-udpHeaderLen
}

// seqRules returns the rules of chain seq, for a UDP run whose mark a trace does not show
// whole (a DNS query's, 32 bytes in; one behind a user payload of more than 4 bytes); nil
// for other runs. The mark rule jumps there; rule i jumps on to the empty chain
// seq_bit<i> when bit i of the probe number (a big-endian u16 at 8 + Offset + 4) is set:
//
//	@th,<(8 + Offset + 4) * 8 + 15 - i>,1 1 jump seq_bit<i>
//
// The trace of each jump names its target chain, so the messages of our own table tell
// claimer that the packet they trace carries the run's mark (only the mark rule jumps to
// seq) and its probe number (claimer.observe). It costs the run's own requests 16 more
// rules and a jump per bit set in each namespace, and other packets nothing.
func seqRules(match Match) [][]expr.Any {
	m := match.UDP
	if m == nil || markVisible(m) {
		return nil
	}
	seq := uint32(udpHeaderLen + m.Offset + 4)
	rules := make([][]expr.Any, seqBits)
	for i := range seqBits {
		bit := byte(1) << (i % 8)
		rules[i] = []expr.Any{
			payload(seq+1-uint32(i/8), 1),
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{bit}, Xor: []byte{0}},
			eq([]byte{bit}),
			&expr.Verdict{Kind: expr.VerdictJump, Chain: seqBitChain(i)},
		}
	}
	return rules
}

// maxOldPayloadOffset is the largest offset at which kernels before commit 077dc4a27579
// ("netfilter: nft_payload: extend offset to 65535 bytes") load packet bytes: they check
// NFTA_PAYLOAD_OFFSET against U8_MAX and refuse more with ERANGE. (Kernels older still,
// without that check, may keep only the offset's low 8 bits: there, a mark behind a long
// user payload would be looked for at the wrong place and its requests go untraced. Not
// tested: only Linux 6.18 was at hand.)
const maxOldPayloadOffset = 255

// explainOffset says why the kernel refused a helper table with ERANGE when the UDP mark
// of match lies further into the transport header than kernels of 8-bit payload offsets
// load; other errors come back as they are.
func explainOffset(err error, match Match) error {
	m := match.UDP
	if m == nil || !errors.Is(err, unix.ERANGE) {
		return err
	}
	// The echo id, 6 bytes into the mark, is loaded last.
	last := udpHeaderLen + m.Offset + 6
	if last <= maxOldPayloadOffset {
		return err
	}
	return fmt.Errorf("%w: this kernel loads packet bytes at offsets up to %d into the transport header, the mark behind a payload of %d bytes needs %d: payloads of at most %d bytes can be traced here",
		err, maxOldPayloadOffset, m.Offset, last, maxOldPayloadOffset-udpHeaderLen-6)
}

// replyRules returns the expressions of the rule TraceReplies adds to each helper chain for
// the replies to a UDP prober whose source port is sport:
//
//	meta l4proto udp udp dport <sport> meta nftrace set 1
//
// It matches on the packet alone, in the same chains as the request's rule, ahead of
// every other chain. A rule on the conntrack entry (ct direction reply, ct original
// proto-src) would take no other host's datagram to that port, but any ct expression takes
// a reference on conntrack in the namespace (nf_ct_netns_get), switching connection
// tracking and defragmentation on where nothing used them: a change to the user's
// namespaces we do not make. A namespace that rewrites the source port of the request (a
// masquerade) sees the reply to the new port until its NAT restores it: the rule is also
// in a chain of its own right after that (see replyMessages), so the namespace's chains
// from then on are traced.
func replyRules(sport uint16) [][]expr.Any {
	return [][]expr.Any{slices.Concat(l4proto(unix.IPPROTO_UDP),
		[]expr.Any{payload(2, 2), eq(binary.BigEndian.AppendUint16(nil, sport))}, setNftrace())}
}

// setNftrace is meta nftrace set 1.
func setNftrace() []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: []byte{1}},
		&expr.Meta{Key: expr.MetaKeyNFTRACE, SourceRegister: true, Register: 1},
	}
}

// l4proto is meta l4proto <proto>.
func l4proto(proto byte) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
		eq([]byte{proto}),
	}
}

// payload loads n bytes of the transport header at off into register 1.
func payload(off, n uint32) expr.Any {
	return &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: off, Len: n}
}

// eq compares register 1 with data.
func eq(data []byte) expr.Any {
	return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}
}

// buildBatch returns the netlink messages, batch begin and end included, that google/nftables
// would send for the changes fn makes. They are sent on a socket of our own (sendBatch):
// google/nftables v0.3.0 can neither set table flags nor return the kernel's errno.
func buildBatch(fn func(c *nftables.Conn)) ([]netlink.Message, error) {
	var msgs []netlink.Message
	ack := []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		msgs = append(msgs, req...)
		return ack, nil
	}))
	if err != nil {
		return nil, err
	}
	fn(c)
	if err := c.Flush(); err != nil {
		return nil, err
	}
	for i := range msgs {
		// google/nftables asks for rules to be echoed back, to learn their handles; we
		// do not need them.
		msgs[i].Header.Flags &^= netlink.Echo
	}
	return msgs, nil
}

// helperTable returns the table of the given name and its chains.
func helperTable(name string) (*nftables.Table, []*nftables.Chain) {
	t := &nftables.Table{Name: name, Family: nftables.TableFamilyINet}
	// math.MinInt32 (NF_IP_PRI_FIRST): before every other chain of the hook, so the packet
	// is marked before any of them sees it.
	first := nftables.ChainPriorityRef(math.MinInt32)
	return t, []*nftables.Chain{
		{Name: chainPrerouting, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookPrerouting, Priority: first},
		{Name: chainOutput, Table: t, Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookOutput, Priority: first},
	}
}

// installMessages returns the batch that creates the helper table; owner sets
// NFT_TABLE_F_OWNER on it.
func installMessages(name string, match Match, owner bool) ([]netlink.Message, error) {
	msgs, err := buildBatch(func(c *nftables.Conn) {
		t, chains := helperTable(name)
		c.AddTable(t)
		// A chain is jumped to by name: it goes in first.
		if rules := seqRules(match); rules != nil {
			for i := range seqBits {
				c.AddChain(&nftables.Chain{Name: seqBitChain(i), Table: t})
			}
			addRules(c, c.AddChain(&nftables.Chain{Name: chainSeq, Table: t}), rules)
		}
		for _, ch := range chains {
			c.AddChain(ch)
			addRules(c, ch, traceRules(match))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("build table %s: %w", name, err)
	}
	if owner {
		if err := setTableFlags(msgs, tableFlagOwner); err != nil {
			return nil, fmt.Errorf("build table %s: %w", name, err)
		}
	}
	return msgs, nil
}

// chainReplies is the helper chain that sees a reply right after a namespace's NAT has
// undone the request's source NAT, at prerouting's destination NAT (NF_IP_PRI_NAT_DST):
// a masqueraded request's reply reaches the prober's port only there.
const chainReplies = "replies"

// replyMessages returns the batch that appends replyRules(sport) to each chain of the
// helper table name, and adds chainReplies with them.
func replyMessages(name string, sport uint16) ([]netlink.Message, error) {
	rules := replyRules(sport)
	msgs, err := buildBatch(func(c *nftables.Conn) {
		t, chains := helperTable(name)
		for _, ch := range chains {
			addRules(c, ch, rules)
		}
		afterNAT := nftables.ChainPriorityRef(*nftables.ChainPriorityNATDest + 1)
		addRules(c, c.AddChain(&nftables.Chain{Name: chainReplies, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: afterNAT}), rules)
	})
	if err != nil {
		return nil, fmt.Errorf("build rules of table %s: %w", name, err)
	}
	return msgs, nil
}

// addRules appends rules to chain ch.
func addRules(c *nftables.Conn, ch *nftables.Chain, rules [][]expr.Any) {
	for _, exprs := range rules {
		c.AddRule(&nftables.Rule{Table: ch.Table, Chain: ch, Exprs: exprs})
	}
}

// deleteMessages returns the batch that deletes the table name of family.
func deleteMessages(name string, family nftables.TableFamily) ([]netlink.Message, error) {
	msgs, err := buildBatch(func(c *nftables.Conn) {
		c.DelTable(&nftables.Table{Name: name, Family: family})
	})
	if err != nil {
		return nil, fmt.Errorf("build deletion of table %s: %w", name, err)
	}
	return msgs, nil
}

// setTableFlags sets NFTA_TABLE_FLAGS of the NFT_MSG_NEWTABLE message in msgs.
func setTableFlags(msgs []netlink.Message, flags uint32) error {
	newTable := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWTABLE)
	for i := range msgs {
		m := &msgs[i]
		if m.Header.Type != newTable || len(m.Data) < nfgenMsgLen {
			continue
		}
		attrs, err := netlink.UnmarshalAttributes(m.Data[nfgenMsgLen:])
		if err != nil {
			return fmt.Errorf("set table flags: %w", err)
		}
		found := false
		for j := range attrs {
			if attrs[j].Type == unix.NFTA_TABLE_FLAGS {
				attrs[j].Data = binary.BigEndian.AppendUint32(nil, flags)
				found = true
			}
		}
		if !found {
			attrs = append(attrs, netlink.Attribute{Type: unix.NFTA_TABLE_FLAGS, Data: binary.BigEndian.AppendUint32(nil, flags)})
		}
		b, err := netlink.MarshalAttributes(attrs)
		if err != nil {
			return fmt.Errorf("set table flags: %w", err)
		}
		m.Data = append(m.Data[:nfgenMsgLen:nfgenMsgLen], b...)
		return nil
	}
	return errors.New("set table flags: no NFT_MSG_NEWTABLE message in batch")
}

// sendBatch sends msgs on c and waits for the kernel to acknowledge each message that asks
// for it, skipping any other reply. A failure comes back as an error wrapping the kernel's errno.
// msgs may be sent on several sockets at once: it is not changed.
func sendBatch(c *netlink.Conn, msgs []netlink.Message) error {
	// The socket fills in each header's sequence number and port.
	msgs = slices.Clone(msgs)
	want := 0
	for _, m := range msgs {
		if m.Header.Flags&netlink.Acknowledge != 0 {
			want++
		}
	}
	if err := c.SetReadDeadline(time.Now().Add(batchTimeout)); err != nil {
		return err
	}
	if _, err := c.SendMessages(msgs); err != nil {
		return err
	}
	for got := 0; got < want; {
		replies, err := c.Receive()
		if err != nil {
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				got++
			}
		}
	}
	return nil
}

// ownerFlag says whether install asks for NFT_TABLE_F_OWNER; tests turn it off to
// play a kernel older than 5.12.
var ownerFlag = true

// dial opens an nftables socket in the calling thread's network namespace.
func dial() (*netlink.Conn, error) {
	// NetNS 0: the socket is created in the calling thread's namespace.
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open nftables socket: %w", err)
	}
	return c, nil
}

// installBatches are the batches that create the helper table with and without
// NFT_TABLE_F_OWNER: built once, sent in every namespace.
type installBatches struct {
	owned, plain []netlink.Message
}

func newInstallBatches(name string, match Match) (installBatches, error) {
	owned, err := installMessages(name, match, true)
	if err != nil {
		return installBatches{}, err
	}
	plain, err := installMessages(name, match, false)
	if err != nil {
		return installBatches{}, err
	}
	return installBatches{owned, plain}, nil
}

// install creates the helper table on c, a socket of the namespace it goes in, and
// returns the socket that owns it when owned is true: c, or on a kernel older than 5.12,
// which refuses NFT_TABLE_F_OWNER, a fresh one (the refused batch may have left replies on
// c) where the table is created without the flag; the next Open then sweeps it away after a
// SIGKILL. Each batch either applies whole or not at all. On error, c is closed.
func (b installBatches) install(c *netlink.Conn, name string) (owner *netlink.Conn, owned bool, err error) {
	defer func() {
		if err != nil {
			if c != nil {
				c.Close()
			}
			owner, err = nil, fmt.Errorf("add table inet %s: %w", name, err)
		}
	}()
	if ownerFlag {
		err = sendBatch(c, b.owned)
		// 5.12 and later refuse an unknown flag with EOPNOTSUPP; before, with EINVAL
		// (seen on Debian 11's 5.10).
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EINVAL) {
			return c, err == nil, err
		}
		c.Close()
		if c, err = dial(); err != nil {
			return nil, false, err
		}
	}
	return c, false, sendBatch(c, b.plain)
}

// sweep deletes, on c, the helper tables (inet tracepkt_<pid>_<hex>) of c's network
// namespace left by runs that were killed before they could delete them: those whose
// process no longer exists. Tables owned by a netlink socket (NFT_TABLE_F_OWNER) belong to
// a live process and are kept, whatever their pid says.
func sweep(c *netlink.Conn) error {
	tables, err := listTables(c, unix.NFPROTO_INET)
	if err != nil {
		return err
	}
	var errs []error
	for _, t := range tables {
		pid, ok := helperTablePid(t.Name)
		if !ok || t.Flags&tableFlagOwner != 0 || processExists(pid) {
			continue
		}
		if err := deleteTable(c, t.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// tableInfo is a table as NFT_MSG_GETTABLE lists it.
type tableInfo struct {
	Name  string
	Flags uint32
}

// listTables lists the tables of family of c's network namespace.
// (google/nftables v0.3.0 decodes NFTA_TABLE_FLAGS in host byte order.)
func listTables(c *netlink.Conn, family uint8) ([]tableInfo, error) {
	replies, err := nftGet(c, unix.NFT_MSG_GETTABLE, netlink.Dump, family)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var tables []tableInfo
	for _, m := range replies {
		ad, err := nfAttributes(m.Data)
		if errors.Is(err, errShortMessage) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		var t tableInfo
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_TABLE_NAME:
				t.Name = ad.String()
			case unix.NFTA_TABLE_FLAGS:
				t.Flags = ad.Uint32()
			}
		}
		if err := ad.Err(); err != nil {
			return nil, fmt.Errorf("list tables: %w", err)
		}
		tables = append(tables, t)
	}
	return tables, nil
}

// deleteTable deletes, on c, the inet table name, not owned by any socket. A table
// already gone is not an error.
func deleteTable(c *netlink.Conn, name string) error {
	msgs, err := deleteMessages(name, nftables.TableFamilyINet)
	if err != nil {
		return err
	}
	if err := sendBatch(c, msgs); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete table inet %s: %w", name, err)
	}
	return nil
}

// processExists reports whether pid names a process of our pid namespace. EPERM means it
// exists under another user.
func processExists(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}
