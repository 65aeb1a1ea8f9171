package probes

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// PendingMap is the reference name of the per-CPU array that carries a
// netfilter record from a function's entry to its return.
//
// Its key is not the task: in softirq the current task is whatever was
// interrupted (pid 0 on every idle CPU), so records of two packets would
// share a key. It is the CPU and the call depth on it. Slot 0 holds the
// CPU's depth; slots 1..PendingSlots hold records. Every entry, ours or
// not, raises the depth and marks slot depth%PendingSlots+1 empty; for a
// packet of ours it then fills that slot. Every return takes the slot of
// the current depth, emits the record only if the slot was filled, and
// lowers the depth. Calls on one CPU nest last in, first out (a softirq
// interrupting a process-context call returns first), so each return meets
// its own entry's slot, as long as the call stays on its CPU: both
// functions run under nf_hook's rcu_read_lock, which Debian's kernels
// (PREEMPT_DYNAMIC, voluntary unless booted with preempt=full) do not
// preempt, and ipt_do_table also disables bottom halves while it walks its
// table. A call preempted or migrated
// all the same meets another call's slot: the slot also names the task
// that filled it, and a return in another task emits nothing. Entries and
// returns skipped together (a nested kprobe hit, a BPF program already
// running on the CPU) change nothing; an entry whose return is lost (no
// kretprobe instance left) shifts the depth for good, but every later entry
// rewrites its slot first, so a stale record is never emitted for another
// call. A record is lost rather than given another call's verdict, except
// in one case: a call of ours whose return is lost, nested in a pending call
// of the same task, whose return then takes the nested call's record.
const PendingMap = "pending"

// PendingSlots is how many nested calls per CPU the pending map tells
// apart (a power of two); a deeper call reuses the slot of an outer one,
// which then loses its record.
const PendingSlots = 8

// pendingOwner is the offset, in a pending map value, of the task that
// filled the slot (0: empty); the record comes before it.
const pendingOwner = decode.NFRecordSize

// PendingMapSpec describes the pending map.
func PendingMapSpec() *ebpf.MapSpec {
	return &ebpf.MapSpec{
		Name: "tracepkt_pend", Type: ebpf.PerCPUArray, KeySize: 4,
		ValueSize: pendingOwner + 8, MaxEntries: PendingSlots + 1,
	}
}

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
	// Clauses say which packets are ours, as for the device probes.
	Clauses []Clause
}

// Stack slots of the kprobe programs, below those of the device programs.
const (
	pktinfoSlot = markSlot - 8    // nftables: the nft_pktinfo pointer
	pktSkbSlot  = pktinfoSlot - 8 // nftables: pkt->skb as read
	keySlot     = pktSkbSlot - 8  // the pending map key: this call's slot
	nameLen     = 32
)

// Registers of the kprobe entry program past the filter, where rNet and
// rL4Off are free again.
const (
	rState   = asm.R9 // nf_hook_state *
	rHookDev = asm.R8 // a device of the hook state, then its struct net
	rPriv    = asm.R9 // the function's table (xt_table *) or chain (nft_chain *)
	rName    = asm.R8 // a name string's address
)

// KprobeEntryProgram builds the program run when a netfilter function is
// entered: for a packet of ours, it fills a netfilter record with the
// table, chain, hook, family, interfaces and namespace, and parks it in the
// pending map until the function returns its verdict (KprobeReturnProgram).
func KprobeEntryProgram(p KprobeParams) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Reg(rCtx, asm.R1).WithSource(asm.Comment("probe " + p.Probe.String()))}
	insns = append(insns, enterSlot()...)
	insns = append(insns, kprobeSkb(p)...)
	// The network header is set at every netfilter hook, as on transmit.
	insns = append(insns, Filter{Offsets: p.Offsets, Dir: decode.Out, Clauses: p.Clauses}.Program()...)
	insns = append(insns, recordHeader(p.Probe)...)
	// What netfilter saw takes the place of the packet bytes.
	insns = append(insns, asm.Mov.Imm(asm.R1, 0).WithSource(asm.Comment("netfilter fields replace the packet bytes")))
	for off := 0; off < decode.NFInfoBytes; off += 8 {
		insns = append(insns, asm.StoreMem(asm.RFP, rec(decode.OffNFInfo+off), asm.R1, asm.DWord))
	}
	insns = append(insns, asm.StoreImm(asm.RFP, rec(decode.OffCapLen), decode.NFInfoBytes, asm.Half))
	insns = append(insns, hookState(p)...)
	insns = append(insns, tableAndChain(p)...)
	return append(insns, park()...)
}

