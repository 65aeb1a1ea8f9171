package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
