package decode

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// The demo topology of cmd/tracepkt-perf: bridge tpdemo0 and veth tpdemoh in
// the root namespace, the container's eth0 in its own.
const (
	rootNetns = 4026531833
	ctrNetns  = 4026532400
	echoID    = 0x1234
)

var (
	host4, ctr4 = netip.MustParseAddr("172.31.250.1"), netip.MustParseAddr("172.31.250.2")
	host6, ctr6 = netip.MustParseAddr("fd00:7470::1"), netip.MustParseAddr("fd00:7470::2")
)

func testHeader() Header {
	return Header{
		ToolVersion:   "v0.4.0-test",
		KernelRelease: "6.1.0-28-amd64",
		Hostname:      "tracehost",
		BootID:        "5b3cbe5e-2b4a-4f69-9c1e-0d6a4e1c0a7e",
		StartWall:     time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.UTC),
		StartKtime:    1_000_000,
		Args:          []string{"tracepkt-perf", "--record", "incident.tpk", "172.31.250.2"},
		Capabilities:  []string{"probe:net_dev_queue", "probe:netif_receive_skb"},
	}
}

func testSnapshot() *Snapshot {
	return &Snapshot{Namespaces: []Namespace{
		{
			Inode: rootNetns,
			Pids:  []int{1},
			Comms: []string{"systemd"},
			Interfaces: []Interface{
				{Ifindex: 1, Name: "lo", Kind: "loopback", Addrs: []netip.Prefix{
					netip.MustParsePrefix("127.0.0.1/8"), netip.MustParsePrefix("::1/128")}},
				{Ifindex: 9, Name: "tpdemo0", Kind: "bridge", Addrs: []netip.Prefix{
					netip.MustParsePrefix("172.31.250.1/24"), netip.MustParsePrefix("fd00:7470::1/64")}},
				{Ifindex: 10, Name: "tpdemoh", Kind: "veth", PeerIfindex: 2, PeerNetns: ctrNetns, Master: "tpdemo0"},
			},
		},
		{
			Inode: ctrNetns,
			Names: []string{"tpdemo0-1234"},
			Pids:  []int{1234, 1240},
			Comms: []string{"sleep", "sh"},
			Interfaces: []Interface{
				{Ifindex: 1, Name: "lo", Kind: "loopback"},
				{Ifindex: 2, Name: "eth0", Kind: "veth", PeerIfindex: 10, PeerNetns: rootNetns, Addrs: []netip.Prefix{
					netip.MustParsePrefix("172.31.250.2/24"), netip.MustParsePrefix("fd00:7470::2/64")}},
			},
		},
	}}
}

// icmpEcho builds an IPv4 or IPv6 ICMP echo request or reply with valid
// checksums, as ping(8) sends it: the payload starts with a timestamp.
func icmpEcho(src, dst netip.Addr, request bool, id, seq uint16, ipID uint16, sent time.Time) []byte {
	return icmpEchoSize(src, dst, request, id, seq, ipID, sent, 56)
}

