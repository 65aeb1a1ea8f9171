package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// fakeClock advances only when told: by Sleep, and by each echo.
type fakeClock struct {
	now    time.Time
	slept  []time.Duration
	cancel func() // called on the sleep numbered cancelAt, when set
	sleeps int
	at     int
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) {
	c.sleeps++
	if c.cancel != nil && c.sleeps == c.at {
		c.cancel()
		return
	}
	c.slept = append(c.slept, d)
	c.now = c.now.Add(d)
}

// TestPaceCountPastSequenceWrap: -c 70000 -i 0 makes exactly 70000 echoes,
// the sequence wrapping after 65535 as ping's does.
func TestPaceCountPastSequenceWrap(t *testing.T) {
	const count = 70000
	var seqs []uint16
	err := pace(t.Context(), count, 0, &fakeClock{}, func(seq uint16) error {
		seqs = append(seqs, seq)
		if len(seqs) > count {
			t.Fatalf("more than %d echoes", count)
		}
		return nil
	})
	if err != nil || len(seqs) != count {
		t.Fatalf("pace: %d echoes, %v", len(seqs), err)
	}
	if seqs[0] != 1 || seqs[65534] != 65535 || seqs[65535] != 0 || seqs[65536] != 1 || seqs[count-1] != count-65536 {
		t.Errorf("sequence around the wrap: %v", seqs[65533:65538])
	}
}

// rawHop is a device record as the BPF programs emit it, with the echo id
// and sequence in network order, decoded as the rings' reader does.
func rawHop(t *testing.T, at uint64, ifindex uint32, icmpType uint8, id, seq uint16) decode.Record {
	t.Helper()
	b := make([]byte, decode.RecordSize)
	ne := binary.NativeEndian
	ne.PutUint64(b[decode.OffTime:], at)
	ne.PutUint32(b[decode.OffNetns:], 4026531840)
	ne.PutUint32(b[decode.OffIfindex:], ifindex)
	ne.PutUint16(b[decode.OffProbe:], uint16(decode.ProbeNetDevQueue))
	b[decode.OffFamily], b[decode.OffICMPType] = 4, icmpType
	binary.BigEndian.PutUint16(b[decode.OffEchoID:], id)
	binary.BigEndian.PutUint16(b[decode.OffSeq:], seq)
	var r decode.Record
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	return r
}

// hopKeys names hops by echo id, sequence, time, ifindex and ICMP type.
func hopKeys(hops []decode.Record) string {
	var out []string
	for _, h := range hops {
		out = append(out, fmt.Sprintf("%#x/%d@%d:if%d:t%d", h.EchoID, h.Seq, h.Time, h.Ifindex, h.ICMPType))
	}
	return strings.Join(out, " ")
}

// TestEchoesMatchAcrossSequenceWrap: past echo 65535 the sequence wraps to
// 0, and each echo keeps its own records only. After each echo the rings
// hold what came since the last drain: here, with each echo's records, a
// late one of the echo before, as a slow CPU's ring delivers it.
func TestEchoesMatchAcrossSequenceWrap(t *testing.T) {
	const id, count = 0x4242, 65537
	target := netip.MustParseAddr("10.0.0.2")
	// The records of echo seq, at times and on an ifindex of its own.
	own := func(seq uint16) []decode.Record {
		at := uint64(seq)*10 + 1_000_000
		return []decode.Record{rawHop(t, at, uint32(seq)+1, 8, id, seq), rawHop(t, at+5, uint32(seq)+1, 0, id, seq)}
	}
	rings := map[uint16][]decode.Record{
		65535: own(65535),
		0:     append(append(own(0), rawHop(t, 900_000, 9, 0, id, 65535)), rawHop(t, 900_001, 9, 8, id^1, 0)),
		1:     append(own(1), rawHop(t, 900_002, 9, 0, id, 0)),
	}
	echoes := 0
	var seqs []uint16
	err := pace(t.Context(), count, 0, &fakeClock{}, func(seq uint16) error {
		echoes++
		recs, ok := rings[seq]
		if !ok || echoes < 65535 {
			return nil
		}
		seqs = append(seqs, seq)
		j := decode.NewJourney(decode.Outcome{Target: target, EchoID: id, Seq: seq, Replied: true}, recs, nil)
		if got, want := hopKeys(j.Hops), hopKeys(own(seq)); got != want {
			t.Errorf("echo %d (seq %d): hops %s, want %s", echoes, seq, got, want)
		}
		return nil
	})
	if err != nil || echoes != count {
		t.Fatalf("pace: %d echoes, %v", echoes, err)
	}
	if len(seqs) != 3 || seqs[0] != 65535 || seqs[1] != 0 || seqs[2] != 1 {
		t.Errorf("echoes 65535 to 65537 had seqs %v, want [65535 0 1]", seqs)
	}
}

