package probes

import (
	"fmt"
	"slices"

	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Clause is one kind of packet a trace keeps ("which packets are ours"). The
// filter reads only what it needs to reject a packet: the start of the IP
// header, then L4Bytes of the L4 header for a clause whose protocol matches.
type Clause struct {
	// Name prefixes the clause's labels in the program.
	Name string
	// Proto4 and Proto6 are the IPv4 protocol and the IPv6 next header the
	// clause looks at; 0 leaves that family out.
	Proto4, Proto6 uint8
	// L4Bytes is how much of the L4 header Test reads, at most l4Max.
	L4Bytes int32
	// Test gets the family (4 or 6) and the stack offset of the L4 bytes. It
	// jumps to ours for a packet of ours, to next otherwise.
	Test func(family int, l4 int16, ours, next string) asm.Instructions
	// Fill copies what the record keeps of the L4 bytes, once the packet
	// is known to be ours and the record has been zeroed. Labels of its
	// own start with at, which is unique in the program.
	Fill func(family int, l4 int16, at string) asm.Instructions
}

// EchoClause keeps ICMP and ICMPv6 echo requests and replies of the run
// marked by id and cookie (see echoOurs).
func EchoClause(id uint16, cookie uint32) Clause {
	return Clause{
		Name:    "echo",
		Proto4:  1,
		Proto6:  58,
		L4Bytes: echoBytes(cookie),
		Test: func(family int, l4 int16, ours, next string) asm.Instructions {
			return note("echo id or cookie, then request or reply", echoTest(family, id, cookie, l4, ours, ours, next))
		},
		Fill: func(_ int, l4 int16, _ string) asm.Instructions { return icmpFields(id, l4, l4) },
	}
}

// echoBytes is how much of an echo message the echo clauses read: its
// header, and the cookie where there is one.
func echoBytes(cookie uint32) int32 {
	if cookie == 0 {
		return 8
	}
	return 12
}

// echoTest jumps to ours when the message at echo is an echo request or
// reply of the run (echoOurs), else to next. Its labels start with at.
func echoTest(family int, id uint16, cookie uint32, echo int16, at, ours, next string) asm.Instructions {
	return append(echoOurs(id, cookie, echo, at+"_echo", next), echoTypes(family, echo, at, ours, next)...)
}

// echoTypes jumps to ours when the message at echo is an echo request or
// reply, else to next. Its first instruction is labelled at+"_echo".
func echoTypes(family int, echo int16, at, ours, next string) asm.Instructions {
	request, reply := int32(8), int32(0)
	if family == 6 {
		request, reply = 128, 129
	}
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, echo, asm.Byte).WithSymbol(at + "_echo"),
		asm.JEq.Imm(asm.R1, request, ours),
		asm.JEq.Imm(asm.R1, reply, ours),
		asm.Ja.Label(next),
	}
}

// echoOurs jumps to match when the echo message at echo carries id, or,
// where cookie is not 0, when its payload starts with cookie (the first 4
// bytes of the pinger's): a NAT that rewrote the id (a masquerade with
// random ports) leaves the payload alone. Else it jumps to next.
func echoOurs(id uint16, cookie uint32, echo int16, match, next string) asm.Instructions {
	if cookie == 0 {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.RFP, echo+4, asm.Half),
			asm.JNE.Imm(asm.R1, wire(id), next),
		}
	}
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, echo+4, asm.Half),
		asm.JEq.Imm(asm.R1, wire(id), match),
		asm.LoadMem(asm.R1, asm.RFP, echo+8, asm.Word),
		asm.JNE.Imm32(asm.R1, wire32(cookie), next),
	}
}

// icmpFields copies the ICMP type at typ and the sequence of the echo
// message at echo into the record, with the run's echo id: the one the
// message carries, unless a NAT rewrote it.
func icmpFields(id uint16, typ, echo int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, typ, asm.Byte).WithSource(asm.Comment("ICMP type, the run's echo id, the sequence")),
		asm.StoreMem(asm.RFP, rec(decode.OffICMPType), asm.R1, asm.Byte),
		asm.StoreImm(asm.RFP, rec(decode.OffEchoID), int64(wire(id)), asm.Half),
		asm.LoadMem(asm.R1, asm.RFP, echo+6, asm.Half),
		asm.StoreMem(asm.RFP, rec(decode.OffSeq), asm.R1, asm.Half),
	}
}

// Where an ICMP error quotes a packet of ours: after its own 8-byte header,
// the quoted IP header (IPv4 without options: our echoes and SYNs carry
// none), then the quoted L4 header (an echo's ICMP header, a SYN's TCP
// header, whose first 8 bytes every error quotes).
const (
	quotedIP     = 8
	quotedL4v4   = quotedIP + ipv4HeaderLen
	quotedL4v6   = quotedIP + ipv6HeaderLen
	errorL4Bytes = quotedL4v6 + 8
)

// quotedL4 is the stack offset of the quoted L4 header of an error at l4.
func quotedL4(family int, l4 int16) int16 {
	if family == 4 {
		return l4 + quotedL4v4
	}
	return l4 + quotedL4v6
}

// quoting tests that the ICMP or ICMPv6 message at l4 is an error
// (unreachable, time exceeded, parameter problem, and ICMPv6's packet too
// big) quoting a packet of protocol proto, else jumps to next. Its labels
// start with at.
func quoting(family int, l4 int16, proto int32, at, next string) asm.Instructions {
	insns := asm.Instructions{asm.LoadMem(asm.R1, asm.RFP, l4, asm.Byte)}
	if family == 4 {
		return append(insns,
			asm.JEq.Imm(asm.R1, 3, at+"_type"),
			asm.JEq.Imm(asm.R1, 11, at+"_type"),
			asm.JNE.Imm(asm.R1, 12, next),
			asm.LoadMem(asm.R1, asm.RFP, l4+quotedIP, asm.Byte).WithSymbol(at+"_type"),
			asm.JNE.Imm(asm.R1, 0x45, next),
			asm.LoadMem(asm.R1, asm.RFP, l4+quotedIP+9, asm.Byte),
			asm.JNE.Imm(asm.R1, proto, next),
		)
	}
	return append(insns,
		asm.JEq.Imm(asm.R1, 0, next),
		asm.JGT.Imm(asm.R1, 4, next),
		asm.LoadMem(asm.R1, asm.RFP, l4+quotedIP+6, asm.Byte),
		asm.JNE.Imm(asm.R1, proto, next),
	)
}

// ErrorClause keeps ICMP and ICMPv6 errors whose quoted packet is an echo
// request or reply of the run marked by id and cookie (see echoOurs). The
// record takes the error's type, the run's echo id and the quoted echo's
// sequence.
func ErrorClause(id uint16, cookie uint32) Clause {
	return Clause{
		Name:    "error",
		Proto4:  1,
		Proto6:  58,
		L4Bytes: quotedL4v6 + echoBytes(cookie),
		Test: func(family int, l4 int16, ours, next string) asm.Instructions {
			proto := int32(58)
			if family == 4 {
				proto = 1
			}
			insns := note("an error quoting an echo of ours", quoting(family, l4, proto, ours, next))
			return append(insns, echoTest(family, id, cookie, quotedL4(family, l4), ours, ours, next)...)
		},
		Fill: func(family int, l4 int16, _ string) asm.Instructions {
			return icmpFields(id, l4, quotedL4(family, l4))
		},
	}
}

// tcpBytes is how much of a TCP header the TCP clause reads: up to its
// flags, byte 13 (RFC 9293).
const tcpBytes = 14

// TCPClause keeps the TCP packets of a run marked by m (decode.TCPMark):
// those whose key (decode.Key: the acknowledgement less one with ACK, the
// sequence number of a bare SYN, the sequence number less one otherwise)
// less the cookie is even and below the span. The record takes the
// protocol, the flags, the run's echo id and the probe's number.
func TCPClause(m decode.TCPMark) Clause {
	return Clause{
		Name:    "tcp",
		Proto4:  decode.ProtoTCP,
		Proto6:  decode.ProtoTCP,
		L4Bytes: tcpBytes,
		Test: func(_ int, l4 int16, ours, next string) asm.Instructions {
			insns := note("TCP: key - cookie, even and below the span", tcpKey(m, l4, ours+"_key"))
			return append(insns, inSpan(m, ours, next)...)
		},
		Fill: func(_ int, l4 int16, at string) asm.Instructions {
			insns := asm.Instructions{
				asm.LoadMem(asm.R1, asm.RFP, l4+13, asm.Byte).WithSource(asm.Comment("TCP: flags, echo id, probe = (key - cookie) / 2")),
				asm.StoreMem(asm.RFP, rec(decode.OffTCPFlags), asm.R1, asm.Byte),
			}
			insns = append(insns, tcpRecord(m)...)
			insns = append(insns, tcpKey(m, l4, at+"_key")...)
			return append(insns, probeSeq()...)
		},
	}
}

// tcpKey leaves in r2 the key of the TCP header at l4 less the cookie, as
// a u32: the acknowledgement with ACK, else the sequence number, less the
// cookie plus one unless it is a bare SYN. The key's last step is labelled
// key.
func tcpKey(m decode.TCPMark, l4 int16, key string) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, l4+13, asm.Byte),
		asm.Mov.Imm32(asm.R3, int32(m.Cookie+1)),
		asm.LoadMem(asm.R2, asm.RFP, l4+8, asm.Word).WithSource(asm.Comment("ACK: ack - (cookie + 1)")),
		asm.JSet.Imm(asm.R1, decode.TCPAck, key),
		asm.LoadMem(asm.R2, asm.RFP, l4+4, asm.Word).WithSource(asm.Comment("else seq - (cookie + 1), seq - cookie for a SYN")),
		asm.And.Imm(asm.R1, decode.TCPSyn),
		asm.RSh.Imm(asm.R1, 1),
		asm.Sub.Reg32(asm.R3, asm.R1),
		asm.HostTo(asm.BE, asm.R2, asm.Word).WithSymbol(key).WithSource(asm.Comment("be32, less cookie (+ 1)")),
		asm.Sub.Reg32(asm.R2, asm.R3),
	}
}

// inSpan jumps to ours when r2, a key less the cookie, is even and below
// the span, else to next.
func inSpan(m decode.TCPMark, ours, next string) asm.Instructions {
	return asm.Instructions{
		asm.JSet.Imm(asm.R2, 1, next),
		asm.JLT.Imm(asm.R2, int32(m.Span), ours),
		asm.Ja.Label(next),
	}
}

// tcpRecord marks the record as a TCP probe's, of the run's echo id.
func tcpRecord(m decode.TCPMark) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, rec(decode.OffProto), decode.ProtoTCP, asm.Byte),
		asm.StoreImm(asm.RFP, rec(decode.OffEchoID), int64(wire(m.EchoID)), asm.Half),
	}
}

// probeSeq stores r2, a key less the cookie, halved as the record's
// sequence, in network order as an echo's.
func probeSeq() asm.Instructions {
	return asm.Instructions{
		asm.RSh.Imm(asm.R2, 1).WithSource(asm.Comment("seq = be16((key - cookie) / 2)")),
		asm.HostTo(asm.BE, asm.R2, asm.Half),
		asm.StoreMem(asm.RFP, rec(decode.OffSeq), asm.R2, asm.Half),
	}
}

// TCPErrorClause keeps ICMP and ICMPv6 errors whose quoted packet is a TCP
// SYN of the run marked by m: its sequence number (bytes 4-7 of the quoted
// TCP header) is an ISN of the run. The record takes the error's type, the
// protocol, the run's echo id and the probe's number.
func TCPErrorClause(m decode.TCPMark) Clause {
	return Clause{
		Name:    "tcp_error",
		Proto4:  1,
		Proto6:  58,
		L4Bytes: errorL4Bytes,
		Test: func(family int, l4 int16, ours, next string) asm.Instructions {
			insns := note("an error quoting a SYN of ours", quoting(family, l4, decode.ProtoTCP, ours, next))
			insns = append(insns, quotedISN(m, family, l4)...)
			return append(insns, inSpan(m, ours, next)...)
		},
		Fill: func(family int, l4 int16, _ string) asm.Instructions {
			insns := asm.Instructions{
				asm.LoadMem(asm.R1, asm.RFP, l4, asm.Byte).WithSource(asm.Comment("ICMP type, echo id, probe = (ISN - cookie) / 2")),
				asm.StoreMem(asm.RFP, rec(decode.OffICMPType), asm.R1, asm.Byte),
			}
			insns = append(insns, tcpRecord(m)...)
			insns = append(insns, quotedISN(m, family, l4)...)
			return append(insns, probeSeq()...)
		},
	}
}