// icmpEchoSize is icmpEcho with size bytes of payload.
func icmpEchoSize(src, dst netip.Addr, request bool, id, seq uint16, ipID uint16, sent time.Time, size int) []byte {
	payload := make([]byte, size)
	binary.LittleEndian.PutUint64(payload[0:], uint64(sent.Unix()))
	binary.LittleEndian.PutUint64(payload[8:], uint64(sent.Nanosecond()/1000))
	for i := 16; i < len(payload); i++ {
		payload[i] = byte(i)
	}
	icmp := make([]byte, 8, 8+len(payload))
	switch {
	case src.Is4() && request:
		icmp[0] = 8
	case src.Is4():
		icmp[0] = 0
	case request:
		icmp[0] = 128
	default:
		icmp[0] = 129
	}
	binary.BigEndian.PutUint16(icmp[4:], id)
	binary.BigEndian.PutUint16(icmp[6:], seq)
	icmp = append(icmp, payload...)
	if src.Is4() {
		binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, 0))
		ip := make([]byte, 20, 20+len(icmp))
		ip[0] = 0x45
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(icmp)))
		binary.BigEndian.PutUint16(ip[4:], ipID)
		ip[6] = 0x40 // don't fragment
		ip[8] = 64   // TTL
		ip[9] = 1    // ICMP
		s, d := src.As4(), dst.As4()
		copy(ip[12:], s[:])
		copy(ip[16:], d[:])
		binary.BigEndian.PutUint16(ip[10:], inetChecksum(ip, 0))
		return append(ip, icmp...)
	}
	ip := make([]byte, 40, 40+len(icmp))
	ip[0] = 0x60
	binary.BigEndian.PutUint16(ip[4:], uint16(len(icmp)))
	ip[6] = 58 // ICMPv6
	ip[7] = 64 // hop limit
	s, d := src.As16(), dst.As16()
	copy(ip[8:], s[:])
	copy(ip[24:], d[:])
	// The ICMPv6 checksum covers a pseudo-header: addresses, length, next header.
	var pseudo uint32
	for _, a := range [][]byte{ip[8:24], ip[24:40]} {
		for i := 0; i < len(a); i += 2 {
			pseudo += uint32(binary.BigEndian.Uint16(a[i:]))
		}
	}
	pseudo += uint32(len(icmp)) + 58
	binary.BigEndian.PutUint16(icmp[2:], inetChecksum(icmp, pseudo))
	return append(ip, icmp...)
}

// checksum is the Internet checksum (RFC 1071) of b, starting from sum.
func inetChecksum(b []byte, sum uint32) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// hopRecord is the record a probe takes of pkt, as Record.Decode returns it.
func hopRecord(ts, skb uint64, netns, ifindex uint32, ifname string, probe Probe, cpu uint32, pkt []byte) Record {
	r := Record{Time: ts, Skb: skb, Netns: netns, Ifindex: ifindex, Len: uint32(len(pkt)) + 14, CPU: cpu, Probe: probe}
	copy(r.Ifname[:], ifname)
	var icmp []byte
	if pkt[0]>>4 == 4 {
		r.Family = 4
		r.Src = netip.AddrFrom4([4]byte(pkt[12:16]))
		r.Dst = netip.AddrFrom4([4]byte(pkt[16:20]))
		icmp = pkt[20:]
	} else {
		r.Family = 6
		r.Src = netip.AddrFrom16([16]byte(pkt[8:24]))
		r.Dst = netip.AddrFrom16([16]byte(pkt[24:40]))
		icmp = pkt[40:]
	}
	r.ICMPType = icmp[0]
	r.EchoID = binary.BigEndian.Uint16(icmp[4:])
	r.Seq = binary.BigEndian.Uint16(icmp[6:])
	r.CapLen = uint16(copy(r.Packet[:], pkt))
	return r
}

