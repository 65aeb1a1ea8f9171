package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/caps"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// minimumCaps is the smallest set a user other than root traces with here,
// tracefs not mounted: the tool mounts its own (CAP_SYS_ADMIN, which also
// stands for CAP_BPF and CAP_PERFMON), reads its root-owned files
// (CAP_DAC_READ_SEARCH), sends on a raw socket (CAP_NET_RAW) and traces
// nftables (CAP_NET_ADMIN).
var minimumCaps = []caps.Cap{caps.NetAdmin, caps.NetRaw, caps.SysAdmin, caps.DacReadSearch}

// runToolWithCaps runs a copy of the tool in dir as uid 65534 holding only
// held, as ambient capabilities.
func runToolWithCaps(t *testing.T, dir string, held []caps.Cap, args ...string) toolResult {
	t.Helper()
	ambient := make([]uintptr, len(held))
	for i, c := range held {
		ambient[i] = uintptr(c)
	}
	cmd := exec.Command(filepath.Join(dir, "tracepkt-perf"), args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}, AmbientCaps: ambient}
	return runCmd(t, cmd)
}

// TestE2ECapabilities: uid 65534 holding the minimum set traces a veth
// pair as root does; with any one of the set's core capabilities dropped,
// the run and --check fail (exit 2) naming it, and on a kernel that charges
// BPF memory to its cgroup nothing blames RLIMIT_MEMLOCK.
func TestE2ECapabilities(t *testing.T) {
	topo, n := vethPair(t)
	root, peer := inode(t, n.Root), inode(t, n.Netns)
	dir := openTempDir(t)
	runToolAs(t, 65534, dir, "--version") // copies the tool into dir
	target := n.Target4
	if err := topo.CheckOwnRoute(n.Source, target); err != nil {
		t.Fatalf("not tracing: %v", err)
	}
	args := []string{"--json", "-W", "3s", target.String()}
	echoes := echoesOf(t, runToolWithCaps(t, dir, minimumCaps, args...))
	if len(echoes) != 1 {
		t.Fatalf("%d echoes, want 1", len(echoes))
	}
	assertJourney(t, echoes[0], target, []string{
		row(root, n.HostLink, "out", "request"),
		row(peer, "eth0", "in", "request"),
		row(peer, "eth0", "out", "reply"),
		row(root, n.HostLink, "in", "reply"),
	})
	if res := runToolWithCaps(t, dir, minimumCaps, "--check"); res.code != 0 || !strings.Contains(res.stdout, "core trace: ready") {
		t.Errorf("--check with %v: exit %d\n%s%s", minimumCaps, res.code, res.stdout, res.stderr)
	}
	for _, drop := range []caps.Cap{caps.NetRaw, caps.SysAdmin, caps.DacReadSearch} {
		t.Run(drop.String(), func(t *testing.T) {
			var held []caps.Cap
			for _, c := range minimumCaps {
				if c != drop {
					held = append(held, c)
				}
			}
			assertRefused(t, runToolWithCaps(t, dir, held, args...), drop, "missing "+drop.String())
			res := runToolWithCaps(t, dir, held, "--check")
			assertRefused(t, res, drop, "core trace: cannot run without ")
			verdict := res.stdout[strings.LastIndex(res.stdout, "core trace: "):]
			if !strings.Contains(verdict, drop.String()) {
				t.Errorf("--check verdict %q does not name %s", verdict, drop)
			}
		})
	}
}

// assertRefused: res is a failure (exit 2) that names c and says want, and
// does not blame RLIMIT_MEMLOCK where the kernel ignores it.
func assertRefused(t *testing.T, res toolResult, c caps.Cap, want string) {
	t.Helper()
	out := res.stdout + res.stderr
	if res.code != 2 || !strings.Contains(out, want) || !strings.Contains(out, c.String()) {
		t.Errorf("without %s: exit %d, want 2 and %q\nstdout:\n%s\nstderr:\n%s", c, res.code, want, res.stdout, res.stderr)
	}
	if testenv.KernelAtLeast(t, 5, 11) && strings.Contains(out, "RLIMIT_MEMLOCK") {
		t.Errorf("without %s, on a kernel that charges BPF memory to its cgroup, RLIMIT_MEMLOCK is blamed:\n%s", c, out)
	}
}
