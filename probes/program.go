package probes

import (
	"encoding/binary"
	"slices"

	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// EventsMap is the reference name of the perf event array the programs write to.
const EventsMap = "events"

// ProgramParams is everything a device probe program depends on.
type ProgramParams struct {
	Offsets Offsets
	// SkbOffset is where the program's context holds the skb pointer: the
	// skbaddr field of a perf tracepoint's raw record, or 8 times the skb's
	// argument index for a raw tracepoint (its context is the u64 arguments).
	SkbOffset int16
	Probe     decode.Probe
	// Clauses say which packets are ours; everything else is dropped in the kernel.
	Clauses []Clause
	// Typed says the skb is a BTF-typed pointer (tp_btf): the filter reads
	// its fields with plain loads.
	Typed bool
	// Drop is where the context holds the drop's location and reason, for
	// the drop probe only.
	Drop DropFields
}

// DropFields are the offsets in the program's context of skb:kfree_skb's
// location and reason: fields of the perf tracepoint's raw record, read from
// the tracepoint's format (rx_sk came before reason in 6.11), or arguments of
// the raw tracepoint. Reason is -1 on kernels without drop reasons (before
// 5.17).
type DropFields struct {
	Location, Reason int16
}

// Stack layout, from the frame pointer down: the record handed to
// bpf_perf_event_output, scratch slots, the start of the IP header, the L4
// bytes a clause tests, and what the UDP clauses keep: a tuple (the tuple
// map's key) and a mark.
const (
	recOff   = -decode.RecordSize
	scratch0 = recOff - 8   // pointers and sizes read on the way
	scratch1 = scratch0 - 8 // more of them
	scratch2 = scratch1 - 8 // an IPv6 extension header's first bytes
	nextHdr  = scratch2 - 8 // IPv6 next header while walking extension headers
	ipSlot   = nextHdr - ipBytes
	l4Slot   = ipSlot - l4Max
	tupleKey = l4Slot - tupleLen // a UDP tuple, as the tuple map's key
	markSlot = tupleKey - decode.MarkLen
	// ipBytes from the network header on hold what decides IPv4 (version,
	// fragment, header length, protocol) and IPv6 (version, next header),
	// and the first 16 bytes of the L4 header after an IPv4 header without
	// options or an IPv6 header without extensions (an echo's header and
	// cookie, a TCP header to its flags): one read for most packets.
	ipBytes = 56
	// l4Max bounds Clause.L4Bytes.
	l4Max = 64
)

// ipv6ExtHeaders bounds the IPv6 extension headers skipped before the L4 header.
const ipv6ExtHeaders = 4

// Registers kept across helper calls (r6-r9 are callee-saved). R9 holds one
// thing per stretch of a program, under the name of that thing.
const (
	rCtx   = asm.R6
	rSkb   = asm.R7
	rNet   = asm.R8 // address of the network header
	rL4Off = asm.R9 // in the filter: offset of the L4 header from rNet
	rInner = asm.R9 // in a tunnel's test: offset of the inner network header from rNet
	rFrom  = asm.R9 // in holds: rL4Off or rInner, whichever its caller has
	rOuter = asm.R9 // in capture: address of the outer network header
	rDev   = asm.R9 // in deviceFields: skb->dev, then its struct net
)

// rec is the stack offset of a record field.
func rec(off int) int16 { return int16(recOff + off) }

// pkt is the stack offset of a captured packet byte.
func pkt(off int) int16 { return rec(decode.OffPacket + off) }

// wire turns a network-order u16 constant into the value a native load of it yields.
func wire(v uint16) int32 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], v)
	return int32(binary.NativeEndian.Uint16(b[:]))
}

// wire32 turns a network-order u32 constant into the value a native load of it yields.
func wire32(v uint32) int32 {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return int32(binary.NativeEndian.Uint32(b[:]))
}

// read copies size bytes from kernel address src+off to the stack.
func read(dst int16, size int32, src asm.Register, off int32, fail string) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(dst)),
		asm.Mov.Imm(asm.R2, size),
		asm.Mov.Reg(asm.R3, src),
		asm.Add.Imm(asm.R3, off),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, fail),
	}
}

// readL4 copies size bytes at off from the current L4 offset (rNet + rL4Off
// + off) to the stack.
func readL4(dst int16, size, off int32, fail string) asm.Instructions {
	return readNet(dst, size, rL4Off, off, fail)
}

// readNet copies size bytes at rNet + idx + off to the stack.
func readNet(dst int16, size int32, idx asm.Register, off int32, fail string) asm.Instructions {
	insns := read(dst, size, rNet, off, fail)
	if off == 0 {
		insns[4] = asm.Add.Reg(asm.R3, idx)
		return insns
	}
	return slices.Insert(insns, 4, asm.Add.Reg(asm.R3, idx))
}