// demoEcho returns what the rings hold after echo seq of the demo, in the
// order they are drained (CPU by CPU), and its outcome. Every tenth echo has
// a lost-sample notice; every third runs the request on CPU 1, so its records
// come after the reply's.
func demoEcho(family int, seq uint16) ([]Record, EchoOutcome) {
	src, dst := host4, ctr4
	if family == 6 {
		src, dst = host6, ctr6
	}
	t0 := 2_000_000 + uint64(seq)*1_000_000_000 + uint64(seq)*7919%5000
	sent := testHeader().StartWall.Add(time.Duration(t0 - testHeader().StartKtime))
	req := icmpEcho(src, dst, true, echoID, seq, 0x4000+seq*3, sent)
	rep := icmpEcho(dst, src, false, echoID, seq, 0x9000+seq*5, sent)
	skbReq := 0xffff888004a1c300 + uint64(seq%64)*0x1900
	skbRep := 0xffff888012f40a00 - uint64(seq%32)*0x0d00
	reqCPU := uint32(0)
	if seq%3 == 0 {
		reqCPU = 1
	}
	request := []Record{
		hopRecord(t0, skbReq, rootNetns, 9, "tpdemo0", ProbeNetDevQueue, reqCPU, req),
		hopRecord(t0+3100, skbReq, rootNetns, 10, "tpdemoh", ProbeNetDevQueue, reqCPU, req),
		hopRecord(t0+9800, skbReq, ctrNetns, 2, "eth0", ProbeNetifReceiveSkb, reqCPU, req),
	}
	reply := []Record{
		hopRecord(t0+21000, skbRep, ctrNetns, 2, "eth0", ProbeNetDevQueue, 0, rep),
		hopRecord(t0+27500, skbRep, rootNetns, 10, "tpdemoh", ProbeNetifReceiveSkb, 0, rep),
		hopRecord(t0+48000, skbRep, rootNetns, 9, "tpdemo0", ProbeNetifReceiveSkb, 0, rep),
	}
	recs := append(request, reply...)
	if reqCPU == 1 {
		recs = append(reply, request...)
	}
	if seq%10 == 0 {
		recs = append(recs, Record{CPU: 1, Lost: uint64(seq/10) + 1})
	}
	return recs, EchoOutcome{
		Target: dst, EchoID: echoID, Seq: seq, Replied: true,
		RTT: 96300*time.Nanosecond + time.Duration(seq), Timeout: time.Second,
	}
}

