package nftrace

import (
	"fmt"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"

	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// BenchmarkOpenClose opens and closes a tracer in 1, 10 and 50 empty namespaces.
func BenchmarkOpenClose(b *testing.B) {
	requireNftables(b)
	for _, n := range []int{1, 10, 50} {
		b.Run(fmt.Sprintf("netns=%d", n), func(b *testing.B) {
			topo := testenv.Topology(b)
			var nss []netns.Netns
			for range n {
				ns, err := topo.Netns(topology.UniqueName("nb"))
				if err != nil {
					b.Fatal(err)
				}
				nss = append(nss, netnsOf(ns))
			}
			var open, close time.Duration
			for b.Loop() {
				start := time.Now()
				tr, err := Open(nss, Match{EchoID: 0x4242})
				if err != nil {
					b.Fatal(err)
				}
				open += time.Since(start)
				start = time.Now()
				if err := tr.Close(); err != nil {
					b.Fatal(err)
				}
				close += time.Since(start)
			}
			b.ReportMetric(float64(open.Microseconds())/float64(b.N), "µs/open")
			b.ReportMetric(float64(close.Microseconds())/float64(b.N), "µs/close")
		})
	}
}

// BenchmarkDrainIdle is a Drain with nothing to read: the quiet time and the socket polls.
func BenchmarkDrainIdle(b *testing.B) {
	requireNftables(b)
	topo := testenv.Topology(b)
	ns, err := topo.Netns(topology.UniqueName("nb"))
	if err != nil {
		b.Fatal(err)
	}
	tr := openTracer(b, netnsList(ns), 0x4242)
	for b.Loop() {
		if _, err := tr.Drain(time.Millisecond); err != nil {
			b.Fatal(err)
		}
	}
}