// kprobeSkb sets rSkb from the function's arguments: the skb argument, or
// nftables' pkt->skb.
func kprobeSkb(p KprobeParams) asm.Instructions {
	if p.Probe != decode.ProbeNftDoChain {
		return asm.Instructions{asm.LoadMem(rSkb, rCtx, p.NF.ArgSkb, asm.DWord).WithSource(asm.Comment("skb argument"))}
	}
	return asm.Instructions{
		asm.LoadMem(asm.R1, rCtx, p.NF.ArgPkt, asm.DWord).WithSource(asm.Comment("skb = pkt->skb")),
		asm.StoreMem(asm.RFP, pktinfoSlot, asm.R1, asm.DWord),
		asm.Mov.Reg(asm.R3, asm.R1),
		asm.Add.Imm(asm.R3, int32(p.NF.PktSkb)),
		asm.Mov.Reg(asm.R1, asm.RFP),
		asm.Add.Imm(asm.R1, pktSkbSlot),
		asm.Mov.Imm(asm.R2, 8),
		asm.FnProbeReadKernel.Call(),
		asm.JNE.Imm(asm.R0, 0, "exit"),
		asm.LoadMem(rSkb, asm.RFP, pktSkbSlot, asm.DWord),
	}
}

// pendingSlot looks up the pending map's slot whose key is at stack offset
// key; without one (never, for a key in range) it goes to "exit".
func pendingSlot(key int16) asm.Instructions {
	return asm.Instructions{
		asm.LoadMapPtr(asm.R1, 0).WithReference(PendingMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, int32(key)),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
	}
}

// depthSlot turns the depth in r1 into its record slot and stores it as
// the key at stack offset key.
func depthSlot(key int16) asm.Instructions {
	return asm.Instructions{
		asm.And.Imm(asm.R1, PendingSlots-1),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.RFP, key, asm.R1, asm.Word),
	}
}

// enterSlot raises this CPU's call depth, leaves this call's slot as the
// key at keySlot and marks the slot empty: see PendingMap.
func enterSlot() asm.Instructions {
	insns := asm.Instructions{asm.StoreImm(asm.RFP, keySlot, 0, asm.Word).WithSource(asm.Comment("depth++, this call's slot is empty"))}
	insns = append(insns, pendingSlot(keySlot)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.R0, 0, asm.DWord),
		asm.Add.Imm(asm.R1, 1),
		asm.StoreMem(asm.R0, 0, asm.R1, asm.DWord),
	)
	insns = append(insns, depthSlot(keySlot)...)
	insns = append(insns, pendingSlot(keySlot)...)
	return append(insns, asm.Mov.Imm(asm.R1, 0), asm.StoreMem(asm.R0, pendingOwner, asm.R1, asm.DWord))
}

// hookState reads the hook, the interfaces and the namespace from the
// nf_hook_state; without one it goes on at "table".
func hookState(p KprobeParams) asm.Instructions {
	nf := p.NF
	var insns asm.Instructions
	if p.Probe == decode.ProbeNftDoChain {
		insns = append(insns, asm.LoadMem(rState, asm.RFP, pktinfoSlot, asm.DWord).WithSource(asm.Comment("state = pkt->state")))
		insns = append(insns, readPtr(rState, rState, nf.PktState, "table")...)
	} else {
		insns = append(insns, asm.LoadMem(rState, rCtx, nf.ArgState, asm.DWord).WithSource(asm.Comment("state argument")))
	}
	insns = append(insns, asm.JEq.Imm(rState, 0, "table"))
	insns = append(insns, note("state: hook, pf, in, out, net", read(rec(decode.OffNFHook), 1, rState, int32(nf.StateHook), "table"))...)
	for _, dev := range []struct {
		member uint32
		dst    int
	}{{nf.StateIn, decode.OffNFIif}, {nf.StateOut, decode.OffNFOif}} {
		skip := fmt.Sprintf("no_dev_%d", dev.dst)
		insns = append(insns, readPtr(rHookDev, rState, dev.member, "table")...)
		insns = append(insns, asm.JEq.Imm(rHookDev, 0, skip))
		insns = append(insns, read(rec(dev.dst), 4, rHookDev, int32(p.Offsets.DevIfindex), "table")...)
		insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol(skip))
	}
	rHookNet := rHookDev
	insns = append(insns, readPtr(rHookNet, rState, nf.StateNet, "table")...)
	insns = append(insns, asm.JEq.Imm(rHookNet, 0, "table"))
	return append(insns, read(rec(decode.OffNetns), 4, rHookNet, int32(p.Offsets.NetInum), "table")...)
}