// tpkItem is one thing a Reader returns.
type tpkItem struct {
	kind Kind
	rec  Record
	snap Snapshot
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
func replayed(r Record) Record {
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

func (rec *recording) snapshot(s *Snapshot) {
	rec.tb.Helper()
	if err := rec.w.WriteSnapshot(s); err != nil {
		rec.tb.Fatal(err)
	}
	rec.items = append(rec.items, tpkItem{kind: KindSnapshot, snap: *s})
}

func (rec *recording) records(recs ...Record) {
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
func (rec *recording) echo(recs []Record, o EchoOutcome) {
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
			it.rec = Record{}
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
func oddRecords() []Record {
	big := icmpEchoSize(host6, ctr6, true, echoID, 77, 0, time.Unix(0, 0), 156) // 204 bytes: the probe keeps 128
	full := hopRecord(5_000_000_000, 1, rootNetns, 11, "abcdefghijklmnop", ProbeNetDevQueue, 3, big[:PacketBytes])
	garbage := hopRecord(4_999_000_000, 0, 1, 12, "x", Probe(999), 1<<31, icmpEcho(host4, ctr4, false, 1, 2, 3, time.Unix(0, 0)))
	garbage.Ifname = [16]byte{'e', 't', 'h', '1', 0, 'o', 'l', 'd', 0, 0, 'z'} // renamed: stale bytes after the NUL
	garbage.Packet[garbage.CapLen+3] = 0xee                                    // past CapLen: dropped
	garbage.Len, garbage.EchoID, garbage.Seq = 1<<32-1, 0xffff, 0
	empty := hopRecord(6_000_000_000, ^uint64(0), 1<<32-1, 1<<32-1, "", 0, 0, icmpEcho(host4, ctr4, true, 1, 65535, 3, time.Unix(0, 0)))
	empty.CapLen = 0
	return []Record{
		full,
		garbage,
		empty,
		{CPU: 7, Lost: 1 << 40},
		{Time: 1, Skb: 2, Netns: 3, Ifindex: 4, Len: 5, CPU: 6, Probe: 7, Family: 9, ICMPType: 10, EchoID: 11, Seq: 12, Lost: 13},
		{Family: 5}, // no addresses at all
		{Time: 0, Family: 4, Src: netip.MustParseAddr("::ffff:10.0.0.1"), Dst: ctr4}, // 4in6 stays 6
	}
}

func TestRoundTrip(t *testing.T) {
	h := testHeader()
	rec := newRecording(t, h)
	rec.snapshot(testSnapshot())
	for seq := uint16(1); seq <= 12; seq++ {
		rec.echo(demoEcho(4, seq))
	}
	for seq := uint16(65530); seq != 3; seq++ { // seq wraps
		rec.echo(demoEcho(6, seq))
	}
	rec.records(oddRecords()...)
	rec.outcome(EchoOutcome{Target: ctr6, EchoID: 1, Seq: 2, Timeout: 1500 * time.Millisecond})
	rec.outcome(EchoOutcome{})
	rec.snapshot(&Snapshot{})
	rec.snapshot(&Snapshot{Namespaces: []Namespace{{Inode: 1, Interfaces: []Interface{{Addrs: []netip.Prefix{{}}}}}}})
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
	var live []Journey
	rec := newRecording(t, testHeader())
	for seq := uint16(1); seq <= 30; seq++ {
		recs, _ := demoEcho(4+2*int(seq%2), seq)
		other, _ := demoEcho(4, seq+1) // a late record of another echo
		recs = append(recs, other[0])
		j := NewJourney(ctr4, echoID, seq, recs, nil)
		j.Replied, j.Timeout = seq%4 != 0, time.Second
		if j.Replied {
			j.RTT = time.Duration(seq) * time.Microsecond
		}
		live = append(live, j)
		o := NewEchoOutcome(&j, nil)
		if err := rec.w.WriteEcho(recs, &o); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewReader(bytes.NewReader(rec.bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var (
		recs []Record
		x    Record
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
			if j := out.Journey(recs); !reflect.DeepEqual(j, live[i]) {
				t.Fatalf("journey %d:\n got %+v\nwant %+v", i, j, live[i])
			}
			recs, i = recs[:0], i+1
		}
	}
}

// TestNilDestinations reads a recording dropping every tpkItem.
func TestNilDestinations(t *testing.T) {
	rec := newRecording(t, testHeader())
	rec.snapshot(testSnapshot())
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
	zoned := Record{Family: 6, Src: netip.MustParseAddr("fe80::1%eth0"), Dst: netip.MustParseAddr("fe80::2%eth0")}
	if err := rec.w.WriteRecord(&zoned); err != nil {
		t.Fatal(err)
	}
	if err := rec.w.WriteOutcome(&EchoOutcome{Target: netip.MustParseAddr("fe80::2%eth0")}); err != nil {
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
	rec.snapshot(testSnapshot())
	rec.echo(demoEcho(4, 1))
	rec.echo(demoEcho(4, 2))
	recs, out := demoEcho(6, 3)
	out.Replied, out.RTT = false, 0
	rec.echo(recs[:2], out)
	rec.echo([]Record{{CPU: 1, Lost: 12}}, EchoOutcome{Target: ctr6, EchoID: echoID, Seq: 4, Timeout: time.Second})
	return rec
}

func TestGolden(t *testing.T) {
	rec := smallRecording(t)
	path := filepath.Join("testdata", "small.tpk")
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
	// Whatever this build writes, it must read the golden file.
	got, r, err := readAll(t, golden)
	if err != io.EOF {
		t.Fatalf("read %s: %v", path, err)
	}
	checkHeader(t, r.Header(), testHeader())
	checkItems(t, got, rec.items)
}

// TestTruncation cuts a recording at every byte: the reader recovers the
// blocks before the cut and reports the rest as truncated.
func TestTruncation(t *testing.T) {
	rec := smallRecording(t)
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

func TestRejects(t *testing.T) {
	rec := smallRecording(t)
	good := rec.bytes()
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	// The third block is the first echo's.
	echo1, echo2 := rec.ends[1], rec.ends[2]
	for _, c := range []struct {
		name      string
		data      []byte
		want      error
		wantItems int
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), ErrNotTPK, 0},
		{"pcapng", []byte{0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0, 0x4d, 0x3c, 0x2b, 0x1a}, ErrNotTPK, 0},
		{"short garbage", []byte{0x89, 'T', 'X'}, ErrNotTPK, 0},
		{"empty", nil, io.ErrUnexpectedEOF, 0},
		{"wrong magic", edit(func(b []byte) []byte { b[3] = 'Z'; return b }), ErrNotTPK, 0},
		{"text-mode transfer", edit(func(b []byte) []byte { return append(b[:4:4], b[5:]...) }), ErrNotTPK, 0},
		{"newer version", edit(func(b []byte) []byte { b[magicLen] = FormatVersion + 1; return b }), ErrUnsupportedVersion, 0},
		{"version 0", edit(func(b []byte) []byte { b[magicLen] = 0; return b }), ErrUnsupportedVersion, 0},
		{"flipped header byte", edit(func(b []byte) []byte { b[preambleLen+20] ^= 1; return b }), ErrCorrupt, 0},
		{"flipped byte in the middle", edit(func(b []byte) []byte { b[(echo1+echo2)/2] ^= 0x10; return b }), ErrCorrupt, rec.count[1]},
		{"flipped block length", edit(func(b []byte) []byte { b[echo1] ^= 1; return b }), ErrCorrupt, rec.count[1]},
		{"huge block", edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[echo1:], MaxBlockSize+1)
			return b
		}), ErrCorrupt, rec.count[1]},
		{"empty block", edit(func(b []byte) []byte {
			return append(b[:echo1], 0, 0, 0, 0, 1, 2, 3, 4)
		}), ErrCorrupt, rec.count[1]},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, r, err := readAll(t, c.data)
			t.Log(err)
			if !errors.Is(err, c.want) {
				t.Fatalf("error %v, want %v", err, c.want)
			}
			if len(got) != c.wantItems {
				t.Errorf("read %d items before the error, want %d", len(got), c.wantItems)
			}
			checkItems(t, got, rec.items[:len(got)])
			if r != nil {
				if _, again := r.Next(nil, nil, nil); again != err {
					t.Errorf("Next after %v: %v", err, again)
				}
			}
		})
	}
}

// craft writes frames straight into w's current block.
func craft(w *Writer, typ uint64, body []byte) {
	w.endRecords()
	w.blk = appendFrame(w.blk, typ, body)
}

func TestUnknownFramesAndFields(t *testing.T) {
	rec := newRecording(t, testHeader())
	recs, out := demoEcho(4, 1)
	rec.records(recs[:2]...)
	craft(rec.w, 99, []byte("netfilter rows from the future"))
	rec.records(recs[2:]...)
	// An outcome with a field appended by a newer writer, after the (empty)
	// list of netfilter events.
	craft(rec.w, frameOutcome, append(encodeOutcome(nil, &out), 0, 0x2a, 0x2a))
	rec.items = append(rec.items, tpkItem{kind: KindOutcome, out: out})
	craft(rec.w, 1<<40, nil)
	rec.flush()
	// A block of nothing but an unknown frame.
	craft(rec.w, 5, []byte{1, 2, 3})
	rec.flush()
	// A snapshot whose namespace and interface have fields appended.
	var snap []byte
	snap = binary.AppendUvarint(snap, 1)
	snap = appendEntry(snap, new([]byte), func(b []byte) []byte {
		b = binary.AppendUvarint(b, 42) // inode
		b = appendStrings(b, []string{"blue"})
		b = append(b, 0, 0) // no pids, no comms
		b = binary.AppendUvarint(b, 1)
		b = appendEntry(b, new([]byte), func(b []byte) []byte {
			b = binary.AppendUvarint(b, 3)
			b = appendString(b, "eth0")
			b = appendString(b, "veth")
			b = append(b, 0, 0)
			b = appendString(b, "")
			b = append(b, 0)                // no addresses
			return append(b, "mtu 1500"...) // a newer field
		})
		return append(b, "cgroup"...) // a newer field
	})
	craft(rec.w, frameSnapshot, snap)
	rec.items = append(rec.items, tpkItem{kind: KindSnapshot, snap: Snapshot{Namespaces: []Namespace{{
		Inode: 42, Names: []string{"blue"}, Interfaces: []Interface{{Ifindex: 3, Name: "eth0", Kind: "veth"}},
	}}}})
	rec.echo(demoEcho(4, 2))

	got, r, err := readAll(t, rec.bytes())
	if err != io.EOF || r.Truncated() != 0 {
		t.Fatalf("read: %v, truncated %d", err, r.Truncated())
	}
	checkItems(t, got, rec.items)
}

func TestCorruptFrames(t *testing.T) {
	for _, c := range []struct {
		name string
		typ  uint64
		body []byte
	}{
		{"second header", frameHeader, encodeHeader(nil, &Header{})},
		{"unknown record field", frameRecords, binary.AppendUvarint(nil, fLost<<1)},
		{"record cut short", frameRecords, []byte{fTime | fIface, 2}},
		{"interface not interned", frameRecords, []byte{fIface, 7}},
		{"address pair not interned", frameRecords, []byte{fAddrs, 9}},
		{"name too long", frameRecords, append([]byte{fIface, 0, 1, 1, 17}, make([]byte, 17)...)},
		{"captured length too long", frameRecords, []byte{fPacket, 0x81, 0x01, 0}},
		{"run past the captured length", frameRecords, []byte{fPacket, 4, 1, 2, 3, 1, 2, 3}},
		{"lost notice of nothing", frameRecords, append(binary.AppendUvarint(nil, fLost), 0)},
		{"seq delta out of range", frameRecords, binary.AppendVarint(binary.AppendUvarint(nil, fSeq), 1<<15)},
		{"outcome cut short", frameOutcome, []byte{6, 1, 2}},
		{"bad address kind", frameOutcome, []byte{5}},
		{"snapshot count past its bytes", frameSnapshot, []byte{100}},
		{"bad prefix length", frameSnapshot, encodeSnapshot(nil, &Snapshot{Namespaces: []Namespace{{Interfaces: []Interface{{
			Addrs: []netip.Prefix{netip.PrefixFrom(ctr4, 24), netip.PrefixFrom(ctr4, 33)}}}}}})},
		{"frame past its block", 3, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec := newRecording(t, testHeader())
			rec.echo(demoEcho(4, 1))
			if c.body == nil {
				// A frame header whose length runs past the block.
				rec.w.blk = append(rec.w.blk, frameRecords, 100, 0)
			} else {
				craft(rec.w, c.typ, c.body)
			}
			rec.flush()
			got, _, err := readAll(t, rec.bytes())
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v, want ErrCorrupt", err)
			}
			checkItems(t, got, rec.items)
		})
	}
}

