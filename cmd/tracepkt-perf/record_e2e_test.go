package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// TestE2ERecordKeepsFileOnFailure: a run that fails before its first echo
// (a typo in the target, no route) leaves an existing recording as it was
// and creates no file; a run that records an echo replaces it.
func TestE2ERecordKeepsFileOnFailure(t *testing.T) {
	topo, n := vethPair(t)
	lonely, err := topo.Netns(topology.UniqueName("tp"))
	if err != nil {
		t.Fatal(err)
	}
	dir := openTempDir(t)
	old := filepath.Join(dir, "yesterday.tpk")
	if err := os.WriteFile(old, []byte("yesterday's recording"), 0o644); err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "new.tpk")
	for _, tc := range []struct {
		name string
		ns   *topology.Netns
		args []string
	}{
		{"malformed target", nil, []string{"1.2.3"}},
		{"multicast target", nil, []string{"224.0.0.1"}},
		{"no route", lonely, []string{n.Target4.String()}},
	} {
		for _, file := range []string{old, fresh} {
			res := runTool(t, tc.ns, append([]string{"--record", file}, tc.args...)...)
			if res.code != 2 {
				t.Errorf("%s: exit %d, want 2; stderr %q", tc.name, res.code, res.stderr)
			}
			if b, err := os.ReadFile(old); err != nil || string(b) != "yesterday's recording" {
				t.Errorf("%s: the existing recording became %q (%v)", tc.name, b, err)
			}
			entries, _ := os.ReadDir(dir)
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"yesterday.tpk"}) {
				t.Errorf("%s: the directory holds %q", tc.name, names)
			}
		}
	}
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	res := runTool(t, nil, "--record", old, n.Target4.String())
	if res.code != 0 {
		t.Fatalf("recording run: exit %d, stderr %q", res.code, res.stderr)
	}
	replayed := runTool(t, nil, "--replay", old)
	if replayed.code != 0 || replayed.stdout != res.stdout || !strings.Contains(res.stdout, "reply from") {
		t.Errorf("replay of the new recording: exit %d\n%s\nlive:\n%s", replayed.code, replayed.stdout, res.stdout)
	}
}

// TestE2ERecordNeverReplaces: --record refuses, before tracing (exit 2, one
// line, nothing on stdout), a path that holds anything but a regular file:
// a character device with /dev/null's numbers (made in a directory of the
// test's own), a FIFO, a symlink, a directory, a socket; each is left
// exactly as it was. Over a 0600 file of another user, the recording keeps
// that owner and mode.
func TestE2ERecordNeverReplaces(t *testing.T) {
	topo, n := vethPair(t)
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	dir := openTempDir(t)
	for kind, path := range specialFiles(t, dir) {
		before := fileState(t, path)
		res := runTool(t, nil, "--record", path, n.Target4.String())
		want := "tracepkt-perf: record: " + path + " is " + kind + ", not a regular file: not replacing it\n"
		if res.code != 2 || res.stderr != want || res.stdout != "" {
			t.Errorf("--record over %s: exit %d, stdout %q, stderr %q; want exit 2, %q", kind, res.code, res.stdout, res.stderr, want)
		}
		if after := fileState(t, path); after != before {
			t.Errorf("--record over %s: it became %s, was %s", kind, after, before)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "target")); err != nil || string(b) != "the symlink's target" {
		t.Errorf("the symlink's target became %q (%v)", b, err)
	}
	old := filepath.Join(dir, "theirs.tpk")
	if err := os.WriteFile(old, []byte("someone else's"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(old, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	res := runTool(t, nil, "--record", old, n.Target4.String())
	var st unix.Stat_t
	if err := unix.Lstat(old, &st); err != nil {
		t.Fatal(err)
	}
	if res.code != 0 || st.Mode != unix.S_IFREG|0o600 || st.Uid != 65534 || st.Gid != 65534 {
		t.Errorf("--record over a 0600 file of uid 65534: exit %d (%s), now mode %#o uid %d gid %d", res.code, res.stderr, st.Mode, st.Uid, st.Gid)
	}
	if replayed := runTool(t, nil, "--replay", old); replayed.code != 0 || replayed.stdout != res.stdout {
		t.Errorf("replay of the recording: exit %d\n%s\nlive:\n%s", replayed.code, replayed.stdout, res.stdout)
	}
}
