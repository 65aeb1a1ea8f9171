package probes

import (
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// netfilterSpec builds the BTF the netfilter probes read, with
// ipt_do_table's arguments in the order of kernels from 5.16 (priv, skb,
// state) or before (skb, state, table).
func netfilterSpec(t *testing.T, before516 bool) *btf.Spec {
	t.Helper()
	u8 := &btf.Int{Name: "u8", Size: 1}
	u16 := &btf.Int{Name: "u16", Size: 2}
	u64 := &btf.Int{Name: "long unsigned int", Size: 8}
	char := &btf.Int{Name: "char", Size: 1, Encoding: btf.Char}
	ptr := func(t btf.Type) btf.Type { return &btf.Pointer{Target: t} }
	bits := func(bytes uint32) btf.Bits { return btf.Bits(bytes * 8) }

	var regs []btf.Member
	for i, r := range []string{"r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx", "dx", "si", "di"} {
		regs = append(regs, btf.Member{Name: r, Type: u64, Offset: bits(uint32(8 * i))})
	}
	ptRegs := &btf.Struct{Name: "pt_regs", Size: 168, Members: regs}
	skb := &btf.Struct{Name: "sk_buff", Size: 232}
	dev := &btf.Struct{Name: "net_device", Size: 512}
	net := &btf.Struct{Name: "net", Size: 256}
	state := &btf.Struct{Name: "nf_hook_state", Size: 48, Members: []btf.Member{
		{Name: "hook", Type: u8, Offset: 0}, {Name: "pf", Type: u8, Offset: bits(1)},
		{Name: "in", Type: ptr(dev), Offset: bits(8)}, {Name: "out", Type: ptr(dev), Offset: bits(16)},
		{Name: "net", Type: ptr(net), Offset: bits(32)},
	}}
	xtTable := &btf.Struct{Name: "xt_table", Size: 88, Members: []btf.Member{
		{Name: "af", Type: u8, Offset: bits(48)},
		{Name: "name", Type: &btf.Array{Type: char, Index: u8, Nelems: 32}, Offset: bits(56)},
	}}
	nftTable := &btf.Struct{Name: "nft_table", Size: 408, Members: []btf.Member{
		{Name: "family", Type: u16, Offset: bits(372), BitfieldSize: 6},
		{Name: "flags", Type: u16, Offset: bits(372) + 6, BitfieldSize: 8},
		{Name: "name", Type: ptr(char), Offset: bits(384)},
	}}
	nftChain := &btf.Struct{Name: "nft_chain", Size: 120, Members: []btf.Member{
		{Name: "table", Type: ptr(nftTable), Offset: bits(64)},
		{Name: "name", Type: ptr(char), Offset: bits(88)},
	}}
	pktinfo := &btf.Struct{Name: "nft_pktinfo", Size: 32, Members: []btf.Member{
		{Name: "skb", Type: ptr(skb), Offset: 0},
		{Name: "state", Type: ptr(&btf.Const{Type: state}), Offset: bits(8)},
	}}
	uint := &btf.Int{Name: "unsigned int", Size: 4}
	ipt := []btf.FuncParam{{Name: "priv", Type: &btf.Pointer{Target: &btf.Void{}}}, {Name: "skb", Type: ptr(skb)}, {Name: "state", Type: ptr(&btf.Const{Type: state})}}
	if before516 {
		ipt = []btf.FuncParam{{Name: "skb", Type: ptr(skb)}, {Name: "state", Type: ptr(&btf.Const{Type: state})}, {Name: "table", Type: ptr(xtTable)}}
	}
	types := []btf.Type{ptRegs, state, xtTable, nftChain, pktinfo,
		&btf.Func{Name: "ipt_do_table", Type: &btf.FuncProto{Return: uint, Params: ipt}, Linkage: btf.GlobalFunc},
		&btf.Func{Name: "nft_do_chain", Type: &btf.FuncProto{Return: uint, Params: []btf.FuncParam{
			{Name: "pkt", Type: ptr(pktinfo)}, {Name: "priv", Type: &btf.Pointer{Target: &btf.Void{}}},
		}}, Linkage: btf.GlobalFunc},
	}
	return buildSpec(t, types...)
}

func TestLookupNetfilterOffsets(t *testing.T) {
	common := NetfilterOffsets{RegRet: 80, StateHook: 0, StatePf: 1, StateIn: 8, StateOut: 16, StateNet: 32}
	ipt := common
	ipt.ArgPriv, ipt.ArgSkb, ipt.ArgState = 112, 104, 96 // di, si, dx
	ipt.XtTableName, ipt.XtTableAf = 56, 48
	old := ipt
	old.ArgSkb, old.ArgState, old.ArgPriv = 112, 104, 96
	nft := common
	nft.ArgPkt, nft.ArgPriv = 112, 104
	nft.PktSkb, nft.PktState, nft.ChainName, nft.ChainTable, nft.TableName = 0, 8, 88, 64, 384
	nft.TableFamily, nft.TableFamilyShift, nft.TableFamilyBits = 372, 0, 6
	for _, tc := range []struct {
		name      string
		before516 bool
		probe     decode.Probe
		want      NetfilterOffsets
	}{
		{"ipt_do_table(priv, skb, state)", false, decode.ProbeIptDoTable, ipt},
		{"ipt_do_table(skb, state, table)", true, decode.ProbeIptDoTable, old},
		{"nft_do_chain(pkt, priv)", false, decode.ProbeNftDoChain, nft},
	} {
		spec := netfilterSpec(t, tc.before516)
		got, err := LookupNetfilterOffsets(spec, spec, tc.probe)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.name, got, tc.want)
		}
	}
	spec := netfilterSpec(t, false)
	if _, err := LookupNetfilterOffsets(spec, spec, decode.ProbeIp6tDoTable); err == nil {
		t.Error("lookup of a function missing from the BTF succeeded")
	}
}

