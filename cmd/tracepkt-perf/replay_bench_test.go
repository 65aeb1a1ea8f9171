package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// BenchmarkReplay replays recordings of the demo's echoes at two sizes, as a
// table, as JSON and as statistics: ns/echo stays the same at both sizes when
// a replay is linear in its echoes.
func BenchmarkReplay(b *testing.B) {
	for _, mode := range []struct {
		name string
		args []string
	}{{"table", nil}, {"json", []string{"--json"}}, {"stats", []string{"--stats"}}} {
		for _, n := range []int{1000, 10000} {
			path := filepath.Join(b.TempDir(), "demo.tpk")
			if err := os.WriteFile(path, demoRecording(b, n), 0o644); err != nil {
				b.Fatal(err)
			}
			b.Run(fmt.Sprintf("%s/echoes=%d", mode.name, n), func(b *testing.B) {
				args := append([]string{"--replay", path}, mode.args...)
				for b.Loop() {
					if err := run(args, io.Discard, io.Discard); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/echo")
			})
		}
	}
}

// TestReplayTableCostPerEcho counts what a table replay allocates per echo,
// at two sizes: the count must not grow with the recording (work that grows
// with the echoes before shows as more per echo at the larger size), and the
// bytes must stay far below those of a tablewriter.Table built per echo
// (517 KB an echo, most of it the table's 10,240-entry stringer cache map).
func TestReplayTableCostPerEcho(t *testing.T) {
	perEcho := func(n int) (allocs, bytes float64) {
		path := filepath.Join(t.TempDir(), "demo.tpk")
		if err := os.WriteFile(path, demoRecording(t, n), 0o644); err != nil {
			t.Fatal(err)
		}
		replay := func() {
			if err := run([]string{"--replay", path}, io.Discard, io.Discard); err != nil {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		replay()
		runtime.ReadMemStats(&after)
		return testing.AllocsPerRun(1, replay) / float64(n), float64(after.TotalAlloc-before.TotalAlloc) / float64(n)
	}
	smallAllocs, smallBytes := perEcho(200)
	allocs, bytes := perEcho(2000)
	t.Logf("per echo: %.1f objects and %.0f bytes over 200 echoes, %.1f and %.0f over 2000", smallAllocs, smallBytes, allocs, bytes)
	if allocs > smallAllocs*1.05+1 || bytes > smallBytes*1.05+256 {
		t.Errorf("a table replay costs more per echo over 2000 echoes than over 200: it grows faster than the recording")
	}
	// Twice the 1,343 objects and 70 KB measured when the table was first
	// reused; a table built per echo costs 1,419 objects and 517 KB.
	const maxAllocs, maxBytes = 2700, 140 << 10
	if allocs > maxAllocs || bytes > maxBytes {
		t.Errorf("a table replay allocates %.0f objects and %.0f bytes per echo, more than %d and %d", allocs, bytes, maxAllocs, maxBytes)
	}
}
