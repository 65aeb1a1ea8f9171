package netns_test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// TestNamespaceNotReadyOrGone: what another process's ip netns add or del
// leaves for a moment, a file under /run/netns without its bind mount, is
// not listed, and a namespace that loses its bind mount between List and
// Open is gone, not an error of the run.
func TestNamespaceNotReadyOrGone(t *testing.T) {
	testenv.RequireRoot(t)
	if err := os.MkdirAll("/run/netns", 0o755); err != nil {
		t.Fatal(err)
	}
	// ip netns add creates the file first, then mounts the namespace over it.
	notReady := filepath.Join("/run/netns", topology.UniqueName("nr"))
	if err := os.WriteFile(notReady, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(notReady) })

	name := topology.UniqueName("ng")
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	path := filepath.Join("/run/netns", name)
	t.Cleanup(func() {
		unix.Unmount(path, unix.MNT_DETACH)
		os.Remove(path)
	})

	nss, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(nss, func(n netns.Netns) bool { return slices.Contains(n.Names, name) })
	if i < 0 {
		t.Fatalf("%s not listed: %v", name, nss)
	}
	for _, n := range nss {
		if n.Path == notReady || slices.Contains(n.Names, filepath.Base(notReady)) {
			t.Errorf("listed %v, a file without its bind mount", n)
		}
	}

	// ip netns del unmounts first, then unlinks: the namespace's file is
	// for a moment an ordinary one.
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	if f, err := nss[i].Open(); !errors.Is(err, netns.ErrGone) {
		if err == nil {
			f.Close()
		}
		t.Errorf("Open of %v after its unmount: %v, want ErrGone", nss[i], err)
	}
	// And then the file is gone too.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if f, err := nss[i].Open(); !errors.Is(err, netns.ErrGone) {
		if err == nil {
			f.Close()
		}
		t.Errorf("Open of %v after its removal: %v, want ErrGone", nss[i], err)
	}
}
