package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// InCI reports whether the tests run in CI (CI=true), where every requirement is expected
// to be met.
func InCI() bool { return os.Getenv("CI") == "true" }

// Require skips tb, saying why, when err (a missing requirement) is not nil; in CI it fails
// tb instead, since CI is supposed to have everything.
func Require(tb testing.TB, err error) {
	tb.Helper()
	if err == nil {
		return
	}
	if InCI() {
		tb.Fatalf("requirement missing in CI: %v", err)
		return
	}
	tb.Skipf("skipping: %v", err)
}

// ElsewherePrefix starts the reason of a skip that leaves no gap: the test
// runs in the other suite, the host's or a guest's, by design. make skips
// lists these apart from the skips that are gaps.
const ElsewherePrefix = "runs elsewhere by design: "

// Elsewhere skips tb, which the other suite (the host's or a guest's) runs
// by design, saying where.
func Elsewhere(tb testing.TB, format string, args ...any) {
	tb.Helper()
	tb.Skipf(ElsewherePrefix+format, args...)
}

// RequireRoot skips (fails in CI) unless the test runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if euid := os.Geteuid(); euid != 0 {
		Require(tb, fmt.Errorf("needs root to create network namespaces and links (euid %d)", euid))
	}
}

// RequireCommands skips (fails in CI) unless every named program is in PATH.
func RequireCommands(tb testing.TB, names ...string) {
	tb.Helper()
	for _, name := range names {
		if _, err := exec.LookPath(name); err != nil {
			Require(tb, fmt.Errorf("needs the %s command: %w", name, err))
		}
	}
}

// Topology returns a new topology.Topology that is closed when tb ends; a failure to remove
// everything fails tb. It requires root.
func Topology(tb testing.TB) *topology.Topology {
	tb.Helper()
	RequireRoot(tb)
	t := topology.New()
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Errorf("close topology: %v", err)
		}
	})
	return t
}

// Nft loads ruleset into the nftables of ns, a namespace of the test's own:
// the tables go with the namespace.
func Nft(tb testing.TB, ns *topology.Netns, ruleset string) {
	tb.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("nft -f in %v: %v\n%s\nruleset:\n%s", ns, err, out, ruleset)
	}
}

// NetnsInodeOfPid returns the inode of /proc/<pid>/ns/net, the identity of the process's
// network namespace, read with stat(2) independently of the topology package.
func NetnsInodeOfPid(tb testing.TB, pid int) uint64 {
	tb.Helper()
	p := "/proc/" + strconv.Itoa(pid) + "/ns/net"
	fi, err := os.Stat(p)
	if err != nil {
		tb.Fatalf("stat %s: %v", p, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// StartInNetns starts `ip netns exec <netns> args...` and returns once the process runs
// args[0] (so it is inside the namespace). It is killed when tb ends.
func StartInNetns(tb testing.TB, netns string, args ...string) *exec.Cmd {
	tb.Helper()
	RequireCommands(tb, "ip", args[0])
	var stderr bytes.Buffer
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns}, args...)...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %v: %v", cmd.Args, err)
	}
	waited := false
	tb.Cleanup(func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	// comm is the executable's base name cut to 15 bytes; it changes when ip execs args[0].
	want := filepath.Base(args[0])
	if len(want) > 15 {
		want = want[:15]
	}
	procDir := "/proc/" + strconv.Itoa(cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		stat, err := os.ReadFile(procDir + "/stat")
		if err == nil && isZombie(stat) {
			break
		}
		if comm, err := os.ReadFile(procDir + "/comm"); err == nil && strings.TrimSpace(string(comm)) == want {
			return cmd
		}
	}
	_ = cmd.Process.Kill()
	err := cmd.Wait()
	waited = true
	tb.Fatalf("%v did not start %s: %v; stderr: %s", cmd.Args, want, err, stderr.String())
	return nil
}

func isZombie(stat []byte) bool {
	i := bytes.LastIndexByte(stat, ')')
	return i >= 0 && i+2 < len(stat) && stat[i+2] == 'Z'
}

// Ping sends one ICMP echo to dst from inside src with ping(8) and waits up to a second for
// the reply. It refuses, sending nothing, unless t.CheckOwnRoute(src, dst) accepts dst.
func Ping(tb testing.TB, t *topology.Topology, src *topology.Netns, dst netip.Addr) error {
	tb.Helper()
	RequireCommands(tb, "ping")
	if err := t.CheckOwnRoute(src, dst); err != nil {
		return fmt.Errorf("not pinging: %w", err)
	}
	args := []string{"ping", "-n", "-c1", "-W1", dst.String()}
	if src.Name != "" {
		RequireCommands(tb, "ip")
		args = append([]string{"ip", "netns", "exec", src.Name}, args...)
	} else if self := NetnsInodeOfPid(tb, os.Getpid()); self != src.Inode {
		return fmt.Errorf("not pinging: %v has no name and is not this process's namespace", src)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}