// TracepointProgram builds the program for one device probe: it finds the
// skb, rejects what no clause keeps, and emits one decode.Record for each
// packet of ours.
func TracepointProgram(p ProgramParams) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(rCtx, asm.R1).WithSource(asm.Comment("probe " + p.Probe.String())),
		asm.LoadMem(rSkb, rCtx, p.SkbOffset, asm.DWord).WithSource(asm.Comment("skb")),
	}
	insns = append(insns, Filter{Offsets: p.Offsets, Dir: p.Probe.Direction(), Clauses: p.Clauses, Direct: p.Typed}.Program()...)
	insns = append(insns, recordHeader(p.Probe)...)
	if p.Probe == decode.ProbeKfreeSkb {
		insns = append(insns, dropFields(p.Drop)...)
	}
	insns = append(insns, deviceFields(p.Offsets)...)
	return append(insns, perfOutput()...)
}

// dropFields copies skb:kfree_skb's location and, where the kernel has one,
// its reason from the context into the record.
func dropFields(f DropFields) asm.Instructions {
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, rCtx, f.Location, asm.DWord).WithSource(asm.Comment("drop location and reason")),
		asm.StoreMem(asm.RFP, rec(decode.OffDropLocation), asm.R1, asm.DWord),
	}
	if f.Reason >= 0 {
		insns = append(insns,
			asm.LoadMem(asm.R1, rCtx, f.Reason, asm.Word),
			asm.StoreMem(asm.RFP, rec(decode.OffDropReason), asm.R1, asm.Word),
		)
	}
	return insns
}

// recordHeader fills the record's identity at "ours": skb, probe, time and CPU.
func recordHeader(p decode.Probe) asm.Instructions {
	return asm.Instructions{
		asm.StoreMem(asm.RFP, rec(decode.OffSkb), rSkb, asm.DWord).WithSymbol("ours").WithSource(asm.Comment("ours: fill in the record")),
		asm.StoreImm(asm.RFP, rec(decode.OffProbe), int64(p), asm.Half),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, rec(decode.OffTime), asm.R0, asm.DWord),
		asm.FnGetSmpProcessorId.Call(),
		asm.StoreMem(asm.RFP, rec(decode.OffCPU), asm.R0, asm.Word),
	}
}

// deviceFields reads skb->dev into the record; a record without them still
// counts. A packet not yet given a device (a drop at an OUTPUT hook) takes
// its namespace from its socket instead.
func deviceFields(o Offsets) asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, note("skb->dev: name, ifindex, nd_net.net->ns.inum", read(scratch0, 8, rSkb, int32(o.SkbDev), "output"))...)
	insns = append(insns,
		asm.LoadMem(rDev, asm.RFP, scratch0, asm.DWord),
		asm.JEq.Imm(rDev, 0, "sock"),
	)
	insns = append(insns, read(rec(decode.OffIfname), 16, rDev, int32(o.DevName), "output")...)
	insns = append(insns, read(rec(decode.OffIfindex), 4, rDev, int32(o.DevIfindex), "output")...)
	insns = append(insns, read(scratch0, 8, rDev, int32(o.DevNet), "output")...)
	insns = append(insns, asm.Ja.Label("netns"))
	rSock := rDev // no device: skb->sk, then its struct net
	insns = append(insns, label("sock", note("no device: skb->sk->__sk_common.skc_net.net", read(scratch0, 8, rSkb, int32(o.SkbSk), "output")))...)
	insns = append(insns,
		asm.LoadMem(rSock, asm.RFP, scratch0, asm.DWord),
		asm.JEq.Imm(rSock, 0, "output"),
	)
	insns = append(insns, read(scratch0, 8, rSock, int32(o.SockNet), "output")...)
	rNetns := rDev // now struct net *
	insns = append(insns,
		asm.LoadMem(rNetns, asm.RFP, scratch0, asm.DWord).WithSymbol("netns"),
		asm.JEq.Imm(rNetns, 0, "output"),
	)
	insns = append(insns, read(rec(decode.OffNetns), 4, rNetns, int32(o.NetInum), "output")...)
	return insns
}

// perfOutput emits the record at "output" and ends the program at "exit".
func perfOutput() asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R1, rCtx).WithSymbol("output"),
		asm.LoadMapPtr(asm.R2, 0).WithReference(EventsMap),
		asm.LoadImm(asm.R3, 0xffffffff, asm.DWord).WithSource(asm.Comment("BPF_F_CURRENT_CPU")),
		asm.Mov.Reg(asm.R4, asm.RFP),
		asm.Add.Imm(asm.R4, recOff),
		asm.Mov.Imm(asm.R5, decode.RecordSize),
		asm.FnPerfEventOutput.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// note attaches a comment to the first instruction of a sequence.
func note(comment string, insns asm.Instructions) asm.Instructions {
	insns[0] = insns[0].WithSource(asm.Comment(comment))
	return insns
}

// label makes a sequence a jump target.
func label(sym string, insns asm.Instructions) asm.Instructions {
	insns[0] = insns[0].WithSymbol(sym)
	return insns
}
