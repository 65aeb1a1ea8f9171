package tpk

import (
	"bytes"
	"fmt"
	"io"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// demoEchoes returns n consecutive echoes of the demo, sequence numbers
// wrapping as the pinger's do while kernel time keeps going.
func demoEchoes(family, n int, stripPackets bool) ([][]decode.Record, []EchoOutcome) {
	recs := make([][]decode.Record, n)
	outs := make([]EchoOutcome, n)
	for k := range n {
		seq := uint16(k + 1)
		r, o := demoEcho(family, seq)
		shift := uint64(k+1-int(seq)) * uint64(time.Second) // whole wraps of seq
		for i := range r {
			if r[i].Lost == 0 {
				r[i].Time += shift
			}
			if stripPackets {
				r[i].CapLen = 0
				clear(r[i].Packet[:])
			}
		}
		recs[k], outs[k] = r, o
	}
	return recs, outs
}

// encodeEchoes writes a recording of echoes as the live run does, one block
// per echo, and returns it with the number of records and the size of its
// preamble and header block.
func encodeEchoes(tb testing.TB, recs [][]decode.Record, outs []EchoOutcome) (data []byte, nrec, headerSize int) {
	tb.Helper()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testHeader())
	if err != nil {
		tb.Fatal(err)
	}
	headerSize = buf.Len()
	for i := range recs {
		if err := w.WriteEcho(recs[i], &outs[i]); err != nil {
			tb.Fatal(err)
		}
		nrec += len(recs[i])
	}
	return buf.Bytes(), nrec, headerSize
}

type benchData struct {
	data []byte
	nrec int
}

var (
	benchMu    sync.Mutex
	benchCache = map[int]benchData{}
)

// benchRecording is a recording of about a million records of the family's
// demo echoes, built once.
func benchRecording(tb testing.TB, family int) (data []byte, nrec int) {
	tb.Helper()
	benchMu.Lock()
	defer benchMu.Unlock()
	d, ok := benchCache[family]
	if !ok {
		recs, outs := demoEchoes(family, 1<<20/6, false)
		d.data, d.nrec, _ = encodeEchoes(tb, recs, outs)
		benchCache[family] = d
	}
	return d.data, d.nrec
}

func BenchmarkReplay(b *testing.B) {
	for _, family := range []int{4, 6} {
		b.Run(fmt.Sprintf("ipv%d", family), func(b *testing.B) {
			data, nrec := benchRecording(b, family)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				r, err := NewReader(bytes.NewReader(data))
				if err != nil {
					b.Fatal(err)
				}
				var (
					rec decode.Record
					out EchoOutcome
				)
				n := 0
				for {
					k, err := r.Next(&rec, nil, &out)
					if err == io.EOF {
						break
					}
					if err != nil {
						b.Fatal(err)
					}
					if k == KindRecord {
						n++
					}
				}
				if n != nrec {
					b.Fatalf("replayed %d records, want %d", n, nrec)
				}
			}
			runtime.ReadMemStats(&after)
			events := float64(nrec) * float64(b.N)
			b.ReportMetric(float64(nrec), "events/op")
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
			b.ReportMetric(float64(after.Mallocs-before.Mallocs)/events, "allocs/event")
		})
	}
}

func BenchmarkWrite(b *testing.B) {
	for _, family := range []int{4, 6} {
		b.Run(fmt.Sprintf("ipv%d", family), func(b *testing.B) {
			recs, outs := demoEchoes(family, 10000, false)
			nrec := 0
			for _, r := range recs {
				nrec += len(r)
			}
			var cw countingWriter
			w, err := NewWriter(&cw, testHeader())
			if err != nil {
				b.Fatal(err)
			}
			cw.n = 0
			b.ReportAllocs()
			for b.Loop() {
				for i := range recs {
					if err := w.WriteEcho(recs[i], &outs[i]); err != nil {
						b.Fatal(err)
					}
				}
			}
			events := float64(nrec) * float64(b.N)
			b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
			b.ReportMetric(float64(cw.n)/events, "B/event")
		})
	}
}

type countingWriter struct{ n int64 }

func (c *countingWriter) Write(b []byte) (int, error) {
	c.n += int64(len(b))
	return len(b), nil
}

// TestBytesPerEvent measures the recording's size per record: in a run of
// demo echoes, one block per echo, with and without the packet bytes, and for
// the first record of a file, which has nothing to be a delta of. This is a
// budget on the format, not a timing.
func TestBytesPerEvent(t *testing.T) {
	// Near what the README claims: 12-14 bytes per event before the packet
	// bytes, 19 with them, once interfaces and addresses are interned.
	const (
		budget       = 15 // bytes per event before the packet bytes
		budgetPacket = 20 // with them
		budgetFirst  = 80 // the first record, where everything is new
	)
	for _, family := range []int{4, 6} {
		size := func(n int, strip bool) (perEvent float64, nrec int) {
			recs, outs := demoEchoes(family, n, strip)
			data, nrec, header := encodeEchoes(t, recs, outs)
			return float64(len(data)-header) / float64(nrec), nrec
		}
		steady, nrec := size(10000, false)
		steadyMeta, _ := size(10000, true)
		// The first echo alone: every interface and address pair is new.
		firstEcho, firstN := size(1, true)
		recs, _ := demoEchoes(family, 1, true)
		var buf bytes.Buffer
		w, err := NewWriter(&buf, testHeader())
		if err != nil {
			t.Fatal(err)
		}
		header := buf.Len()
		if err := w.WriteRecord(&recs[0][0]); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		// Less the block header and the frame header of the records frame.
		first := buf.Len() - header - blockHdrLen - 2

		t.Logf("IPv%d: %.1f B/event over %d records (%.1f B before the packet bytes); "+
			"first echo %.1f B/event over %d records; first record %d B, before the packet bytes",
			family, steady, nrec, steadyMeta, firstEcho, firstN, first)
		if steadyMeta > budget || steady > budgetPacket || first > budgetFirst {
			t.Errorf("IPv%d: %.1f B/event (%.1f B with packet bytes), first record %d B: over the budgets of %d, %d and %d B",
				family, steadyMeta, steady, first, budget, budgetPacket, budgetFirst)
		}
	}
}
