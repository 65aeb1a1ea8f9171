package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// TestReplayNoEcho: a recording cut before its first echo says so, exit 2,
// instead of printing nothing with exit 0; its --pcapng export likewise,
// and writes no file.
func TestReplayNoEcho(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("testdata", "veth-ipv4.tpk"))
	if err != nil {
		t.Fatal(err)
	}
	// The preamble, then the first block: header and snapshot.
	const preamble = 10
	first := preamble + 8 + int(binary.LittleEndian.Uint32(data[preamble:]))
	file := filepath.Join(t.TempDir(), "cut.tpk")
	if err := os.WriteFile(file, data[:first], 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out.pcapng")
	for _, mode := range [][]string{nil, {"--json"}, {"--pcapng", out}} {
		res := runTool(t, nil, append([]string{"--replay", file}, mode...)...)
		want := "tracepkt-perf: replay " + file + ": the recording holds no echo\n"
		if res.code != 2 || res.stderr != want || res.stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 2, %q", mode, res.code, res.stderr, res.stdout, want)
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--pcapng of a recording without an echo left %s (%v)", out, err)
	}
}

// TestReplayPeakRSS replays a hostile recording with valid checksums: 4 MB
// of the smallest records (2 bytes each), and never an echo outcome. The
// replay must refuse it within a memory bound, not hold two million records
// (it reached gigabytes).
func TestReplayPeakRSS(t *testing.T) {
	var buf bytes.Buffer
	w, err := tpk.NewWriter(&buf, tpk.Header{ToolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	body := bytes.Repeat([]byte{1, 0}, 1<<19) // mask fTime, delta 0
	for block := range uint64(4) {
		payload := binary.AppendUvarint(nil, block+1) // after the header's block 0
		payload = binary.AppendUvarint(binary.AppendUvarint(payload, 3), uint64(len(body)))
		payload = append(payload, body...)
		var hdr [8]byte
		binary.LittleEndian.PutUint32(hdr[:], uint32(len(payload)))
		table := crc32.MakeTable(crc32.Castagnoli)
		binary.LittleEndian.PutUint32(hdr[4:], crc32.Update(crc32.Checksum(hdr[:4], table), table, payload))
		buf.Write(hdr[:])
		buf.Write(payload)
	}
	file := filepath.Join(t.TempDir(), "hostile.tpk")
	if err := os.WriteFile(file, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	self := testBinary(t)
	cmd := exec.Command(self, "--replay", file)
	res := runCmd(t, cmd)
	if res.code != 2 || !strings.Contains(res.stderr, "records before an echo outcome") {
		t.Errorf("exit %d, stderr %q; want exit 2, refused for too many records", res.code, res.stderr)
	}
	// KiB: the Go runtime and a race-instrumented test binary, with room.
	// Alone the replay peaks at 74-95 MiB under -race, at 173 MiB when the
	// whole race suite ran before it; the unbounded reader reached gigabytes.
	const bound = 256 << 10
	if rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss; rss > bound {
		t.Errorf("replay peaked at %d MiB, more than %d MiB", rss>>10, bound>>10)
	} else {
		t.Logf("replay peaked at %d MiB", rss>>10)
	}
}
