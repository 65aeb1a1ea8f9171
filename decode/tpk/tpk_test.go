package tpk

import (
	"bytes"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

func TestRoundTrip(t *testing.T) {
	h := testHeader()
	rec := newRecording(t, h)
	rec.snapshot(testrecord.Snapshot())
	for seq := uint16(1); seq <= 12; seq++ {
		rec.echo(demoEcho(4, seq))
	}
	for seq := uint16(65530); seq != 3; seq++ { // seq wraps
		rec.echo(demoEcho(6, seq))
	}
	rec.records(oddRecords()...)
	rec.outcome(EchoOutcome{Outcome: decode.Outcome{Target: testrecord.Ctr6, EchoID: 1, Seq: 2, Timeout: 1500 * time.Millisecond}})
	rec.outcome(EchoOutcome{Outcome: decode.Outcome{Target: testrecord.Ctr6, EchoID: 1, Seq: 3, Interrupted: true, Timeout: 700 * time.Millisecond}})
	rec.outcome(EchoOutcome{Outcome: decode.Outcome{Target: testrecord.Ctr6, EchoID: 1, Seq: 4, Timeout: time.Second, NetfilterLost: 3, Notes: []string{"netfilter: list rules: exit status 1"}}})
	rec.outcome(EchoOutcome{})
	rec.snapshot(&decode.Snapshot{})
	rec.snapshot(&decode.Snapshot{Namespaces: []decode.Namespace{{Inode: 1, Interfaces: []decode.Interface{{Addrs: []netip.Prefix{{}}}}}}})
	rec.flush()

	got, r, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatalf("read: %v, want io.EOF", err)
	}
	checkHeader(t, r.Header(), h)
	checkItems(t, got, rec.items)
	if r.Truncated() != 0 {
		t.Errorf("Truncated() = %d, want 0", r.Truncated())
	}
	if k, err := r.Next(nil, nil, nil); k != 0 || err != io.EOF {
		t.Errorf("Next after the end = %v, %v", k, err)
	}
}

