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
	insns, _, err := tracepointProgram(fs, offsets, p, 1)
	if err != nil {
		return err
	}
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return fmt.Errorf("create perf event array: %w", err)
	}
	defer m.Close()
	prog, err := loadProgram(insns, ebpf.TracePoint, "", map[string]*ebpf.Map{EventsMap: m})
	if err != nil {
		group, event := p.Tracepoint()
		return fmt.Errorf("%s/%s: %w", group, event, err)
	}
	return prog.Close()
}
