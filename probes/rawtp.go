package probes

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/caps"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// AttachMode is what --attach asks for: which ways of attaching a device
// probe's program to its tracepoint may be tried.
type AttachMode string

const (
	// AttachAuto tries a raw tracepoint first, then a perf tracepoint event.
	AttachAuto AttachMode = "auto"
	// AttachRaw allows only raw tracepoints: BTF-typed (tp_btf), else plain (raw_tp).
	AttachRaw AttachMode = "raw"
	// AttachPerf allows only the perf tracepoint event.
	AttachPerf AttachMode = "perf"
	// AttachTpBTF and AttachRawTP allow one kind of raw tracepoint only.
	AttachTpBTF AttachMode = "tp_btf"
	AttachRawTP AttachMode = "raw_tp"
)

// ParseAttachMode checks an --attach value.
func ParseAttachMode(s string) (AttachMode, error) {
	switch m := AttachMode(s); m {
	case AttachAuto, AttachRaw, AttachPerf, AttachTpBTF, AttachRawTP:
		return m, nil
	}
	return "", fmt.Errorf("--attach takes auto, raw, perf, tp_btf or raw_tp, not %q", s)
}

// Attachment is the way one probe's program got attached.
type Attachment string

const (
	// TpBTF is a BTF-typed raw tracepoint: the program gets the
	// tracepoint's arguments, checked against the kernel's BTF.
	TpBTF Attachment = "tp_btf"
	// RawTP is a raw tracepoint: the same arguments, untyped.
	RawTP Attachment = "raw_tp"
	// PerfTP is a perf tracepoint event: the kernel fills the whole trace
	// record before the program runs, and closing the last one waits for
	// RCU grace periods.
	PerfTP Attachment = "perf"
)

// attachments lists, in order, the ways mode allows.
func (m AttachMode) attachments() []Attachment {
	switch m {
	case AttachRaw:
		return []Attachment{TpBTF, RawTP}
	case AttachPerf:
		return []Attachment{PerfTP}
	case AttachTpBTF:
		return []Attachment{TpBTF}
	case AttachRawTP:
		return []Attachment{RawTP}
	}
	return []Attachment{TpBTF, RawTP, PerfTP}
}

// ProbeAttachment says how a probe was attached, and why the ways tried
// before it were not taken.
type ProbeAttachment struct {
	Probe      decode.Probe
	Attachment Attachment
	Skipped    []string // "tp_btf: <why>", in the order tried
}

func (pa ProbeAttachment) String() string {
	if len(pa.Skipped) == 0 {
		return string(pa.Attachment)
	}
	return fmt.Sprintf("%s (%s)", pa.Attachment, strings.Join(pa.Skipped, "; "))
}

// devicePrograms builds device programs for one probe: the skb's place in
// the context differs between a perf tracepoint's record and a raw
// tracepoint's arguments, the rest does not.
type devicePrograms struct {
	fs      *tracefs.FS
	offsets Offsets
	clauses []Clause
}

// build returns the program of probe p for attachment at.
func (d devicePrograms) build(p decode.Probe, at Attachment) (asm.Instructions, error) {
	group, event := p.Tracepoint()
	params := ProgramParams{Offsets: d.offsets, Probe: p, Clauses: d.clauses, Typed: at == TpBTF}
	if at == PerfTP {
		off, err := d.fs.FieldOffset(group, event, "skbaddr")
		if err != nil {
			return nil, fmt.Errorf("open tracepoint %s/%s: %w", group, event, err)
		}
		params.SkbOffset = int16(off)
		if p == decode.ProbeKfreeSkb {
			if params.Drop, err = kernelDropFields(d.fs); err != nil {
				return nil, fmt.Errorf("open tracepoint %s/%s: %w", group, event, err)
			}
		}
		return TracepointProgram(params), nil
	}
	facts, err := deviceFacts()
	if err != nil {
		return nil, err
	}
	raw, err := facts.rawTracepoint(event)
	if err != nil {
		return nil, err
	}
	params.SkbOffset, params.Drop = raw.SkbOffset, raw.Drop
	return TracepointProgram(params), nil
}

// RawTracepointArgs are the arguments a raw tracepoint hands its program,
// each a u64 of its context, from the kernel's btf_trace_<event> typedef: a
// pointer to a function whose first parameter (the tracepoint's private
// data) is not passed on.
func RawTracepointArgs(spec typeFinder, event string) ([]btf.FuncParam, error) {
	var td *btf.Typedef
	if err := spec.TypeByName(tracepointTypedef(event), &td); err != nil {
		return nil, fmt.Errorf("btf: raw tracepoint %s: %w", event, err)
	}
	if ptr, ok := td.Type.(*btf.Pointer); ok {
		if proto, ok := ptr.Target.(*btf.FuncProto); ok && len(proto.Params) > 0 {
			return proto.Params[1:], nil
		}
	}
	return nil, fmt.Errorf("btf: btf_trace_%s is not a pointer to a function of the tracepoint's data", event)
}

// tracepointTypedef names the kernel's typedef of raw tracepoint event.
func tracepointTypedef(event string) string { return "btf_trace_" + event }

// argIndex is the index of the first argument match accepts, or -1.
func argIndex(args []btf.FuncParam, match func(btf.FuncParam) bool) int {
	for i, a := range args {
		if match(a) {
			return i
		}
	}
	return -1
}

// isSkb accepts a struct sk_buff * argument.
func isSkb(a btf.FuncParam) bool {
	if p, ok := btf.UnderlyingType(a.Type).(*btf.Pointer); ok {
		s, ok := btf.UnderlyingType(p.Target).(*btf.Struct)
		return ok && s.Name == "sk_buff"
	}
	return false
}

// isVoidPtr accepts a void * argument.
func isVoidPtr(a btf.FuncParam) bool {
	p, ok := btf.UnderlyingType(a.Type).(*btf.Pointer)
	if !ok {
		return false
	}
	_, ok = p.Target.(*btf.Void)
	return ok
}

// isDropReason accepts an enum skb_drop_reason argument.
func isDropReason(a btf.FuncParam) bool {
	e, ok := btf.UnderlyingType(a.Type).(*btf.Enum)
	return ok && e.Name == "skb_drop_reason"
}

// rawDropFields places skb:kfree_skb's location (its void * argument) and
// reason (its enum skb_drop_reason) among the raw tracepoint's arguments,
// by type: the kernel's BTF leaves them unnamed. Reason is -1 where the
// kernel has none.
func rawDropFields(args []btf.FuncParam) (DropFields, error) {
	loc := argIndex(args, isVoidPtr)
	if loc < 0 {
		return DropFields{}, fmt.Errorf("no void * location argument")
	}
	f := DropFields{Location: int16(8 * loc), Reason: -1}
	// The enum's value sits in the low bytes of its u64 (little-endian).
	if r := argIndex(args, isDropReason); r >= 0 {
		f.Reason = int16(8 * r)
	}
	return f, nil
}

// loadRaw loads insns as a raw tracepoint program of kind at (TpBTF or
// RawTP) for event and attaches it.
func loadRaw(insns asm.Instructions, at Attachment, name, event string, maps map[string]*ebpf.Map) (*ebpf.Program, link.Link, error) {
	for ref, m := range maps {
		if m != nil {
			if err := associate(insns, ref, m); err != nil {
				return nil, nil, err
			}
		}
	}
	var prog *ebpf.Program
	if at == TpBTF {
		facts, err := deviceFacts()
		if err != nil {
			return nil, nil, err
		}
		raw, err := facts.rawTracepoint(event)
		if err != nil {
			return nil, nil, err
		}
		if prog, err = loadTpBTF(insns, name, raw.TypedefID); err != nil {
			return nil, nil, err
		}
	} else {
		var err error
		spec := &ebpf.ProgramSpec{Name: name, Type: ebpf.RawTracepoint, Instructions: insns, License: progLicense}
		if prog, err = ebpf.NewProgram(spec); err != nil {
			return nil, nil, fmt.Errorf("load program: %w", caps.Explain(err, caps.LoadBPF))
		}
	}
	var l link.Link
	var err error
	if at == TpBTF {
		l, err = link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
	} else {
		l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: event, Program: prog})
	}
	if err != nil {
		prog.Close()
		return nil, nil, fmt.Errorf("attach: %w", err)
	}
	return prog, l, nil
}

// short is the first line of an error, enough to say why a way was skipped.
func short(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
