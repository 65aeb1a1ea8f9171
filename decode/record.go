package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Layout of the raw record the BPF programs emit through bpf_perf_event_output.
// The programs are built from these offsets (package probes), so this block is
// the single definition of the format; all integers are in host byte order
// except EchoID and Seq, which are copied from the packet in network order.
const (
	OffTime     = 0  // u64 bpf_ktime_get_ns (CLOCK_MONOTONIC)
	OffSkb      = 8  // u64 skb address
	OffNetns    = 16 // u32 network namespace inode of skb->dev
	OffIfindex  = 20 // u32 skb->dev->ifindex
	OffLen      = 24 // u32 skb->len
	OffCPU      = 28 // u32 bpf_get_smp_processor_id
	OffProbe    = 32 // u16 probe id
	OffFamily   = 34 // u8 4 or 6
	OffICMPType = 35 // u8
	OffEchoID   = 36 // u16, network byte order
	OffSeq      = 38 // u16, network byte order
	OffIfname   = 40 // [16]byte skb->dev->name
	OffSrc      = 56 // [16]byte; IPv4 uses the first 4
	OffDst      = 72 // [16]byte
	OffCapLen   = 88 // u16 valid bytes in Packet
	OffProto    = 90 // u8 the probe's protocol (ProtoTCP, ProtoUDP); 0 for an echo's packets and errors
	OffTCPFlags = 91 // u8 TCP flags of a TCP packet of ours, UDPAnswer for a UDP answer; 0 for ICMP
	OffTunnel   = 92 // u16 offset in Packet of the inner network header of a packet seen inside a tunnel; 0 for one that is not
	OffPacket   = 96 // [PacketBytes]byte from the network header on
	PacketBytes = 128
	// The drop probe's fields; zero in the records of other probes.
	OffDropLocation = OffPacket + PacketBytes // u64 kernel address that freed the skb
	OffDropReason   = OffDropLocation + 8     // u32 enum skb_drop_reason; 0 where the kernel has none
	RecordSize      = OffDropReason + 8       // 4 bytes of padding keep records 8-byte aligned
)

// Layout of a netfilter record, which the netfilter probes (kprobes) emit
// instead: the header of a device record up to OffCapLen, then what the
// netfilter function saw, NFInfoBytes from OffNFInfo on. The probe id says
// which of the two layouts a record has.
const (
	OffNFInfo    = 96
	OffNFTable   = OffNFInfo      // [32]byte table name
	OffNFChain   = OffNFInfo + 32 // [32]byte chain name (nftables; empty for iptables)
	OffNFVerdict = OffNFInfo + 64 // u32 the function's return value (NF_DROP, NF_ACCEPT...)
	OffNFHook    = OffNFInfo + 68 // u8 nf_hook_state.hook (NF_INET_*)
	OffNFFamily  = OffNFInfo + 69 // u8 table family (NFPROTO_*)
	OffNFIif     = OffNFInfo + 72 // u32 ifindex of nf_hook_state.in, 0 if none
	OffNFOif     = OffNFInfo + 76 // u32 ifindex of nf_hook_state.out, 0 if none
	NFInfoBytes  = 80
	NFRecordSize = OffNFInfo + NFInfoBytes
)

// NFInfo is what a netfilter function saw of a packet: the part of a
// netfilter record after its header. Must match the layout at OffNFInfo.
type NFInfo struct {
	Table   [32]byte
	Chain   [32]byte
	Verdict uint32
	Hook    uint8
	Family  uint8
	Iif     uint32
	Oif     uint32
}

// Decode reads NFInfoBytes of b, laid out as at OffNFInfo.
func (n *NFInfo) Decode(b []byte) {
	ne := binary.NativeEndian
	b = b[:NFInfoBytes]
	copy(n.Table[:], b[OffNFTable-OffNFInfo:])
	copy(n.Chain[:], b[OffNFChain-OffNFInfo:])
	n.Verdict = ne.Uint32(b[OffNFVerdict-OffNFInfo:])
	n.Hook = b[OffNFHook-OffNFInfo]
	n.Family = b[OffNFFamily-OffNFInfo]
	n.Iif = ne.Uint32(b[OffNFIif-OffNFInfo:])
	n.Oif = ne.Uint32(b[OffNFOif-OffNFInfo:])
}

// Put writes n into the first NFInfoBytes of b, laid out as at OffNFInfo.
func (n *NFInfo) Put(b []byte) {
	ne := binary.NativeEndian
	b = b[:NFInfoBytes]
	clear(b)
	copy(b[OffNFTable-OffNFInfo:], n.Table[:])
	copy(b[OffNFChain-OffNFInfo:], n.Chain[:])
	ne.PutUint32(b[OffNFVerdict-OffNFInfo:], n.Verdict)
	b[OffNFHook-OffNFInfo] = n.Hook
	b[OffNFFamily-OffNFInfo] = n.Family
	ne.PutUint32(b[OffNFIif-OffNFInfo:], n.Iif)
	ne.PutUint32(b[OffNFOif-OffNFInfo:], n.Oif)
}

