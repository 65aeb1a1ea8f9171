package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// TestE2ECheckWithoutRoot: --check as an unprivileged user says which
// capabilities it lacks, rather than call the kernel unable, and exits 2.
func TestE2ECheckWithoutRoot(t *testing.T) {
	testenv.RequireRoot(t)
	dir := openTempDir(t)
	// Without a tracefs mount the first need is mounting one (CAP_SYS_ADMIN,
	// which stands for CAP_BPF too); with one (the guests mount it at boot),
	// the first need is the BPF maps' CAP_BPF.
	want := "CAP_SYS_ADMIN"
	if mounts, err := os.ReadFile("/proc/thread-self/mounts"); err == nil && strings.Contains(string(mounts), " tracefs ") {
		want = "CAP_BPF"
	}
	for _, args := range [][]string{{"--check"}, {"--check", "--json"}} {
		res := runToolAs(t, 65534, dir, args...)
		if res.code != 2 || strings.Contains(res.stdout, "cannot run on this kernel") ||
			!strings.Contains(res.stdout, want) || !strings.Contains(res.stderr, "the core trace needs ") || !strings.Contains(res.stderr, want) {
			t.Errorf("%v as nobody: exit %d\nstdout:\n%s\nstderr:\n%s", args, res.code, res.stdout, res.stderr)
		}
	}
}

// TestE2ECheckJSON: --check --json is one object whose rows agree with the
// verdict and with each other.
func TestE2ECheckJSON(t *testing.T) {
	testenv.RequireRoot(t)
	res := runTool(t, nil, "--check", "--json")
	var rep checkReport
	if err := json.Unmarshal([]byte(res.stdout), &rep); err != nil {
		t.Fatalf("%v: %q", err, res.stdout)
	}
	ok := map[string]bool{}
	for _, r := range rep.Capabilities {
		ok[r.Name] = r.OK
	}
	if res.code != 0 || !rep.CoreReady || rep.Verdict != "ready" || !rep.Root || !ok["tracefs"] || !ok["net:net_dev_queue"] {
		t.Errorf("exit %d, report %+v", res.code, rep)
	}
	if strings.Contains(rep.NetfilterSource, "nftrace") && ok["netfilter source"] && !ok["nftrace"] {
		t.Errorf("netfilter source %q ok while the nftrace row says no: %+v", rep.NetfilterSource, rep)
	}
}

// TestE2ETracefsLeftAsFound runs --check and a trace in a mount namespace
// without tracefs: the tool mounts its own for the run, and afterwards the
// namespace has no tracefs mount, as before.
func TestE2ETracefsLeftAsFound(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "unshare", "sh")
	self := testBinary(t)
	script := `while grep -q ' tracefs ' /proc/self/mounts; do umount -l "$(awk '$3=="tracefs"{print $2; exit}' /proc/self/mounts)" || exit 9; done
"$0" --check >/dev/null || exit 8
grep -c ' tracefs ' /proc/self/mounts || true`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script, self)
	res := runCmd(t, cmd)
	if res.code != 0 || strings.TrimSpace(res.stdout) != "0" {
		t.Errorf("exit %d, tracefs mounts after the run %q, stderr:\n%s", res.code, res.stdout, res.stderr)
	}
}
