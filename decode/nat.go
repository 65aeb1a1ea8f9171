package decode

import (
	"net/netip"
	"slices"
	"strings"
)

// Translation is a change NAT made to a TCP probe's packet between two
// sightings: the address and port of one end, before and after.
type Translation struct {
	// Kind is "DNAT" or "SNAT" for the probe's own packets, "reverse DNAT"
	// or "reverse SNAT" for the answer (conntrack undoing the probe's).
	Kind          string
	Before, After netip.AddrPort
	// Netns is the namespace where the change was made; Hop the index in
	// the journey's Hops of the first sighting after it.
	Netns uint32
	Hop   int
	// Rule is the netfilter event of the rule that made it, when the
	// netfilter source saw one in that namespace.
	Rule *NetfilterEvent
}

// Translations returns the NAT changes the hops of a TCP or UDP probe show,
// in order, each once. Each packet (the SYN, the answer, the prober's RST;
// the datagram and its reply) is followed on its own; its first hop, for a
// packet the prober sent, is compared with the addresses and ports it was
// sent from (when the outcome has them) and to: a difference there was
// made where it was sent (OUTPUT, or POSTROUTING before the first device).
func (j *Journey) Translations() []Translation {
	if j.Proto != ProtoTCP && j.Proto != ProtoUDP {
		return nil
	}
	var packets []uint8 // TCP flags, one packet each
	for _, h := range j.Hops {
		if !h.IsError() && !slices.Contains(packets, h.TCPFlags) {
			packets = append(packets, h.TCPFlags)
		}
	}
	var out []Translation
	add := func(t Translation) {
		for _, o := range out {
			if o.Kind == t.Kind && o.Before == t.Before && o.After == t.After && o.Netns == t.Netns {
				return
			}
		}
		out = append(out, t)
	}
	for _, flags := range packets {
		request := isRequest(j.Proto, 0, flags)
		var prev *Record
		var prevSrc, prevDst netip.AddrPort
		if request {
			prevSrc, prevDst = j.Source, netip.AddrPortFrom(j.Target, j.Port)
		}
		for i := range j.Hops {
			h := &j.Hops[i]
			if h.IsError() || h.TCPFlags != flags {
				continue
			}
			sport, dport, ok := h.Ports()
			if !ok {
				continue
			}
			src, dst := netip.AddrPortFrom(h.Src, sport), netip.AddrPortFrom(h.Dst, dport)
			// Made where the packet was last seen, unless it is seen leaving
			// a namespace now: then there, before it left.
			where := h.Netns
			if prev != nil && h.Probe.Direction() != Out {
				where = prev.Netns
			}
			// A change of the answer's destination undoes the probe's source
			// NAT, and of its source, the probe's destination NAT.
			if prevDst.IsValid() && dst != prevDst {
				add(j.translation(natKind("DNAT", "SNAT", request), prevDst, dst, where, i, request))
			}
			if prevSrc.IsValid() && src != prevSrc {
				add(j.translation(natKind("SNAT", "DNAT", request), prevSrc, src, where, i, request))
			}
			prev, prevSrc, prevDst = h, src, dst
		}
	}
	// Without the probe's source as it was sent (recordings made before
	// the tool kept it), a source NAT made where it was sent, before its
	// first hop (netavark masquerades loopback to a published port), shows
	// only undone, on the answer.
	// Conntrack undoes in a namespace exactly the change made there, so the
	// probe's own change is the inverse, first seen where the probe's
	// source is the translated one.
	if j.Source.IsValid() {
		return out
	}
	for _, rev := range slices.Clone(out) {
		if rev.Kind != "reverse SNAT" || slices.ContainsFunc(out, func(o Translation) bool {
			return o.Kind == "SNAT" && o.Netns == rev.Netns && o.Before == rev.After && o.After == rev.Before
		}) {
			continue
		}
		hop := j.firstRequestFrom(rev.Before)
		if hop < 0 {
			continue
		}
		t := j.translation("SNAT", rev.After, rev.Before, rev.Netns, hop, true)
		at := slices.IndexFunc(out, func(o Translation) bool { return strings.HasPrefix(o.Kind, "reverse ") || o.Hop > hop })
		out = slices.Insert(out, at, t)
	}
	return out
}

// firstRequestFrom is the index of the first hop of a packet the prober
// sent whose source is src, or -1.
func (j *Journey) firstRequestFrom(src netip.AddrPort) int {
	for i := range j.Hops {
		h := &j.Hops[i]
		if h.IsError() || !h.IsRequest() {
			continue
		}
		if sport, _, ok := h.Ports(); ok && netip.AddrPortFrom(h.Src, sport) == src {
			return i
		}
	}
	return -1
}

// natKind names a change of the probe's packet, or of the answer, undoing
// the probe's.
func natKind(ofProbe, ofAnswer string, request bool) string {
	if request {
		return ofProbe
	}
	return "reverse " + ofAnswer
}

// translation ties a change of the probe's own packet to the NAT rule the
// netfilter source saw on it in that namespace: a rule whose text has the
// statement dnat, snat or masquerade; else the last rule or, for the kprobe source,
// which sees chains but not rules, the last chain, of a nat table at a hook
// where that NAT is made, that accepted the packet, as a NAT target does
// (nft cannot print every iptables-nft target: its text may not say). The
// answer's changes are conntrack's, made by no rule.
func (j *Journey) translation(kind string, before, after netip.AddrPort, netns uint32, hop int, request bool) Translation {
	t := Translation{Kind: kind, Before: before, After: after, Netns: netns, Hop: hop}
	if !request {
		return t
	}
	words, hooks := []string{"snat", "masquerade"}, []Hook{HookPostrouting, HookInput}
	if kind == "DNAT" {
		words, hooks = []string{"dnat"}, []Hook{HookPrerouting, HookOutput}
	}
	for i := range j.Netfilter {
		e := &j.Netfilter[i]
		if e.Netns != netns || !e.IsRequest() {
			continue
		}
		// A statement, never part of a name: "jump mark-for-masquerade" is not one.
		for _, w := range strings.Fields(strings.ToLower(e.Rule)) {
			if slices.Contains(words, w) {
				t.Rule = e
				return t
			}
		}
		if e.Table == "nat" && slices.Contains(hooks, e.Hook) && e.Verdict == "ACCEPT" && (e.Type == TraceRule || e.Source == "kprobe") {
			t.Rule = e
		}
	}
	return t
}
