package probes

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// EventsMap is the reference name of the perf event array the programs write to.
const EventsMap = "events"

// ProgramParams is everything a tracepoint program depends on.
type ProgramParams struct {
	Offsets Offsets
	// SkbAddrOffset is where the tracepoint's raw record holds skbaddr.
	SkbAddrOffset int16
	Probe         decode.Probe
	// EchoID is the ICMP echo id to keep; everything else is dropped in the kernel.
	EchoID uint16
	// Drop is where skb:kfree_skb's raw record holds the drop's location and
	// reason, for the drop probe only.
	Drop DropFields
}

// DropFields are the offsets of skb:kfree_skb's location and reason fields
// in its raw record, read from the tracepoint's format: they move between
// kernels (rx_sk came before reason in 6.11). Reason is -1 on kernels
// without drop reasons (before 5.17).
type DropFields struct {
	Location, Reason int16
}

// Stack layout: four 8-byte scratch slots, then the record handed to
// bpf_perf_event_output.
const (
	stackSize = decode.RecordSize + 32
	recOff    = -decode.RecordSize
	scratch0  = -stackSize
	scratch1  = scratch0 + 8
	scratch2  = scratch1 + 8
	nextHdr   = scratch2 + 8 // IPv6 next header while walking extension headers
)

// ipv6ExtHeaders bounds the IPv6 extension headers skipped before ICMPv6.
const ipv6ExtHeaders = 4

// Registers kept across helper calls (r6-r9 are callee-saved).
const (
	rCtx = asm.R6
	rSkb = asm.R7
	rNet = asm.R8 // address of the network header
	rL4  = asm.R9 // offset of the L4 header from rNet, then the device pointer
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

// readL4 copies size bytes at the current L4 offset (rNet + rL4) to the stack.
func readL4(dst int16, size int32, fail string) asm.Instructions {
	insns := read(dst, size, rNet, 0, fail)
	insns[4] = asm.Add.Reg(asm.R3, rL4)
	return insns
}

// TracepointProgram builds the program for one net tracepoint: it finds the
// network header of skbaddr, keeps only ICMP or ICMPv6 echo requests and
// replies carrying EchoID, and emits one decode.Record for each.
func TracepointProgram(p ProgramParams) asm.Instructions {
	insns := asm.Instructions{
		asm.Mov.Reg(rCtx, asm.R1).WithSource(asm.Comment("probe " + p.Probe.String())),
		asm.LoadMem(rSkb, rCtx, p.SkbAddrOffset, asm.DWord).WithSource(asm.Comment("skb = ctx->skbaddr")),
	}
	insns = append(insns, echoFilter(p.Offsets, p.EchoID, p.Probe.Direction())...)
	insns = append(insns, recordHeader(p.Probe)...)
	if p.Probe == decode.ProbeKfreeSkb {
		insns = append(insns, dropFields(p.Drop)...)
	}
	insns = append(insns, deviceFields(p.Offsets)...)
	return append(insns, perfOutput()...)
}

// dropFields copies skb:kfree_skb's location and, where the kernel has one,
// its reason from the raw record into the record.
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

// quotedEcho goes on at "match" for an ICMP or ICMPv6 error (at "error4",
// "error6", its ICMP header at scratch2) whose quoted packet is an ICMP
// echo request or reply carrying our id, with the quoted echo header at
// scratch2 (so the record takes its id and sequence), else jumps to "exit".
func quotedEcho() asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, label("error4", note("IPv4 error: the quoted IPv4 header, then its ICMP header", asm.Instructions{asm.Add.Imm(rL4, 8)}))...)
	insns = append(insns, readL4(scratch0, 16, "exit")...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch0+9, asm.Byte),
		asm.JNE.Imm(asm.R1, 1, "exit"),
		asm.LoadMem(asm.R1, asm.RFP, scratch0, asm.Byte),
		asm.And.Imm(asm.R1, 0xf),
		asm.LSh.Imm(asm.R1, 2),
		asm.Add.Reg(rL4, asm.R1),
		asm.Ja.Label("quoted"),
	)
	insns = append(insns, label("error6", note("IPv6 error: the quoted IPv6 header, then its ICMPv6 header", asm.Instructions{asm.Add.Imm(rL4, 8)}))...)
	insns = append(insns, readL4(scratch0, 8, "exit")...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch0+6, asm.Byte),
		asm.JNE.Imm(asm.R1, 58, "exit"),
		asm.Add.Imm(rL4, 40),
	)
	insns = append(insns, label("quoted", readL4(scratch2, 8, "exit"))...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
		asm.JEq.Imm(asm.R1, 8, "echo"),
		asm.JEq.Imm(asm.R1, 0, "echo"),
		asm.JEq.Imm(asm.R1, 128, "echo"),
		asm.JEq.Imm(asm.R1, 129, "echo"),
		asm.Ja.Label("exit"),
	)
}

