package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// hopsPerEcho is how many device tracepoint hits an echo through a veth pair
// makes: out of the host end, into the peer, out of the peer, into the host end.
const hopsPerEcho = 4

// waitingTracer is a tracepkt-perf run that has attached its probes and waits
// on its own echo once a second, as a user's would.
type waitingTracer struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startTracer starts the tool probing in mode and returns once its first
// probe was answered (a listener: once it listens), so its probes are
// attached.
func startTracer(tool string, target netip.Addr, mode probeMode, args ...string) (*waitingTracer, error) {
	argv := slices.Concat(args, mode.args, []string{"-c", "600", "-i", "1", "-W", "1", target.String()})
	if mode.listen {
		argv = slices.Concat(args, mode.args)
	}
	cmd := exec.Command(tool, argv...)
	var out io.Reader
	var err error
	if mode.listen {
		out, err = cmd.StderrPipe()
	} else {
		out, err = cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
	}
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	t := &waitingTracer{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(t.done)
		s := bufio.NewScanner(out)
		seen := false
		for s.Scan() {
			if !seen && strings.Contains(s.Text(), mode.marker) {
				seen = true
				close(ready)
			}
		}
		if !seen {
			close(ready)
		}
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
	}
	select {
	case <-t.done:
		cmd.Wait()
		return nil, fmt.Errorf("%s %s: ended before its first reply", tool, strings.Join(argv, " "))
	default:
	}
	return t, nil
}

// stop interrupts the tracer, as Ctrl-C would, and waits for its exit.
func (t *waitingTracer) stop() error {
	_ = t.cmd.Process.Signal(syscall.SIGINT)
	<-t.done
	return t.cmd.Wait()
}

// floodTime sends n echoes back to back (ping -f) and returns its wall time
// and ping's CPU time, which holds the softirq work its sends trigger.
func floodTime(target netip.Addr, n int) (wall, cpu time.Duration, err error) {
	r, err := runOnce("packets transmitted", false, "ping", "-f", "-q", "-n", "-c", fmt.Sprint(n), "-w", "120", target.String())
	return r.exit, r.cpu, err
}

// floodVariant is a tracer command line measured against the flood.
type floodVariant struct {
	name, tool string
	mode       probeMode
	args       []string
}

// traffic is a flood of round trips that are not the tracer's: n of them
// to target.
type traffic struct {
	name string
	send func(target netip.Addr, n int) error
}

// pingFlood is the echoes of ping -f; floods are the traffic the tracer's
// programs are measured under: those, and TCP and UDP round trips to the
// echo service.
var (
	pingFlood = traffic{"ping -f", func(target netip.Addr, n int) error { _, _, err := floodTime(target, n); return err }}
	floods    = []traffic{pingFlood,
		{"TCP round trips", func(target netip.Addr, n int) error { return roundTrips("tcp", target, n) }},
		{"UDP round trips", func(target netip.Addr, n int) error { return roundTrips("udp", target, n) }}}
)

func floodVariants(cfg config) []floodVariant {
	var vs []floodVariant
	add := func(name, tool, mode string) {
		vs = append(vs, floodVariant{strings.TrimSpace(name + " " + strings.Join(attachArgs(mode), " ")), tool, echoProbes, attachArgs(mode)},
			floodVariant{"  same, --netfilter off", tool, echoProbes, slices.Concat(attachArgs(mode), []string{"--netfilter", "off"})})
	}
	if cfg.before != "" {
		add("before: tracer", cfg.before, "default")
	}
	for _, mode := range cfg.modes {
		add("tracer", cfg.tool, mode)
	}
	return vs
}

