package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// kernelState is what a run could leave behind, counted from outside the tool.
type kernelState struct {
	programs, maps, links []uint32       // BPF object ids
	perfEvents            map[string]int // open perf event files, per process ("pid comm")
	nftTables             []string       // "net:[inode]: family table", in every namespace a process is in
	kprobeEvents          string
	ifaces                []string // "namespace: link", in every named namespace and this one
	netns                 []string // /run/netns
	tracefsMounts         int
}

func takeKernelState(t *testing.T) kernelState {
	t.Helper()
	s := kernelState{perfEvents: map[string]int{}}
	var err error
	if s.programs, err = bpfIDs(func(id uint32) (uint32, error) {
		next, err := ebpf.ProgramGetNextID(ebpf.ProgramID(id))
		return uint32(next), err
	}); err != nil {
		t.Fatal(err)
	}
	if s.maps, err = bpfIDs(func(id uint32) (uint32, error) {
		next, err := ebpf.MapGetNextID(ebpf.MapID(id))
		return uint32(next), err
	}); err != nil {
		t.Fatal(err)
	}
	it := new(link.Iterator)
	for it.Next() {
		s.links = append(s.links, uint32(it.ID))
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	// One process per network namespace, to list its tables from inside:
	// namespaces no name holds (unshare --net, a container's) count too.
	inNetns := map[string]string{}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, proc := range procs {
		fds, _ := filepath.Glob(proc + "/fd/*")
		for _, fd := range fds {
			if target, err := os.Readlink(fd); err == nil && target == "anon_inode:[perf_event]" {
				comm, _ := os.ReadFile(proc + "/comm")
				s.perfEvents[filepath.Base(proc)+" "+strings.TrimSpace(string(comm))]++
			}
		}
		if ns, err := os.Readlink(proc + "/ns/net"); err == nil {
			if _, ok := inNetns[ns]; !ok {
				inNetns[ns] = filepath.Base(proc)
			}
		}
	}
	for ns, pid := range inNetns {
		out, err := exec.Command("nsenter", "--net=/proc/"+pid+"/ns/net", "nft", "list", "tables").Output()
		if err != nil {
			continue // the process, or its namespace, went away meanwhile
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if line != "" {
				s.nftTables = append(s.nftTables, ns+": "+line)
			}
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	namespaces := []string{""}
	for _, e := range entries {
		s.netns = append(s.netns, e.Name())
		namespaces = append(namespaces, e.Name())
	}
	for _, ns := range namespaces {
		argv := []string{"ip", "-o", "link", "show"}
		if ns != "" {
			argv = append([]string{"ip", "netns", "exec", ns}, argv...)
		}
		out, err := exec.Command(argv[0], argv[1:]...).Output()
		if err != nil {
			continue // a namespace of another test went away meanwhile
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) > 1 {
				s.ifaces = append(s.ifaces, ns+": "+f[1])
			}
		}
	}
	if fs, err := tracefs.Open(); err == nil {
		b, _ := os.ReadFile(filepath.Join(fs.Root, "kprobe_events"))
		s.kprobeEvents = string(b)
		fs.Close()
	}
	// This thread's mounts: a private tracefs mount of this process lives
	// in the mount namespace of the thread that made it.
	mounts, _ := os.ReadFile("/proc/thread-self/mounts")
	s.tracefsMounts = strings.Count(string(mounts), " tracefs ")
	return s
}

// settledDiff compares the state with before. What the kernel releases when
// a process's files close (BPF maps and programs, owner-flagged nftables
// tables) goes after an RCU grace period or in a work queue: it gets a few
// seconds before it counts as leaked.
func settledDiff(t *testing.T, before kernelState) []string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		d := takeKernelState(t).diff(before)
		if len(d) == 0 || time.Now().After(deadline) {
			return d
		}
	}
}

func bpfIDs(next func(uint32) (uint32, error)) ([]uint32, error) {
	var ids []uint32
	id := uint32(0)
	for {
		n, err := next(id)
		if errors.Is(err, os.ErrNotExist) {
			return ids, nil
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, n)
		id = n
	}
}

// diff lists what s has that was did not: a leak is what a run added. What
// went away meanwhile (an earlier test's objects still being released when
// was was taken) is no one's leak.
func (s kernelState) diff(was kernelState) []string {
	var d []string
	lists := []struct {
		name     string
		now, old []string
	}{
		{"nftables tables", s.nftTables, was.nftTables},
		{"links", s.ifaces, was.ifaces},
		{"namespaces", s.netns, was.netns},
		{"BPF programs", ids(s.programs), ids(was.programs)},
		{"BPF maps", ids(s.maps), ids(was.maps)},
		{"BPF links", ids(s.links), ids(was.links)},
		{"kprobe_events", strings.Split(s.kprobeEvents, "\n"), strings.Split(was.kprobeEvents, "\n")},
	}
	for _, l := range lists {
		var added []string
		for _, x := range l.now {
			if !slices.Contains(l.old, x) {
				added = append(added, x)
			}
		}
		if len(added) > 0 {
			d = append(d, fmt.Sprintf("%s added: %q", l.name, added))
		}
	}
	for proc, n := range s.perfEvents {
		if n > was.perfEvents[proc] {
			d = append(d, fmt.Sprintf("perf events of %s: %d open, were %d", proc, n, was.perfEvents[proc]))
		}
	}
	if s.tracefsMounts > was.tracefsMounts {
		d = append(d, fmt.Sprintf("tracefs mounts: %d, were %d", s.tracefsMounts, was.tracefsMounts))
	}
	return d
}

