// Package phases times the phases of a run's start-up and end when the
// environment asks for it (TRACEPKT_PERF_PROFILE), for the bench and for
// whoever looks for the next cut: where the time to the answer goes.
//
// TRACEPKT_PERF_PROFILE=1 times the phases from the process's first
// package init; a number above 1 is the time the process was executed, in
// nanoseconds since the Unix epoch (what a bench reads from its clock just
// before exec), and the profile then starts there, showing the time the
// process took to reach its package inits.
package phases

import (
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"
)

// EnvVar turns the profile on.
const EnvVar = "TRACEPKT_PERF_PROFILE"

var (
	initTime = time.Now()
	enabled  bool
	origin   = initTime // what the times are from
	mu       sync.Mutex
	spans    []span
)

type span struct {
	name       string
	start, end time.Time
}

func init() {
	v := os.Getenv(EnvVar)
	if v == "" {
		return
	}
	enabled = true
	if ns, err := strconv.ParseInt(v, 10, 64); err == nil && ns > 1 {
		origin = time.Unix(0, ns)
	}
}

// Enabled says whether the phases are timed.
func Enabled() bool { return enabled }

// Span is a phase under way.
type Span struct{ span }

// Begin starts phase name.
func Begin(name string) Span {
	if !enabled {
		return Span{}
	}
	return Span{span{name: name, start: time.Now()}}
}

// End ends the phase; a phase may run several times, or on several
// goroutines at once.
func (s Span) End() {
	if s.name == "" {
		return
	}
	s.end = time.Now()
	mu.Lock()
	spans = append(spans, s.span)
	mu.Unlock()
}

// Write writes the phases timed so far, in the order they started, each
// with its start and end in ms from the origin, and how long it took all
// its times together.
func Write(w io.Writer) {
	if !enabled {
		return
	}
	mu.Lock()
	all := slices.Clone(spans)
	mu.Unlock()
	if origin != initTime {
		all = append(all, span{name: "exec to package init", start: origin, end: initTime})
	}
	slices.SortStableFunc(all, func(a, b span) int { return a.start.Compare(b.start) })
	type phase struct {
		span
		total time.Duration
		n     int
	}
	var order []*phase
	byName := map[string]*phase{}
	for _, s := range all {
		p := byName[s.name]
		if p == nil {
			p = &phase{span: s}
			byName[s.name] = p
			order = append(order, p)
		}
		p.end = s.end
		p.total += s.end.Sub(s.start)
		p.n++
	}
	ms := func(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 2, 64) }
	for _, p := range order {
		times := ""
		if p.n > 1 {
			times = fmt.Sprintf(" (%d times)", p.n)
		}
		fmt.Fprintf(w, "tracepkt-perf: profile: %-26s %8s -> %8s ms  %7s ms%s\n", p.name, ms(p.start.Sub(origin)), ms(p.end.Sub(origin)), ms(p.total), times)
	}
}
