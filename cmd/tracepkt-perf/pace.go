package main

import (
	"context"
	"errors"
	"time"
)

// clock is the time source of pace; tests give it a fake one.
type clock interface {
	Now() time.Time
	// Sleep returns after d, or earlier when ctx is done.
	Sleep(ctx context.Context, d time.Duration)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

func (realClock) Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// pace calls echo count times, interval apart from the start of one echo
// to the start of the next, as ping measures it; an echo that takes longer
// than interval is followed at once. The sequence number wraps after 65535,
// as ping's does, while the count is an int, so the run always ends. A
// done ctx ends it early, without an error once an echo was sent (its row
// says the rest), with errInterruptedStartup before: echo returns
// errNotSent when ctx ended before it could send.
func pace(ctx context.Context, count int, interval time.Duration, c clock, echo func(seq uint16) error) error {
	var start time.Time
	sent := 0
	for i := 1; i <= count && ctx.Err() == nil; i++ {
		if i > 1 {
			if wait := interval - c.Now().Sub(start); wait > 0 {
				c.Sleep(ctx, wait)
			}
		}
		if ctx.Err() != nil {
			break
		}
		start = c.Now()
		err := echo(uint16(i))
		if errors.Is(err, errNotSent) {
			break
		}
		if err != nil {
			return err
		}
		sent++
	}
	if sent == 0 && ctx.Err() != nil {
		return errInterruptedStartup
	}
	return nil
}