func floodSection(cfg config, progress io.Writer) (section, error) {
	n, closeFn, err := serviceTarget("tf")
	if err != nil {
		return section{}, err
	}
	defer closeFn()
	target := n.Target4
	rows := [][]string{{"waiting tracer", "ns/echo without", "ns/echo with", "added ns/hop", "range", "added",
		"cpu ns/echo without", "with", "added ns/hop", "range"}}
	statRows := [][]string{{"waiting tracer", "program", "hits/echo", "ns/hit"}}
	for _, v := range floodVariants(cfg) {
		fmt.Fprintf(progress, "flood: %s, %d pairs of %d echoes to %s\n", v.name, cfg.pairs, cfg.flood, target)
		var without, with, added, cpuWithout, cpuWith, cpuAdded []float64
		for pair := range cfg.pairs {
			var a, b, aCPU, bCPU time.Duration
			measureA := func() (err error) { a, aCPU, err = floodTime(target, cfg.flood); return err }
			measureB := func() error {
				t, err := startTracer(v.tool, target, v.mode, v.args...)
				if err != nil {
					return err
				}
				b, bCPU, err = floodTime(target, cfg.flood)
				if serr := t.stop(); err == nil && serr != nil {
					err = fmt.Errorf("tracer: %w", serr)
				}
				return err
			}
			first, second := measureA, measureB
			if pair%2 == 1 {
				first, second = measureB, measureA
			}
			if err := first(); err != nil {
				return section{}, err
			}
			if err := second(); err != nil {
				return section{}, err
			}
			perEcho := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(cfg.flood) }
			without, with = append(without, perEcho(a)), append(with, perEcho(b))
			added = append(added, (perEcho(b)-perEcho(a))/hopsPerEcho)
			cpuWithout, cpuWith = append(cpuWithout, perEcho(aCPU)), append(cpuWith, perEcho(bCPU))
			cpuAdded = append(cpuAdded, (perEcho(bCPU)-perEcho(aCPU))/hopsPerEcho)
		}
		slices.Sort(added)
		slices.Sort(cpuAdded)
		mw, mb := medianF(without), medianF(with)
		rows = append(rows, []string{v.name, fmt.Sprintf("%.0f", mw), fmt.Sprintf("%.0f", mb),
			fmt.Sprintf("%+.0f", medianF(added)), fmt.Sprintf("%.0f..%.0f", added[0], added[len(added)-1]),
			fmt.Sprintf("%+.1f%%", 100*(mb-mw)/mw),
			fmt.Sprintf("%.0f", medianF(cpuWithout)), fmt.Sprintf("%.0f", medianF(cpuWith)),
			fmt.Sprintf("%+.0f", medianF(cpuAdded)), fmt.Sprintf("%.0f..%.0f", cpuAdded[0], cpuAdded[len(cpuAdded)-1])})

		stats, err := programStats(cfg.flood, v, target, pingFlood)
		if err != nil {
			return section{}, err
		}
		for _, s := range stats {
			statRows = append(statRows, []string{v.name, s.name, fmt.Sprintf("%.2f", s.hitsPerTrip), fmt.Sprintf("%.0f", s.nsPerHit)})
		}
	}
	probeRows := [][]string{{"flood", "waiting tracer", "program", "hits/round trip", "ns/hit"}}
	for _, f := range floods {
		for _, mode := range append(slices.Clone(probeModes), listenProbes) {
			v := floodVariant{name: strings.Join(append([]string{"tracer"}, mode.args...), " "), tool: cfg.tool, mode: mode}
			fmt.Fprintf(progress, "flood: %s, %d %s to %s\n", v.name, cfg.flood, f.name, target)
			stats, err := programStats(cfg.flood, v, target, f)
			if err != nil {
				return section{}, err
			}
			for _, s := range stats {
				probeRows = append(probeRows, []string{f.name, v.name, s.name, fmt.Sprintf("%.2f", s.hitsPerTrip), fmt.Sprintf("%.0f", s.nsPerHit)})
			}
		}
	}
	return section{
		title: "Cost to other traffic",
		method: fmt.Sprintf(`A flood (ping -f) of %d echoes through a veth pair into a namespace: %d device
hops per echo. Each pair times one flood without a tracer and one with a tracer attached and
waiting on its own echo once a second (tracepkt-perf -c 600 -i 1, interrupted afterwards);
the order alternates between pairs, %d pairs. added ns/hop is the median over pairs of
(with - without) / echoes / %d, range its spread; added is the change per echo. The cpu
columns do the same with ping's user + system time, which holds the softirq work of the
veth path its sends trigger and is less disturbed by other load on the machine.
The flood's echoes are not ours: this is what the in-kernel reject costs everyone else.
Then, with BPF run-time statistics on (BPF_ENABLE_STATS, off again when the bench ends it),
one more traced flood gives each program's hits per echo and run time per hit
(run_time_ns / run_cnt, the figures bpftool prog show prints), next to an empty raw_tp
program on net_dev_queue: what the statistics' own clock reads add to every run. "before:" rows, when present,
are an earlier build measured in the same run (bench -before).

The last table does the same per probe mode, default attachment, netfilter source on, under
three floods of %d round trips each through the same veth pair: ping -f; TCP round trips,
%d-byte requests over one connection to the bench's echo service (RFC 862) on TCP port %d in
the namespace, each sent once the one before came back; UDP round trips, the same as
datagrams to its UDP port %d. Under each, a waiting tracer probing echoes, one probing
--tcp %d and one probing --udp %d, the port the floods go to, and a listener (--listen),
which keeps the probes of any run by the marks all runs' probes carry: none of the flood's packets
are the tracer's, so each program's ns/hit is what its in-kernel reject of others' ICMP, TCP
or UDP packets costs in that mode (a TCP packet: its sequence or acknowledgement number
against the run's span; a UDP packet: its inverted tuple looked up in the run's tuple map,
then the mark read from its payload, which the flood's requests are long enough to hold).
hits/round trip is the program's runs per echo or request and answer. A --tcp run
reads its answers on a raw TCP socket: the kernel clones every TCP packet the host receives
to it and frees the clone its socket filter refuses, which the kfree_skb program sees (once
per TCP round trip, the answer).`, cfg.flood, hopsPerEcho, cfg.pairs, hopsPerEcho,
			cfg.flood, floodPayload, servicePort, servicePort, servicePort, servicePort),
		table: table(rows) + "\n" + table(statRows) + "\n" + table(probeRows),
	}, nil
}