// TestPaceSendToSend: the interval runs from one send to the next, as with
// ping: an echo that took 300ms of a 1s interval is followed 700ms later,
// one that took longer than the interval at once.
func TestPaceSendToSend(t *testing.T) {
	c := &fakeClock{now: time.Unix(1000, 0)}
	took := []time.Duration{300 * time.Millisecond, 1500 * time.Millisecond, 0, 999 * time.Millisecond}
	var starts []time.Time
	err := pace(t.Context(), len(took), time.Second, c, func(seq uint16) error {
		starts = append(starts, c.now)
		c.now = c.now.Add(took[seq-1])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []time.Duration{700 * time.Millisecond, time.Second}
	if len(c.slept) != len(want) {
		t.Fatalf("slept %v, want %v", c.slept, want)
	}
	for i := range want {
		if c.slept[i] != want[i] {
			t.Errorf("sleep %d: %v, want %v (all: %v)", i, c.slept[i], want[i], c.slept)
		}
	}
	for i, gap := range []time.Duration{time.Second, 1500 * time.Millisecond, time.Second} {
		if got := starts[i+1].Sub(starts[i]); got != gap {
			t.Errorf("echo %d started %v after the previous one, want %v", i+2, got, gap)
		}
	}
}

// TestPaceInterrupted: a signal while waiting ends the run without an error
// and without another echo.
func TestPaceInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	c := &fakeClock{cancel: cancel, at: 2}
	n := 0
	if err := pace(ctx, 10, time.Second, c, func(uint16) error { n++; return nil }); err != nil || n != 2 {
		t.Errorf("pace: %d echoes, %v; want 2, nil", n, err)
	}
}

// TestPaceInterruptedBeforeFirstEcho: a ctx done before the first echo was
// sent, or an echo that could not send for it, is an interrupted start-up
// (exit 1, said so), never a quiet end; after one echo, a quiet end.
func TestPaceInterruptedBeforeFirstEcho(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n := 0
	if err := pace(ctx, 3, 0, &fakeClock{}, func(uint16) error { n++; return nil }); err != errInterruptedStartup || n != 0 {
		t.Errorf("pace with a done ctx: %d echoes, %v", n, err)
	}
	for _, count := range []int{1, 3} {
		ctx, cancel = context.WithCancel(t.Context())
		n = 0
		err := pace(ctx, count, 0, &fakeClock{}, func(uint16) error {
			n++
			cancel() // the signal, just before the send
			return errNotSent
		})
		if err != errInterruptedStartup || n != 1 {
			t.Errorf("-c %d, the first echo not sent: %d calls, %v", count, n, err)
		}
	}
	ctx, cancel = context.WithCancel(t.Context())
	n = 0
	err := pace(ctx, 3, 0, &fakeClock{}, func(uint16) error {
		if n++; n == 2 {
			cancel()
			return errNotSent
		}
		return nil
	})
	if err != nil || n != 2 {
		t.Errorf("interrupted before the second echo: %d calls, %v", n, err)
	}
}
