package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/probes"
)

// listenTick is how often a listener looks for fragments gone quiet, and
// for the end of its run.
const listenTick = 100 * time.Millisecond

// listenUnused are the flags that mean nothing to a listener: it sends
// nothing, and shows what it saw as it sees it.
var listenUnused = []string{"c", "count", "i", "interval", "s", "size", "t", "ttl", "M", "pmtudisc", "I", "interface",
	"m", "mark", "4", "6", "tcp", "udp", "payload", "from-netns", "demo", "check", "replay", "pcapng", "stats", "diff", "svg", "verbose", "version"}

// listenArgs checks the flags of a listener's run (--listen, --id,
// --duration) and sets o's from them.
func listenArgs(o *options, set map[string]bool, positional []string, id int, attachErr error) error {
	if !o.listen {
		return usageError{"--id and --duration go with --listen"}
	}
	if err := refuseUnusedFlags(*o, set); err != nil {
		return err
	}
	switch {
	case len(positional) > 0:
		return usageError{fmt.Sprintf("--listen takes no target, got %s", strings.Join(positional, " "))}
	case set["id"] && (id < 1 || id > 0xffff):
		return usageError{fmt.Sprintf("--id takes a run's echo id from 1 to 65535, not %d", id)}
	case set["duration"] && (o.duration <= 0 || o.duration > maxWait):
		return usageError{fmt.Sprintf("--duration must be more than 0 and at most %s", maxWait)}
	case o.timeout <= 0 || o.timeout > maxWait:
		return usageError{fmt.Sprintf("--timeout must be more than 0 and at most %s", maxWait)}
	case o.netfilter != "auto" && o.netfilter != "kprobe" && o.netfilter != "off":
		return usageError{fmt.Sprintf("--netfilter %s: a listener traces netfilter with kprobes (auto, kprobe) or not at all (off)", o.netfilter)}
	case attachErr != nil:
		return usageError{attachErr.Error()}
	}
	o.listenID = uint16(id)
	return nil
}

// fragment is what a listener saw of one echo: its records, and when the
// last of them came.
type fragment struct {
	id, seq uint16
	recs    []decode.Record
	over    uint64 // records past what a recording keeps of one echo
	last    time.Time
}

// listen runs a listener: it attaches the probes to the echoes of any run
// (or of --id's), sends nothing, and shows each echo's journey here once no
// record of it came for -W, until --duration or a signal.
func (s *session) listen(ctx context.Context, o options, stderr io.Writer) (err error) {
	offsets, err := s.offsets()
	if err != nil {
		return err
	}
	cfg := probes.Config{Listen: true, EchoID: o.listenID, Netfilter: s.netfilter.kprobes, NetfilterOptional: s.netfilter.auto,
		RingPages: o.ringPages, Attach: o.attach}
	t, err := probes.Open(s.fs, offsets, cfg)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, t.Close()) }()
	which := "every run"
	if o.listenID != 0 {
		which = fmt.Sprintf("the run of echo id %d", o.listenID)
	}
	fmt.Fprintf(stderr, "tracepkt-perf: listening for the echoes of %s\n", which)
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	frags := map[[2]uint16]*fragment{}
	notes := t.Notes()
	var lost uint64
	var r decode.Record
	for {
		t.SetDeadline(time.Now().Add(listenTick))
		for {
			err := t.ReadInto(&r)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				return err
			}
			if r.Lost > 0 {
				lost += r.Lost
				continue
			}
			k := [2]uint16{r.EchoID, r.Seq}
			f := frags[k]
			if f == nil {
				f = &fragment{id: r.EchoID, seq: r.Seq}
				frags[k] = f
			}
			if len(f.recs) < tpk.MaxRecordsPerEcho-1 {
				f.recs = append(f.recs, r)
			} else {
				f.over++
			}
			f.last = time.Now()
		}
		done := ctx.Err() != nil
		var quiet []*fragment
		for k, f := range frags {
			if done || time.Since(f.last) >= o.timeout {
				quiet = append(quiet, f)
				delete(frags, k)
			}
		}
		slices.SortFunc(quiet, func(a, b *fragment) int { return cmp.Compare(a.recs[0].Time, b.recs[0].Time) })
		for _, f := range quiet {
			if lost > 0 {
				notes = append(notes, fmt.Sprintf("%d events lost: the kernel's rings overflowed, rows may be missing", lost))
				lost = 0
			}
			if err := s.fragment(f, notes); err != nil {
				return err
			}
			notes = nil
		}
		if done {
			return nil
		}
	}
}

// fragment shows, and records, what a listener saw of one echo.
func (s *session) fragment(f *fragment, notes []string) error {
	if f.over > 0 {
		f.recs = append(f.recs, decode.Record{Lost: f.over})
	}
	first := f.recs[0]
	target := first.Dst
	if !first.IsRequest() {
		target = first.Src
	}
	j := decode.NewJourney(decode.Outcome{Target: target, EchoID: f.id, Seq: f.seq, Notes: notes}, f.recs, nil)
	if err := s.learn(&j); err != nil {
		return err
	}
	if _, dropped := j.DropRecord(s.notDrop); dropped {
		// Freed here: named and explained as a live run's drop is. A
		// fragment that went on elsewhere has nothing to explain.
		if err := s.explain(&j); err != nil {
			return err
		}
	}
	s.results = append(s.results, listenResult(&j))
	return s.output(&j, f.recs, nil)
}

// listenResult is a fragment's result: "dropped" where the drop probe saw
// it freed here, else "seen".
func listenResult(j *decode.Journey) string {
	if j.Drop != nil {
		return "dropped"
	}
	return "seen"
}

// listenSummary is the line under a fragment's table: which run's echo it
// is, what of it was seen here, and the drop.
func listenSummary(j *decode.Journey, rc *renderContext) string {
	var req, rep int
	for _, h := range j.Hops {
		if h.IsRequest() {
			req++
		} else {
			rep++
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "seen here: echo id %d seq %d to %s: %s, %s", j.EchoID, j.Seq, j.Target,
		plural(req, "request row", "request rows"), plural(rep, "reply row", "reply rows"))
	if j.Drop != nil {
		b.WriteString("\n  " + dropLine(j.Drop, rc))
	}
	if j.Hint != "" {
		b.WriteString("\n  " + j.Hint)
	}
	return b.String()
}