// echoFilter zeroes the stack, finds the network header of the skb in rSkb
// (dir says where: transmit and receive paths set it differently), copies up
// to PacketBytes from it into the record and goes on at "match" for an ICMP
// or ICMPv6 echo request or reply carrying echoID, or an ICMP error quoting
// one (see quotedEcho), with the family, addresses and ICMP type filled in;
// anything else jumps to "exit".
func echoFilter(o Offsets, echoID uint16, dir decode.Direction) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(asm.R1, 0).WithSource(asm.Comment("zero the stack we use"))}
	for off := int16(scratch0); off < 0; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, off, asm.R1, asm.DWord))
	}
	insns = append(insns, note("skb->data", read(scratch0, 8, rSkb, int32(o.SkbData), "exit"))...)
	if dir != decode.In {
		// On transmit, data points at the link-layer header the device
		// sends; a freed packet may be anywhere in the stack.
		insns = append(insns, note("skb->head + skb->network_header", read(scratch1, 8, rSkb, int32(o.SkbHead), "exit"))...)
		insns = append(insns, read(scratch2, 2, rSkb, int32(o.SkbNetworkHeader), "exit")...)
		insns = append(insns,
			asm.LoadMem(rNet, asm.RFP, scratch1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Half),
			asm.Add.Reg(rNet, asm.R1),
		)
	} else {
		// On receive, the link-layer header has been pulled: data is the network header.
		insns = append(insns, asm.LoadMem(rNet, asm.RFP, scratch0, asm.DWord))
	}

	// Capture up to PacketBytes of the linear data from the network header on.
	insns = append(insns, note("caplen = skb->len - skb->data_len - (net - data)", read(rec(decode.OffLen), 4, rSkb, int32(o.SkbLen), "exit"))...)
	insns = append(insns, read(scratch1, 4, rSkb, int32(o.SkbDataLen), "exit")...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, rec(decode.OffLen), asm.Word),
		asm.LoadMem(asm.R2, asm.RFP, scratch1, asm.Word),
		asm.Sub.Reg(asm.R1, asm.R2),
		asm.Mov.Reg(asm.R2, rNet),
		asm.LoadMem(asm.R3, asm.RFP, scratch0, asm.DWord),
		asm.Sub.Reg(asm.R2, asm.R3),
		asm.Sub.Reg(asm.R1, asm.R2),
		asm.JSLE.Imm(asm.R1, 0, "exit"),
		asm.JLE.Imm(asm.R1, decode.PacketBytes, "caplen"),
		asm.Mov.Imm(asm.R1, decode.PacketBytes),
		asm.StoreMem(asm.RFP, rec(decode.OffCapLen), asm.R1, asm.Half).WithSymbol("caplen"),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(pkt(0))),
		asm.Mov.Reg(asm.R3, rNet),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "exit"),

		asm.LoadMem(asm.R1, asm.RFP, pkt(0), asm.Byte).WithSource(asm.Comment("IP version")),
		asm.RSh.Imm(asm.R1, 4),
		asm.JEq.Imm(asm.R1, 4, "ipv4"),
		asm.JEq.Imm(asm.R1, 6, "ipv6"),
		asm.Ja.Label("exit"),

		asm.LoadMem(asm.R1, asm.RFP, pkt(9), asm.Byte).WithSymbol("ipv4").WithSource(asm.Comment("IPv4: protocol ICMP, first fragment")),
		asm.JNE.Imm(asm.R1, 1, "exit"),
		asm.LoadMem(asm.R1, asm.RFP, pkt(6), asm.Half),
		asm.And.Imm(asm.R1, wire(0x1fff)),
		asm.JNE.Imm(asm.R1, 0, "exit"),
		asm.LoadMem(rL4, asm.RFP, pkt(0), asm.Byte),
		asm.And.Imm(rL4, 0xf),
		asm.LSh.Imm(rL4, 2),
		asm.JLT.Imm(rL4, 20, "exit"),
		asm.LoadMem(asm.R1, asm.RFP, pkt(12), asm.Word),
		asm.StoreMem(asm.RFP, rec(decode.OffSrc), asm.R1, asm.Word),
		asm.LoadMem(asm.R1, asm.RFP, pkt(16), asm.Word),
		asm.StoreMem(asm.RFP, rec(decode.OffDst), asm.R1, asm.Word),
		asm.StoreImm(asm.RFP, rec(decode.OffFamily), 4, asm.Byte),
		asm.Ja.Label("icmp"),

		asm.StoreImm(asm.RFP, rec(decode.OffFamily), 6, asm.Byte).WithSymbol("ipv6").WithSource(asm.Comment("IPv6: addresses, then walk extension headers to ICMPv6")),
	)
	for i := 0; i < 16; i += 8 {
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, pkt(8+i), asm.DWord),
			asm.StoreMem(asm.RFP, rec(decode.OffSrc+i), asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, pkt(24+i), asm.DWord),
			asm.StoreMem(asm.RFP, rec(decode.OffDst+i), asm.R1, asm.DWord),
		)
	}
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, pkt(6), asm.Byte),
		asm.StoreMem(asm.RFP, nextHdr, asm.R1, asm.DWord),
		asm.Mov.Imm(rL4, 40),
	)
	for i := 0; i <= ipv6ExtHeaders; i++ {
		ext, opt, frag := fmt.Sprintf("ext%d", i), fmt.Sprintf("opt%d", i), fmt.Sprintf("frag%d", i)
		next := fmt.Sprintf("ext%d", i+1)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, nextHdr, asm.DWord).WithSymbol(ext),
			asm.JEq.Imm(asm.R1, 58, "icmp"),
		)
		if i == ipv6ExtHeaders {
			insns = append(insns, asm.Ja.Label("exit"))
			break
		}
		insns = append(insns,
			asm.JEq.Imm(asm.R1, 44, frag),
			asm.JEq.Imm(asm.R1, 0, opt),
			asm.JEq.Imm(asm.R1, 43, opt),
			asm.JEq.Imm(asm.R1, 60, opt),
			asm.Ja.Label("exit"),
		)
		// Hop-by-hop, routing, destination options: length in 8-byte units, minus one.
		insns = append(insns, label(opt, readL4(scratch2, 2, "exit"))...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
			asm.StoreMem(asm.RFP, nextHdr, asm.R1, asm.DWord),
			asm.LoadMem(asm.R1, asm.RFP, scratch2+1, asm.Byte),
			asm.Add.Imm(asm.R1, 1),
			asm.LSh.Imm(asm.R1, 3),
			asm.Add.Reg(rL4, asm.R1),
			asm.Ja.Label(next),
		)
		// Fragment header: only the first fragment holds the ICMPv6 header.
		insns = append(insns, label(frag, readL4(scratch2, 8, "exit"))...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, scratch2+2, asm.Half),
			asm.And.Imm(asm.R1, wire(0xfff8)),
			asm.JNE.Imm(asm.R1, 0, "exit"),
			asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
			asm.StoreMem(asm.RFP, nextHdr, asm.R1, asm.DWord),
			asm.Add.Imm(rL4, 8),
			asm.Ja.Label(next),
		)
	}

	insns = append(insns, label("icmp", note("ICMP header: echo request or reply with our id, or an error", readL4(scratch2, 8, "exit")))...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
		asm.StoreMem(asm.RFP, rec(decode.OffICMPType), asm.R1, asm.Byte),
		asm.LoadMem(asm.R2, asm.RFP, rec(decode.OffFamily), asm.Byte),
		asm.JEq.Imm(asm.R2, 6, "icmp6"),
		asm.JEq.Imm(asm.R1, 8, "echo"),
		asm.JEq.Imm(asm.R1, 0, "echo"),
		asm.JEq.Imm(asm.R1, 3, "error4"),
		asm.JEq.Imm(asm.R1, 11, "error4"),
		asm.JEq.Imm(asm.R1, 12, "error4"),
		asm.Ja.Label("exit"),
		asm.JEq.Imm(asm.R1, 128, "echo").WithSymbol("icmp6"),
		asm.JEq.Imm(asm.R1, 129, "echo"),
		asm.JGT.Imm(asm.R1, 4, "exit"),
		asm.JNE.Imm(asm.R1, 0, "error6"),
		asm.Ja.Label("exit"),
		asm.LoadMem(asm.R1, asm.RFP, scratch2+4, asm.Half).WithSymbol("echo"),
		asm.JNE.Imm(asm.R1, wire(echoID), "exit"),
		asm.Ja.Label("match"),
	)
	return append(insns, quotedEcho()...)
}