func ids(v []uint32) []string {
	out := make([]string, len(v))
	for i, id := range v {
		out[i] = fmt.Sprint(id)
	}
	return out
}

// leakPlan is how many runs the leak test makes in a row and kills, per
// mode, and in which modes: every device attachment on the host (about 20
// s in all here, 100 s under -race), and on a kernel with kprobes the
// netfilter kprobes too, whose kprobe_events lines outlive a killed run
// until the next run sweeps them. A guest, where each run takes seconds
// under emulation, runs the kprobe mode alone, the one the host lacks.
func leakPlan(t *testing.T) (runs, killed int, modes [][]string) {
	t.Helper()
	kprobes := false
	if fs, err := tracefs.Open(); err == nil {
		kprobes = fs.KprobesSupported() == nil
		fs.Close()
	}
	kprobeMode := []string{"--netfilter", "kprobe"}
	if os.Getenv(vmtest.GuestEnvVar) == "1" {
		if !kprobes {
			t.Fatal("kprobes are required in the test VM")
		}
		return 1, 1, [][]string{kprobeMode}
	}
	modes = [][]string{{"--attach", "auto"}, {"--attach", "perf"}, {"--attach", "tp_btf"}, {"--attach", "raw_tp"}}
	if kprobes {
		modes = append(modes, kprobeMode)
	}
	return 10, 3, modes
}

// TestE2ENoLeaks runs the tool in a row with each way of attaching, then
// kills runs with SIGKILL once their BPF programs are loaded, and right
// after a -c1 reply (while the run tears down): afterwards BPF programs,
// maps and links, perf events of every process, nftables tables in every
// namespace (an unnamed one too), kprobe_events, links, namespaces and
// tracefs mounts are all as they were. A killed run's kprobes are swept by
// the next run, which is what a user sees.
func TestE2ENoLeaks(t *testing.T) {
	topo, n := vethPair(t)
	testenv.RequireCommands(t, "nft", "ip", "nsenter")
	testenv.UnshareNet(t)
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	runs, killed, modes := leakPlan(t)
	before := takeKernelState(t)
	for _, mode := range modes {
		t.Run(strings.Join(mode, "="), func(t *testing.T) {
			for i := range runs {
				if res := runTool(t, nil, append(mode, "-c", "1", "-W", "2", n.Target4.String())...); res.code != 0 {
					t.Fatalf("run %d: exit %d\n%s", i, res.code, res.stderr)
				}
			}
			if d := settledDiff(t, before); len(d) > 0 {
				t.Errorf("after %d runs:\n%s", runs, strings.Join(d, "\n"))
			}
			for range killed {
				killWhenLoaded(t, before, append(mode, "-c", "1000", "-i", "0.005", "-W", "1", n.Target4.String()))
				killAfterReply(t, append(mode, "-c", "1", "-W", "2", n.Target4.String()))
			}
			// The next run sweeps what the killed ones could not remove.
			if res := runTool(t, nil, append(mode, "-c", "1", "-W", "2", n.Target4.String())...); res.code != 0 {
				t.Fatalf("run after the killed ones: exit %d\n%s", res.code, res.stderr)
			}
			if d := settledDiff(t, before); len(d) > 0 {
				t.Errorf("after %d runs killed with SIGKILL and one more:\n%s", 2*killed, strings.Join(d, "\n"))
			}
		})
	}
}

// killWhenLoaded starts a run and kills it with SIGKILL as soon as a BPF
// program that was not there before appears: mid-attach or mid-echo.
func killWhenLoaded(t *testing.T, before kernelState, args []string) {
	t.Helper()
	cmd, _, stderr := startTool(t, args...)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(time.Millisecond) {
		ids, err := bpfIDs(func(id uint32) (uint32, error) {
			next, err := ebpf.ProgramGetNextID(ebpf.ProgramID(id))
			return uint32(next), err
		})
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(ids, func(id uint32) bool { return !slices.Contains(before.programs, id) }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no program of the run appeared; stderr:\n%s", stderr)
		}
	}
	cmd.Process.Kill()
	cmd.Wait()
}

// killAfterReply kills a -c1 run with SIGKILL as soon as it printed its
// reply: while it detaches and closes.
func killAfterReply(t *testing.T, args []string) {
	t.Helper()
	cmd, stdout, stderr := startTool(t, args...)
	readUntil(t, bufio.NewReader(stdout), "reply from", stderr)
	cmd.Process.Kill()
	cmd.Wait()
}
