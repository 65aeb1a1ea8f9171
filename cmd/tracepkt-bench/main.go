// Command tracepkt-bench measures what tracepkt-perf costs: its time to
// answer and exit next to ping, what a waiting tracer costs other traffic,
// lossless throughput and ring loss accounting, memory, how start-up grows
// with the number of namespaces, the kernel matrix, and recordings. It
// prints each table as it is measured and writes them, with their method,
// to BENCHMARKS.md.
//
// All traffic goes to namespaces the bench creates (route-checked before
// sending), bounded in count and time.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "tracepkt-bench: %v\n", err)
		os.Exit(2)
	}
}

// config is what every section reads.
type config struct {
	tool    string   // tracepkt-perf binary, absolute
	before  string   // an earlier build measured beside it, or ""
	runs    int      // runs of each command for time to answer
	modes   []string // --attach values to measure; "default" passes none
	pairs   int      // A/B pairs of the flood
	flood   int      // echoes (round trips) per flood
	scale   []int    // namespace counts
	kernels string   // globs of the matrix kernels, space-separated
}

// attachArgs is the flag selecting an attachment mode.
func attachArgs(mode string) []string {
	if mode == "default" {
		return nil
	}
	return []string{"--attach", mode}
}

// section is one measured table with the method that produced it.
type section struct {
	title, method, table string
}

// sections in the order they run; matrix runs under the VM lock, the
// others under the root lock.
type sectionRunner struct {
	name string
	vm   bool
	run  func(config, io.Writer) (section, error)
}

var sections = []sectionRunner{
	{"answer", false, answerSection},
	{"flood", false, floodSection},
	{"throughput", false, throughputSection},
	{"memory", false, memorySection},
	{"scale", false, scaleSection},
	{"recordings", false, recordingsSection},
	{"matrix", true, matrixSection},
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("tracepkt-bench", flag.ContinueOnError)
	tool := fs.String("tool", "bin/tracepkt-perf", "tracepkt-perf binary to measure")
	before := fs.String("before", "", "an earlier tracepkt-perf build, measured beside -tool (default mode) in the time-to-answer, flood and scale sections")
	runs := fs.Int("n", 20, "runs of each command for time to answer")
	modes := fs.String("modes", "auto,perf,raw", `attachment modes (--attach) to measure; "default" passes no --attach`)
	pairs := fs.Int("pairs", 7, "A/B pairs of the flood, without and with a tracer")
	flood := fs.Int("flood", 20000, "echoes (round trips) per flood")
	scale := fs.String("scale", "10,100,300", "namespace counts for the scale curve")
	only := fs.String("sections", "", "comma-separated sections to run (default all): "+sectionNames())
	out := fs.String("out", "BENCHMARKS.md", `file the tables and their method are written to ("" for none)`)
	rootLock := fs.String("lock", "", "flock this file around each root section (a machine shared with other runs)")
	vmLock := fs.String("vmlock", "", "flock this file around the kernel matrix")
	kernels := fs.String("kernels", "/boot/vmlinuz-*-amd64 /var/cache/tracepkt-perf/*/boot/vmlinuz-*-amd64", "kernels of the matrix (globs, space-separated)")
	guest := fs.Bool("guest", false, "run the in-guest part of the kernel matrix (used by the matrix section)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	abs, err := filepath.Abs(*tool)
	if err != nil {
		return err
	}
	if *before != "" {
		if *before, err = filepath.Abs(*before); err != nil {
			return err
		}
	}
	cfg := config{tool: abs, before: *before, runs: *runs, modes: strings.Split(*modes, ","), pairs: *pairs, flood: *flood, kernels: *kernels}
	for _, s := range strings.Split(*scale, ",") {
		var n int
		if _, err := fmt.Sscan(s, &n); err != nil || n < 1 {
			return fmt.Errorf("-scale: bad namespace count %q", s)
		}
		cfg.scale = append(cfg.scale, n)
	}
	if cfg.runs < 1 || cfg.pairs < 1 || cfg.flood < 1 {
		return errors.New("-n, -pairs and -flood must be at least 1")
	}
	if *guest {
		return guestRun(cfg, stdout)
	}
	var want []string
	if *only != "" {
		want = strings.Split(*only, ",")
		for _, w := range want {
			if !slices.ContainsFunc(sections, func(s sectionRunner) bool { return s.name == w }) {
				return fmt.Errorf("-sections: unknown section %q (have %s)", w, sectionNames())
			}
		}
	}
	var done []section
	for _, s := range sections {
		if want != nil && !slices.Contains(want, s.name) {
			continue
		}
		lock := *rootLock
		if s.vm {
			lock = *vmLock
		}
		res, err := withLock(lock, func() (section, error) { return s.run(cfg, stdout) })
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		fmt.Fprintf(stdout, "\n## %s\n\n%s\n", res.title, res.table)
		done = append(done, res)
	}
	if *out == "" {
		return nil
	}
	return writeReport(*out, done)
}

func sectionNames() string {
	var names []string
	for _, s := range sections {
		names = append(names, s.name)
	}
	return strings.Join(names, ",")
}

// withLock runs fn holding an exclusive flock on path (none when empty).
func withLock(path string, fn func() (section, error)) (section, error) {
	if path == "" {
		return fn()
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		return section{}, fmt.Errorf("lock: %w", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return section{}, fmt.Errorf("lock %s: %w", path, err)
	}
	defer unix.Flock(int(f.Fd()), unix.LOCK_UN)
	return fn()
}

// writeReport writes BENCHMARKS.md: the machine, then each section's method
// and table. Sections of an earlier report that this run did not measure
// (-sections) stay, in their place, with their own date line.
func writeReport(path string, done []section) error {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	cpus, _ := os.ReadFile("/sys/devices/system/cpu/online")
	stamp := fmt.Sprintf("Measured %s, kernel %s, CPUs %s.", time.Now().UTC().Format(time.DateOnly),
		unix.ByteSliceToString(uts.Release[:]), strings.TrimSpace(string(cpus)))
	render := func(s section) string {
		return fmt.Sprintf("## %s\n\n%s\n\n%s\n\n```\n%s```\n", s.title, stamp, strings.TrimSpace(s.method), s.table)
	}
	var blocks []string // "## title..." blocks, in order
	if old, err := os.ReadFile(path); err == nil {
		parts := strings.Split(string(old), "\n## ")
		for _, p := range parts[1:] {
			blocks = append(blocks, "## "+strings.TrimRight(p, "\n")+"\n")
		}
	}
	for _, s := range done {
		i := slices.IndexFunc(blocks, func(b string) bool { return strings.HasPrefix(b, "## "+s.title+"\n") })
		if i < 0 {
			blocks = append(blocks, render(s))
		} else {
			blocks[i] = render(s)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# tracepkt-perf benchmarks\n\n")
	fmt.Fprintf(&b, "Measured by `make bench` (cmd/tracepkt-bench); each section says when and on what.\n")
	fmt.Fprintf(&b, "Ratios compare commands measured in the same run; a section's figures come from one run.\n")
	fmt.Fprintf(&b, "All traffic goes to namespaces the bench creates, route-checked before sending.\n")
	for _, block := range blocks {
		b.WriteString("\n" + block)
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}
