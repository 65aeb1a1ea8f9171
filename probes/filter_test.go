package probes

import (
	"os"
	"testing"

	"github.com/cilium/ebpf/btf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// Two clauses on one protocol: the second is tried when the first fails,
// on both paths (L4 bytes read with the IP header, and read on their own).
func TestFilterClausesChain(t *testing.T) {
	clauses := []Clause{EchoClause(1, 0), EchoClause(2, 0)}
	clauses[1].Name = "echo2"
	for _, typed := range []bool{false, true} {
		insns := TracepointProgram(ProgramParams{Offsets: goldenOffsets, Probe: decode.ProbeNetifReceiveSkb, Clauses: clauses, Typed: typed})
		assertResolved(t, "chain", insns)
		jumps := map[string]int{}
		for _, ins := range insns {
			jumps[ins.Reference()]++
		}
		for _, l := range []string{"clause1_4_fixed", "clause1_4", "clause1_6_fixed", "clause1_6"} {
			if jumps[l] == 0 {
				t.Errorf("typed=%v: nothing jumps to %s", typed, l)
			}
		}
	}
	// A clause with more L4 bytes than the IP read holds is always read on its own.
	big := EchoClause(1, 0)
	big.L4Bytes = ipBytes - ipv4HeaderLen + 1
	insns := TracepointProgram(ProgramParams{Offsets: goldenOffsets, Probe: decode.ProbeNetDevQueue, Clauses: []Clause{big}})
	assertResolved(t, "chain", insns)
	for _, ins := range insns {
		if ins.Symbol() == "clause0_4_fixed" || ins.Symbol() == "clause0_6_fixed" {
			t.Errorf("%s: a clause of %d bytes tested from the IP read", ins.Symbol(), big.L4Bytes)
		}
	}
}

// The arguments come from btf_trace_<event>, whose first parameter (the
// tracepoint's data) is not passed to the program.
func TestRawTracepointArgs(t *testing.T) {
	voidPtr := &btf.Pointer{Target: &btf.Void{}}
	skb := &btf.Pointer{Target: &btf.Struct{Name: "sk_buff", Size: 232}}
	reason := &btf.Enum{Name: "skb_drop_reason", Size: 4}
	sock := &btf.Pointer{Target: &btf.Struct{Name: "sock", Size: 8}}
	typedef := func(name string, params ...btf.FuncParam) *btf.Typedef {
		params = append([]btf.FuncParam{{Name: "__data", Type: voidPtr}}, params...)
		return &btf.Typedef{Name: name, Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: params}}}
	}
	blob := buildBTF(t,
		typedef("btf_trace_net_dev_queue", btf.FuncParam{Name: "skb", Type: skb}),
		// As in the kernel's BTF: the tracepoint's arguments are unnamed.
		typedef("btf_trace_kfree_skb", btf.FuncParam{Type: skb}, btf.FuncParam{Type: voidPtr},
			btf.FuncParam{Type: reason}, btf.FuncParam{Type: sock}),
		typedef("btf_trace_consume_skb", btf.FuncParam{Type: &btf.Const{Type: skb}}, btf.FuncParam{Type: voidPtr}),
		typedef("btf_trace_no_skb", btf.FuncParam{Name: "x", Type: voidPtr}),
	)
	var names []string
	for _, event := range []string{"net_dev_queue", "kfree_skb", "consume_skb", "no_skb", "missing"} {
		names = append(names, tracepointTypedef(event))
	}
	for name, spec := range finders(t, blob, names, nil) {
		for event, want := range map[string]int{"net_dev_queue": 0, "kfree_skb": 0, "consume_skb": 0, "no_skb": -1} {
			args, err := RawTracepointArgs(spec, event)
			if got := argIndex(args, isSkb); err != nil || got != want {
				t.Errorf("%s: %s: skb argument %d, %v; want %d", name, event, got, err, want)
			}
		}
		if _, err := RawTracepointArgs(spec, "missing"); err == nil {
			t.Errorf("%s: missing: no error", name)
		}
		args, _ := RawTracepointArgs(spec, "kfree_skb")
		if f, err := rawDropFields(args); err != nil || f != (DropFields{Location: 8, Reason: 16}) {
			t.Errorf("%s: kfree_skb: %+v, %v", name, f, err)
		}
		args, _ = RawTracepointArgs(spec, "consume_skb")
		if f, err := rawDropFields(args); err != nil || f != (DropFields{Location: 8, Reason: -1}) {
			t.Errorf("%s: no reason: %+v, %v", name, f, err)
		}
		args, _ = RawTracepointArgs(spec, "net_dev_queue")
		if _, err := rawDropFields(args); err == nil {
			t.Errorf("%s: no location: no error", name)
		}
	}
}

// The running kernel's BTF read as kernelTypes gives what cilium/ebpf's full
// parse gives: the offsets, and each device probe's raw tracepoint arguments.
func TestKernelTypesMatchBTFSpec(t *testing.T) {
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	testenv.Require(t, err)
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	kt, err := deviceTypes()
	if err != nil {
		t.Fatal(err)
	}
	want, err := LookupOffsets(spec)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := LookupOffsets(kt); err != nil || got != want {
		t.Errorf("offsets %+v, %v; btf.Spec's %+v", got, err, want)
	}
	for _, p := range decode.Probes() {
		_, event := p.Tracepoint()
		wantArgs, err := RawTracepointArgs(spec, event)
		if err != nil {
			t.Fatal(err)
		}
		args, err := RawTracepointArgs(kt, event)
		if err != nil {
			t.Fatalf("%s: %v", event, err)
		}
		if len(args) != len(wantArgs) || argIndex(args, isSkb) != argIndex(wantArgs, isSkb) ||
			argIndex(args, isVoidPtr) != argIndex(wantArgs, isVoidPtr) || argIndex(args, isDropReason) != argIndex(wantArgs, isDropReason) {
			t.Errorf("%s: arguments %v, btf.Spec's %v", event, args, wantArgs)
		}
	}
}
