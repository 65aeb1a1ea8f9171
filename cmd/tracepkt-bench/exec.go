package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/phases"
)

// result is one run of a command: times from exec to the first line holding
// the marker and to exit, its peak RSS and its output lines.
type result struct {
	answer, exit time.Duration
	maxRSS       int64         // bytes
	cpu          time.Duration // user + system time of the process
	lines        []string
	at           []time.Duration // when each kept line arrived, since exec
	profile      []phases.Phase  // the tool's start-up profile, when asked
}

// runOnce runs a command to its end. keep says whether to keep its output.
func runOnce(marker string, keep bool, argv ...string) (result, error) {
	return runProfiled(marker, keep, false, argv...)
}

// runProfiled is runOnce, asking the tool for its start-up profile when
// profile is set (TRACEPKT_PERF_PROFILE, with the time just before exec):
// the profile's lines come back in r.profile.
func runProfiled(marker string, keep, profile bool, argv ...string) (result, error) {
	var r result
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return r, err
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	start := time.Now()
	if profile {
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d", phases.EnvVar, start.UnixNano()))
	}
	if err := cmd.Start(); err != nil {
		return r, err
	}
	s := bufio.NewScanner(out)
	s.Buffer(make([]byte, 64<<10), 16<<20)
	for s.Scan() {
		if r.answer == 0 && strings.Contains(s.Text(), marker) {
			r.answer = time.Since(start)
		}
		if keep {
			r.lines = append(r.lines, s.Text())
			r.at = append(r.at, time.Since(start))
		}
	}
	_, _ = io.Copy(io.Discard, out)
	err = cmd.Wait()
	r.exit = time.Since(start)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		r.maxRSS = ru.Maxrss * 1024
		r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	if err != nil || r.answer == 0 {
		return r, fmt.Errorf("%s: no %q line (%v): %s", strings.Join(argv, " "), marker, err, strings.TrimSpace(stderr.String()))
	}
	if profile {
		if r.profile, err = phases.Parse(stderr.String()); err != nil {
			return r, fmt.Errorf("%s: %w", strings.Join(argv, " "), err)
		}
	}
	return r, nil
}

// durations are sorted samples.
type durations []time.Duration

func (d durations) median() time.Duration { return d[len(d)/2] }
func (d durations) p90() time.Duration    { return d[len(d)*9/10] }

// String is the median with the p90 in brackets.
func (d durations) String() string { return fmt.Sprintf("%s (%s)", ms(d.median()), ms(d.p90())) }

func sorted(d []time.Duration) durations {
	d = slices.Clone(d)
	slices.Sort(d)
	return d
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

// table renders rows with aligned columns; the first row is the header.
func table(rows [][]string) string {
	width := make([]int, 0)
	for _, r := range rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		for i, c := range r {
			if i == 0 {
				fmt.Fprintf(&b, "%-*s", width[i], c)
			} else {
				fmt.Fprintf(&b, "  %*s", width[i], c)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}
