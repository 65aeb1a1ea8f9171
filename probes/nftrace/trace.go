package nftrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// traceMsgType is the netlink message type of a trace event:
// NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_TRACE, from <linux/netfilter/nfnetlink.h> and
// <linux/netfilter/nf_tables.h>.
const traceMsgType = unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_TRACE

// nlmsgHdrLen and nfgenMsgLen must match sizeof(struct nlmsghdr) in <linux/netlink.h> and
// sizeof(struct nfgenmsg) in <linux/netfilter/nfnetlink.h>.
const (
	nlmsgHdrLen = 16
	nfgenMsgLen = 4
)

var errShortMessage = errors.New("short netlink message")

// traceMsg is one NFT_MSG_TRACE message: the attributes of enum nft_trace_attributes in
// <linux/netfilter/nf_tables.h>, as net/netfilter/nf_tables_trace.c fills them.
type traceMsg struct {
	Family     uint8 // nfgenmsg.nfgen_family: the family of the table (NFPROTO_*)
	NFProto    uint32
	Table      string
	Chain      string
	RuleHandle uint64 // 0: none (the end of a chain, or the policy)
	Type       uint32 // enum nft_trace_types
	Verdict    int32  // NFTA_VERDICT_CODE; valid when HasVerdict
	HasVerdict bool
	Target     string // NFTA_VERDICT_CHAIN: the chain of a jump or goto
	Policy     uint32 // NFTA_TRACE_POLICY; valid when HasPolicy
	HasPolicy  bool
	ID         uint32
	Iif, Oif   uint32
	Mark       uint32
	// Packet is filled from NFTA_TRACE_NETWORK_HEADER and NFTA_TRACE_TRANSPORT_HEADER. The
	// kernel sends the headers only with the first message of each base chain evaluation;
	// the later ones of the same evaluation are tied to it by ID.
	Packet    packet
	HasPacket bool
	// CT is the packet's conntrack state as NFTA_TRACE_CT_STATE gives it (decode.CTState
	// bits), sent with the headers; 0 when the kernel sent none: before Linux 6.16, or a
	// packet without a conntrack entry (not tracked in the namespace, or invalid).
	// CTReply is NFTA_TRACE_CT_DIRECTION: the packet goes the entry's reply way.
	CT      decode.CTState
	CTReply bool
}

// Conntrack attributes of enum nft_trace_attributes (<linux/netfilter/nf_tables.h>, Linux
// 6.16): x/sys/unix has not got them.
const (
	nftaTraceCTDirection = 19
	nftaTraceCTState     = 21
)

// packet is what the trace headers say about a packet.
type packet struct {
	Src, Dst netip.Addr
	// Echo is true for an ICMP or ICMPv6 echo request or reply; then ICMPType, EchoID and
	// Seq are set, and Cookie, the payload's first 4 bytes, where the trace shows them.
	Echo     bool
	ICMPType uint8
	EchoID   uint16
	Seq      uint16
	Cookie   uint32
	// TCP is true for a TCP segment; then TCPFlags and Key, its decode.Key, are set.
	TCP      bool
	TCPFlags uint8
	Key      uint32
	// Sport and Dport are a TCP segment's or a UDP datagram's ports.
	Sport, Dport uint16
	// UDP is true for a UDP datagram; then UDPLen (the UDP header's length
	// field) and the first Visible bytes of its payload, those the trace carries, are set.
	UDP     bool
	UDPLen  uint16
	Payload [transportHSize - udpHeaderLen]byte
	Visible uint8
	// Proto is decode.ProtoTCP or decode.ProtoUDP once the packet is known to be of a TCP
	// or UDP run (claimer.claim), which then also sets EchoID and Seq, and for a UDP reply
	// TCPFlags to decode.UDPAnswer.
	Proto uint8
}

// transportHSize is NFT_TRACETYPE_TRANSPORT_HSIZE (net/netfilter/nf_tables_trace.c): the
// most transport header bytes a trace message carries. udpHeaderLen is the UDP header's
// length: a trace shows at most the first 12 bytes of a datagram's payload.
const (
	transportHSize = 20
	udpHeaderLen   = 8
)

// parseTraceMessages calls fn with each NFT_MSG_TRACE message in b, one datagram read from
// a netlink socket; other message types are skipped. It stops at the first malformed
// message.
func parseTraceMessages(b []byte, fn func(*traceMsg)) error {
	var m traceMsg
	for len(b) >= nlmsgHdrLen {
		// struct nlmsghdr, in host byte order.
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if l < nlmsgHdrLen || l > len(b) {
			return fmt.Errorf("netlink message length %d in %d bytes: %w", l, len(b), errShortMessage)
		}
		if typ == traceMsgType {
			if err := parseTrace(b[nlmsgHdrLen:l], &m); err != nil {
				return err
			}
			fn(&m)
		}
		b = b[min(nlmsgAlign(l), len(b)):]
	}
	return nil
}