func TestFirstFrameMustBeHeader(t *testing.T) {
	var b []byte
	b = append(b, tpkMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, FormatVersion)
	payload := appendFrame(nil, frameOutcome, encodeOutcome(nil, &EchoOutcome{}))
	b = append(b, tpkBlock(payload)...)
	if _, err := NewReader(bytes.NewReader(b)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NewReader: %v, want ErrCorrupt", err)
	}
}

// TestBoundedAllocation feeds lengths and counts far beyond the data that
// follows them: the reader must not allocate for what is not there.
func TestBoundedAllocation(t *testing.T) {
	rec := newRecording(t, testHeader())
	head := bytes.Clone(rec.bytes())
	hugeBlock := binary.LittleEndian.AppendUint32(bytes.Clone(head), MaxBlockSize)
	hugeBlock = append(hugeBlock, 0, 0, 0, 0, 1, 2, 3)

	// Valid blocks holding snapshot frames with many entries, or claiming them.
	snapshot := func(count int, entry []byte, n int) []byte {
		w, err := NewWriter(io.Discard, Header{})
		if err != nil {
			t.Fatal(err)
		}
		snap := binary.AppendUvarint(nil, uint64(count))
		snap = append(snap, bytes.Repeat(entry, n)...)
		craft(w, frameSnapshot, snap)
		var buf bytes.Buffer
		w.w = &buf
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		return append(bytes.Clone(head), buf.Bytes()...)
	}
	emptyNamespace := []byte{5, 0, 0, 0, 0, 0}
	for name, data := range map[string][]byte{
		"huge block":            hugeBlock,
		"claimed namespaces":    snapshot(maxItems, emptyNamespace, 100),
		"most namespaces":       snapshot(maxItems, emptyNamespace, maxItems),
		"too many namespaces":   snapshot(maxItems+1, emptyNamespace, maxItems+1),
		"claimed names":         snapshot(1, append([]byte{0x84, 0x80, 0x04, 0, 0x80, 0x80, 0x04}, make([]byte, 64<<10)...), 1),
		"namespaces past items": snapshot(70000, emptyNamespace, 70000),
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, err := readAll(t, data)
		runtime.ReadMemStats(&after)
		// The reader's own buffers take 128KiB; what a frame decodes to takes
		// a few times its size, and no more than maxItems entries.
		n := after.TotalAlloc - before.TotalAlloc
		t.Logf("%s: reading %d bytes allocated %d bytes: %v", name, len(data), n, err)
		if wantEOF := name == "most namespaces" || name == "huge block"; (err == io.EOF) != wantEOF {
			t.Errorf("%s: %v", name, err)
		}
		if n > 256<<10+64*uint64(len(data)) {
			t.Errorf("%s: reading %d bytes allocated %d bytes", name, len(data), n)
		}
	}
}