// quotedISN leaves in r2 the sequence number of the TCP header an error at
// l4 quotes, less the cookie, as a u32.
func quotedISN(m decode.TCPMark, family int, l4 int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R2, asm.RFP, quotedL4(family, l4)+4, asm.Word).WithSource(asm.Comment("be32(quoted seq) - cookie")),
		asm.HostTo(asm.BE, asm.R2, asm.Word),
		asm.Sub.Imm32(asm.R2, int32(m.Cookie)),
	}
}

// OursClauses are the clauses of a trace of the echoes of id and cookie:
// its echoes, and ICMP errors about them.
func OursClauses(id uint16, cookie uint32) []Clause {
	return []Clause{EchoClause(id, cookie), ErrorClause(id, cookie)}
}

// TCPClauses are the clauses of a trace of the TCP run marked by m: its
// packets, and ICMP errors about its SYNs.
func TCPClauses(m decode.TCPMark) []Clause { return []Clause{TCPClause(m), TCPErrorClause(m)} }

// Filter is the start of every packet program: from the skb in rSkb it
// rejects what none of its clauses keeps, reading as little as it can, and
// for a packet of ours zeroes the record, fills its packet part (family,
// length, packet bytes, addresses, the clause's fields) and goes on at label
// "ours".
type Filter struct {
	Offsets Offsets
	// Dir says where the network header is: transmit and receive paths set
	// skb->data differently.
	Dir     decode.Direction
	Clauses []Clause
	// Direct reads the skb's scalar fields with plain loads, where rSkb is
	// a BTF-typed pointer (tp_btf) the verifier lets the program
	// dereference, instead of a bpf_probe_read_kernel call each.
	Direct bool
}

// Program builds the filter: the outer pass, the tunnels it looks into,
// the inner pass, then the clauses both passes jump to.
func (f Filter) Program() asm.Instructions {
	insns := f.networkHeader()
	insns = append(insns, ipHeader(outerPass)...)
	insns = append(insns, f.ipv4(outerPass)...)
	insns = append(insns, f.ipv6(outerPass)...)
	insns = append(insns, f.tunnelTests()...)
	insns = append(insns, asm.Add.Reg(rNet, rInner).WithSymbol("decap").WithSource(asm.Comment("inner pass: net = the inner network header")))
	insns = append(insns, ipHeader(innerPass)...)
	insns = append(insns, f.ipv4(innerPass)...)
	insns = append(insns, f.ipv6(innerPass)...)
	for _, family := range []int{4, 6} {
		insns = append(insns, f.clauses(family)...)
	}
	return insns
}

// A pass of the filter over one IP header: the outer pass reads the
// packet as the device has it, the inner pass the packet a tunnel carries
// (one level deep). Labels of the inner pass start with its name.
type pass string

const (
	outerPass pass = ""
	innerPass pass = "inner_"
)

// networkHeader sets rNet to the address of the network header. The skb's
// pointers (data, head) are always copied with a probe read, so rNet is a
// plain number on every verifier: a plain load of a pointer field through a
// BTF-typed skb is a scalar to some verifiers and untrusted read-only memory
// to others (6.18 builds), which then refuse arithmetic and narrow spills of
// what is derived from it. Direct loads only the skb's scalar fields. What
// it reads stays in scratch0 and scratch1 until capture, which finds the
// outer network header again from them (outerHeader).
func (f Filter) networkHeader() asm.Instructions {
	o := f.Offsets
	if f.Dir == decode.In {
		// On receive, the link-layer header has been pulled: data is the network header.
		insns := note("net = skb->data", read(scratch0, 8, rSkb, int32(o.SkbData), "exit"))
		return append(insns, f.outerHeader(rNet)...)
	}
	// On transmit, data points at the link-layer header the device sends.
	insns := note("net = skb->head + skb->network_header", read(scratch0, 8, rSkb, int32(o.SkbHead), "exit"))
	if !f.Direct {
		insns = append(insns, read(scratch1, 2, rSkb, int32(o.SkbNetworkHeader), "exit")...)
	}
	return append(insns, f.outerHeader(rNet)...)
}