// recordHeader fills the record's identity at "match": echo id and sequence,
// skb, probe, time and CPU.
func recordHeader(p decode.Probe) asm.Instructions {
	return asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, scratch2+4, asm.Word).WithSymbol("match").WithSource(asm.Comment("ours: fill in the record")),
		asm.StoreMem(asm.RFP, rec(decode.OffEchoID), asm.R1, asm.Word),
		asm.StoreMem(asm.RFP, rec(decode.OffSkb), rSkb, asm.DWord),
		asm.StoreImm(asm.RFP, rec(decode.OffProbe), int64(p), asm.Half),
		asm.FnKtimeGetNs.Call(),
		asm.StoreMem(asm.RFP, rec(decode.OffTime), asm.R0, asm.DWord),
		asm.FnGetSmpProcessorId.Call(),
		asm.StoreMem(asm.RFP, rec(decode.OffCPU), asm.R0, asm.Word),
	}
}

// deviceFields reads skb->dev into the record; a record without them still counts.
func deviceFields(o Offsets) asm.Instructions {
	var insns asm.Instructions
	insns = append(insns, note("skb->dev: name, ifindex, nd_net.net->ns.inum", read(scratch0, 8, rSkb, int32(o.SkbDev), "output"))...)
	insns = append(insns,
		asm.LoadMem(rL4, asm.RFP, scratch0, asm.DWord),
		asm.JEq.Imm(rL4, 0, "output"),
	)
	insns = append(insns, read(rec(decode.OffIfname), 16, rL4, int32(o.DevName), "output")...)
	insns = append(insns, read(rec(decode.OffIfindex), 4, rL4, int32(o.DevIfindex), "output")...)
	insns = append(insns, read(scratch0, 8, rL4, int32(o.DevNet), "output")...)
	insns = append(insns,
		asm.LoadMem(rL4, asm.RFP, scratch0, asm.DWord),
		asm.JEq.Imm(rL4, 0, "output"),
	)
	insns = append(insns, read(rec(decode.OffNetns), 4, rL4, int32(o.NetInum), "output")...)
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