// tableAndChain reads, at "table", the table's name and family, and the
// chain's name for nftables; it goes on at "park".
func tableAndChain(p KprobeParams) asm.Instructions {
	nf := p.NF
	insns := asm.Instructions{
		asm.LoadMem(rPriv, rCtx, nf.ArgPriv, asm.DWord).WithSymbol("table").WithSource(asm.Comment("table and chain")),
		asm.JEq.Imm(rPriv, 0, "park"),
	}
	if p.Probe != decode.ProbeNftDoChain {
		insns = append(insns, read(rec(decode.OffNFTable), nameLen, rPriv, int32(nf.XtTableName), "park")...)
		return append(insns, read(rec(decode.OffNFFamily), 1, rPriv, int32(nf.XtTableAf), "park")...)
	}
	insns = append(insns, readPtr(rName, rPriv, nf.ChainName, "park")...)
	insns = append(insns, readStr(rec(decode.OffNFChain), rName)...)
	rTable := rPriv // now nft_table *
	insns = append(insns, readPtr(rTable, rPriv, nf.ChainTable, "park")...)
	insns = append(insns, asm.JEq.Imm(rTable, 0, "park"))
	insns = append(insns, readPtr(rName, rTable, nf.TableName, "park")...)
	insns = append(insns, readStr(rec(decode.OffNFTable), rName)...)
	insns = append(insns, read(scratch2, 2, rTable, int32(nf.TableFamily), "park")...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Half),
		asm.RSh.Imm(asm.R1, int32(nf.TableFamilyShift)),
		asm.And.Imm(asm.R1, int32(1)<<nf.TableFamilyBits-1),
		asm.StoreMem(asm.RFP, rec(decode.OffNFFamily), asm.R1, asm.Byte),
	)
}

// park stores the record, and the task as its owner, in this call's slot.
func park() asm.Instructions {
	return asm.Instructions{
		asm.FnGetCurrentTask.Call().WithSymbol("park").WithSource(asm.Comment("park the record until the function returns")),
		asm.StoreMem(asm.RFP, rec(pendingOwner), asm.R0, asm.DWord),
		asm.LoadMapPtr(asm.R1, 0).WithReference(PendingMap),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, keySlot),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, recOff),
		asm.Mov.Imm(asm.R4, 0),
		asm.FnMapUpdateElem.Call(),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// KprobeReturnProgram builds the program run when the function returns: it
// takes this call's slot of the pending map and, if its entry parked a
// record there in this task, adds the verdict and emits it. The depth is
// lowered last, so that the slot stays this call's until then.
func KprobeReturnProgram(p KprobeParams) asm.Instructions {
	const retKeySlot = -8
	const (
		rDepth  = asm.R9 // this CPU's depth, in slot 0
		rParked = asm.R7 // this call's slot: the parked record, then its owner
		rOwner  = asm.R8 // the task that parked it
	)
	insns := asm.Instructions{
		asm.Mov.Reg(rCtx, asm.R1).WithSource(asm.Comment("return of " + p.Probe.String() + ": this call's slot")),
		asm.StoreImm(asm.RFP, retKeySlot, 0, asm.Word),
	}
	insns = append(insns, pendingSlot(retKeySlot)...)
	insns = append(insns, asm.Mov.Reg(rDepth, asm.R0), asm.LoadMem(asm.R1, rDepth, 0, asm.DWord))
	insns = append(insns, depthSlot(retKeySlot)...)
	insns = append(insns, pendingSlot(retKeySlot)...)
	return append(insns,
		asm.Mov.Reg(rParked, asm.R0),
		asm.LoadMem(rOwner, rParked, pendingOwner, asm.DWord).WithSource(asm.Comment("a record parked by this task: take it")),
		asm.JEq.Imm(rOwner, 0, "pop"),
		asm.Mov.Imm(asm.R1, 0),
		asm.StoreMem(rParked, pendingOwner, asm.R1, asm.DWord),
		asm.FnGetCurrentTask.Call(),
		asm.JNE.Reg(asm.R0, rOwner, "pop"),
		asm.LoadMem(asm.R1, rCtx, p.NF.RegRet, asm.DWord).WithSource(asm.Comment("verdict = return value")),
		asm.StoreMem(rParked, decode.OffNFVerdict, asm.R1, asm.Word),
		asm.Mov.Reg(asm.R1, rCtx),
		asm.LoadMapPtr(asm.R2, 0).WithReference(EventsMap),
		asm.LoadImm(asm.R3, 0xffffffff, asm.DWord).WithSource(asm.Comment("BPF_F_CURRENT_CPU")),
		asm.Mov.Reg(asm.R4, rParked),
		asm.Mov.Imm(asm.R5, decode.NFRecordSize),
		asm.FnPerfEventOutput.Call(),
		asm.LoadMem(asm.R1, rDepth, 0, asm.DWord).WithSymbol("pop").WithSource(asm.Comment("depth--")),
		asm.Sub.Imm(asm.R1, 1),
		asm.StoreMem(rDepth, 0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	)
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