// outerHeader sets dst to the network header of the packet as the device
// has it, from what networkHeader read into scratch0 and scratch1.
func (f Filter) outerHeader(dst asm.Register) asm.Instructions {
	insns := asm.Instructions{asm.LoadMem(dst, asm.RFP, scratch0, asm.DWord)}
	switch {
	case f.Dir == decode.In:
		return insns
	case f.Direct:
		insns = append(insns, asm.LoadMem(asm.R1, rSkb, int16(f.Offsets.SkbNetworkHeader), asm.Half))
	default:
		insns = append(insns, asm.LoadMem(asm.R1, asm.RFP, scratch1, asm.Half))
	}
	return append(insns, asm.Add.Reg(dst, asm.R1))
}

// ipHeader reads the first ipBytes of the network header and branches on
// the IP version.
func ipHeader(p pass) asm.Instructions {
	insns := note(string(p)+"IP version", read(ipSlot, ipBytes, rNet, 0, "exit"))
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, ipSlot, asm.Byte),
		asm.RSh.Imm(asm.R1, 4),
		asm.JEq.Imm(asm.R1, 4, string(p)+"ipv4"),
		asm.JEq.Imm(asm.R1, 6, string(p)+"ipv6"),
		asm.Ja.Label("exit"),
	)
}

// ipv4 keeps first fragments, sets rL4Off and branches on the protocol.
func (f Filter) ipv4(p pass) asm.Instructions {
	options := string(p) + "ipv4_options"
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, ipSlot+6, asm.Half).WithSymbol(string(p) + "ipv4").WithSource(asm.Comment("IPv4: first fragment, header length, protocol")),
		asm.And.Imm(asm.R1, wire(0x1fff)),
		asm.JNE.Imm(asm.R1, 0, "exit"),
		asm.LoadMem(rL4Off, asm.RFP, ipSlot, asm.Byte),
		asm.And.Imm(rL4Off, 0xf),
		asm.LSh.Imm(rL4Off, 2),
		asm.JLT.Imm(rL4Off, 20, "exit"),
		asm.LoadMem(asm.R1, asm.RFP, ipSlot+9, asm.Byte),
		asm.JNE.Imm(rL4Off, ipv4HeaderLen, options),
	}
	insns = append(insns, f.protocols(4, p, true)...)
	insns = append(insns, f.tunnelProtocols(4, p, true)...)
	insns = append(insns, asm.Ja.Label("exit"))
	return append(insns, label(options, append(f.protocols(4, p, false), asm.Ja.Label("exit")))...)
}

// ipv6 walks up to ipv6ExtHeaders extension headers to a protocol a clause
// looks at, with rL4Off at its header.
func (f Filter) ipv6(p pass) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, ipSlot+6, asm.Byte).WithSymbol(string(p) + "ipv6").WithSource(asm.Comment("IPv6: walk extension headers")),
		asm.StoreMem(asm.RFP, nextHdr, asm.R1, asm.DWord),
		asm.Mov.Imm(rL4Off, 40),
	}
	for i := 0; i <= ipv6ExtHeaders; i++ {
		ext, opt, frag := fmt.Sprintf("%sext%d", p, i), fmt.Sprintf("%sopt%d", p, i), fmt.Sprintf("%sfrag%d", p, i)
		next := fmt.Sprintf("%sext%d", p, i+1)
		insns = append(insns, asm.LoadMem(asm.R1, asm.RFP, nextHdr, asm.DWord).WithSymbol(ext))
		insns = append(insns, f.protocols(6, p, i == 0)...)
		if i == ipv6ExtHeaders {
			insns = append(insns, asm.Ja.Label("exit"))
			break
		}
		insns = append(insns,
			asm.JEq.Imm(asm.R1, 44, frag),
			asm.JEq.Imm(asm.R1, 0, opt),
			asm.JEq.Imm(asm.R1, 43, opt),
			asm.JEq.Imm(asm.R1, 60, opt),
		)
		insns = append(insns, f.tunnelProtocols(6, p, i == 0)...)
		insns = append(insns, asm.Ja.Label("exit"))
		// Hop-by-hop, routing, destination options: length in 8-byte units, minus one.
		insns = append(insns, label(opt, readL4(scratch2, 2, 0, "exit"))...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
			asm.StoreMem(asm.RFP, nextHdr, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, scratch2+1, asm.Byte),
			asm.Add.Imm(asm.R1, 1),
			asm.LSh.Imm(asm.R1, 3),
			asm.Add.Reg(rL4Off, asm.R1),
			asm.Ja.Label(next),
		)
		// Fragment header: only the first fragment holds the L4 header.
		insns = append(insns, label(frag, readL4(scratch2, 8, 0, "exit"))...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, scratch2+2, asm.Half),
			asm.And.Imm(asm.R1, wire(0xfff8)),
			asm.JNE.Imm(asm.R1, 0, "exit"),
			asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
			asm.StoreMem(asm.RFP, nextHdr, asm.R1, asm.DWord),
			asm.Add.Imm(rL4Off, 8),
			asm.Ja.Label(next),
		)
	}
	return insns
}

