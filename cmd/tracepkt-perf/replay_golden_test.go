package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// replayCases are recordings of real runs kept in testdata: each replays,
// without root, to the table and JSON its live run printed. go test -update
// (as root) records them again from live runs on the running kernel.
var replayCases = []struct {
	name   string
	record func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string)
}{
	{"veth-ipv4", func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := vethPair(t)
		return topo, n.Source, n.Target4, []string{"-c", "2", "-i", "10ms"}
	}},
	{"veth-ipv6", func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := vethPair(t)
		return topo, n.Source, n.Target6, nil
	}},
	{"bridge-ipv4", func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := dockerBridge(t)
		return topo, n.Source, n.Target4, nil
	}},
	{"router-ipv6", func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := router(t)
		return topo, n.Source, n.Target6, nil
	}},
	{"netfilter-drop-ipv4", func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string) {
		topo, n := routerWithRules(t, "; add rule inet tpfilt forward icmp type echo-request drop")
		return topo, n.Source, n.Target4, []string{"-W", "300ms"}
	}},
}

func TestReplayGolden(t *testing.T) {
	for _, tc := range replayCases {
		t.Run(tc.name, func(t *testing.T) {
			tpk := filepath.Join("testdata", tc.name+".tpk")
			if *update {
				recordCase(t, tpk, tc.record)
			}
			if _, err := os.Stat(tpk); err != nil {
				t.Fatalf("%v (go test -update, as root, records it)", err)
			}
			for _, mode := range []struct{ suffix, flag string }{{".table", ""}, {".json", "--json"}} {
				args := []string{"--replay", tpk}
				if mode.flag != "" {
					args = append(args, mode.flag)
				}
				res := runTool(t, nil, args...)
				if res.code > 1 || res.stderr != "" {
					t.Fatalf("replay %v: exit %d, stderr %q", args, res.code, res.stderr)
				}
				if mode.flag == "" {
					// Written only by the live run: never from a replay.
					want, err := os.ReadFile(filepath.Join("testdata", tc.name+".table.golden"))
					if err != nil {
						t.Fatal(err)
					}
					if res.stdout != string(want) {
						t.Errorf("replay of %s:\n%s\nthe live run printed:\n%s", tpk, res.stdout, want)
					}
					continue
				}
				golden(t, tc.name+mode.suffix, []byte(res.stdout))
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

// recordCase records a live run into tpk and keeps what it printed as the
// table golden: the replay must print it again.
func recordCase(t *testing.T, tpk string, build func(t *testing.T) (*topology.Topology, *topology.Netns, netip.Addr, []string)) {
	t.Helper()
	testenv.RequireRoot(t)
	topo, src, target, extra := build(t)
	if err := topo.CheckOwnRoute(src, target); err != nil {
		t.Fatal(err)
	}
	res := runTool(t, src, append(append([]string{"--record", tpk}, extra...), target.String())...)
	if res.code > 1 {
		t.Fatalf("live run: exit %d\n%s", res.code, res.stderr)
	}
	if err := os.WriteFile(filepath.Join("testdata", filepath.Base(tpk[:len(tpk)-len(".tpk")])+".table.golden"), []byte(res.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
}
