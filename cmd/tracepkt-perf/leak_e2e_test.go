package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
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
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// kernelState is what a run could leave behind, counted from outside the tool.
type kernelState struct {
	programs, maps, links []uint32 // BPF object ids
	perfEvents            int      // open perf event files, in every process
	nftTables             []string // "namespace: family table", in every named namespace and this one
	kprobeEvents          string
	ifaces                []string // "namespace: link", likewise
	netns                 []string // /run/netns
	tracefsMounts         int
}

func takeKernelState(t *testing.T) kernelState {
	t.Helper()
	var s kernelState
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
	fds, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range fds {
		if target, err := os.Readlink(fd); err == nil && target == "anon_inode:[perf_event]" {
			s.perfEvents++
		}
	}
	entries, _ := os.ReadDir("/run/netns")
	namespaces := []string{""}
	for _, e := range entries {
		s.netns = append(s.netns, e.Name())
		namespaces = append(namespaces, e.Name())
	}
	for _, ns := range namespaces {
		prefix := []string{}
		if ns != "" {
			prefix = []string{"ip", "netns", "exec", ns}
		}
		for _, cmd := range [][]string{{"nft", "list", "tables"}, {"ip", "-o", "link", "show"}} {
			argv := append(append([]string{}, prefix...), cmd...)
			out, err := exec.Command(argv[0], argv[1:]...).Output()
			if err != nil {
				continue // a namespace of another test went away meanwhile
			}
			for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if cmd[0] == "nft" {
					s.nftTables = append(s.nftTables, ns+": "+line)
				} else if f := strings.Fields(line); len(f) > 1 {
					s.ifaces = append(s.ifaces, ns+": "+f[1])
				}
			}
		}
	}
	if fs, err := tracefs.Open(); err == nil {
		b, _ := os.ReadFile(filepath.Join(fs.Root, "kprobe_events"))
		s.kprobeEvents = string(b)
		fs.Close()
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
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
	if s.perfEvents > was.perfEvents {
		d = append(d, fmt.Sprintf("perf events: %d open, were %d", s.perfEvents, was.perfEvents))
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

// leakRuns and killedRuns bound the leak test: about 10 s in all here.
const (
	leakRuns   = 50
	killedRuns = 10
)

// TestE2ENoLeaks runs the tool 50 times in a row, then kills runs with
// SIGKILL at random moments (during start-up, mid-echo, while closing):
// afterwards BPF programs, maps and links, perf events, nftables tables in
// every namespace, kprobe_events, links, namespaces and tracefs mounts are
// all as they were.
func TestE2ENoLeaks(t *testing.T) {
	topo, n := vethPair(t)
	testenv.RequireCommands(t, "nft", "ip")
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	before := takeKernelState(t)
	for i := range leakRuns {
		if res := runTool(t, nil, "-c", "1", "-W", "2", n.Target4.String()); res.code != 0 {
			t.Fatalf("run %d: exit %d\n%s", i, res.code, res.stderr)
		}
	}
	if d := settledDiff(t, before); len(d) > 0 {
		t.Errorf("after %d runs:\n%s", leakRuns, strings.Join(d, "\n"))
	}
	self := testBinary(t)
	for range killedRuns {
		cmd := exec.Command(self, "-c", "1000", "-i", "0.005", "-W", "1", n.Target4.String())
		cmd.Env = append(os.Environ(), asToolEnv+"=1")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(300 * time.Millisecond))))
		cmd.Process.Kill()
		cmd.Wait()
	}
	if d := settledDiff(t, before); len(d) > 0 {
		t.Errorf("after %d runs killed with SIGKILL:\n%s", killedRuns, strings.Join(d, "\n"))
	}
}