// Where the L4 header starts when the IP header has no options or extension
// headers: the L4 bytes are then already in ipSlot.
const (
	ipv4HeaderLen = 20
	ipv6HeaderLen = 40
)

// protocols jumps to the first clause of the family whose protocol is in r1.
// fixed says the L4 header is right after a bare IP header. On the outer
// pass, that is also where a tunnel is looked into: UDP goes to the tunnel
// ports' test before the UDP clauses (tunnelProtocols has the others).
func (f Filter) protocols(family int, p pass, fixed bool) asm.Instructions {
	var insns asm.Instructions
	seen := map[uint8]bool{}
	for _, c := range f.Clauses {
		proto := c.proto(family)
		if proto == 0 || seen[proto] {
			continue
		}
		seen[proto] = true
		target := f.firstClause(proto, family, fixed, 0)
		if p == outerPass && fixed && proto == decode.ProtoUDP {
			target = tunnelLabel("udp", family)
		}
		insns = append(insns, asm.JEq.Imm(asm.R1, int32(proto), target))
	}
	return insns
}

// tunnelProtocols jumps to the tunnel test of the protocol in r1, on the
// outer pass past a bare IP header, for the protocols no clause has.
func (f Filter) tunnelProtocols(family int, p pass, fixed bool) asm.Instructions {
	if p != outerPass || !fixed {
		return nil
	}
	var insns asm.Instructions
	for _, t := range tunnels {
		if !slices.ContainsFunc(f.Clauses, func(c Clause) bool { return c.proto(family) == t.proto }) {
			insns = append(insns, asm.JEq.Imm(asm.R1, int32(t.proto), tunnelLabel(t.block, family)))
		}
	}
	return insns
}

// firstClause is the label of the first clause from the from'th on whose
// protocol of the family is proto, "exit" if there is none.
func (f Filter) firstClause(proto uint8, family int, fixed bool, from int) string {
	for j := from; j < len(f.Clauses); j++ {
		if c := f.Clauses[j]; c.proto(family) == proto {
			return clauseLabel(j, family, f.inIPSlot(c, family, fixed))
		}
	}
	return "exit"
}

func (c Clause) proto(family int) uint8 {
	if family == 4 {
		return c.Proto4
	}
	return c.Proto6
}

// inIPSlot says whether the clause's L4 bytes were read with the IP header.
func (f Filter) inIPSlot(c Clause, family int, fixed bool) bool {
	return fixed && fixedL4(family)+int(c.L4Bytes) <= ipBytes
}

func fixedL4(family int) int {
	if family == 4 {
		return ipv4HeaderLen
	}
	return ipv6HeaderLen
}

func clauseLabel(i, family int, inIPSlot bool) string {
	if inIPSlot {
		return fmt.Sprintf("clause%d_%d_fixed", i, family)
	}
	return fmt.Sprintf("clause%d_%d", i, family)
}