// Record is one probe hit: a packet of our echo seen at one point in the kernel.
type Record struct {
	Time     uint64 // kernel CLOCK_MONOTONIC, ns
	Skb      uint64
	Netns    uint32
	Ifindex  uint32
	Len      uint32
	CPU      uint32
	Probe    Probe
	Family   uint8
	ICMPType uint8
	EchoID   uint16
	Seq      uint16
	Ifname   [16]byte
	Src, Dst netip.Addr
	// Proto is ProtoTCP or ProtoUDP for the packets of a TCP or UDP probe
	// and the ICMP errors quoting one (then ICMPType is the error's type), 0
	// for an echo's. TCPFlags are the flags of a TCP packet, UDPAnswer for
	// a UDP datagram answering ours.
	Proto    uint8
	TCPFlags uint8
	// Tunnel, when not zero, says the packet of ours was seen inside a
	// tunnel: Src, Dst and the fields above are the inner packet's, Packet
	// starts at the outer network header and Tunnel is where the inner one
	// starts in it (possibly past what was captured). See Record.Encap.
	Tunnel uint16
	// CapLen and Packet are the packet bytes of a device record.
	CapLen uint16
	Packet [PacketBytes]byte
	// Location and Reason are what skb:kfree_skb said of a freed packet
	// (ProbeKfreeSkb): the kernel address that freed it and the enum
	// skb_drop_reason value, 0 on kernels without reasons. Recordings do not
	// keep them: the journey's Drop holds them resolved to names.
	Location uint64
	Reason   uint32
	// NF is what the function of a netfilter record saw (IsNetfilter).
	NF NFInfo
	// Lost, when not zero, makes this a notice from the ring of CPU that
	// it dropped that many records; the other fields are then unset.
	Lost uint64
}

// ErrShortRecord is returned for a record smaller than its layout
// (RecordSize, or NFRecordSize for a netfilter record).
var ErrShortRecord = errors.New("short record")

// Decode parses a raw device or netfilter record into r. Trailing bytes
// (perf pads raw samples to 8 bytes) are ignored.
func (r *Record) Decode(b []byte) error {
	ne := binary.NativeEndian
	size := RecordSize
	if len(b) >= OffProbe+2 && Probe(ne.Uint16(b[OffProbe:])).Kprobe() != "" {
		size = NFRecordSize
	}
	if len(b) < size {
		return fmt.Errorf("%w: %d bytes, want %d", ErrShortRecord, len(b), size)
	}
	r.Lost = 0
	r.Time = ne.Uint64(b[OffTime:])
	r.Skb = ne.Uint64(b[OffSkb:])
	r.Netns = ne.Uint32(b[OffNetns:])
	r.Ifindex = ne.Uint32(b[OffIfindex:])
	r.Len = ne.Uint32(b[OffLen:])
	r.CPU = ne.Uint32(b[OffCPU:])
	r.Probe = Probe(ne.Uint16(b[OffProbe:]))
	r.Family = b[OffFamily]
	r.ICMPType = b[OffICMPType]
	r.EchoID = binary.BigEndian.Uint16(b[OffEchoID:])
	r.Seq = binary.BigEndian.Uint16(b[OffSeq:])
	r.Proto = b[OffProto]
	r.TCPFlags = b[OffTCPFlags]
	r.Tunnel = ne.Uint16(b[OffTunnel:])
	copy(r.Ifname[:], b[OffIfname:OffIfname+16])
	switch r.Family {
	case 4:
		r.Src = netip.AddrFrom4([4]byte(b[OffSrc : OffSrc+4]))
		r.Dst = netip.AddrFrom4([4]byte(b[OffDst : OffDst+4]))
	case 6:
		r.Src = netip.AddrFrom16([16]byte(b[OffSrc : OffSrc+16]))
		r.Dst = netip.AddrFrom16([16]byte(b[OffDst : OffDst+16]))
	default:
		return fmt.Errorf("bad address family %d", r.Family)
	}
	if r.IsNetfilter() {
		r.CapLen, r.Location, r.Reason = 0, 0, 0
		clear(r.Packet[:])
		r.NF.Decode(b[OffNFInfo:])
		return nil
	}
	r.NF = NFInfo{}
	r.CapLen = ne.Uint16(b[OffCapLen:])
	if r.CapLen > PacketBytes {
		return fmt.Errorf("captured length %d exceeds %d", r.CapLen, PacketBytes)
	}
	copy(r.Packet[:], b[OffPacket:OffPacket+PacketBytes])
	r.Location = ne.Uint64(b[OffDropLocation:])
	r.Reason = ne.Uint32(b[OffDropReason:])
	return nil
}

// Inner is the captured bytes of the packet of ours from its network
// header on: past the outer headers of a packet in a tunnel, none if the
// capture ends before it.
func (r *Record) Inner() []byte {
	if int(r.Tunnel) > int(r.CapLen) {
		return nil
	}
	return r.Packet[r.Tunnel:r.CapLen]
}

