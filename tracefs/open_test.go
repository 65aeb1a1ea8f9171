package tracefs

import (
	"os"
	"os/exec"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// TestOpenWithoutMount opens tracefs several times in one process where
// nothing mounted it, as a fresh machine boots: each Open must reach the
// events, whichever thread made the first private mount. It runs itself
// again in a mount namespace of its own with every tracefs unmounted, so
// the machine's mounts neither help nor change.
func TestOpenWithoutMount(t *testing.T) {
	testenv.RequireRoot(t)
	if os.Getenv("TRACEPKT_TRACEFS_UNMOUNTED") == "" {
		testenv.RequireCommands(t, "unshare", "sh")
		script := `grep -w tracefs /proc/self/mounts | while read -r _ dir _; do umount -l "$dir"; done; exec "$@"`
		out, err := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
			"env", "TRACEPKT_TRACEFS_UNMOUNTED=1", os.Args[0], "-test.run=^TestOpenWithoutMount$", "-test.v").CombinedOutput()
		t.Logf("%s", out)
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	for i := range 8 {
		fs, err := Open()
		if err != nil {
			t.Fatal(err)
		}
		if !fs.Private {
			t.Fatalf("open %d: found a mount at %s, want a private one", i, fs.Root)
		}
		if _, err := fs.EventID("net", "net_dev_queue"); err != nil {
			t.Errorf("open %d: %v", i, err)
		}
		fs.Close()
	}
}
