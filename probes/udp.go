package probes

import (
	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// TupleMap is the reference name of a UDP trace's tuple map: an LRU hash
// whose keys are the tuples its requests were seen with, at every hop (so
// before and after each NAT), and whose values are the requests' probe
// numbers. A datagram whose tuple is one of them inverted answers a request
// of ours, whichever ports and addresses a NAT gave it. One map serves every
// program of a trace.
const TupleMap = "udp_tuples"

// TupleEntries bounds the tuples a trace keeps: the oldest go first.
const TupleEntries = 1024

// A tuple, the tuple map's key: the family (4 or 6) as a u32, then the
// source and destination ports, and the source and destination
// addresses, 16 bytes each (IPv4 in the first 4, the rest zero).
const (
	tupleSport = 4
	tupleDport = 6
	tupleSrc   = 8
	tupleDst   = tupleSrc + 16
	tupleLen   = tupleDst + 16
)

// tupleSeqLen is the size of the tuple map's values: a probe number, in
// network order as a record's Seq.
const tupleSeqLen = 2

// TupleMapSpec describes the tuple map.
func TupleMapSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name: "tracepkt_udp", Type: ebpf.LRUHash, KeySize: tupleLen,
		ValueSize: tupleSeqLen, MaxEntries: TupleEntries,
	}
}

// udpHeaderLen is the length of a UDP header, which the UDP clauses read:
// ports and length.
const udpHeaderLen = 8

// UDPReplyClause keeps UDP datagrams answering a request of the run marked
// by m: those whose tuple, inverted, is in the tuple map. It comes before
// UDPClause, so that a reply that echoes the request's payload, mark and
// all, is a reply. The record takes the protocol, UDPAnswer, the run's echo
// id and the probe number the map holds.
func UDPReplyClause(m decode.UDPMark) Clause {
	return Clause{
		Name:    "udp_reply",
		Proto4:  decode.ProtoUDP,
		Proto6:  decode.ProtoUDP,
		L4Bytes: udpHeaderLen,
		Test: func(family int, l4 int16, ours, next string) asm.Instructions {
			insns := note("UDP reply: the inverted tuple is a request's", tuple(family, l4, true))
			insns = append(insns, tupleMapKey()...)
			return append(insns,
				asm.FnMapLookupElem.Call(),
				asm.JEq.Imm(asm.R0, 0, next),
				asm.LoadMem(asm.R1, asm.R0, 0, asm.Half).WithSource(asm.Comment("its probe, where a mark has it")),
				asm.StoreMem(asm.RFP, markSlot+4, asm.R1, asm.Half),
				asm.Ja.Label(ours),
			)
		},
		Fill: func(int, int16, string) asm.Instructions { return udpRecord(m, decode.UDPAnswer) },
	}
}

// UDPClause keeps the requests of the run marked by m: UDP datagrams whose
// payload carries the mark's cookie and echo id at m.Offset. The record
// takes the protocol, the run's echo id and the mark's probe number, and
// the tuple map the datagram's tuple as seen here.
func UDPClause(m decode.UDPMark) Clause {
	return Clause{
		Name:    "udp",
		Proto4:  decode.ProtoUDP,
		Proto6:  decode.ProtoUDP,
		L4Bytes: udpHeaderLen,
		Test: func(_ int, l4 int16, ours, next string) asm.Instructions {
			end := udpHeaderLen + int32(m.Offset)
			insns := asm.Instructions{
				asm.LoadMem(asm.R1, asm.RFP, l4+4, asm.Half).WithSource(asm.Comment("UDP request: long enough for a mark, the mark's")),
				asm.HostTo(asm.BE, asm.R1, asm.Half),
				asm.JLT.Imm(asm.R1, end+decode.MarkLen, next),
			}
			return append(insns, markTest(m, end, ours, next)...)
		},
		Fill: func(family int, l4 int16, _ string) asm.Instructions {
			insns := udpRecord(m, 0)
			insns = append(insns, note("keep the tuple: its replies are ours", tuple(family, l4, false))...)
			insns = append(insns, tupleMapKey()...)
			return append(insns,
				asm.Mov.Reg(asm.R3, asm.RFP),
				asm.Add.Imm(asm.R3, int32(rec(decode.OffSeq))),
				asm.Mov.Imm(asm.R4, 0).WithSource(asm.Comment("BPF_ANY")),
				asm.FnMapUpdateElem.Call(),
			)
		},
	}
}

// UDPErrorClause keeps ICMP and ICMPv6 errors quoting a request of the run
// marked by m: the quoted datagram's payload carries the mark. The record
// takes the error's type, the protocol, the run's echo id and the mark's
// probe number.
func UDPErrorClause(m decode.UDPMark) Clause {
	return Clause{
		Name:    "udp_error",
		Proto4:  1,
		Proto6:  58,
		L4Bytes: errorL4Bytes,
		Test: func(family int, l4 int16, ours, next string) asm.Instructions {
			insns := note("an error quoting a UDP request of ours", quoting(family, l4, decode.ProtoUDP, ours, next))
			end := int32(quotedL4(family, 0)) + udpHeaderLen + int32(m.Offset)
			insns = append(insns, holds(family, end+decode.MarkLen, next)...)
			return append(insns, markTest(m, end, ours, next)...)
		},
		Fill: func(_ int, l4 int16, _ string) asm.Instructions {
			insns := asm.Instructions{
				asm.LoadMem(asm.R1, asm.RFP, l4, asm.Byte).WithSource(asm.Comment("ICMP type")),
				asm.StoreMem(asm.RFP, rec(decode.OffICMPType), asm.R1, asm.Byte),
			}
			return append(insns, udpRecord(m, 0)...)
		},
	}
}

