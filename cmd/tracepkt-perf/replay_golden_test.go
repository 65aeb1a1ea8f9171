package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// replayCases are recordings of real runs kept in testdata, two per case: a
// run printing the table (NAME.tpk) and a run printing JSON (NAME.json.tpk).
// Each replays, without root, to exactly what its live run printed
// (NAME.table.golden, NAME.json.golden, written by the live runs only), with
// the live run's exit code. go test -update (as root) records them again
// from live runs on the running kernel.
var replayCases = []struct {
	name   string
	code   int // the exit code of the live run, and of its replay
	record func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string)
}{
	{"veth-ipv4", 0, func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := vethPair(t)
		return topo, n.Source, n.Target4, []string{"-c", "2", "-i", "10ms"}
	}},
	{"veth-ipv6", 0, func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := vethPair(t)
		return topo, n.Source, n.Target6, nil
	}},
	{"bridge-ipv4", 0, func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := dockerBridge(t)
		return topo, n.Source, n.Target4, nil
	}},
	{"router-ipv6", 0, func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := router(t)
		return topo, n.Source, n.Target6, nil
	}},
	{"netfilter-drop-ipv4", 1, func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := routerWithRules(t, "; add rule inet tpfilt forward icmp type echo-request drop")
		return topo, n.Source, n.Target4, []string{"-W", "300ms"}
	}},
}

func TestReplayGolden(t *testing.T) {
	for _, tc := range replayCases {
		t.Run(tc.name, func(t *testing.T) {
			for _, mode := range []struct{ suffix, flag string }{{".table", ""}, {".json", "--json"}} {
				tpk := filepath.Join("testdata", tc.name+".tpk")
				if mode.flag != "" {
					tpk = filepath.Join("testdata", tc.name+mode.suffix+".tpk")
				}
				golden := filepath.Join("testdata", tc.name+mode.suffix+".golden")
				if *update {
					recordCase(t, tpk, golden, mode.flag, tc.code, tc.record)
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("%v (go test -update, as root, records it)", err)
				}
				args := []string{"--replay", tpk}
				if mode.flag != "" {
					args = append(args, mode.flag)
				}
				res := runTool(t, nil, args...)
				if res.code != tc.code || res.stderr != "" {
					t.Errorf("replay %v: exit %d, stderr %q; want exit %d", args, res.code, res.stderr, tc.code)
				}
				if res.stdout != string(want) {
					t.Errorf("replay of %s:\n%s\nthe live run printed:\n%s", tpk, res.stdout, want)
				}
			}
		})
	}
}

// A recording made before owners were recorded still replays: namespaces
// are named after their bind mounts, the host is a bare inode.
func TestReplayBeforeOwners(t *testing.T) {
	for _, mode := range []struct{ suffix, flag string }{{".table", ""}, {".json", "--json"}} {
		args := []string{"--replay", filepath.Join("testdata", "veth-ipv4-before-owners.tpk")}
		if mode.flag != "" {
			args = append(args, mode.flag)
		}
		res := runTool(t, nil, args...)
		if res.code != 0 || res.stderr != "" {
			t.Fatalf("replay %v: exit %d, stderr %q", args, res.code, res.stderr)
		}
		golden(t, "veth-ipv4-before-owners"+mode.suffix, []byte(res.stdout))
	}
}

// recordCase records a live run (with flag, if any) into tpk and keeps what
// it printed as golden: the replay must print it again. The live run must
// exit with code.
func recordCase(t *testing.T, tpk, golden, flag string, code int, build func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string)) {
	t.Helper()
	testenv.RequireRoot(t)
	topo, src, target, extra := build(t)
	if err := topo.CheckOwnRoute(src, target); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--record", tpk}, extra...)
	if flag != "" {
		args = append(args, flag)
	}
	res := runTool(t, src, append(args, target.String())...)
	if res.code != code {
		t.Fatalf("live run %v: exit %d, want %d\n%s", args, res.code, code, res.stderr)
	}
	if err := os.WriteFile(golden, []byte(res.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
}
