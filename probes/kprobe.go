package probes

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// PendingMap is the reference name of the hash map that carries a netfilter
// record from a function's entry to its return, keyed by task.
const PendingMap = "pending"

// NetfilterOffsets locate what the netfilter probes read: the functions'
// arguments in struct pt_regs (from their BTF prototypes) and the members
// of the structs they point to.
type NetfilterOffsets struct {
	// Arguments: pt_regs offsets of the registers holding them. iptables:
	// ipt_do_table(priv, skb, state) since 5.16, (skb, state, table) before;
	// nftables: nft_do_chain(pkt, priv).
	ArgSkb, ArgState, ArgPriv, ArgPkt int16
	// RegRet is the pt_regs offset of the return value.
	RegRet int16
	// nft_pktinfo
	PktSkb, PktState uint32
	// nf_hook_state
	StateHook, StatePf, StateIn, StateOut, StateNet uint32
	// xt_table
	XtTableName, XtTableAf uint32
	// nft_chain, nft_table; the table's family is a bitfield in a u16.
	ChainName, ChainTable, TableName, TableFamily uint32
	TableFamilyShift, TableFamilyBits             uint8
}

// KprobeParams is everything a netfilter kprobe program depends on.
type KprobeParams struct {
	Offsets Offsets
	NF      NetfilterOffsets
	Probe   decode.Probe
	EchoID  uint16
}

// Stack slots of the kprobe programs, below those of the tracepoint part.
const (
	savedPkt = scratch0 - 8 // nft_pktinfo pointer, then the pending map key
	nameLen  = 32
)

// KprobeEntryProgram builds the program run when a netfilter function is
// entered: for our echo, it fills a record with the table, chain, hook,
// family, interfaces and namespace, and parks it in the pending map until
// the function returns its verdict (KprobeReturnProgram).
func KprobeEntryProgram(p KprobeParams) asm.Instructions {
	nf := p.NF
	nft := p.Probe == decode.ProbeNftDoChain
	insns := asm.Instructions{asm.Mov.Reg(rCtx, asm.R1).WithSource(asm.Comment("probe " + p.Probe.String()))}
	if nft {
		insns = append(insns,
			asm.LoadMem(asm.R1, rCtx, nf.ArgPkt, asm.DWord).WithSource(asm.Comment("skb = pkt->skb")),
			asm.StoreMem(asm.RFP, savedPkt, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R3, asm.R1),
			asm.Add.Imm(asm.R3, int32(nf.PktSkb)),
			asm.Mov.Reg(asm.R1, asm.RFP),
			asm.Add.Imm(asm.R1, savedPkt-8),
			asm.Mov.Imm(asm.R2, 8),
			asm.FnProbeReadKernel.Call(),
			asm.JNE.Imm(asm.R0, 0, "exit"),
			asm.LoadMem(rSkb, asm.RFP, savedPkt-8, asm.DWord),
		)
	} else {
		insns = append(insns, asm.LoadMem(rSkb, rCtx, nf.ArgSkb, asm.DWord).WithSource(asm.Comment("skb argument")))
	}
	// The network header is set at every netfilter hook, as on transmit.
	insns = append(insns, echoFilter(p.Offsets, p.EchoID, decode.Out)...)
	insns = append(insns, recordHeader(p.Probe)...)

	// The packet bytes make way for what netfilter saw.
	insns = append(insns, asm.Mov.Imm(asm.R1, 0).WithSource(asm.Comment("netfilter fields replace the packet bytes")))
	for off := 0; off < decode.PacketBytes; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, pkt(off), asm.R1, asm.DWord))
	}
	insns = append(insns, asm.StoreImm(asm.RFP, rec(decode.OffCapLen), decode.NFInfoBytes, asm.Half))

	// rL4 holds nf_hook_state *.
	if nft {
		insns = append(insns, asm.LoadMem(rL4, asm.RFP, savedPkt, asm.DWord).WithSource(asm.Comment("state = pkt->state")))
		insns = append(insns, readPtr(rL4, rL4, nf.PktState, "table")...)
	} else {
		insns = append(insns, asm.LoadMem(rL4, rCtx, nf.ArgState, asm.DWord).WithSource(asm.Comment("state argument")))
	}
	insns = append(insns, asm.JEq.Imm(rL4, 0, "table"))
	insns = append(insns, note("state: hook, pf, in, out, net", read(rec(decode.OffNFHook), 1, rL4, int32(nf.StateHook), "table"))...)
	// Past the filter, rNet is free to hold the pointers read on the way.
	for _, dev := range []struct {
		member uint32
		dst    int
	}{{nf.StateIn, decode.OffNFIif}, {nf.StateOut, decode.OffNFOif}} {
		skip := fmt.Sprintf("no_dev_%d", dev.dst)
		insns = append(insns, readPtr(rNet, rL4, dev.member, "table")...)
		insns = append(insns, asm.JEq.Imm(rNet, 0, skip))
		insns = append(insns, read(rec(dev.dst), 4, rNet, int32(p.Offsets.DevIfindex), "table")...)
		insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol(skip))
	}
	insns = append(insns, readPtr(rNet, rL4, nf.StateNet, "table")...)
	insns = append(insns, asm.JEq.Imm(rNet, 0, "table"))
	insns = append(insns, read(rec(decode.OffNetns), 4, rNet, int32(p.Offsets.NetInum), "table")...)

	// rL4 holds the table (xt_table *) or the chain (nft_chain *).
	insns = append(insns, asm.LoadMem(rL4, rCtx, nf.ArgPriv, asm.DWord).WithSymbol("table").WithSource(asm.Comment("table and chain")))
	insns = append(insns, asm.JEq.Imm(rL4, 0, "park"))
	if nft {
		insns = append(insns, readPtr(rNet, rL4, nf.ChainName, "park")...)
		insns = append(insns, readStr(rec(decode.OffNFChain), rNet)...)
		insns = append(insns, readPtr(rL4, rL4, nf.ChainTable, "park")...)
		insns = append(insns, asm.JEq.Imm(rL4, 0, "park"))
		insns = append(insns, readPtr(rNet, rL4, nf.TableName, "park")...)
		insns = append(insns, readStr(rec(decode.OffNFTable), rNet)...)
		insns = append(insns, read(scratch2, 2, rL4, int32(nf.TableFamily), "park")...)
		insns = append(insns,
			asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Half),
			asm.RSh.Imm(asm.R1, int32(nf.TableFamilyShift)),
			asm.And.Imm(asm.R1, int32(1)<<nf.TableFamilyBits-1),
			asm.StoreMem(asm.RFP, rec(decode.OffNFFamily), asm.R1, asm.Byte),
		)
	} else {
		insns = append(insns, read(rec(decode.OffNFTable), nameLen, rL4, int32(nf.XtTableName), "park")...)
		insns = append(insns, read(rec(decode.OffNFFamily), 1, rL4, int32(nf.XtTableAf), "park")...)
	}

	insns = append(insns,
		asm.FnGetCurrentPidTgid.Call().WithSymbol("park").WithSource(asm.Comment("park the record until the function returns")),
		asm.StoreMem(asm.RFP, savedPkt, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(PendingMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, savedPkt),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, recOff),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
	return insns
}

