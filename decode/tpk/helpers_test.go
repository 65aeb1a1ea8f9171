package tpk

import (
	"bytes"
	"flag"
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

func testHeader() Header {
	return Header{
		ToolVersion:   "v0.4.0-test",
		KernelRelease: "6.1.0-28-amd64",
		Hostname:      "tracehost",
		BootID:        "5b3cbe5e-2b4a-4f69-9c1e-0d6a4e1c0a7e",
		StartWall:     testrecord.StartWall,
		StartKtime:    testrecord.StartKtime,
		Args:          []string{"tracepkt-perf", "--record", "incident.tpk", "172.31.250.2"},
		Capabilities:  []string{"probe:net_dev_queue", "probe:netif_receive_skb"},
	}
}

// demoEcho is testrecord.DemoEcho with its outcome.
func demoEcho(family int, seq uint16) ([]decode.Record, EchoOutcome) {
	recs, target := testrecord.DemoEcho(family, seq)
	return recs, EchoOutcome{Outcome: decode.Outcome{
		Target: target, EchoID: testrecord.EchoID, Seq: seq, Replied: true,
		RTT: 96300*time.Nanosecond + time.Duration(seq), Timeout: time.Second,
	}}
}

// tpkItem is one thing a Reader returns.
type tpkItem struct {
	kind Kind
	rec  decode.Record
	snap decode.Snapshot
	out  EchoOutcome
}

func (it tpkItem) String() string {
	switch it.kind {
	case KindRecord:
		return fmt.Sprintf("record %+v", it.rec)
	case KindSnapshot:
		return fmt.Sprintf("snapshot %+v", it.snap)
	}
	return fmt.Sprintf("%v %+v", it.kind, it.out)
}

// replayed is r as a Reader returns it: the bytes past CapLen are zero.
func replayed(r decode.Record) decode.Record {
	clear(r.Packet[r.CapLen:])
	return r
}

// recording writes a recording and remembers what a reader should return
// and, at each block boundary, how many items precede it.
type recording struct {
	tb    testing.TB
	buf   bytes.Buffer
	w     *Writer
	items []tpkItem
	// ends[i] is the file length after block i; count[i] the items before it.
	ends, count []int
}

func newRecording(tb testing.TB, h Header) *recording {
	tb.Helper()
	rec := &recording{tb: tb}
	w, err := NewWriter(rec, h)
	if err != nil {
		tb.Fatal(err)
	}
	rec.w = w
	return rec
}

// Write is the Writer's output: one call per block.
func (rec *recording) Write(b []byte) (int, error) {
	n, _ := rec.buf.Write(b)
	rec.ends = append(rec.ends, rec.buf.Len())
	rec.count = append(rec.count, len(rec.items))
	return n, nil
}

func (rec *recording) snapshot(s *decode.Snapshot) {
	rec.tb.Helper()
	if err := rec.w.WriteSnapshot(s); err != nil {
		rec.tb.Fatal(err)
	}
	rec.items = append(rec.items, tpkItem{kind: KindSnapshot, snap: *s})
}

func (rec *recording) records(recs ...decode.Record) {
	rec.tb.Helper()
	for i := range recs {
		if err := rec.w.WriteRecord(&recs[i]); err != nil {
			rec.tb.Fatal(err)
		}
		rec.items = append(rec.items, tpkItem{kind: KindRecord, rec: replayed(recs[i])})
	}
}

func (rec *recording) outcome(o EchoOutcome) {
	rec.tb.Helper()
	if err := rec.w.WriteOutcome(&o); err != nil {
		rec.tb.Fatal(err)
	}
	rec.items = append(rec.items, tpkItem{kind: KindOutcome, out: o})
}

// echo writes one echo as the live run does: records, outcome, flush.
func (rec *recording) echo(recs []decode.Record, o EchoOutcome) {
	rec.tb.Helper()
	rec.records(recs...)
	rec.outcome(o)
	rec.flush()
}

func (rec *recording) flush() {
	rec.tb.Helper()
	if err := rec.w.Flush(); err != nil {
		rec.tb.Fatal(err)
	}
}

func (rec *recording) bytes() []byte { return rec.buf.Bytes() }

// readAll reads every tpkItem of data.
func readAll(tb testing.TB, data []byte) ([]tpkItem, *Reader, error) {
	tb.Helper()
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	var items []tpkItem
	for {
		var it tpkItem
		k, err := r.Next(&it.rec, &it.snap, &it.out)
		if err != nil {
			return items, r, err
		}
		it.kind = k
		if k != KindRecord {
			it.rec = decode.Record{}
		}
		items = append(items, it)
	}
}

func checkItems(tb testing.TB, got, want []tpkItem) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Errorf("read %d items, want %d", len(got), len(want))
	}
	for i := range min(len(got), len(want)) {
		if !reflect.DeepEqual(got[i], want[i]) {
			tb.Fatalf("tpkItem %d:\n got %v\nwant %v", i, got[i], want[i])
		}
	}
}

func checkHeader(tb testing.TB, got, want Header) {
	tb.Helper()
	if !got.StartWall.Equal(want.StartWall) || got.StartWall.Location() != time.UTC {
		tb.Errorf("StartWall %v, want %v in UTC", got.StartWall, want.StartWall)
	}
	got.StartWall, want.StartWall = time.Time{}, time.Time{}
	if !reflect.DeepEqual(got, want) {
		tb.Errorf("header\n got %+v\nwant %+v", got, want)
	}
}

// oddRecords are records the demo does not make but the format must keep.
func oddRecords() []decode.Record {
	big := testrecord.ICMPEchoSize(testrecord.Host6, testrecord.Ctr6, true, testrecord.EchoID, 77, 0, time.Unix(0, 0), 156) // 204 bytes: the probe keeps 128
	full := testrecord.HopRecord(5_000_000_000, 1, testrecord.RootNetns, 11, "abcdefghijklmnop", decode.ProbeNetDevQueue, 3, big[:decode.PacketBytes])
	garbage := testrecord.HopRecord(4_999_000_000, 0, 1, 12, "x", decode.Probe(999), 1<<31, testrecord.ICMPEcho(testrecord.Host4, testrecord.Ctr4, false, 1, 2, 3, time.Unix(0, 0)))
	garbage.Ifname = [16]byte{'e', 't', 'h', '1', 0, 'o', 'l', 'd', 0, 0, 'z'} // renamed: stale bytes after the NUL
	garbage.Packet[garbage.CapLen+3] = 0xee                                    // past CapLen: dropped
	garbage.Len, garbage.EchoID, garbage.Seq = 1<<32-1, 0xffff, 0
	empty := testrecord.HopRecord(6_000_000_000, ^uint64(0), 1<<32-1, 1<<32-1, "", 0, 0, testrecord.ICMPEcho(testrecord.Host4, testrecord.Ctr4, true, 1, 65535, 3, time.Unix(0, 0)))
	empty.CapLen = 0
	return []decode.Record{
		full,
		garbage,
		empty,
		{CPU: 7, Lost: 1 << 40},
		{Time: 1, Skb: 2, Netns: 3, Ifindex: 4, Len: 5, CPU: 6, Probe: 7, Family: 9, ICMPType: 10, EchoID: 11, Seq: 12, Lost: 13},
		{Family: 5}, // no addresses at all
		{Time: 0, Family: 4, Src: netip.MustParseAddr("::ffff:10.0.0.1"), Dst: testrecord.Ctr4}, // 4in6 stays 6
	}
}
