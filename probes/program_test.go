package probes

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenOffsets are the offsets of the development kernel (6.18); any fixed
// set will do, the point is that a change in generated code shows in review.
var goldenOffsets = Offsets{
	SkbHead: 192, SkbData: 200, SkbNetworkHeader: 180, SkbLen: 112, SkbDataLen: 116, SkbDev: 16,
	DevName: 280, DevIfindex: 224, DevNet: 264, NetInum: 176,
}

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from %s (go test -update rewrites it):\n%s", name, path, got)
	}
}

func TestTracepointProgramGolden(t *testing.T) {
	for _, p := range decode.Probes() {
		insns := TracepointProgram(ProgramParams{Offsets: goldenOffsets, SkbAddrOffset: 8, Probe: p, EchoID: 0xbeef})
		golden(t, "program_"+p.String(), fmt.Sprintf("%v", insns))
	}
}

func TestTracepointProgramDependsOnEchoID(t *testing.T) {
	a := fmt.Sprint(TracepointProgram(ProgramParams{Offsets: goldenOffsets, Probe: decode.ProbeNetDevQueue, EchoID: 1}))
	b := fmt.Sprint(TracepointProgram(ProgramParams{Offsets: goldenOffsets, Probe: decode.ProbeNetDevQueue, EchoID: 2}))
	if a == b {
		t.Error("programs for different echo ids are identical")
	}
}