func medianF(v []float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return (v[(len(v)-1)/2] + v[len(v)/2]) / 2
}

// progStat is one program's share of a traced flood.
type progStat struct {
	name                  string
	hitsPerTrip, nsPerHit float64
}

// programStats runs one flood of f traced by v with BPF statistics on and
// returns the run count per round trip and run time of each program the
// tracer loaded.
func programStats(trips int, v floodVariant, target netip.Addr, f traffic) ([]progStat, error) {
	stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
	if err != nil {
		return nil, fmt.Errorf("enable BPF statistics: %w", err)
	}
	defer stats.Close()
	before, err := programIDs()
	if err != nil {
		return nil, err
	}
	t, err := startTracer(v.tool, target, v.mode, v.args...)
	if err != nil {
		return nil, err
	}
	defer t.stop()
	after, err := programIDs()
	if err != nil {
		return nil, err
	}
	var ours []*ebpf.Program
	defer func() {
		for _, p := range ours {
			p.Close()
		}
	}()
	for _, id := range after {
		if slices.Contains(before, id) {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // gone already
		}
		ours = append(ours, p)
	}
	// An empty program on the same tracepoint measures what the statistics
	// themselves add to each run (two clock reads).
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "bench_empty", Type: ebpf.RawTracepoint,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}, License: "GPL"})
	if err != nil {
		return nil, fmt.Errorf("load the empty program: %w", err)
	}
	defer empty.Close()
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "net_dev_queue", Program: empty})
	if err != nil {
		return nil, fmt.Errorf("attach the empty program: %w", err)
	}
	defer l.Close()
	ours = append(ours, empty)
	start := make([]ebpf.ProgramStats, len(ours))
	for i, p := range ours {
		s, err := p.Stats()
		if err != nil {
			return nil, err
		}
		start[i] = *s
	}
	if err := f.send(target, trips); err != nil {
		return nil, err
	}
	var out []progStat
	for i, p := range ours {
		s, err := p.Stats()
		if err != nil {
			return nil, err
		}
		info, err := p.Info()
		if err != nil {
			return nil, err
		}
		runs := s.RunCount - start[i].RunCount
		if runs == 0 {
			continue
		}
		name := info.Name
		if p == empty {
			name = "(empty raw_tp on net_dev_queue)"
		}
		out = append(out, progStat{
			name:        name,
			hitsPerTrip: float64(runs) / float64(trips),
			nsPerHit:    float64(s.Runtime-start[i].Runtime) / float64(runs),
		})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no program of the tracer ran during the flood")
	}
	return out, nil
}

// programIDs lists the BPF programs loaded now.
func programIDs() ([]ebpf.ProgramID, error) {
	var ids []ebpf.ProgramID
	id := ebpf.ProgramID(0)
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return ids, nil
			}
			return nil, fmt.Errorf("list BPF programs: %w", err)
		}
		ids, id = append(ids, next), next
	}
}