// TestReplayRebuildsJourneys records journeys as the live run makes them and
// rebuilds them from the replay, as the replaying renderer will.
func TestReplayRebuildsJourneys(t *testing.T) {
	var live []decode.Journey
	rec := newRecording(t, testHeader())
	for seq := uint16(1); seq <= 30; seq++ {
		recs, _ := demoEcho(4+2*int(seq%2), seq)
		other, _ := demoEcho(4, seq+1) // a late record of another echo
		recs = append(recs, other[0])
		j := decode.NewJourney(decode.Outcome{Target: testrecord.Ctr4, EchoID: testrecord.EchoID, Seq: seq}, recs, nil)
		j.Replied, j.Timeout = seq%4 != 0, time.Second
		if j.Replied {
			j.RTT = time.Duration(seq) * time.Microsecond
		}
		live = append(live, j)
		o := EchoOutcome{Outcome: j.Outcome}
		if err := rec.w.WriteEcho(recs, &o); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewReader(bytes.NewReader(rec.bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		recs []decode.Record
		x    decode.Record
		out  EchoOutcome
	)
	for i := 0; ; {
		k, err := r.Next(&x, nil, &out)
		if err == io.EOF {
			if i != len(live) {
				t.Fatalf("replayed %d journeys, want %d", i, len(live))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch k {
		case KindRecord:
			recs = append(recs, x)
		case KindOutcome:
			if j := decode.NewJourney(out.Outcome, recs, out.Netfilter); !reflect.DeepEqual(j, live[i]) {
				t.Fatalf("journey %d:\n got %+v\nwant %+v", i, j, live[i])
			}
			recs, i = recs[:0], i+1
		}
	}
}

// TestNilDestinations reads a recording dropping every tpkItem.
func TestNilDestinations(t *testing.T) {
	rec := newRecording(t, testHeader())
	rec.snapshot(testrecord.Snapshot())
	rec.echo(demoEcho(4, 10))
	r, err := NewReader(bytes.NewReader(rec.bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []Kind
	for {
		k, err := r.Next(nil, nil, nil)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, k)
	}
	var want []Kind
	for _, it := range rec.items {
		want = append(want, it.kind)
	}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("kinds %v, want %v", kinds, want)
	}
}

func TestZonesAreDropped(t *testing.T) {
	rec := newRecording(t, testHeader())
	zoned := decode.Record{Family: 6, Src: netip.MustParseAddr("fe80::1%eth0"), Dst: netip.MustParseAddr("fe80::2%eth0")}
	if err := rec.w.WriteRecord(&zoned); err != nil {
		t.Fatal(err)
	}
	if err := rec.w.WriteOutcome(&EchoOutcome{Outcome: decode.Outcome{Target: netip.MustParseAddr("fe80::2%eth0")}}); err != nil {
		t.Fatal(err)
	}
	rec.flush()
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF || len(got) != 2 {
		t.Fatalf("read %v, %v", got, err)
	}
	if got[0].rec.Src != netip.MustParseAddr("fe80::1") || got[0].rec.Dst != netip.MustParseAddr("fe80::2") ||
		got[1].out.Target != netip.MustParseAddr("fe80::2") {
		t.Errorf("read %v", got)
	}
}

// smallRecording is the recording of the golden file: fixed header values, a
// snapshot, IPv4 and IPv6 echoes, an unanswered one and a lost notice.
func smallRecording(tb testing.TB) *recording {
	rec := newRecording(tb, testHeader())
	rec.snapshot(testrecord.Snapshot())
	rec.echo(demoEcho(4, 1))
	rec.echo(demoEcho(4, 2))
	recs, out := demoEcho(6, 3)
	out.Replied, out.RTT = false, 0
	rec.echo(recs[:2], out)
	rec.echo([]decode.Record{{CPU: 1, Lost: 12}}, EchoOutcome{Outcome: decode.Outcome{Target: testrecord.Ctr6, EchoID: testrecord.EchoID, Seq: 4, Timeout: time.Second}})
	return rec
}

// Owners round-trip; testdata/small.tpk, written before owners were
// recorded, reads with none (TestGolden).
func TestSnapshotOwners(t *testing.T) {
	rec := newRecording(t, testHeader())
	snap := testrecord.Snapshot()
	snap.Namespaces[0].Owner = decode.Owner{Kind: decode.OwnerProcess, Name: decode.HostName, Pid: 1, Comm: "systemd"}
	snap.Namespaces[1].Owner = decode.Owner{Kind: decode.OwnerDocker, ID: "3f4e8a1c2b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f",
		Name: "web-1", Pid: 1234, Comm: "sleep"}
	rec.snapshot(snap)
	rec.echo(demoEcho(4, 1))
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatalf("read: %v", err)
	}
	checkItems(t, got, rec.items)
}

// TestGolden compares what this build writes with testdata/small-v2.tpk (a
// run of echoes) and testdata/tcp-v3.tpk (of TCP probes), and reads them
// and testdata/small.tpk, the echoes in version 1: every version this build
// has written stays readable.
func TestGolden(t *testing.T) {
	for _, c := range []struct {
		golden    string
		recording func(testing.TB) *recording
		header    Header
		older     []string // the same recording in older versions
	}{
		{"small-v2.tpk", smallRecording, testHeader(), []string{"small.tpk"}},
		{"tcp-v3.tpk", tcpRecording, tcpHeader(), nil},
	} {
		rec := c.recording(t)
		path := filepath.Join("testdata", c.golden)
		if *update {
			if err := os.WriteFile(path, rec.bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		golden, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%v (run go test -update to create it)", err)
		}
		if !bytes.Equal(rec.bytes(), golden) {
			t.Errorf("the recording differs from %s (%d bytes, want %d): if the format changed on purpose, "+
				"bump FormatVersion, keep reading the old version and run go test -update", path, rec.buf.Len(), len(golden))
		}
		for _, name := range append([]string{c.golden}, c.older...) {
			path := filepath.Join("testdata", name)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			got, r, err := readAll(t, data)
			if err != io.EOF {
				t.Fatalf("read %s: %v", path, err)
			}
			checkHeader(t, r.Header(), c.header)
			checkItems(t, got, rec.items)
		}
	}
}

// TestTruncation cuts a recording at every byte: the reader recovers the
// blocks before the cut and reports the rest as truncated.
func TestTruncation(t *testing.T) {
	checkTruncations(t, smallRecording(t))
}

func checkTruncations(t *testing.T, rec *recording) {
	t.Helper()
	data := rec.bytes()
	headerEnd := rec.ends[0]
	for n := 0; n <= len(data); n++ {
		got, r, err := readAll(t, data[:n])
		if n < headerEnd {
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("cut at %d, inside the header: %v, want io.ErrUnexpectedEOF", n, err)
			}
			continue
		}
		if err != io.EOF {
			t.Fatalf("cut at %d: %v, want io.EOF", n, err)
		}
		b := 0
		for b+1 < len(rec.ends) && rec.ends[b+1] <= n {
			b++
		}
		want := rec.items[:rec.count[b]]
		if len(got) != len(want) || r.Truncated() != int64(n-rec.ends[b]) {
			t.Fatalf("cut at %d: %d items and %d bytes truncated, want %d and %d",
				n, len(got), r.Truncated(), len(want), n-rec.ends[b])
		}
		checkItems(t, got, want)
	}
}

func TestZeroTail(t *testing.T) {
	rec := smallRecording(t)
	for _, zeros := range []int{1, 8, 5000} {
		data := append(bytes.Clone(rec.bytes()), make([]byte, zeros)...)
		got, r, err := readAll(t, data)
		if err != io.EOF || r.Truncated() != int64(zeros) {
			t.Fatalf("%d zeros after the end: %v, truncated %d", zeros, err, r.Truncated())
		}
		checkItems(t, got, rec.items)
	}
	// Zeros then data is not a tail the writer never wrote.
	data := append(bytes.Clone(rec.bytes()), make([]byte, 100)...)
	data = append(data, 1)
	if _, _, err := readAll(t, data); !errors.Is(err, ErrCorrupt) {
		t.Errorf("zeros then data: %v, want ErrCorrupt", err)
	}
}

// TestLargeEchoSplitsBlocks writes more records than fit a block before Flush.
func TestLargeEchoSplitsBlocks(t *testing.T) {
	rec := newRecording(t, testHeader())
	var recs []decode.Record
	for seq := uint16(1); len(recs) < 40000; seq++ {
		r, _ := demoEcho(6, seq)
		recs = append(recs, r...)
	}
	// As many records per echo as the format allows.
	for len(recs) > 0 {
		n := min(len(recs), MaxRecordsPerEcho)
		rec.records(recs[:n]...)
		rec.outcome(EchoOutcome{Outcome: decode.Outcome{Target: testrecord.Ctr6, EchoID: 1, Seq: 1}})
		recs = recs[n:]
	}
	rec.flush()
	if len(rec.ends) < 3 {
		t.Errorf("%d bytes went out in %d blocks", rec.buf.Len(), len(rec.ends)-1)
	}
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatal(err)
	}
	checkItems(t, got, rec.items)
}

// TestReplayDoesNotAllocate checks the promise of Next: no allocation per record.
func TestReplayDoesNotAllocate(t *testing.T) {
	rec := newRecording(t, testHeader())
	for seq := uint16(1); seq <= 3000; seq++ {
		rec.echo(demoEcho(4, seq))
	}
	r, err := NewReader(bytes.NewReader(rec.bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		x   decode.Record
		out EchoOutcome
	)
	for range 100 { // fill the intern tables
		if _, err := r.Next(&x, nil, &out); err != nil {
			t.Fatal(err)
		}
	}
	// One run reads one echo, block and all: AllocsPerRun rounds down.
	allocs := testing.AllocsPerRun(2000, func() {
		for {
			k, err := r.Next(&x, nil, &out)
			if err != nil {
				t.Fatal(err)
			}
			if k == KindOutcome {
				return
			}
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per echo", allocs)
	}
}

func TestHeaderRoundTripEdgeCases(t *testing.T) {
	for _, h := range []Header{
		{},
		{StartWall: time.Date(1969, 7, 20, 20, 17, 40, 999999999, time.FixedZone("EDT", -4*3600)), StartKtime: ^uint64(0)},
		{ToolVersion: string(bytes.Repeat([]byte("é"), 5000)), Args: []string{"", "a"}},
	} {
		var buf bytes.Buffer
		if _, err := NewWriter(&buf, h); err != nil {
			t.Fatal(err)
		}
		r, err := NewReader(&buf)
		if err != nil {
			t.Fatal(err)
		}
		checkHeader(t, r.Header(), h)
	}
}

func TestOutcomeKeepsNetfilterEvents(t *testing.T) {
	nf := []decode.NetfilterEvent{
		{Netns: 4026532500, Family: "inet", Table: "filt", Chain: "forward", Hook: decode.HookForward, Type: decode.TraceRule,
			Verdict: "DROP", RuleHandle: 6, Rule: "icmp type echo-request drop", Iif: 2, Oif: 3, TraceID: 0xdeadbeef,
			ICMPType: 8, EchoID: 7, Seq: 1, Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.130"), CT: decode.CTNew, Source: "nftrace"},
		{Time: 12345, Netns: 1, Family: "ip6", Table: "filter", Chain: "INPUT", Hook: decode.HookInput, Type: decode.TracePolicy,
			Verdict: "JUMP", Target: "X", ICMPType: 129, EchoID: 7, Seq: 1, Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("fd00::1"), CT: decode.CTEstablished, CTReply: true, Source: "kprobe"},
		{Netns: 1, Family: "ip", Table: "raw", Chain: "PREROUTING", Hook: decode.HookPrerouting, Type: decode.TracePolicy,
			Verdict: "ACCEPT", ICMPType: 0, EchoID: 7, Seq: 1, Source: "nftrace"},
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	o := EchoOutcome{Outcome: decode.Outcome{Target: netip.MustParseAddr("198.18.0.130"), EchoID: 7, Seq: 1, Timeout: time.Second}, Netfilter: nf}
	if err := w.WriteEcho(nil, &o); err != nil {
		t.Fatal(err)
	}
	r, err := NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var out EchoOutcome
	if k, err := r.Next(nil, nil, &out); k != KindOutcome || err != nil {
		t.Fatalf("Next = %v, %v", k, err)
	}
	if !reflect.DeepEqual(out.Netfilter, nf) {
		t.Errorf("netfilter events\n got %+v\nwant %+v", out.Netfilter, nf)
	}
	if got := decode.NewJourney(out.Outcome, nil, out.Netfilter); len(got.Netfilter) != 3 {
		t.Errorf("journey keeps %d netfilter events, want 3", len(got.Netfilter))
	}
}

// TestOutcomeKeepsLoss: the ICMP error, the drop (names resolved by the
// live run) and the hint come back from a recording as they went in, with
// and without netfilter events beside them.
func TestOutcomeKeepsLoss(t *testing.T) {
	rec := newRecording(t, testHeader())
	recs, out := demoEcho(4, 1)
	out.Replied, out.RTT = false, 0
	out.Error = &decode.ICMPError{Family: 4, Type: 3, Code: 4, From: testrecord.Ctr4, MTU: 1280}
	out.Drop = &decode.Drop{Time: 12345, Netns: 4026532400, Ifindex: 2, Ifname: "eth0", Family: 4, ICMPType: 8,
		Src: testrecord.Host4, Dst: testrecord.Ctr4, Reason: "PKT_TOO_BIG", Location: "ip_forward+0x1f4", In: true}
	out.Hint = "the packet does not fit the MTU toward 172.31.250.2: eth1 has mtu 1280"
	rec.echo(recs[:3], out)
	recs6, out6 := demoEcho(6, 2)
	out6.Replied = false
	out6.Hint = "fd00:7470::2 has not answered neighbour solicitation on eth0 yet (neighbour INCOMPLETE)"
	out6.Netfilter = []decode.NetfilterEvent{{Netns: 1, Family: "inet", Table: "t", Chain: "c", Verdict: "ACCEPT", Source: "nftrace", EchoID: testrecord.EchoID, Seq: 2}}
	rec.echo(recs6[:2], out6)
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatal(err)
	}
	checkItems(t, got, rec.items)
}

// netfilterRecord is the record a kprobe on nft_do_chain takes of the hop
// record h: its header, and what the function saw.
func netfilterRecord(h decode.Record) decode.Record {
	r := h
	r.Probe, r.CapLen, r.Packet = decode.ProbeNftDoChain, 0, [decode.PacketBytes]byte{}
	copy(r.NF.Table[:], "filter")
	copy(r.NF.Chain[:], "forward")
	r.NF.Verdict, r.NF.Hook, r.NF.Family, r.NF.Iif, r.NF.Oif = 1, 2, 1, 7, 9
	return r
}

// TestNetfilterRecords: a netfilter record keeps what the function saw
// through a recording, and the echo's journey shows it as a netfilter event.
func TestNetfilterRecords(t *testing.T) {
	recs, out := demoEcho(4, 1)
	nf := netfilterRecord(recs[1])
	rec := newRecording(t, testHeader())
	rec.echo(append([]decode.Record{recs[0], recs[1], nf}, recs[2:]...), out)
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatal(err)
	}
	checkItems(t, got, rec.items)
	var replayed []decode.Record
	for _, it := range got[:len(got)-1] {
		replayed = append(replayed, it.rec)
	}
	j := decode.NewJourney(out.Outcome, replayed, nil)
	if len(j.Hops) != len(recs) || len(j.Netfilter) != 1 || j.Netfilter[0] != nf.NetfilterEvent() {
		t.Errorf("journey: %d hops, netfilter %+v", len(j.Hops), j.Netfilter)
	}
}
