package probes

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

// goldenOffsets are the offsets of the development kernel (6.18); any fixed
// set will do, the point is that a change in generated code shows in review.
var goldenOffsets = Offsets{
	SkbHead: 192, SkbData: 200, SkbNetworkHeader: 180, SkbLen: 112, SkbDataLen: 116, SkbDev: 16,
	DevName: 280, DevIfindex: 224, DevNet: 264, NetInum: 176, SkbSk: 24, SockNet: 48,
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

// assertResolved checks that every instruction of a program is valid and
// every jump has its target: the verifier would refuse it otherwise, and the
// loader only says so at run time.
func assertResolved(t *testing.T, name string, insns asm.Instructions) {
	t.Helper()
	if _, err := insns.SymbolOffsets(); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	symbols := map[string]bool{}
	for _, ins := range insns {
		if sym := ins.Symbol(); sym != "" {
			symbols[sym] = true
		}
	}
	for i, ins := range insns {
		if ins.OpCode == asm.InvalidOpCode {
			t.Errorf("%s: instruction %d is invalid", name, i)
		}
		ref := ins.Reference()
		if ref != "" && ref != EventsMap && ref != PendingMap && ref != TupleMap && !symbols[ref] {
			t.Errorf("%s: instruction %d (%v) jumps to %q, which the program lacks", name, i, ins, ref)
		}
	}
}

func TestTracepointProgramGolden(t *testing.T) {
	for _, p := range decode.Probes() {
		// skb:kfree_skb as on 6.18: location at 16, reason at 36 after rx_sk.
		insns := TracepointProgram(ProgramParams{Offsets: goldenOffsets, SkbOffset: 8, Probe: p, Clauses: OursClauses(0xbeef, 0xc0ffee01), Drop: DropFields{16, 36}})
		assertResolved(t, p.String(), insns)
		golden(t, "program_"+p.String(), fmt.Sprintf("%v", insns))
		// As a tp_btf program: the skb is the first argument, the drop's
		// location and reason the second and third.
		typed := TracepointProgram(ProgramParams{Offsets: goldenOffsets, SkbOffset: 0, Probe: p, Clauses: OursClauses(0xbeef, 0xc0ffee01), Typed: true, Drop: DropFields{8, 16}})
		assertResolved(t, p.String()+"_tp_btf", typed)
		golden(t, "program_"+p.String()+"_tp_btf", fmt.Sprintf("%v", typed))
	}
	// A kernel without drop reasons (5.10) records the location alone.
	insns := TracepointProgram(ProgramParams{Offsets: goldenOffsets, SkbOffset: 8, Probe: decode.ProbeKfreeSkb, Clauses: OursClauses(0xbeef, 0xc0ffee01), Drop: DropFields{16, -1}})
	golden(t, "program_kfree_skb_no_reason", fmt.Sprintf("%v", insns))
	// A TCP or UDP run's programs: its clauses take the place of the echo's.
	for run, cfg := range map[string]Config{"tcp": goldenTCP, "udp": goldenUDP} {
		for _, p := range decode.Probes() {
			insns := TracepointProgram(ProgramParams{Offsets: goldenOffsets, SkbOffset: 8, Probe: p, Clauses: cfg.Clauses(), Drop: DropFields{16, 36}})
			assertResolved(t, run+"_"+p.String(), insns)
			golden(t, "program_"+run+"_"+p.String(), fmt.Sprintf("%v", insns))
		}
	}
}

// goldenTCP is the TCP run of the golden programs: 16 probes.
var goldenTCP = Config{TCP: &decode.TCPMark{EchoID: 0xbeef, Cookie: 0xc0ffee00, Span: 32}}

// goldenUDP is the UDP run of the golden programs: a DNS query's mark, past
// the L4 bytes a clause reads.
var goldenUDP = Config{UDP: &decode.UDPMark{EchoID: 0xbeef, Cookie: 0xc0ffee00, Offset: 32}}

func TestDropFieldsOf(t *testing.T) {
	common := []tracefs.Field{{Name: "common_type", Size: 2}, {Name: "skbaddr", Offset: 8, Size: 8}, {Name: "location", Offset: 16, Size: 8}}
	for _, tc := range []struct {
		kernel string
		more   []tracefs.Field
		want   DropFields
	}{
		{"5.10", []tracefs.Field{{Name: "protocol", Offset: 24, Size: 2}}, DropFields{16, -1}},
		{"6.1", []tracefs.Field{{Name: "protocol", Offset: 24, Size: 2}, {Name: "reason", Offset: 28, Size: 4}}, DropFields{16, 28}},
		{"6.18", []tracefs.Field{{Name: "rx_sk", Offset: 24, Size: 8}, {Name: "protocol", Offset: 32, Size: 2}, {Name: "reason", Offset: 36, Size: 4}}, DropFields{16, 36}},
	} {
		got, err := dropFieldsOf(append(append([]tracefs.Field{}, common...), tc.more...))
		if err != nil || got != tc.want {
			t.Errorf("%s: dropFieldsOf = %+v, %v; want %+v", tc.kernel, got, err, tc.want)
		}
	}
	if _, err := dropFieldsOf(common[:2]); err == nil {
		t.Error("dropFieldsOf without location: no error")
	}
}

func TestTracepointProgramDependsOnEchoID(t *testing.T) {
	a := fmt.Sprint(TracepointProgram(ProgramParams{Offsets: goldenOffsets, Probe: decode.ProbeNetDevQueue, Clauses: OursClauses(1, 0)}))
	b := fmt.Sprint(TracepointProgram(ProgramParams{Offsets: goldenOffsets, Probe: decode.ProbeNetDevQueue, Clauses: OursClauses(2, 0)}))
	if a == b {
		t.Error("programs for different echo ids are identical")
	}
}

// TestDeviceProgramsLoad hands every device program, each way it can be
// attached, to the running kernel's verifier and attaches it: a verifier
// that types loads differently (a scalar on one build, untrusted memory on
// another) fails the subtest named after the program and the attachment,
// with the end of the verifier's log.
func TestDeviceProgramsLoad(t *testing.T) {
	testenv.RequireRoot(t)
	fs, err := tracefs.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	offsets, err := KernelOffsets()
	if err != nil {
		t.Fatal(err)
	}
	events, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerfEventArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { events.Close() })
	tuples, err := ebpf.NewMap(TupleMapSpec())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tuples.Close() })
	maps := map[string]*ebpf.Map{EventsMap: events, TupleMap: tuples}
	for run, cfg := range map[string]Config{"echo": {EchoID: 0xbeef}, "tcp": goldenTCP, "udp": goldenUDP} {
		progs := devicePrograms{fs: fs, offsets: offsets, clauses: cfg.Clauses()}
		for _, p := range decode.Probes() {
			for _, at := range AttachAuto.attachments() {
				t.Run(run+"/"+p.String()+"/"+string(at), func(t *testing.T) {
					if err := checkAs(progs, p, at, maps); err != nil {
						t.Errorf("%s run, %s as %s: %v", run, p, at, err)
					}
				})
			}
		}
	}
}

// TestVerifierReason keeps the end of a log, up to its first NUL: what the
// kernel wrote before rewinding stays in the buffer after it.
func TestVerifierReason(t *testing.T) {
	log := []byte("0: R1=ctx() R10=fp0\n719: (6b) *(u16 *)(r10 -152) = r1\ninvalid size of register spill\nprocessed 316 insns (limit 1000000)\n\x00from 796 to 797: safe\n\x00\x00")
	want := "verifier: 0: R1=ctx() R10=fp0 / 719: (6b) *(u16 *)(r10 -152) = r1 / invalid size of register spill"
	if got := verifierReason(log); got != want {
		t.Errorf("verifierReason = %q, want %q", got, want)
	}
	if got := verifierReason(make([]byte, 16)); got != "no verifier log" {
		t.Errorf("empty log: %q", got)
	}
}
