package probes

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/elastic/go-perf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// Attachments are the BPF programs of one trace and what attaches them: a
// perf event per tracepoint or kprobe, and the kprobe group and pending map
// of the netfilter probes. The programs write to the rings of a Reader.
type Attachments struct {
	events   *ebpf.Map // the Reader's rings, not owned
	pending  *ebpf.Map
	kprobes  *tracefs.KprobeGroup
	progs    []*ebpf.Program
	attached []*perf.Event
}

// attach loads and attaches the programs cfg asks for, writing to events,
// through perf events opened on cpu. On error, nothing stays attached.
func attach(fs *tracefs.FS, offsets Offsets, cfg Config, events *ebpf.Map, cpu int) (_ *Attachments, err error) {
	a := &Attachments{events: events}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	for _, p := range cfg.Probes {
		if err := a.attachTracepoint(fs, offsets, p, cfg.EchoID, cpu); err != nil {
			return nil, err
		}
	}
	if len(cfg.Netfilter) > 0 {
		if err := a.attachNetfilter(fs, offsets, cfg.Netfilter, cfg.EchoID, cpu); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// attachTracepoint loads the program for one probe and attaches it to the
// tracepoint through a single perf event: the program then runs for hits on
// every CPU.
func (a *Attachments) attachTracepoint(fs *tracefs.FS, offsets Offsets, p decode.Probe, id uint16, cpu int) error {
	insns, tpID, err := tracepointProgram(fs, offsets, p, id)
	if err != nil {
		return err
	}
	group, event := p.Tracepoint()
	if err := a.attachProgram(insns, ebpf.TracePoint, "tracepkt_"+event[:min(len(event), 6)], group+":"+event, tpID, cpu); err != nil {
		return fmt.Errorf("%s/%s: %w", group, event, err)
	}
	return nil
}

// tracepointProgram builds the program of probe p for this kernel's
// tracepoint format, and returns the tracepoint's perf id with it.
func tracepointProgram(fs *tracefs.FS, offsets Offsets, p decode.Probe, id uint16) (asm.Instructions, uint64, error) {
	group, event := p.Tracepoint()
	tpID, err := fs.EventID(group, event)
	if err != nil {
		return nil, 0, fmt.Errorf("open tracepoint %s/%s: %w", group, event, err)
	}
	skbOff, err := fs.FieldOffset(group, event, "skbaddr")
	if err != nil {
		return nil, 0, fmt.Errorf("open tracepoint %s/%s: %w", group, event, err)
	}
	params := ProgramParams{Offsets: offsets, SkbAddrOffset: int16(skbOff), Probe: p, EchoID: id}
	if p == decode.ProbeKfreeSkb {
		if params.Drop, err = kernelDropFields(fs); err != nil {
			return nil, 0, fmt.Errorf("open tracepoint %s/%s: %w", group, event, err)
		}
	}
	return TracepointProgram(params), tpID, nil
}

// loadProgram associates insns with the maps they reference and loads them.
func loadProgram(insns asm.Instructions, typ ebpf.ProgramType, name string, maps map[string]*ebpf.Map) (*ebpf.Program, error) {
	for ref, m := range maps {
		if m != nil {
			if err := associate(insns, ref, m); err != nil {
				return nil, err
			}
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: typ, Instructions: insns, License: "Dual MIT/GPL"})
	if err != nil {
		return nil, fmt.Errorf("load program: %w", err)
	}
	return prog, nil
}

// attachProgram loads insns and attaches them to the perf tracepoint event
// tpID (a tracepoint, or a kprobe created through tracefs) through one perf
// event: the program then runs for hits on every CPU.
func (a *Attachments) attachProgram(insns asm.Instructions, typ ebpf.ProgramType, name, label string, tpID uint64, cpu int) error {
	prog, err := loadProgram(insns, typ, name, map[string]*ebpf.Map{EventsMap: a.events, PendingMap: a.pending})
	if err != nil {
		return err
	}
	a.progs = append(a.progs, prog)
	attr := &perf.Attr{
		Label:        label,
		Type:         perf.TracepointEvent,
		Config:       tpID,
		Sample:       1,
		Wakeup:       1,
		SampleFormat: perf.SampleFormat{Raw: true},
		Options:      perf.Options{Disabled: true},
	}
	ev, err := perf.Open(attr, perf.AllThreads, cpu, nil)
	if err != nil {
		return fmt.Errorf("open perf event: %w", err)
	}
	a.attached = append(a.attached, ev)
	if err := ev.SetBPF(uint32(prog.FD())); err != nil {
		return fmt.Errorf("attach program: %w", err)
	}
	if err := ev.Enable(); err != nil {
		return fmt.Errorf("enable: %w", err)
	}
	return nil
}

func associate(insns asm.Instructions, ref string, m *ebpf.Map) error {
	for i := range insns {
		if insns[i].Reference() == ref {
			if err := insns[i].AssociateMap(m); err != nil {
				return fmt.Errorf("associate map %s: %w", ref, err)
			}
		}
	}
	return nil
}

// attachNetfilter puts a kprobe and a kretprobe on each netfilter function:
// the entry program parks a record per task in the pending map, the return
// program adds the verdict and emits it.
func (a *Attachments) attachNetfilter(fs *tracefs.FS, offsets Offsets, nfProbes []decode.Probe, id uint16, cpu int) error {
	var err error
	if a.kprobes, err = fs.NewKprobeGroup(); err != nil {
		return err
	}
	if a.pending, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "tracepkt_pend", Type: ebpf.Hash, KeySize: 8, ValueSize: decode.NFRecordSize, MaxEntries: 4096,
	}); err != nil {
		return fmt.Errorf("create pending map: %w", err)
	}
	for _, p := range nfProbes {
		fn := p.Kprobe()
		entryID, err := a.kprobes.Add(fn, fn, false)
		if err != nil {
			continue // not in this kernel: no module, no rules of that kind
		}
		nf, err := KernelNetfilterOffsets(p)
		if err != nil {
			return fmt.Errorf("kprobe %s: %w", fn, err)
		}
		retID, err := a.kprobes.Add(fn+"_ret", fn, true)
		if err != nil {
			return err
		}
		params := KprobeParams{Offsets: offsets, NF: nf, Probe: p, EchoID: id}
		for _, k := range []struct {
			id    uint64
			name  string
			insns asm.Instructions
		}{{entryID, fn, KprobeEntryProgram(params)}, {retID, fn + "_ret", KprobeReturnProgram(params)}} {
			if err := a.attachProgram(k.insns, ebpf.Kprobe, "tracepkt_"+fn[:min(len(fn), 6)], "kprobe:"+k.name, k.id, cpu); err != nil {
				return fmt.Errorf("kprobe %s: %w", k.name, err)
			}
		}
	}
	return nil
}

// Close detaches every program and removes the kprobes it created.
func (a *Attachments) Close() error {
	// Closing the last perf event of a tracepoint waits for RCU grace periods
	// (tracepoint_synchronize_unregister): tens of ms each on a small VM.
	// Closed concurrently, the waits overlap instead of adding up.
	errs := make([]error, len(a.attached))
	var wg sync.WaitGroup
	for i, ev := range a.attached {
		wg.Go(func() { errs[i] = errors.Join(ev.Disable(), ev.Close()) })
	}
	wg.Wait()
	for _, p := range a.progs {
		errs = append(errs, p.Close())
	}
	// Kprobe definitions are busy until their perf events are closed.
	if a.kprobes != nil {
		errs = append(errs, a.kprobes.Close())
	}
	if a.pending != nil {
		errs = append(errs, a.pending.Close())
	}
	a.attached, a.progs, a.kprobes, a.pending = nil, nil, nil, nil
	return errors.Join(errs...)
}
