package decode

import (
	"fmt"
	"net/netip"
)

// Hook is a netfilter hook, in the order a packet meets them within one
// network namespace.
type Hook uint8

const (
	HookUnknown Hook = iota
	HookPrerouting
	HookInput
	HookForward
	HookOutput
	HookPostrouting
)

var hookNames = [...]string{"", "PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"}

func (h Hook) String() string {
	if int(h) < len(hookNames) {
		return hookNames[h]
	}
	return "HOOK?"
}

// TraceType says what a netfilter trace event reports, as in the kernel's
// enum nft_trace_types.
type TraceType uint8

const (
	TraceRule   TraceType = 3 // a rule matched; Verdict is its verdict
	TraceReturn TraceType = 2 // the end of a non-base chain was reached
	TracePolicy TraceType = 1 // the end of a base chain: its policy decided
	// TraceChain is a whole table's or base chain's verdict, as a kprobe on
	// its function sees it: which rule decided is not known.
	TraceChain TraceType = 4
)

// NetfilterEvent is one step of an iptables or nftables chain on our echo:
// a rule that matched, or the chain's policy.
type NetfilterEvent struct {
	// Time is the kernel CLOCK_MONOTONIC time when the source knows it
	// (kprobes); nftrace events carry none and are placed by hook instead.
	Time    uint64
	Netns   uint32
	Family  string // nftables family: ip, ip6, inet, bridge, ...
	Table   string
	Chain   string
	Hook    Hook
	Type    TraceType
	Verdict string // ACCEPT, DROP, CONTINUE, RETURN, JUMP, GOTO, QUEUE, STOLEN, ...
	// Target is the chain of a JUMP or GOTO verdict.
	Target     string
	RuleHandle uint64
	// Rule is the rule's text where it could be obtained.
	Rule string
	// Iif and Oif are the input and output interfaces, 0 when not set yet.
	Iif, Oif uint32
	// TraceID groups the events of one packet's pass through the hooks.
	TraceID uint32
	// The packet: enough to tie the event to our echo.
	ICMPType uint8
	// Proto and TCPFlags are the Record's, for a TCP probe.
	Proto, TCPFlags uint8
	EchoID          uint16
	Seq             uint16
	Src, Dst        netip.Addr
	// Sport and Dport are a TCP or UDP packet's ports, where the source
	// shows them (nftrace); 0 otherwise.
	Sport, Dport uint16
	// CT is the packet's conntrack state at this step, where the source
	// shows it (nftrace, Linux 6.16 and later), 0 otherwise; CTReply says
	// the packet goes its conntrack entry's reply way.
	CT      CTState
	CTReply bool
	Source  string // "nftrace" or "kprobe"
}

// CTState is a packet's conntrack state as nftables' ct state expression
// and its trace give it (NF_CT_STATE_* bits of
// <linux/netfilter/nf_conntrack_common.h>); 0 says nothing is known.
type CTState uint8

const (
	CTEstablished CTState = 1 << 1
	CTRelated     CTState = 1 << 2
	CTNew         CTState = 1 << 3
	CTUntracked   CTState = 1 << 6
)

var ctStateNames = map[CTState]string{CTEstablished: "established", CTRelated: "related", CTNew: "new", CTUntracked: "untracked"}

// String names the state as nft's ct state does: "new", "established",
// "related", "untracked", "" for 0.
func (s CTState) String() string {
	if n, ok := ctStateNames[s]; ok || s == 0 {
		return n
	}
	return fmt.Sprintf("ct(%#x)", uint8(s))
}

// IsRequest reports whether the event is about the echo request.
func (e *NetfilterEvent) IsRequest() bool { return isRequest(e.Proto, e.ICMPType, e.TCPFlags) }

// NFPROTO_* values of <linux/netfilter.h>, as nftables names the families.
var nfprotoNames = map[uint8]string{1: "inet", 2: "ip", 3: "arp", 5: "netdev", 7: "bridge", 10: "ip6"}

// Verdicts by their NF_* value in <linux/netfilter.h>.
var nfVerdicts = [...]string{"DROP", "ACCEPT", "STOLEN", "QUEUE", "REPEAT", "STOP"}

// IsNetfilter reports whether the record comes from a netfilter probe.
func (r *Record) IsNetfilter() bool { return r.Probe.Kprobe() != "" }

// NetfilterEvent is the event of a netfilter record.
func (r *Record) NetfilterEvent() NetfilterEvent {
	nf := &r.NF
	e := NetfilterEvent{
		Time: r.Time, Netns: r.Netns, Type: TraceChain, Source: "kprobe",
		Table: cString(nf.Table[:]), Chain: cString(nf.Chain[:]), Iif: nf.Iif, Oif: nf.Oif,
		ICMPType: r.ICMPType, Proto: r.Proto, TCPFlags: r.TCPFlags, EchoID: r.EchoID, Seq: r.Seq, Src: r.Src, Dst: r.Dst,
	}
	if nf.Hook < 5 {
		e.Hook = Hook(nf.Hook + 1) // NF_INET_PRE_ROUTING is 0
	}
	e.Family = nfprotoNames[nf.Family]
	// iptables tables have no chain of their own to name: the hook's is the base chain.
	if e.Chain == "" {
		e.Chain = e.Hook.String()
	}
	e.Verdict = nfVerdict(nf.Verdict)
	return e
}

// nfVerdict names a netfilter function's return value. Its low byte is the
// verdict (NF_VERDICT_MASK); the rest carries a queue number or an errno.
// Kernels that free a dropped packet themselves (NF_DROP_REASON) return
// NF_STOLEN with the errno: that is a drop.
func nfVerdict(v uint32) string {
	const nfStolen = 2
	code := v & 0xff
	if code == nfStolen && v>>16 != 0 {
		return "DROP"
	}
	if int(code) < len(nfVerdicts) {
		return nfVerdicts[code]
	}
	return fmt.Sprintf("VERDICT%d", code)
}

// RuleText says what decided: the chain's policy, the end of a chain, or
// the rule (its handle, and its text where known).
func (e *NetfilterEvent) RuleText() string {
	switch {
	case e.Type == TracePolicy:
		return "policy"
	case e.Type == TraceReturn:
		return "end of chain"
	case e.Rule != "":
		return fmt.Sprintf("rule %d: %s", e.RuleHandle, e.Rule)
	case e.RuleHandle != 0:
		return fmt.Sprintf("rule %d", e.RuleHandle)
	}
	return ""
}
