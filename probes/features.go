package probes

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// CheckProgram loads the program of probe p into the kernel and unloads it:
// nil means the verifier accepts what we generate for this kernel.
func CheckProgram(fs *tracefs.FS, offsets Offsets, p decode.Probe) error {
	group, event := p.Tracepoint()
	if _, err := fs.EventID(group, event); err != nil {
		return err
	}
	skbOff, err := fs.FieldOffset(group, event, "skbaddr")
	if err != nil {
		return err
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create perf event array: %w", err)
	}
	defer m.Close()
	insns := TracepointProgram(ProgramParams{Offsets: offsets, SkbAddrOffset: int16(skbOff), Probe: p, EchoID: 1})
	if err := associate(insns, EventsMap, m); err != nil {
		return err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.TracePoint, Instructions: insns, License: "Dual MIT/GPL"})
	if err != nil {
		return fmt.Errorf("load program for %s/%s: %w", group, event, err)
	}
	return prog.Close()
}
