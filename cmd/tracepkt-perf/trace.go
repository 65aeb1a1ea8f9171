package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// session is what a live trace needs from the kernel, opened once per run.
type session struct {
	fs      *tracefs.FS
	offsets probes.Offsets
}

func openSession() (*session, error) {
	fs, err := tracefs.Open()
	if err != nil {
		return nil, err
	}
	offsets, err := probes.KernelOffsets()
	if err != nil {
		return nil, err
	}
	return &session{fs: fs, offsets: offsets}, nil
}

// trace sends o.count echoes to target and writes each journey as it completes.
func trace(ctx context.Context, target netip.Addr, o options, w journeyWriter) error {
	s, err := openSession()
	if err != nil {
		return err
	}
	return s.trace(ctx, target, o, w)
}

func (s *session) trace(ctx context.Context, target netip.Addr, o options, w journeyWriter) (err error) {
	id, err := ping.RandomID()
	if err != nil {
		return err
	}
	tracer, err := probes.Open(s.fs, s.offsets, probes.Config{EchoID: id})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, tracer.Close()) }()
	pinger, err := ping.Open(target, id)
	if err != nil {
		return err
	}
	defer pinger.Close()

	// A signal closes both: blocked reads return at once and the deferred
	// closes above release everything.
	interrupted := context.AfterFunc(ctx, func() {
		pinger.Close()
		tracer.Close()
	})
	defer interrupted()

	// Like ping, a signal ends the run early: the echoes completed so far
	// decide the exit status.
	var recs []decode.Record
	unanswered := 0
	for seq := uint16(1); int(seq) <= o.count; seq++ {
		if seq > 1 {
			select {
			case <-ctx.Done():
			case <-time.After(o.interval):
			}
		}
		if ctx.Err() != nil {
			break
		}
		j, err := echo(pinger, tracer, target, seq, o.timeout, &recs)
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			return err
		}
		if !j.Replied {
			unanswered++
		}
		if err := w.Journey(&j); err != nil {
			return err
		}
	}
	if unanswered > 0 {
		return errUnanswered
	}
	return nil
}

// echo sends one request, waits for its reply or the timeout, then collects
// what the rings hold: every probe fired before the reply reached our socket.
func echo(p *ping.Pinger, t *probes.Tracer, target netip.Addr, seq uint16, timeout time.Duration, recs *[]decode.Record) (decode.Journey, error) {
	sent, err := p.Send(seq)
	if err != nil {
		if errors.Is(err, ping.ErrNoRoute) {
			return decode.Journey{}, fmt.Errorf("no route to %s", target)
		}
		return decode.Journey{}, err
	}
	deadline := sent.Add(timeout)
	var reply ping.Reply
	replied := false
	for !replied {
		reply, err = p.Receive(deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return decode.Journey{}, err
		}
		replied = reply.Seq == seq // a late reply to an earlier echo is skipped
	}

	*recs = (*recs)[:0]
	t.SetDeadline(time.Now())
	var r decode.Record
	for {
		err := t.ReadInto(&r)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return decode.Journey{}, err
		}
		*recs = append(*recs, r)
	}
	j := decode.NewJourney(target, p.ID(), seq, *recs, nil)
	j.Replied, j.Timeout = replied, timeout
	if replied {
		j.RTT = reply.Received.Sub(sent)
	}
	return j, nil
}
