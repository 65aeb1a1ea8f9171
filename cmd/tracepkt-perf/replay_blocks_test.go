package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

// demoRecording returns a recording of n echoes of the demo topology, IPv4,
// written as a live run writes them: the header block, then one block per
// echo, the snapshot in the first.
func demoRecording(tb testing.TB, n int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := tpk.NewWriter(&buf, tpk.Header{ToolVersion: version, StartWall: testrecord.StartWall,
		StartKtime: testrecord.StartKtime, Args: []string{"tracepkt-perf", testrecord.Ctr4.String()}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.WriteSnapshot(testrecord.Snapshot()); err != nil {
		tb.Fatal(err)
	}
	for k := range n {
		seq := uint16(k + 1)
		recs, target := testrecord.DemoEcho(4, seq)
		shift := uint64(k+1-int(seq)) * uint64(time.Second) // whole wraps of seq
		for i := range recs {
			if recs[i].Lost == 0 {
				recs[i].Time += shift
			}
		}
		out := tpk.EchoOutcome{Outcome: decode.Outcome{Target: target, EchoID: testrecord.EchoID, Seq: seq,
			Replied: true, RTT: 48 * time.Microsecond, Timeout: time.Second}}
		if err := w.WriteEcho(recs, &out); err != nil {
			tb.Fatal(err)
		}
	}
	return buf.Bytes()
}

// tpkBlocks splits a recording into its preamble and its blocks.
func tpkBlocks(tb testing.TB, data []byte) (preamble []byte, blocks [][]byte) {
	tb.Helper()
	const preambleLen, blockHdrLen = 10, 8
	preamble, data = data[:preambleLen], data[preambleLen:]
	for len(data) > 0 {
		n := blockHdrLen + int(binary.LittleEndian.Uint32(data))
		blocks, data = append(blocks, data[:n]), data[n:]
	}
	return preamble, blocks
}

// TestReplayBlockSequence: a five-echo recording with the second echo's block
// left out, or the third's repeated, keeps every checksum; each mode that reads
// it says which block is missing or repeated and exits 2, instead of showing
// the later echoes decoded against the wrong records.
func TestReplayBlockSequence(t *testing.T) {
	preamble, blocks := tpkBlocks(t, demoRecording(t, 5))
	if len(blocks) != 6 {
		t.Fatalf("%d blocks, want the header's and one per echo", len(blocks))
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tpk")
	if err := os.WriteFile(good, bytes.Join(append([][]byte{preamble}, blocks...), nil), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		order []int
		want  string
	}{
		{"removed", []int{0, 1, 3, 4, 5}, "block 2 is missing or out of order: this is block 3"},
		{"repeated", []int{0, 1, 2, 3, 3, 4, 5}, "block 3 again, after block 3"},
	} {
		file := filepath.Join(dir, c.name+".tpk")
		parts := [][]byte{preamble}
		for _, i := range c.order {
			parts = append(parts, blocks[i])
		}
		if err := os.WriteFile(file, bytes.Join(parts, nil), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, mode := range [][]string{
			{"--replay", file},
			{"--replay", file, "--json"},
			{"--replay", file, "--stats"},
			{"--replay", file, "--svg", filepath.Join(dir, "out.svg")},
			{"--replay", file, "--pcapng", filepath.Join(dir, "out.pcapng")},
			{"--diff", good, file},
			{"--diff", file, good},
		} {
			res := runTool(t, nil, mode...)
			want := "tracepkt-perf: replay " + file + ": block at offset "
			if res.code != 2 || !strings.HasPrefix(res.stderr, want) || !strings.Contains(res.stderr, c.want) ||
				strings.Count(res.stderr, "\n") != 1 {
				t.Errorf("%s: %v: exit %d, stderr %q; want exit 2 and one line %q...%q", c.name, mode, res.code, res.stderr, want, c.want)
			}
		}
	}
}
