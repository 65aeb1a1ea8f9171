package decode

import (
	"fmt"
	"net/netip"
)

// ICMPError is an ICMP or ICMPv6 error that quoted our echo request and
// reached the pinger: who sent it, what it says, and the MTU of a "too big".
// Without From, it is this host's own refusal to send a request larger than
// the path MTU it learnt.
type ICMPError struct {
	Family     uint8 // 4 or 6
	Type, Code uint8
	From       netip.Addr
	MTU        uint32
}

// isICMPError reports whether an ICMP type of family is an error that quotes
// the packet it is about (RFC 792, RFC 4443).
func isICMPError(family, typ uint8) bool {
	if family == 6 {
		return typ >= 1 && typ <= 4
	}
	return typ == 3 || typ == 11 || typ == 12
}

// PacketType names an ICMP packet of ours: "request", "reply", or for an
// error quoting our request, its Result ("unreachable", "ttl-exceeded",
// "too-big").
func PacketType(family, icmpType uint8) string {
	switch {
	case icmpType == 8 || icmpType == 128:
		return "request"
	case icmpType == 0 || icmpType == 129:
		return "reply"
	}
	e := ICMPError{Family: family, Type: icmpType}
	return e.Result()
}

// Result is the journey's result for this error: "too-big", "ttl-exceeded"
// or "unreachable" (parameter problems included).
func (e *ICMPError) Result() string {
	switch {
	case e.Family == 4 && e.Type == 3 && e.Code == 4, e.Family == 6 && e.Type == 2:
		return "too-big"
	case e.Family == 4 && e.Type == 11, e.Family == 6 && e.Type == 3:
		return "ttl-exceeded"
	}
	return "unreachable"
}

// Meanings of ICMP destination unreachable codes (RFC 792, 1122, 1812) and
// ICMPv6 ones (RFC 4443).
var (
	unreachV4 = []string{
		"network unreachable", "host unreachable", "protocol unreachable", "port unreachable",
		"fragmentation needed and DF set", "source route failed", "destination network unknown",
		"destination host unknown", "source host isolated", "network administratively prohibited",
		"host administratively prohibited", "network unreachable for TOS", "host unreachable for TOS",
		"communication administratively prohibited", "host precedence violation", "precedence cutoff in effect",
	}
	unreachV6 = []string{
		"no route to destination", "communication with destination administratively prohibited",
		"beyond scope of source address", "address unreachable", "port unreachable",
		"source address failed ingress/egress policy", "reject route to destination",
	}
)

// Text is the error in words, as ping prints it: "destination unreachable:
// communication administratively prohibited".
func (e *ICMPError) Text() string {
	code := func(names []string) string {
		if int(e.Code) < len(names) {
			return names[e.Code]
		}
		return fmt.Sprintf("code %d", e.Code)
	}
	hop, reasm := "TTL exceeded in transit", "fragment reassembly time exceeded"
	switch {
	case e.Family == 4 && e.Type == 3:
		return "destination unreachable: " + code(unreachV4)
	case e.Family == 6 && e.Type == 1:
		return "destination unreachable: " + code(unreachV6)
	case e.Family == 6 && e.Type == 2:
		return "packet too big"
	case e.Family == 4 && e.Type == 11, e.Family == 6 && e.Type == 3:
		if e.Family == 6 {
			hop = "hop limit exceeded in transit"
		}
		return "time exceeded: " + code([]string{hop, reasm})
	case e.Family == 4 && e.Type == 12, e.Family == 6 && e.Type == 4:
		return fmt.Sprintf("parameter problem (code %d)", e.Code)
	}
	return fmt.Sprintf("icmp type %d code %d", e.Type, e.Code)
}

// PortUnreachable reports whether the error is a port unreachable.
func (e *ICMPError) PortUnreachable() bool {
	if e.Family == 6 {
		return e.Type == 1 && e.Code == 4
	}
	return e.Type == 3 && e.Code == 3
}

// Rejected reports whether the error is one a firewall's REJECT rule sends
// for an echo request: port unreachable (the default) or a prohibition.
func (e *ICMPError) Rejected() bool {
	if e.Family == 6 {
		return e.Type == 1 && (e.Code == 1 || e.Code == 4 || e.Code == 5 || e.Code == 6)
	}
	return e.Type == 3 && (e.Code == 3 || e.Code == 9 || e.Code == 10 || e.Code == 13)
}

// ListenMagic is the second half of every pinger's payload cookie, after the
// run's 4 bytes: what a listener (--listen) keeps echoes by.
const ListenMagic uint32 = 0x74706b21 // "tpk!"