func nlmsgAlign(l int) int { return (l + 3) &^ 3 }

// parseTrace decodes the payload of an NFT_MSG_TRACE message (after struct nlmsghdr) into m.
func parseTrace(b []byte, m *traceMsg) error {
	ad, err := nfAttributes(b)
	if err != nil {
		return fmt.Errorf("decode trace message: %w", err)
	}
	*m = traceMsg{Family: b[0]}
	var network, transport []byte
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TRACE_TABLE:
			m.Table = ad.String()
		case unix.NFTA_TRACE_CHAIN:
			m.Chain = ad.String()
		case unix.NFTA_TRACE_RULE_HANDLE:
			m.RuleHandle = ad.Uint64()
		case unix.NFTA_TRACE_TYPE:
			m.Type = ad.Uint32()
		case unix.NFTA_TRACE_VERDICT:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case unix.NFTA_VERDICT_CODE:
						m.Verdict, m.HasVerdict = nad.Int32(), true
					case unix.NFTA_VERDICT_CHAIN:
						m.Target = nad.String()
					}
				}
				return nil
			})
		case unix.NFTA_TRACE_POLICY:
			m.Policy, m.HasPolicy = ad.Uint32(), true
		case unix.NFTA_TRACE_ID:
			m.ID = ad.Uint32()
		case unix.NFTA_TRACE_NFPROTO:
			m.NFProto = ad.Uint32()
		case unix.NFTA_TRACE_IIF:
			m.Iif = ad.Uint32()
		case unix.NFTA_TRACE_OIF:
			m.Oif = ad.Uint32()
		case unix.NFTA_TRACE_MARK:
			m.Mark = ad.Uint32()
		case nftaTraceCTState:
			m.CT = decode.CTState(ad.Uint32())
		case nftaTraceCTDirection:
			m.CTReply = ad.Uint8() == 1
		case unix.NFTA_TRACE_NETWORK_HEADER:
			// Valid until the next read into the caller's buffer: parsed below.
			ad.Do(func(b []byte) error { network = b; return nil })
		case unix.NFTA_TRACE_TRANSPORT_HEADER:
			ad.Do(func(b []byte) error { transport = b; return nil })
		}
	}
	if err := ad.Err(); err != nil {
		return fmt.Errorf("decode trace message: %w", err)
	}
	if network != nil {
		m.Packet, m.HasPacket = parsePacket(network, transport), true
	}
	return nil
}

// IP protocol numbers and ICMP types of echo messages.
const (
	protoICMP        = 1
	protoTCP         = 6
	protoUDP         = 17
	protoICMPv6      = 58
	icmpEchoReply    = 0
	icmpEchoRequest  = 8
	icmp6EchoRequest = 128
	icmp6EchoReply   = 129
)

// ipv6ExtHeaders are the IPv6 extension headers that may sit between the fixed header and
// the transport header. The trace carries at most 40 bytes of network header, so they
// cannot be walked: behind one, the transport header is read as ICMPv6, as TCP and as UDP,
// and the match decides (claimer.claim).
var ipv6ExtHeaders = map[uint8]bool{0: true, 43: true, 44: true, 51: true, 60: true}

