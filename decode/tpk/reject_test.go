package tpk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"net/netip"
	"runtime"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

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
	// list of netfilter events, the loss flags (none), no netfilter messages
	// lost, no notes, the TCP fields of an echo (protocol 0, port 0, no
	// flags, no address), no source (no address, port 0) and the ports and
	// states of its netfilter events (none).
	craft(rec.w, frameOutcome, append(encodeOutcome(nil, &out, echoVersion), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0x2a))
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
		for _, s := range []string{"netns", "/run/netns/blue", "blue"} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, 77)
		b = appendString(b, "sleep")
		return append(b, "cgroup"...) // a newer field
	})
	craft(rec.w, frameSnapshot, snap)
	rec.items = append(rec.items, tpkItem{kind: KindSnapshot, snap: decode.Snapshot{Namespaces: []decode.Namespace{{
		Inode: 42, Names: []string{"blue"}, Interfaces: []decode.Interface{{Ifindex: 3, Name: "eth0", Kind: "veth"}},
		Owner: decode.Owner{Kind: decode.OwnerNetns, ID: "/run/netns/blue", Name: "blue", Pid: 77, Comm: "sleep"},
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
		{"bad prefix length", frameSnapshot, encodeSnapshot(nil, &decode.Snapshot{Namespaces: []decode.Namespace{{Interfaces: []decode.Interface{{
			Addrs: []netip.Prefix{netip.PrefixFrom(testrecord.Ctr4, 24), netip.PrefixFrom(testrecord.Ctr4, 33)}}}}}})},
		{"frame past its block", 3, nil},
		{"empty record", frameRecords, []byte{0}},
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

// TestTooManyRecordsPerEcho: past MaxRecordsPerEcho records without an
// outcome, the reader stops: a file of records that never end in an
// outcome cannot make a replay hold them all.
func TestTooManyRecordsPerEcho(t *testing.T) {
	rec := newRecording(t, testHeader())
	rec.echo(demoEcho(4, 1))
	for range 3 {
		craft(rec.w, frameRecords, bytes.Repeat([]byte{fTime, 0}, MaxRecordsPerEcho/2))
		rec.flush()
	}
	got, _, err := readAll(t, rec.bytes())
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "records before an echo outcome") {
		t.Fatalf("error %v, want ErrCorrupt for too many records", err)
	}
	if n := len(got) - len(rec.items); n != MaxRecordsPerEcho {
		t.Errorf("%d records read past the last outcome, want %d", n, MaxRecordsPerEcho)
	}
}

// TestTooManySnapshots: the snapshots of a file hold MaxSnapshotItems
// entries in all, no more; the writer refuses to write more, as the reader
// refuses to read them.
func TestTooManySnapshots(t *testing.T) {
	rec := newRecording(t, testHeader())
	big := &decode.Snapshot{Namespaces: make([]decode.Namespace, maxItems-1)}
	for range MaxSnapshotItems / len(big.Namespaces) {
		rec.snapshot(big)
		rec.flush()
	}
	if err := rec.w.WriteSnapshot(big); err == nil {
		t.Error("the writer went past MaxSnapshotItems")
	}
	craft(rec.w, frameSnapshot, encodeSnapshot(nil, big))
	rec.flush()
	got, _, err := readAll(t, rec.bytes())
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("error %v, want ErrCorrupt", err)
	}
	checkItems(t, got, rec.items)
}

// TestWriterBoundsRecordsPerEcho: the writer refuses the record past the
// limit the reader enforces, and counts again after an outcome.
func TestWriterBoundsRecordsPerEcho(t *testing.T) {
	w, err := NewWriter(io.Discard, testHeader())
	if err != nil {
		t.Fatal(err)
	}
	r := decode.Record{Time: 1}
	for range MaxRecordsPerEcho {
		if err := w.WriteRecord(&r); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteRecord(&r); err == nil {
		t.Fatal("no error past MaxRecordsPerEcho records")
	}
}

func TestFirstFrameMustBeHeader(t *testing.T) {
	var b []byte
	b = append(b, tpkMagic[:]...)
	b = binary.LittleEndian.AppendUint16(b, FormatVersion)
	payload := appendFrame([]byte{0}, frameOutcome, encodeOutcome(nil, &EchoOutcome{}, FormatVersion)) // block 0
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
	if err := rec.w.WriteRecord(&decode.Record{CapLen: decode.PacketBytes + 1}); err == nil {
		t.Error("WriteRecord accepted a captured length past the packet bytes")
	}
	many := &decode.Snapshot{Namespaces: make([]decode.Namespace, maxItems+1)}
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

func FuzzReader(f *testing.F) {
	small := smallRecording(f)
	f.Add(small.bytes())
	f.Add(small.bytes()[:small.ends[2]+10])
	f.Add(tcpRecording(f).bytes())
	rec := newRecording(f, testHeader())
	rec.records(oddRecords()...)
	rec.outcome(EchoOutcome{Outcome: decode.Outcome{Target: testrecord.Ctr4}})
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
		// The frames, without the block's index (one byte for these).
		f.Add(data[small.ends[i]+blockHdrLen+1 : small.ends[i+1]])
	}
	prefix := data[:small.ends[1]]
	f.Fuzz(func(t *testing.T, frames []byte) {
		if len(frames) == 0 || len(frames) >= MaxBlockSize {
			return
		}
		payload := append([]byte{2}, frames...) // the index of the block after the prefix
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
		x    decode.Record
		snap decode.Snapshot
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
			if x.CapLen > decode.PacketBytes {
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

// TestBlockSequence leaves out, repeats and swaps whole blocks of a five-echo
// recording: every checksum holds, and the reader stops at the first block
// out of sequence, after the items before it, saying which block is missing.
func TestBlockSequence(t *testing.T) {
	rec := newRecording(t, testHeader())
	rec.snapshot(testrecord.Snapshot())
	for seq := uint16(1); seq <= 5; seq++ {
		rec.echo(demoEcho(4, seq))
	}
	// Block 0 is the header, block k (1-5) ends with echo k.
	data := rec.bytes()
	blocks := make([][]byte, len(rec.ends))
	for i, end := range rec.ends {
		start := 0
		if i > 0 {
			start = rec.ends[i-1]
		}
		blocks[i] = data[start:end]
	}
	file := func(order ...int) []byte {
		var b []byte
		for _, i := range order {
			b = append(b, blocks[i]...)
		}
		return b
	}
	for _, c := range []struct {
		name string
		data []byte
		want string
		// items: those of the blocks up to this one
		items int
	}{
		{"block 2 removed", file(0, 1, 3, 4, 5), "block 2 is missing or out of order: this is block 3", 1},
		{"blocks 2 and 3 removed", file(0, 1, 4, 5), "blocks 2 to 3 are missing or out of order: this is block 4", 1},
		{"block 3 duplicated", file(0, 1, 2, 3, 3, 4, 5), "block 3 again, after block 3: a block is repeated or out of order", 3},
		{"blocks 3 and 4 swapped", file(0, 1, 2, 4, 3, 5), "block 3 is missing or out of order: this is block 4", 2},
		{"block 1 repeated at the end", file(0, 1, 2, 3, 4, 5, 1), "block 1 again, after block 5", 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, _, err := readAll(t, c.data)
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want ErrCorrupt saying %q", err, c.want)
			}
			checkItems(t, got, rec.items[:rec.count[c.items]])
		})
	}
	got, _, err := readAll(t, file(0, 1, 2, 3, 4, 5))
	if err != io.EOF {
		t.Fatalf("every block in order: %v", err)
	}
	checkItems(t, got, rec.items)
}
