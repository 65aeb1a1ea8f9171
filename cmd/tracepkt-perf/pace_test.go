package main

import (
	"context"
	"testing"
	"time"
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