// IfName is the interface name as the kernel had it when the probe fired.
func (r *Record) IfName() string { return cString(r.Ifname[:]) }

// cString is the NUL-terminated string at the start of b.
func cString(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// IPLen is the length of the captured (outer) IP packet as its header says:
// IPv4's total length, IPv6's payload length and fixed header. skb->len
// (Len) also counts the link-layer header where the packet was seen with
// it. 0 when the capture does not hold the field.
func (r *Record) IPLen() uint32 {
	p := r.Packet[:min(int(r.CapLen), len(r.Packet))]
	switch {
	case len(p) >= 4 && p[0]>>4 == 4:
		return uint32(binary.BigEndian.Uint16(p[2:]))
	case len(p) >= 6 && p[0]>>4 == 6:
		return 40 + uint32(binary.BigEndian.Uint16(p[4:]))
	}
	return 0
}

// IsRequest reports whether the record carries an echo request or a TCP
// probe's own packet (else a reply, or an ICMP error quoting one).
func (r *Record) IsRequest() bool { return isRequest(r.Proto, r.ICMPType, r.TCPFlags) }

// isRequest reports whether a packet of ours is the prober's own: an echo
// request, or a TCP probe's SYN or RST.
func isRequest(proto, icmpType, tcpFlags uint8) bool {
	switch {
	case icmpType != 0:
	case proto == ProtoTCP:
		return IsTCPRequest(tcpFlags)
	case proto == ProtoUDP:
		return tcpFlags&UDPAnswer == 0
	}
	return isEchoRequest(icmpType)
}

// isEchoRequest reports whether an ICMP or ICMPv6 type is an echo request.
func isEchoRequest(icmpType uint8) bool { return icmpType == 8 || icmpType == 128 }

// IsError reports whether the record carries an ICMP error quoting our echo.
func (r *Record) IsError() bool { return isICMPError(r.Family, r.ICMPType) }

// IsFree reports whether the record comes from the drop probe.
func (r *Record) IsFree() bool { return r.Probe == ProbeKfreeSkb }

// Probe identifies where in the kernel a record was taken.
type Probe uint16

// Probes. The numbers are part of the record format: never reuse one.
const (
	ProbeNetDevQueue     Probe = 1 // net:net_dev_queue, a device is handed a packet to send
	ProbeNetifReceiveSkb Probe = 2 // net:netif_receive_skb, a device's packet enters the stack
	ProbeIptDoTable      Probe = 3 // kprobe ipt_do_table: an iptables-legacy IPv4 table
	ProbeIp6tDoTable     Probe = 4 // kprobe ip6t_do_table: an iptables-legacy IPv6 table
	ProbeNftDoChain      Probe = 5 // kprobe nft_do_chain: an nftables base chain
	ProbeKfreeSkb        Probe = 6 // skb:kfree_skb, a packet is freed (dropped, or a copy discarded)
)

// Direction says whether a probe sees packets leaving or entering a device.
type Direction uint8

const (
	Out Direction = iota
	In
	// Freed is the drop probe's: the packet is freed wherever it was.
	Freed
)

func (d Direction) String() string {
	switch d {
	case In:
		return "in"
	case Freed:
		return "drop"
	}
	return "out"
}

type probeInfo struct {
	group, event string // tracepoint
	dir          Direction
	kprobe       string // kernel function, for netfilter probes
}

var probes = map[Probe]probeInfo{
	ProbeNetDevQueue:     {group: "net", event: "net_dev_queue", dir: Out},
	ProbeNetifReceiveSkb: {group: "net", event: "netif_receive_skb", dir: In},
	ProbeIptDoTable:      {kprobe: "ipt_do_table"},
	ProbeIp6tDoTable:     {kprobe: "ip6t_do_table"},
	ProbeNftDoChain:      {kprobe: "nft_do_chain"},
	ProbeKfreeSkb:        {group: "skb", event: "kfree_skb", dir: Freed},
}

// Probes lists the tracepoint probes in id order: the device probes, then
// the drop probe.
func Probes() []Probe {
	return []Probe{ProbeNetDevQueue, ProbeNetifReceiveSkb, ProbeKfreeSkb}
}

// NetfilterProbes lists the netfilter probes (kprobes) in id order.
func NetfilterProbes() []Probe {
	return []Probe{ProbeIptDoTable, ProbeIp6tDoTable, ProbeNftDoChain}
}

// Kprobe returns the kernel function of a netfilter probe, "" for others.
func (p Probe) Kprobe() string { return probes[p].kprobe }

// Tracepoint returns the tracefs group and event of the probe.
func (p Probe) Tracepoint() (group, event string) {
	i := probes[p]
	return i.group, i.event
}

// Direction is the way packets cross the device where the probe fires.
func (p Probe) Direction() Direction { return probes[p].dir }

func (p Probe) String() string {
	if i, ok := probes[p]; ok {
		if i.kprobe != "" {
			return i.kprobe
		}
		return i.event
	}
	return fmt.Sprintf("probe%d", uint16(p))
}
