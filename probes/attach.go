package probes

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"github.com/elastic/go-perf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/caps"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// Attachments are the BPF programs of one trace and what attaches them: a
// raw tracepoint link or a perf event per device probe, a perf event per
// kprobe, the kprobe group and pending map of the netfilter probes, and the
// tuple map every program of a UDP trace shares. The programs write to the
// rings of a Reader.
type Attachments struct {
	events   *ebpf.Map // the Reader's rings, not owned
	pending  *ebpf.Map
	tuples   *ebpf.Map // a UDP trace's TupleMap
	kprobes  *tracefs.KprobeGroup
	progs    []*ebpf.Program
	links    []link.Link
	attached []*perf.Event
	paths    []ProbeAttachment
	notes    []string
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
	if cfg.UDP != nil {
		if a.tuples, err = ebpf.NewMap(TupleMapSpec()); err != nil {
			return nil, fmt.Errorf("create tuple map: %w", caps.Explain(err, caps.CreateMap))
		}
	}
	clauses := cfg.Clauses()
	progs := devicePrograms{fs: fs, offsets: offsets, clauses: clauses}
	for _, p := range cfg.Probes {
		path, err := a.attachDevice(progs, p, cfg.Attach, cpu)
		if err != nil {
			return nil, err
		}
		a.paths = append(a.paths, path)
	}
	if len(cfg.Netfilter) > 0 {
		if err := a.attachNetfilter(fs, offsets, cfg, clauses, cpu); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// attachDevice attaches the program of device probe p the first way mode
// allows that the kernel accepts. A perf tracepoint event is opened on cpu:
// one is enough, the program then runs for hits on every CPU.
func (a *Attachments) attachDevice(progs devicePrograms, p decode.Probe, mode AttachMode, cpu int) (ProbeAttachment, error) {
	group, event := p.Tracepoint()
	name := "tracepkt_" + event[:min(len(event), 6)]
	path := ProbeAttachment{Probe: p}
	for _, at := range mode.attachments() {
		err := a.attachAs(progs, p, at, name, cpu)
		if err == nil {
			path.Attachment = at
			return path, nil
		}
		path.Skipped = append(path.Skipped, fmt.Sprintf("%s: %s", at, short(err)))
	}
	return path, fmt.Errorf("%s/%s: no way of attaching (--attach %s) works: %s", group, event, mode, strings.Join(path.Skipped, "; "))
}

// attachAs builds, loads and attaches the program of probe p one way.
func (a *Attachments) attachAs(progs devicePrograms, p decode.Probe, at Attachment, name string, cpu int) error {
	insns, err := progs.build(p, at)
	if err != nil {
		return err
	}
	group, event := p.Tracepoint()
	if at == PerfTP {
		tpID, err := progs.fs.EventID(group, event)
		if err != nil {
			return fmt.Errorf("open tracepoint %s/%s: %w", group, event, err)
		}
		return a.attachProgram(insns, ebpf.TracePoint, name, group+":"+event, tpID, cpu)
	}
	prog, l, err := loadRaw(insns, at, name, event, a.maps())
	if err != nil {
		return err
	}
	a.progs, a.links = append(a.progs, prog), append(a.links, l)
	return nil
}

// maps are the maps the programs may reference, by reference name; those
// the trace has not created are nil.
func (a *Attachments) maps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{EventsMap: a.events, PendingMap: a.pending, TupleMap: a.tuples}
}

// Paths says how each device probe was attached.
func (a *Attachments) Paths() []ProbeAttachment { return a.paths }

// loadProgram associates insns with the maps they reference and loads them.
func loadProgram(insns asm.Instructions, typ ebpf.ProgramType, name string, maps map[string]*ebpf.Map) (*ebpf.Program, error) {
	for ref, m := range maps {
		if m != nil {
			if err := associate(insns, ref, m); err != nil {
				return nil, err
			}
		}
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: typ, Instructions: insns, License: progLicense})
	if err != nil {
		return nil, fmt.Errorf("load program: %w", caps.Explain(err, caps.LoadBPF))
	}
	return prog, nil
}

// attachProgram loads insns and attaches them to the perf tracepoint event
// tpID (a tracepoint, or a kprobe created through tracefs) through one perf
// event: the program then runs for hits on every CPU.
func (a *Attachments) attachProgram(insns asm.Instructions, typ ebpf.ProgramType, name, label string, tpID uint64, cpu int) error {
	prog, err := loadProgram(insns, typ, name, a.maps())
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
		return fmt.Errorf("open perf event: %w", caps.Explain(err, caps.OpenPerfEvent))
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
// the entry program parks a record in the pending map, in a slot of its
// CPU and call depth, the return program adds the verdict and emits it.
func (a *Attachments) attachNetfilter(fs *tracefs.FS, offsets Offsets, cfg Config, clauses []Clause, cpu int) error {
	var err error
	if a.kprobes, err = fs.NewKprobeGroup(); err != nil {
		return err
	}
	if a.pending, err = ebpf.NewMap(PendingMapSpec()); err != nil {
		return fmt.Errorf("create pending map: %w", caps.Explain(err, caps.CreateMap))
	}
	for _, p := range cfg.Netfilter {
		fn := p.Kprobe()
		entryID, err := a.kprobes.Add(fn, fn, false)
		switch {
		case errors.Is(err, tracefs.ErrNoSymbol):
			continue // not in this kernel: no module, no rules of that kind
		case err != nil && cfg.NetfilterOptional:
			a.notes = append(a.notes, fmt.Sprintf("netfilter: no kprobe on %s, its verdicts are not shown: %v", fn, err))
			continue
		case err != nil:
			return fmt.Errorf("kprobe %s: %w", fn, err)
		}
		nf, err := KernelNetfilterOffsets(p)
		if err != nil {
			return fmt.Errorf("kprobe %s: %w", fn, err)
		}
		retID, err := a.kprobes.Add(fn+"_ret", fn, true)
		if err != nil {
			return err
		}
		params := KprobeParams{Offsets: offsets, NF: nf, Probe: p, Clauses: clauses}
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
	// Raw tracepoint links close at once.
	for _, l := range a.links {
		errs = append(errs, l.Close())
	}
	for _, p := range a.progs {
		errs = append(errs, p.Close())
	}
	// Kprobe definitions are busy until their perf events are closed.
	if a.kprobes != nil {
		errs = append(errs, a.kprobes.Close())
	}
	for _, m := range []*ebpf.Map{a.pending, a.tuples} {
		if m != nil {
			errs = append(errs, m.Close())
		}
	}
	a.attached, a.links, a.progs, a.kprobes, a.pending, a.tuples = nil, nil, nil, nil, nil, nil
	return errors.Join(errs...)
}