// clauses emits each clause of the family twice: with its L4 bytes in
// ipSlot already, and reading them into l4Slot. A failed test tries the next
// clause of the same protocol, else exits; a match fills the record and
// jumps to "ours".
func (f Filter) clauses(family int) asm.Instructions {
	var insns asm.Instructions
	for _, fixed := range []bool{true, false} {
		for i, c := range f.Clauses {
			proto := c.proto(family)
			if proto == 0 || (fixed && !f.inIPSlot(c, family, true)) {
				continue
			}
			next := f.firstClause(proto, family, fixed, i+1)
			here := clauseLabel(i, family, fixed)
			ours := here + "_ours"
			l4 := int16(l4Slot)
			var start asm.Instructions
			if fixed {
				l4 = int16(ipSlot + fixedL4(family))
				start = note(c.Name+": the L4 header, read with the IP header", c.Test(family, l4, ours, next))
			} else {
				start = note(c.Name+": read the L4 header", readL4(l4Slot, c.L4Bytes, 0, next))
				start = append(start, c.Test(family, l4, ours, next)...)
			}
			insns = append(insns, label(here, start)...)
			insns = append(insns, label(ours, f.capture(family, here))...)
			insns = append(insns, c.Fill(family, l4, here+"_fill")...)
			insns = append(insns, asm.Ja.Label("ours"))
		}
	}
	return insns
}

// capture zeroes the record and fills its packet part: family, length, the
// offset of the inner network header when the packet came out of a tunnel
// (rNet less the outer header), up to PacketBytes of the linear data from
// the outer network header on, and the addresses of the IP header in
// ipSlot: the inner one's, for a packet in a tunnel.
func (f Filter) capture(family int, block string) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(asm.R1, 0).WithSource(asm.Comment("ours: zero the record"))}
	for off := int16(recOff); off < 0; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	insns = append(insns, asm.StoreImm(asm.RFP, rec(decode.OffFamily), int64(family), asm.Byte))
	insns = append(insns, read(rec(decode.OffLen), 4, rSkb, int32(f.Offsets.SkbLen), "exit")...)
	insns = append(insns, note("tunnel = net - the outer network header", f.outerHeader(rOuter))...)
	insns = append(insns,
		asm.Mov.Reg(asm.R1, rNet),
		asm.Sub.Reg(asm.R1, rOuter),
		asm.StoreMem(asm.RFP, rec(decode.OffTunnel), asm.R1, asm.Half),
	)
	insns = append(insns, f.packetBytes(block+"_caplen")...)
	return append(insns, addresses(family, ipSlot)...)
}

// addresses copies the source and destination addresses from an IP header
// on the stack at hdr to the record.
func addresses(family int, hdr int16) asm.Instructions {
	if family == 4 {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.RFP, hdr+12, asm.Word),
			asm.StoreMem(asm.RFP, rec(decode.OffSrc), asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.RFP, hdr+16, asm.Word),
			asm.StoreMem(asm.RFP, rec(decode.OffDst), asm.R1, asm.Word),
		}
	}
	var insns asm.Instructions
	for i := int16(0); i < 16; i += 8 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, hdr+8+i, asm.DWord),
			asm.StoreMem(asm.RFP, rec(decode.OffSrc)+i, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, hdr+24+i, asm.DWord),
			asm.StoreMem(asm.RFP, rec(decode.OffDst)+i, asm.R1, asm.DWord),
		)
	}
	return insns
}

// packetBytes copies caplen = skb->len - skb->data_len - (outer - data)
// bytes, at most PacketBytes, from the outer network header into the record;
// done is a label of its own.
func (f Filter) packetBytes(done string) asm.Instructions {
	o := f.Offsets
	insns := note("caplen = skb->len - skb->data_len - (outer - data)", read(scratch0, 8, rSkb, int32(o.SkbData), "exit"))
	insns = append(insns, read(scratch1, 4, rSkb, int32(o.SkbDataLen), "exit")...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, rec(decode.OffLen), asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, scratch1, asm.Word),
		asm.Sub.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R2, rOuter),
		asm.LoadMem(asm.R3, asm.RFP, scratch0, asm.DWord),
		asm.Sub.Reg(asm.R2, asm.R3),
		asm.Sub.Reg(asm.R1, asm.R2),
		asm.JSLE.Imm(asm.R1, 0, "exit"),
		asm.JLE.Imm(asm.R1, decode.PacketBytes, done),
		asm.Mov.Imm(asm.R1, decode.PacketBytes),
		asm.StoreMem(asm.RFP, rec(decode.OffCapLen), asm.R1, asm.Half).WithSymbol(done),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(pkt(0))),
		asm.Mov.Reg(asm.R3, rOuter),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "exit"),
	)
}
