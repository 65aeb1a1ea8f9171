package topology_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// BenchmarkPresets builds and closes each preset, reporting both phases:
//
//	go test -run '^$' -bench Presets -benchtime 50x ./internal/topology/
func BenchmarkPresets(b *testing.B) {
	testenv.RequireRoot(b)
	presets := []struct {
		name  string
		build func(t *topology.Topology, name string, v4, v6 netip.Prefix) error
	}{
		{"VethPair", func(t *topology.Topology, name string, v4, v6 netip.Prefix) error {
			_, err := t.VethPair(name, v4, v6)
			return err
		}},
		{"DockerBridge", func(t *topology.Topology, name string, v4, v6 netip.Prefix) error {
			_, err := t.DockerBridge(topology.DemoConfig(name, v4, v6))
			return err
		}},
		{"Router", func(t *topology.Topology, name string, v4, v6 netip.Prefix) error {
			_, err := t.Router(name, v4, v6)
			return err
		}},
	}
	for _, p := range presets {
		b.Run(p.name, func(b *testing.B) {
			v4, v6 := topology.TestNets() // each iteration closes before the next reuses them
			var build, closing time.Duration
			for b.Loop() {
				topo := topology.New()
				start := time.Now()
				err := p.build(topo, topology.UniqueName("tb"), v4, v6)
				built := time.Now()
				if cerr := topo.Close(); cerr != nil || err != nil {
					b.Fatal(err, cerr)
				}
				build += built.Sub(start)
				closing += time.Since(built)
			}
			b.ReportMetric(float64(build.Microseconds())/float64(b.N), "build-µs/op")
			b.ReportMetric(float64(closing.Microseconds())/float64(b.N), "close-µs/op")
		})
	}
}