// holds jumps to next unless the IP packet in ipSlot, by its length, holds
// the first end bytes from the offset in rFrom: an error quotes as much of a datagram as fits, and bytes past a
// packet's end are whatever the buffer held before.
func holds(family int, end int32, next string) asm.Instructions {
	if family == 4 {
		return asm.Instructions{
			asm.LoadMem(asm.R1, asm.RFP, ipSlot+2, asm.Half).WithSource(asm.Comment("the packet holds them: total length - offset")),
			asm.HostTo(asm.BE, asm.R1, asm.Half),
			asm.Sub.Reg(asm.R1, rFrom),
			asm.JSLT.Imm(asm.R1, end, next),
		}
	}
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, ipSlot+4, asm.Half).WithSource(asm.Comment("the packet holds them: 40 + payload length - offset")),
		asm.HostTo(asm.BE, asm.R1, asm.Half),
		asm.Add.Imm(asm.R1, ipv6HeaderLen),
		asm.Sub.Reg(asm.R1, rFrom),
		asm.JSLT.Imm(asm.R1, end, next),
	}
}

// markTest reads the MarkLen bytes at off from the L4 header into markSlot
// (a mark sits past what a clause reads of the L4 header) and jumps to ours
// if they carry m's cookie and echo id, else to next.
func markTest(m decode.UDPMark, off int32, ours, next string) asm.Instructions {
	insns := note("the mark: cookie and echo id", readL4(markSlot, decode.MarkLen, off, next))
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, markSlot, asm.Word),
		asm.JNE.Imm32(asm.R1, wire32(m.Cookie), next),
		asm.LoadMem(asm.R1, asm.RFP, markSlot+6, asm.Half),
		asm.JEq.Imm(asm.R1, wire(m.EchoID), ours),
		asm.Ja.Label(next),
	)
}

// udpRecord marks the record as a UDP probe's, of the run's echo id, with
// flags, and takes the probe number from markSlot: a mark's, or the one the
// tuple map held for a reply.
func udpRecord(m decode.UDPMark, flags uint8) asm.Instructions {
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, rec(decode.OffProto), decode.ProtoUDP, asm.Byte).WithSource(asm.Comment("UDP: echo id, probe, answer or not")),
		asm.StoreImm(asm.RFP, rec(decode.OffEchoID), int64(wire(m.EchoID)), asm.Half),
		asm.LoadMem(asm.R1, asm.RFP, markSlot+4, asm.Half),
		asm.StoreMem(asm.RFP, rec(decode.OffSeq), asm.R1, asm.Half),
	}
	if flags != 0 {
		insns = append(insns, asm.StoreImm(asm.RFP, rec(decode.OffTCPFlags), int64(flags), asm.Byte))
	}
	return insns
}

// tupleMapKey sets a map helper's first two arguments: the tuple map, and
// the tuple at tupleKey.
func tupleMapKey() asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(TupleMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, tupleKey),
	}
}

// tuple writes at tupleKey the tuple of the datagram whose IP header is in
// ipSlot and UDP header at l4, source and destination swapped if inverted.
func tuple(family int, l4 int16, inverted bool) asm.Instructions {
	sport, dport, src, dst := int16(tupleSport), int16(tupleDport), int16(tupleSrc), int16(tupleDst)
	if inverted {
		sport, dport, src, dst = dport, sport, dst, src
	}
	insns := asm.Instructions{
		asm.StoreImm(asm.RFP, tupleKey, int64(family), asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, l4, asm.Half),
		asm.StoreMem(asm.RFP, tupleKey+sport, asm.R1, asm.Half),
		asm.LoadMem(asm.R1, asm.RFP, l4+2, asm.Half),
		asm.StoreMem(asm.RFP, tupleKey+dport, asm.R1, asm.Half),
	}
	if family == 4 {
		insns = append(insns, asm.Mov.Imm(asm.R1, 0))
		for off := int16(tupleSrc); off < tupleLen; off += 8 {
			insns = append(insns, asm.StoreMem(asm.RFP, tupleKey+off, asm.R1, asm.DWord))
		}
		return append(insns,
			asm.LoadMem(asm.R1, asm.RFP, ipSlot+12, asm.Word),
			asm.StoreMem(asm.RFP, tupleKey+src, asm.R1, asm.Word),
			asm.LoadMem(asm.R1, asm.RFP, ipSlot+16, asm.Word),
			asm.StoreMem(asm.RFP, tupleKey+dst, asm.R1, asm.Word),
		)
	}
	for i := int16(0); i < 16; i += 8 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, ipSlot+8+i, asm.DWord),
			asm.StoreMem(asm.RFP, tupleKey+src+i, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, ipSlot+24+i, asm.DWord),
			asm.StoreMem(asm.RFP, tupleKey+dst+i, asm.R1, asm.DWord),
		)
	}
	return insns
}

// UDPClauses are the clauses of a trace of the UDP run marked by m: answers
// to its requests (tested first), its requests, and ICMP errors about them.
func UDPClauses(m decode.UDPMark) []Clause {
	return []Clause{UDPReplyClause(m), UDPClause(m), UDPErrorClause(m)}
}
