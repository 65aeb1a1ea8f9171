// Command tracepkt-bench measures tracepkt-perf's time to answer: the wall
// time of `tracepkt-perf -c1` from exec to exit against a namespace behind a
// veth pair, next to a bare `ping -c1` to the same address in the same run.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "tracepkt-bench: %v\n", err)
		os.Exit(2)
	}
}

func run(args []string, stdout io.Writer) (err error) {
	fs := flag.NewFlagSet("tracepkt-bench", flag.ContinueOnError)
	tool := fs.String("tool", "bin/tracepkt-perf", "tracepkt-perf binary to measure")
	runs := fs.Int("n", 20, "runs of each command")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if _, err := exec.LookPath("ping"); err != nil {
		return fmt.Errorf("the baseline needs ping (iputils-ping): %w", err)
	}
	topo := topology.New()
	defer func() { err = errors.Join(err, topo.Close()) }()
	v4, v6 := topology.TestNets()
	n, err := topo.VethPair(topology.UniqueName("tb"), v4, v6)
	if err != nil {
		return err
	}
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			return fmt.Errorf("refusing to send: %w", err)
		}
	}

	fmt.Fprintf(stdout, "time to answer, %d runs each, veth pair to a namespace (%s)\n", *runs, time.Now().Format(time.DateOnly))
	fmt.Fprintf(stdout, "answer: exec to the reply line on stdout; exit: exec to exit (medians, p90 in brackets)\n\n")
	fmt.Fprintf(stdout, "%-44s %18s %18s %8s\n", "command", "answer", "exit", "exit/ping")
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		base, err := measure(*runs, "bytes from", "ping", "-n", "-c1", "-W1", target.String())
		if err != nil {
			return err
		}
		ours, err := measure(*runs, "reply from", *tool, "-c1", "-W1", target.String())
		if err != nil {
			return err
		}
		core, err := measure(*runs, "reply from", *tool, "--netfilter", "off", "-c1", "-W1", target.String())
		if err != nil {
			return err
		}
		for _, m := range []struct {
			name string
			t    timings
		}{
			{"ping -c1 " + target.String(), base},
			{"tracepkt-perf -c1 " + target.String(), ours},
			{"  same, --netfilter off", core},
		} {
			fmt.Fprintf(stdout, "%-44s %18s %18s %7.1fx\n", m.name, m.t.answer, m.t.exit,
				float64(median(m.t.exit))/float64(median(base.exit)))
		}
	}
	return nil
}

type durations []time.Duration

func (d durations) String() string {
	return fmt.Sprintf("%s (%s)", ms(median(d)), ms(d[len(d)*9/10]))
}

type timings struct{ answer, exit durations }

// measure runs a command n times and returns the sorted times from exec to
// the first output line holding marker, and to exit.
func measure(n int, marker, name string, args ...string) (timings, error) {
	var t timings
	for range n {
		cmd := exec.Command(name, args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return t, err
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return t, err
		}
		answered := time.Duration(0)
		s := bufio.NewScanner(out)
		for s.Scan() {
			if answered == 0 && strings.Contains(s.Text(), marker) {
				answered = time.Since(start)
			}
		}
		if err := cmd.Wait(); err != nil || answered == 0 {
			return t, fmt.Errorf("%s %v: no %q line (%v)", name, args, marker, err)
		}
		t.answer = append(t.answer, answered)
		t.exit = append(t.exit, time.Since(start))
	}
	slices.Sort(t.answer)
	slices.Sort(t.exit)
	return t, nil
}

func median(d durations) time.Duration { return d[len(d)/2] }

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }
