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
	"strings"
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

// Phase is one phase of a profile: when it first started and last ended,
// from the origin, how long its times took together, and how many there were.
type Phase struct {
	Name       string
	Start, End time.Duration
	Total      time.Duration
	N          int
}

// linePrefix starts each line of a profile.
const linePrefix = "tracepkt-perf: profile: "

// Write writes the phases timed so far, in the order they started, one line
// each (Parse reads them back).
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
	var order []*Phase
	byName := map[string]*Phase{}
	for _, s := range all {
		p := byName[s.name]
		if p == nil {
			p = &Phase{Name: s.name, Start: s.start.Sub(origin)}
			byName[s.name] = p
			order = append(order, p)
		}
		p.End = max(p.End, s.end.Sub(origin))
		p.Total += s.end.Sub(s.start)
		p.N++
	}
	for _, p := range order {
		fmt.Fprintf(w, "%s%s\t%s\t%s\t%s\t%d\n", linePrefix, p.Name, ms(p.Start), ms(p.End), ms(p.Total), p.N)
	}
}

// Parse reads the phases of a profile from a run's stderr; other lines
// are skipped.
func Parse(stderr string) ([]Phase, error) {
	var out []Phase
	for line := range strings.Lines(stderr) {
		rest, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), linePrefix)
		if !ok {
			continue
		}
		f := strings.Split(rest, "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("profile line %q: want 5 fields", line)
		}
		p := Phase{Name: f[0]}
		var err error
		for i, d := range []*time.Duration{&p.Start, &p.End, &p.Total} {
			if *d, err = time.ParseDuration(f[i+1] + "ms"); err != nil {
				return nil, fmt.Errorf("profile line %q: %w", line, err)
			}
		}
		if p.N, err = strconv.Atoi(f[4]); err != nil {
			return nil, fmt.Errorf("profile line %q: %w", line, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// ms is d in milliseconds, to the µs.
func ms(d time.Duration) string { return strconv.FormatFloat(float64(d)/1e6, 'f', 3, 64) }
