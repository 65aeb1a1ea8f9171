package main

import (
	"bufio"
	"fmt"
	"io"
	"slices"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
	"github.com/tracepkt/tracepkt-perf/decode/svg"
)

// runOutput is what a run or a replay prints: a table or a JSON object per
// echo as it completes and, for --stats and --svg, what needs every echo,
// once the run is over.
type runOutput struct {
	o      options
	stdout io.Writer
	rc     *renderContext
	all    *collector
	svg    *outFile
}

// newRunOutput opens the --svg file now, unnamed, so that a path that
// cannot be written fails before anything is traced; the path itself is
// only written once the picture is drawn.
func newRunOutput(o options, stdout io.Writer) (*runOutput, error) {
	ro := &runOutput{o: o, stdout: stdout}
	if o.svg != "" {
		f, err := createOutFile(o.svg)
		if err != nil {
			return nil, fmt.Errorf("svg: %w", err)
		}
		ro.svg = f
	}
	return ro, nil
}

// close drops the --svg file on the paths that did not finish.
func (ro *runOutput) close() {
	if ro.svg != nil {
		ro.svg.Close()
	}
}

// writer is the journeyWriter of a run whose names and notes are in rc.
// With --stats the echoes are not printed one by one.
func (ro *runOutput) writer(rc *renderContext) journeyWriter {
	ro.rc = rc
	each := newJourneyWriter(ro.o.jsonOut, ro.stdout, rc)
	if !ro.o.stats && ro.o.svg == "" {
		return each
	}
	ro.all = &collector{}
	if ro.o.stats {
		return ro.all
	}
	return teeWriter{each, ro.all}
}

// end finishes the output of a run shown from recordings, of which
// unanswered echoes got no answer: its exit status says so.
func (ro *runOutput) end(unanswered int) error {
	if err := ro.finish(); err != nil {
		return err
	}
	if unanswered > 0 {
		return errUnanswered
	}
	return nil
}

// unanswered reports whether journey j, shown with rc, counts as an echo
// without its answer: a listener's fragments wait for none.
func unanswered(j *decode.Journey, rc *renderContext) bool { return !j.Replied && !rc.listen }

// finish prints the statistics and draws the picture, as asked.
func (ro *runOutput) finish() error {
	if ro.all == nil {
		return nil
	}
	s := stats.Summarize(ro.all.journeys, ro.rc.statsNames())
	if ro.o.stats {
		if err := writeStats(ro.stdout, &s, ro.rc, ro.o.jsonOut); err != nil {
			return err
		}
	}
	return ro.writeSVG(func(w io.Writer) error { return journeySVG(w, &s, ro.rc) })
}

// teeWriter hands each journey to every writer.
type teeWriter []journeyWriter

func (t teeWriter) Journey(j *decode.Journey) error {
	for _, w := range t {
		if err := w.Journey(j); err != nil {
			return err
		}
	}
	return nil
}

// writeSVG writes the picture draw makes to the --svg file, if one was
// asked for, and closes it.
func (ro *runOutput) writeSVG(draw func(io.Writer) error) error {
	f := ro.svg
	if f == nil {
		return nil
	}
	ro.svg = nil
	bw := bufio.NewWriter(f)
	err := draw(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = f.publish()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("svg %s: %w", f.path, err)
	}
	return nil
}

// journeySVG draws the path most echoes of a run took, each namespace with
// its inode on its machine (a merge numbers other machines' itself).
func journeySVG(w io.Writer, s *stats.Summary, rc *renderContext) error {
	g := *s.Main()
	g.Hops = slices.Clone(g.Hops)
	for i := range g.Hops {
		g.Hops[i].Inode = rc.inode(g.Hops[i].Inode)
	}
	h := svg.Header{Title: fmt.Sprintf("%s to %s", probeCount(s, s.Echoes), probed(s))}
	switch {
	case len(g.Hops) == 0:
		h.Lines = append(h.Lines, "no echo reached a network device")
	case g.Replied > 0:
		line := fmt.Sprintf("%s; round trip p50 %s, p99 %s; kernel path p50 %s (%.0f%%)", answers(s, g.Replied, g.Closed),
			stats.FormatDuration(g.RTT.P50), stats.FormatDuration(g.RTT.P99), stats.FormatDuration(g.Kernel.P50), 100*g.KernelShare())
		if s.Echoes == 1 {
			line = fmt.Sprintf("reply in %s; kernel path %s (%.0f%%)", stats.FormatDuration(g.RTT.P50), stats.FormatDuration(g.Kernel.P50), 100*g.KernelShare())
		}
		h.Lines = append(h.Lines, line)
	default:
		h.Lines = append(h.Lines, "no reply")
	}
	if len(s.Groups) > 1 {
		h.Lines = append(h.Lines, fmt.Sprintf("the path of %d of the %d echoes; %d other paths were taken (see --stats)", g.Echoes, s.Echoes, len(s.Groups)-1))
	}
	return svg.Journey(w, h, &g)
}

// diffSVG draws the main paths of two runs overlaid.
func diffSVG(w io.Writer, la, lb *loadedRun, a, b *stats.Run, d *stats.Diff) error {
	h := svg.Header{
		Title: "A: " + la.path + "  vs  B: " + lb.path,
		Lines: []string{runLine("A", la, a), runLine("B", lb, b)},
	}
	if d.Same {
		h.Lines = append(h.Lines, "same path")
	}
	for _, n := range d.Notes {
		h.Lines = append(h.Lines, "note: "+n)
	}
	return svg.Diff(w, h, a.Summary.Main(), b.Summary.Main(), d)
}
