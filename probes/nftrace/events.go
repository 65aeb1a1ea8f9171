package nftrace

import (
	"errors"
	"fmt"
	"os"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

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
		var sport, dport uint16
		if m.Packet.Proto != 0 { // a TCP or UDP run's packet: its ports are read
			sport, dport = m.Packet.Sport, m.Packet.Dport
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
			Proto:      m.Packet.Proto,
			TCPFlags:   m.Packet.TCPFlags,
			EchoID:     m.Packet.EchoID,
			Seq:        m.Packet.Seq,
			Src:        m.Packet.Src,
			Dst:        m.Packet.Dst,
			Sport:      sport,
			Dport:      dport,
			CT:         m.CT,
			CTReply:    m.CTReply,
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
