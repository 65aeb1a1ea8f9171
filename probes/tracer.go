package probes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/elastic/go-perf"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// Config selects what a Tracer attaches.
type Config struct {
	EchoID uint16
	// Probes to attach; nil means decode.Probes().
	Probes []decode.Probe
	// RingPages is the data size of each per-CPU ring in pages (a power of two).
	RingPages int
	// Netfilter are the netfilter probes (kprobes) to attach; those whose
	// function is not in the kernel are left out: its module is not loaded,
	// so there are no such rules to see.
	Netfilter []decode.Probe
}

// Tracer owns the BPF programs, the perf events they are attached to and the
// per-CPU rings their records are read from. Read it like a cilium/ebpf
// perf.Reader: ReadInto with a deadline; Close unblocks a pending read.
type Tracer struct {
	mu       sync.Mutex // held by ReadInto, so Close waits for it
	closed   bool
	events   *ebpf.Map
	pending  *ebpf.Map
	kprobes  *tracefs.KprobeGroup
	rings    []*perf.Event
	progs    []*ebpf.Program
	attached []*perf.Event
	epfd     int
	wakefd   int
	deadline time.Time
	next     int
	raw      perf.RawRecord
	expired  context.Context
	lost     uint64
}

// Open attaches the probes for one echo id. On error, nothing stays attached.
func Open(fs *tracefs.FS, offsets Offsets, cfg Config) (_ *Tracer, err error) {
	if cfg.Probes == nil {
		cfg.Probes = decode.Probes()
	}
	if cfg.RingPages == 0 {
		cfg.RingPages = 8
	}
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	cancel()
	t := &Tracer{epfd: -1, wakefd: -1, expired: expired}
	defer func() {
		if err != nil {
			t.teardown()
		}
	}()

	online, err := cpuList("online")
	if err != nil {
		return nil, err
	}
	if err := t.openRings(cfg.RingPages, online); err != nil {
		return nil, err
	}
	for _, p := range cfg.Probes {
		if err := t.attach(fs, offsets, p, cfg.EchoID, online[0]); err != nil {
			return nil, err
		}
	}
	if len(cfg.Netfilter) > 0 {
		if err := t.attachNetfilter(fs, offsets, cfg.Netfilter, cfg.EchoID, online[0]); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// attachNetfilter puts a kprobe and a kretprobe on each netfilter function:
// the entry program parks a record per task in the pending map, the return
// program adds the verdict and emits it.
func (t *Tracer) attachNetfilter(fs *tracefs.FS, offsets Offsets, nfProbes []decode.Probe, id uint16, cpu int) error {
	var err error
	if t.kprobes, err = fs.NewKprobeGroup(); err != nil {
		return err
	}
	if t.pending, err = ebpf.NewMap(&ebpf.MapSpec{
		Name: "tracepkt_pend", Type: ebpf.Hash, KeySize: 8, ValueSize: decode.RecordSize, MaxEntries: 4096,
	}); err != nil {
		return fmt.Errorf("create pending map: %w", err)
	}
	for _, p := range nfProbes {
		fn := p.Kprobe()
		entryID, err := t.kprobes.Add(fn, fn, false)
		if err != nil {
			continue // not in this kernel: no module, no rules of that kind
		}
		nf, err := KernelNetfilterOffsets(p)
		if err != nil {
			return fmt.Errorf("kprobe %s: %w", fn, err)
		}
		retID, err := t.kprobes.Add(fn+"_ret", fn, true)
		if err != nil {
			return err
		}
		params := KprobeParams{Offsets: offsets, NF: nf, Probe: p, EchoID: id}
		for _, k := range []struct {
			id    uint64
			name  string
			insns asm.Instructions
		}{{entryID, fn, KprobeEntryProgram(params)}, {retID, fn + "_ret", KprobeReturnProgram(params)}} {
			if err := t.attachProgram(k.insns, ebpf.Kprobe, "tracepkt_"+fn[:min(len(fn), 6)], "kprobe:"+k.name, k.id, cpu); err != nil {
				return fmt.Errorf("kprobe %s: %w", k.name, err)
			}
		}
	}
	return nil
}

// openRings opens one BPF-output perf event per online CPU, maps its ring and
// stores it in the events map under its CPU number.
func (t *Tracer) openRings(pages int, online []int) error {
	possible, err := cpuList("possible")
	if err != nil {
		return err
	}
	t.events, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "tracepkt_events",
		Type:       ebpf.PerfEventArray,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(possible[len(possible)-1] + 1),
	})
	if err != nil {
		return fmt.Errorf("create perf event array: %w", err)
	}
	if t.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	if t.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	if err := t.poll(t.wakefd); err != nil {
		return err
	}
	for _, cpu := range online {
		attr := &perf.Attr{
			Label:        "tracepkt-output",
			Type:         perf.SoftwareEvent,
			Config:       uint64(perf.BPFOutput),
			Sample:       1,
			Wakeup:       1,
			SampleFormat: perf.SampleFormat{Raw: true},
		}
		ev, err := perf.Open(attr, perf.AllThreads, cpu, nil)
		if err != nil {
			return fmt.Errorf("open bpf-output event on cpu %d: %w", cpu, err)
		}
		t.rings = append(t.rings, ev)
		if err := ev.MapRingNumPages(pages); err != nil {
			return fmt.Errorf("map ring of cpu %d: %w", cpu, err)
		}
		fd, err := ev.FD()
		if err != nil {
			return err
		}
		if err := t.events.Put(uint32(cpu), uint32(fd)); err != nil {
			return fmt.Errorf("store ring of cpu %d: %w", cpu, err)
		}
		if err := t.poll(fd); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tracer) poll(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(t.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// attach loads the program for one probe and attaches it to the tracepoint
// through a single perf event: the program then runs for hits on every CPU.
func (t *Tracer) attach(fs *tracefs.FS, offsets Offsets, p decode.Probe, id uint16, cpu int) error {
	insns, tpID, err := tracepointProgram(fs, offsets, p, id)
	if err != nil {
		return err
	}
	group, event := p.Tracepoint()
	if err := t.attachProgram(insns, ebpf.TracePoint, "tracepkt_"+event[:min(len(event), 6)], group+":"+event, tpID, cpu); err != nil {
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
	return TracepointProgram(ProgramParams{Offsets: offsets, SkbAddrOffset: int16(skbOff), Probe: p, EchoID: id}), tpID, nil
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
func (t *Tracer) attachProgram(insns asm.Instructions, typ ebpf.ProgramType, name, label string, tpID uint64, cpu int) error {
	prog, err := loadProgram(insns, typ, name, map[string]*ebpf.Map{EventsMap: t.events, PendingMap: t.pending})
	if err != nil {
		return err
	}
	t.progs = append(t.progs, prog)
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
	t.attached = append(t.attached, ev)
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

// SetDeadline bounds the next ReadInto calls; the zero time means none, a
// time in the past makes ReadInto return only what is already in the rings.
func (t *Tracer) SetDeadline(d time.Time) {
	t.mu.Lock()
	t.deadline = d
	t.mu.Unlock()
}

// Lost is the number of records the kernel dropped because a ring was full.
func (t *Tracer) Lost() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost
}

// ReadInto reads the next record into rec, reusing rec's storage. A record
// with Lost set reports dropped records. It returns an error wrapping
// os.ErrDeadlineExceeded at the deadline and os.ErrClosed after Close.
func (t *Tracer) ReadInto(rec *decode.Record) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var events [4]unix.EpollEvent
	for {
		if t.closed {
			return os.ErrClosed
		}
		for i := range t.rings {
			idx := (t.next + i) % len(t.rings)
			if !t.rings[idx].HasRecord() {
				continue
			}
			t.next = idx + 1
			if err := t.rings[idx].ReadRawRecord(t.expired, &t.raw); err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					continue
				}
				return fmt.Errorf("read ring: %w", err)
			}
			ok, err := t.decodeRaw(rec)
			if ok || err != nil {
				return err
			}
		}
		timeout := -1
		if !t.deadline.IsZero() {
			left := time.Until(t.deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		t.mu.Unlock()
		_, err := unix.EpollWait(t.epfd, events[:], timeout)
		t.mu.Lock()
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
	}
}

// decodeRaw turns the raw perf record in t.raw into rec; false means the
// record was of a kind we skip.
func (t *Tracer) decodeRaw(rec *decode.Record) (bool, error) {
	switch t.raw.Header.Type {
	case perf.RecordTypeSample:
		// Must match PERF_SAMPLE_RAW: u32 size, then size bytes.
		if len(t.raw.Data) < 4 {
			return false, fmt.Errorf("%w: raw sample of %d bytes", decode.ErrShortRecord, len(t.raw.Data))
		}
		size := int(binary.NativeEndian.Uint32(t.raw.Data))
		if size > len(t.raw.Data)-4 {
			return false, fmt.Errorf("%w: raw size %d exceeds sample", decode.ErrShortRecord, size)
		}
		return true, rec.Decode(t.raw.Data[4 : 4+size])
	case perf.RecordTypeLost:
		// Must match PERF_RECORD_LOST: u64 id, u64 lost.
		if len(t.raw.Data) < 16 {
			return false, fmt.Errorf("%w: lost record of %d bytes", decode.ErrShortRecord, len(t.raw.Data))
		}
		*rec = decode.Record{Lost: binary.NativeEndian.Uint64(t.raw.Data[8:])}
		t.lost += rec.Lost
		return true, nil
	}
	return false, nil
}

// Close detaches every program and releases every ring; a pending ReadInto
// returns os.ErrClosed.
func (t *Tracer) Close() error {
	if t.wakefd >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(t.wakefd, one[:])
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	return t.teardown()
}

func (t *Tracer) teardown() error {
	// Closing the last perf event of a tracepoint waits for RCU grace periods
	// (tracepoint_synchronize_unregister): tens of ms each on a small VM.
	// Closed concurrently, the waits overlap instead of adding up.
	errs := make([]error, len(t.attached))
	var wg sync.WaitGroup
	for i, ev := range t.attached {
		wg.Go(func() { errs[i] = errors.Join(ev.Disable(), ev.Close()) })
	}
	wg.Wait()
	for _, p := range t.progs {
		errs = append(errs, p.Close())
	}
	// Kprobe definitions are busy until their perf events are closed.
	if t.kprobes != nil {
		errs = append(errs, t.kprobes.Close())
	}
	if t.pending != nil {
		errs = append(errs, t.pending.Close())
	}
	for _, ev := range t.rings {
		errs = append(errs, ev.Close())
	}
	if t.events != nil {
		errs = append(errs, t.events.Close())
	}
	for _, fd := range []int{t.epfd, t.wakefd} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	t.attached, t.progs, t.rings, t.events, t.kprobes, t.pending = nil, nil, nil, nil, nil, nil
	t.epfd, t.wakefd = -1, -1
	return errors.Join(errs...)
}