// parsePacket reads addresses from an IPv4 or IPv6 header and, from the transport header,
// the fields of an ICMP or ICMPv6 echo, of a TCP segment or of a UDP datagram. The kernel
// sends at most 20 bytes of transport header (transportHSize): enough for the first two,
// not for what an ICMP error quotes beyond its first 12 bytes, and a UDP datagram's first
// 12 bytes of payload.
func parsePacket(network, transport []byte) packet {
	var p packet
	if len(network) == 0 {
		return p
	}
	var icmp, icmpv6, tcp, udp bool
	switch network[0] >> 4 {
	case 4:
		if len(network) < 20 {
			return p
		}
		p.Src = netip.AddrFrom4([4]byte(network[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(network[16:20]))
		icmp, tcp, udp = network[9] == protoICMP, network[9] == protoTCP, network[9] == protoUDP
	case 6:
		if len(network) < 40 {
			return p
		}
		p.Src = netip.AddrFrom16([16]byte(network[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(network[24:40]))
		next := network[6]
		icmpv6 = next == protoICMPv6 || ipv6ExtHeaders[next]
		tcp = next == protoTCP || ipv6ExtHeaders[next]
		udp = next == protoUDP || ipv6ExtHeaders[next]
	default:
		return p
	}
	if tcp && len(transport) >= 14 {
		p.TCP, p.TCPFlags = true, transport[13]
		p.Key = decode.Key(p.TCPFlags, binary.BigEndian.Uint32(transport[4:8]), binary.BigEndian.Uint32(transport[8:12]))
	}
	if len(transport) < udpHeaderLen {
		return p
	}
	if p.TCP || udp {
		p.Sport = binary.BigEndian.Uint16(transport[0:2])
		p.Dport = binary.BigEndian.Uint16(transport[2:4])
	}
	if udp {
		p.UDP = true
		p.UDPLen = binary.BigEndian.Uint16(transport[4:6])
		p.Visible = uint8(copy(p.Payload[:], transport[udpHeaderLen:]))
	}
	typ := transport[0]
	if icmpv6 && (typ == icmp6EchoRequest || typ == icmp6EchoReply) ||
		icmp && (typ == icmpEchoRequest || typ == icmpEchoReply) {
		p.Echo = true
		p.ICMPType = typ
		p.EchoID = binary.BigEndian.Uint16(transport[4:6])
		p.Seq = binary.BigEndian.Uint16(transport[6:8])
		if len(transport) >= 12 {
			p.Cookie = binary.BigEndian.Uint32(transport[8:12])
		}
	}
	return p
}

// Netfilter verdicts, from <linux/netfilter.h>.
const (
	nfDrop        = 0
	nfAccept      = 1
	nfStolen      = 2
	nfQueue       = 3
	nfRepeat      = 4
	nfStop        = 5 // deprecated, kept for userspace
	nfVerdictMask = 0x000000ff
)

// verdictName names a verdict code as decode.NetfilterEvent.Verdict does. Codes of
// enum nft_verdicts (<linux/netfilter/nf_tables.h>) are negative; the others are netfilter
// verdicts (<linux/netfilter.h>) whose low byte is the verdict and whose upper bits carry a
// queue number or errno.
func verdictName(code int32) string {
	switch code {
	case unix.NFT_CONTINUE:
		return "CONTINUE"
	case unix.NFT_BREAK:
		return "BREAK"
	case unix.NFT_JUMP:
		return "JUMP"
	case unix.NFT_GOTO:
		return "GOTO"
	case unix.NFT_RETURN:
		return "RETURN"
	}
	if code < 0 {
		return fmt.Sprintf("VERDICT(%d)", code)
	}
	switch uint32(code) & nfVerdictMask {
	case nfDrop:
		return "DROP"
	case nfAccept:
		return "ACCEPT"
	case nfStolen:
		return "STOLEN"
	case nfQueue:
		return "QUEUE"
	case nfRepeat:
		return "REPEAT"
	case nfStop:
		return "STOP"
	}
	return fmt.Sprintf("VERDICT(%d)", code)
}

// familyName names a table family (NFPROTO_* in <linux/netfilter.h>) as nft does.
func familyName(f uint8) string {
	switch f {
	case unix.NFPROTO_INET:
		return "inet"
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_ARP:
		return "arp"
	case unix.NFPROTO_NETDEV:
		return "netdev"
	case unix.NFPROTO_BRIDGE:
		return "bridge"
	case unix.NFPROTO_IPV6:
		return "ip6"
	}
	return fmt.Sprintf("family(%d)", f)
}

// hookOf converts a base chain's hook number to decode.Hook. The ip, ip6, inet and bridge
// families number their hooks alike (NF_INET_* in <linux/netfilter.h>, NF_BR_* in
// <linux/netfilter_bridge.h>); arp and netdev hooks have no decode.Hook.
func hookOf(family uint8, hooknum uint32) decode.Hook {
	switch family {
	case unix.NFPROTO_INET, unix.NFPROTO_IPV4, unix.NFPROTO_IPV6, unix.NFPROTO_BRIDGE:
	default:
		return decode.HookUnknown
	}
	switch hooknum {
	case unix.NF_INET_PRE_ROUTING:
		return decode.HookPrerouting
	case unix.NF_INET_LOCAL_IN:
		return decode.HookInput
	case unix.NF_INET_FORWARD:
		return decode.HookForward
	case unix.NF_INET_LOCAL_OUT:
		return decode.HookOutput
	case unix.NF_INET_POST_ROUTING:
		return decode.HookPostrouting
	}
	return decode.HookUnknown
}
