package decode

import "net/netip"

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
	EchoID   uint16
	Seq      uint16
	Src, Dst netip.Addr
	Source   string // "nftrace" or "kprobe"
}

// IsRequest reports whether the event is about the echo request.
func (e *NetfilterEvent) IsRequest() bool {
	return e.ICMPType == 8 || e.ICMPType == 128
}