// KprobeReturnProgram builds the program run when the function returns: it
// adds the verdict to the parked netfilter record and emits it.
func KprobeReturnProgram(p KprobeParams) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(rCtx, asm.R1).WithSource(asm.Comment("return of " + p.Probe.String())),
		asm.FnGetCurrentPidTgid.Call(),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(PendingMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Reg(rSkb, asm.R0),
		asm.LoadMem(asm.R1, rCtx, p.NF.RegRet, asm.DWord).WithSource(asm.Comment("verdict = return value")),
		asm.StoreMem(rSkb, decode.OffNFVerdict, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, rCtx),
		asm.LoadMapPtr(asm.R2, 0).WithReference(EventsMap),
		asm.LoadImm(asm.R3, 0xffffffff, asm.DWord).WithSource(asm.Comment("BPF_F_CURRENT_CPU")),
		asm.Mov.Reg(asm.R4, rSkb),
		asm.Mov.Imm(asm.R5, decode.NFRecordSize),
		asm.FnPerfEventOutput.Call(),
		asm.LoadMapPtr(asm.R1, 0).WithReference(PendingMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -8),
		asm.FnMapDeleteElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// readPtr loads the pointer at kernel address src+off into dst; src must
// not be r1-r3, which the read itself uses.
func readPtr(dst, src asm.Register, off uint32, fail string) asm.Instructions {
	return append(read(scratch1, 8, src, int32(off), fail), asm.LoadMem(dst, asm.RFP, scratch1, asm.DWord))
}

// readStr copies the NUL-terminated string at kernel address src (a
// register) into a nameLen-byte record field; a failed read leaves it empty.
func readStr(dst int16, src asm.Register) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Reg(asm.R3, src),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, int32(dst)),
		asm.Mov.Imm(asm.R2, nameLen),
		asm.FnProbeReadKernelStr.Call(),
	}
}