func TestWriterRejects(t *testing.T) {
	rec := newRecording(t, testHeader())
	if err := rec.w.WriteRecord(&Record{CapLen: PacketBytes + 1}); err == nil {
		t.Error("WriteRecord accepted a captured length past the packet bytes")
	}
	many := &Snapshot{Namespaces: make([]Namespace, maxItems+1)}
	if err := rec.w.WriteSnapshot(many); err == nil {
		t.Error("WriteSnapshot accepted more entries than a reader reads")
	}
	if _, err := NewWriter(io.Discard, Header{Args: make([]string, maxItems+1)}); err == nil {
		t.Error("NewWriter accepted more arguments than a reader reads")
	}
	// The rejected calls left the recording intact.
	rec.echo(demoEcho(4, 1))
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatal(err)
	}
	checkItems(t, got, rec.items)
}

type failWriter struct{ n int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(b), nil
}

func TestWriteErrorsAreFinal(t *testing.T) {
	if _, err := NewWriter(&failWriter{}, testHeader()); err == nil {
		t.Fatal("NewWriter ignored a write error")
	}
	w, err := NewWriter(&failWriter{n: 1}, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	recs, out := demoEcho(4, 1)
	if err := w.WriteEcho(recs, &out); err == nil {
		t.Fatal("WriteEcho ignored a write error")
	}
	if err := w.WriteRecord(&recs[0]); err == nil {
		t.Error("WriteRecord after a write error")
	}
	if err := w.Flush(); err == nil {
		t.Error("Flush after a write error")
	}
}

// TestLargeEchoSplitsBlocks writes more records than fit a block before Flush.
func TestLargeEchoSplitsBlocks(t *testing.T) {
	rec := newRecording(t, testHeader())
	var recs []Record
	for seq := uint16(1); len(recs) < 40000; seq++ {
		r, _ := demoEcho(6, seq)
		recs = append(recs, r...)
	}
	rec.records(recs...)
	rec.flush()
	if len(rec.ends) < 3 {
		t.Errorf("%d records in %d bytes went out in %d blocks", len(recs), rec.buf.Len(), len(rec.ends)-1)
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
		x   Record
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

func FuzzReader(f *testing.F) {
	small := smallRecording(f)
	f.Add(small.bytes())
	f.Add(small.bytes()[:small.ends[2]+10])
	rec := newRecording(f, testHeader())
	rec.records(oddRecords()...)
	rec.outcome(EchoOutcome{Target: ctr4})
	craft(rec.w, 99, []byte{1, 2, 3})
	rec.flush()
	f.Add(rec.bytes())
	f.Fuzz(fuzzRead)
}

// FuzzFrames reaches what the checksums keep FuzzReader's mutations from: the
// frames of a block, read after a header and an echo filled the intern tables.
func FuzzFrames(f *testing.F) {
	small := smallRecording(f)
	data := small.bytes()
	for i := 0; i+1 < len(small.ends); i++ {
		f.Add(data[small.ends[i]+blockHdrLen : small.ends[i+1]])
	}
	prefix := data[:small.ends[1]]
	f.Fuzz(func(t *testing.T, payload []byte) {
		if len(payload) == 0 || len(payload) > MaxBlockSize {
			return
		}
		fuzzRead(t, append(bytes.Clone(prefix), tpkBlock(payload)...))
	})
}

// block frames payload as the Writer does.
func tpkBlock(payload []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	sum := crc32.Update(crc32.Checksum(b, castagnoli), castagnoli, payload)
	b = binary.LittleEndian.AppendUint32(b, sum)
	return append(b, payload...)
}

// fuzzRead reads data to its end, checking what the reader promises.
func fuzzRead(t *testing.T, data []byte) {
	r, err := NewReader(bytes.NewReader(data))
	if err != nil {
		return
	}
	var (
		x    Record
		snap Snapshot
		out  EchoOutcome
	)
	for {
		k, err := r.Next(&x, &snap, &out)
		if err != nil {
			if err != io.EOF && !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v", err)
			}
			if r.Truncated() < 0 || r.Truncated() > int64(len(data)) {
				t.Fatalf("Truncated() = %d of %d bytes", r.Truncated(), len(data))
			}
			return
		}
		if k == KindRecord {
			if x.CapLen > PacketBytes {
				t.Fatalf("captured length %d", x.CapLen)
			}
			for _, b := range x.Packet[x.CapLen:] {
				if b != 0 {
					t.Fatal("packet bytes past the captured length")
				}
			}
		}
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
	nf := []NetfilterEvent{
		{Netns: 4026532500, Family: "inet", Table: "filt", Chain: "forward", Hook: HookForward, Type: TraceRule,
			Verdict: "DROP", RuleHandle: 6, Rule: "icmp type echo-request drop", Iif: 2, Oif: 3, TraceID: 0xdeadbeef,
			ICMPType: 8, EchoID: 7, Seq: 1, Src: netip.MustParseAddr("198.18.0.2"), Dst: netip.MustParseAddr("198.18.0.130"), Source: "nftrace"},
		{Time: 12345, Netns: 1, Family: "ip6", Table: "filter", Chain: "INPUT", Hook: HookInput, Type: TracePolicy,
			Verdict: "JUMP", Target: "X", ICMPType: 129, EchoID: 7, Seq: 1, Src: netip.MustParseAddr("fd00::2"), Dst: netip.MustParseAddr("fd00::1"), Source: "kprobe"},
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{ToolVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	j := Journey{Target: netip.MustParseAddr("198.18.0.130"), EchoID: 7, Seq: 1, Timeout: time.Second}
	o := NewEchoOutcome(&j, nf)
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
	if got := out.Journey(nil); len(got.Netfilter) != 2 {
		t.Errorf("journey keeps %d netfilter events, want 2", len(got.Netfilter))
	}
}