func TestKprobeProgramsGolden(t *testing.T) {
	for _, tc := range []struct {
		name      string
		before516 bool
		probe     decode.Probe
	}{
		{"ipt_do_table", false, decode.ProbeIptDoTable},
		{"ipt_do_table_before_5.16", true, decode.ProbeIptDoTable},
		{"nft_do_chain", false, decode.ProbeNftDoChain},
	} {
		spec := netfilterSpec(t, tc.before516)
		nf, err := LookupNetfilterOffsets(spec, spec, tc.probe)
		if err != nil {
			t.Fatal(err)
		}
		p := KprobeParams{Offsets: goldenOffsets, NF: nf, Probe: tc.probe, Clauses: OursClauses(0xbeef, 0xc0ffee01)}
		entry, ret := KprobeEntryProgram(p), KprobeReturnProgram(p)
		assertResolved(t, "kprobe_"+tc.name, entry)
		assertResolved(t, "kretprobe_"+tc.name, ret)
		golden(t, "kprobe_"+tc.name, fmt.Sprintf("%v", entry))
		if !tc.before516 {
			golden(t, "kretprobe_"+tc.name, fmt.Sprintf("%v", ret))
		}
	}
	// A TCP or UDP run's entry program (the return program knows no clauses).
	spec := netfilterSpec(t, false)
	nf, err := LookupNetfilterOffsets(spec, spec, decode.ProbeNftDoChain)
	if err != nil {
		t.Fatal(err)
	}
	for run, cfg := range map[string]Config{"tcp": goldenTCP, "udp": goldenUDP} {
		entry := KprobeEntryProgram(KprobeParams{Offsets: goldenOffsets, NF: nf, Probe: decode.ProbeNftDoChain, Clauses: cfg.Clauses()})
		assertResolved(t, "kprobe_"+run+"_nft_do_chain", entry)
		golden(t, "kprobe_"+run+"_nft_do_chain", fmt.Sprintf("%v", entry))
	}
}

// TestKprobeProgramsLoad hands the netfilter programs to the verifier, with
// the pending map they share: loading needs no kprobe, so it runs on every
// kernel (the offsets are the goldens'; every read through them is checked
// at run time, not at load).
func TestKprobeProgramsLoad(t *testing.T) {
	testenv.RequireRoot(t)
	events, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	pending, err := ebpf.NewMap(PendingMapSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	tuples, err := ebpf.NewMap(TupleMapSpec())
	if err != nil {
		t.Fatal(err)
	}
	defer tuples.Close()
	maps := map[string]*ebpf.Map{EventsMap: events, PendingMap: pending, TupleMap: tuples}
	for _, tc := range []struct {
		before516 bool
		probe     decode.Probe
	}{{false, decode.ProbeIptDoTable}, {true, decode.ProbeIptDoTable}, {false, decode.ProbeNftDoChain}} {
		spec := netfilterSpec(t, tc.before516)
		nf, err := LookupNetfilterOffsets(spec, spec, tc.probe)
		if err != nil {
			t.Fatal(err)
		}
		for run, cfg := range map[string]Config{"echo": {EchoID: 0xbeef}, "tcp": goldenTCP, "udp": goldenUDP} {
			p := KprobeParams{Offsets: goldenOffsets, NF: nf, Probe: tc.probe, Clauses: cfg.Clauses()}
			for name, insns := range map[string]func(KprobeParams) asm.Instructions{"entry": KprobeEntryProgram, "return": KprobeReturnProgram} {
				prog, err := loadProgram(insns(p), ebpf.Kprobe, "tracepkt_test", maps)
				if err != nil {
					t.Errorf("%s run, %s %s (before 5.16: %v): %v", run, tc.probe, name, tc.before516, err)
					continue
				}
				prog.Close()
			}
		}
	}
}
