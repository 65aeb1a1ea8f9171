package probes

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/caps"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// CheckAttach finds how the program of probe p would be attached under
// mode: it loads it the first way the kernel accepts (and attaches it, for a
// raw tracepoint), then releases it. The program is loaded as an echo run,
// a TCP run and a UDP run build it, so that the answer holds for any. The
// error says why no way works.
func CheckAttach(fs *tracefs.FS, offsets Offsets, p decode.Probe, mode AttachMode) (ProbeAttachment, error) {
	events, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return ProbeAttachment{}, fmt.Errorf("create perf event array: %w", caps.Explain(err, caps.CreateMap))
	}
	defer events.Close()
	tuples, err := ebpf.NewMap(TupleMapSpec())
	if err != nil {
		return ProbeAttachment{}, fmt.Errorf("create tuple map: %w", caps.Explain(err, caps.CreateMap))
	}
	defer tuples.Close()
	maps := map[string]*ebpf.Map{EventsMap: events, TupleMap: tuples}
	var runs []devicePrograms
	for _, cfg := range checkRuns {
		runs = append(runs, devicePrograms{fs: fs, offsets: offsets, clauses: cfg.Clauses()})
	}
	group, event := p.Tracepoint()
	path := ProbeAttachment{Probe: p}
	var errs []error
	for _, at := range mode.attachments() {
		var err error
		for _, progs := range runs {
			if err = checkAs(progs, p, at, maps); err != nil {
				break
			}
		}
		if err == nil {
			path.Attachment = at
			return path, nil
		}
		errs = append(errs, err)
		path.Skipped = append(path.Skipped, fmt.Sprintf("%s: %s", at, short(err)))
	}
	return path, &attachError{fmt.Sprintf("%s/%s: %s", group, event, strings.Join(path.Skipped, "; ")), errs}
}

// checkRuns are the kinds of run CheckAttach builds programs for.
var checkRuns = []Config{
	{EchoID: 1},
	{TCP: &decode.TCPMark{EchoID: 1, Cookie: 1 << 31, Span: decode.MaxTCPSpan}},
	{UDP: &decode.UDPMark{EchoID: 1, Cookie: 1 << 31, Offset: decode.MaxPayload - decode.MarkLen}},
}

// attachError says why no way of attaching worked, in one line, and keeps
// each way's error for errors.Is and errors.As (a missing capability).
type attachError struct {
	msg  string
	errs []error
}

func (e *attachError) Error() string   { return e.msg }
func (e *attachError) Unwrap() []error { return e.errs }

// checkAs builds, loads and releases the program of probe p for
// attachment at, with maps by reference name.
func checkAs(progs devicePrograms, p decode.Probe, at Attachment, maps map[string]*ebpf.Map) error {
	insns, err := progs.build(p, at)
	if err != nil {
		return err
	}
	_, event := p.Tracepoint()
	if at == PerfTP {
		if _, err := progs.fs.EventID(p.Tracepoint()); err != nil {
			return err
		}
		prog, err := loadProgram(insns, ebpf.TracePoint, "", maps)
		if err != nil {
			return err
		}
		return prog.Close()
	}
	prog, l, err := loadRaw(insns, at, "tracepkt_check", event, maps)
	if err != nil {
		return err
	}
	l.Close()
	return prog.Close()
}
