package netns_test

import (
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// BenchmarkNaming100 is what naming costs a run at start-up on a machine
// with 100 more namespaces: half ip netns names, half held by processes in
// Docker-shaped cgroups. list is netns.List, owners finds every namespace's owner.
func BenchmarkNaming100(b *testing.B) {
	topo := testenv.Topology(b)
	for range 50 {
		if _, err := topo.Netns(topology.UniqueName("bn")); err != nil {
			b.Fatal(err)
		}
		cmd, _ := testenv.UnshareNet(b)
		testenv.InCgroup(b, cmd.Process.Pid, "system.slice/docker-"+testenv.ContainerID(b)+".scope")
	}
	nss, err := netns.List()
	if err != nil {
		b.Fatal(err)
	}
	b.Run("list", func(b *testing.B) {
		for b.Loop() {
			if _, err := netns.List(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(len(nss)), "namespaces")
	})
	b.Run("owners", func(b *testing.B) {
		for b.Loop() {
			netns.NewNamer(netns.DefaultPlaces).Owners(nss)
		}
		b.ReportMetric(float64(len(nss)), "namespaces")
	})
}
