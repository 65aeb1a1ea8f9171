package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// replay renders a recording like the live run did, or exports it to pcapng.
func replay(o options, stdout, stderr io.Writer) error {
	f, err := os.Open(o.replay)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	r, err := tpk.NewReader(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return fmt.Errorf("replay %s: %w", o.replay, err)
	}
	if o.pcapng != "" {
		// Refused before OUT is touched, as the replay refuses it.
		if err := requireEcho(o.replay, stderr); err != nil {
			return err
		}
		return exportPcapng(o, r, stderr)
	}
	ro, err := newRunOutput(o, stdout)
	if err != nil {
		return err
	}
	defer ro.close()
	n, err := replayJourneys(r, o.replay, ro.writer, stderr)
	if err != nil {
		return err
	}
	return ro.end(n)
}

// replayJourneys rebuilds the journeys of the recording r (read from path)
// and hands them to the writer newWriter makes once the header is known. It
// returns how many echoes got no reply.
func replayJourneys(r *tpk.Reader, path string, newWriter func(*renderContext) journeyWriter, stderr io.Writer) (n int, err error) {
	rc := newRenderContext(r.Header().Capabilities)
	w := newWriter(rc)
	var (
		rec  decode.Record
		recs []decode.Record
		snap decode.Snapshot
		out  tpk.EchoOutcome
	)
	echoes := 0
	for {
		kind, err := r.Next(&rec, &snap, &out)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("replay %s: %w", path, err)
		}
		switch kind {
		case tpk.KindSnapshot:
			rc.setSnapshot(&snap)
		case tpk.KindRecord:
			recs = append(recs, rec)
		case tpk.KindOutcome:
			echoes++
			j := decode.NewJourney(out.Outcome, recs, out.Netfilter)
			if unanswered(&j, rc) {
				n++
			}
			if err := w.Journey(&j); err != nil {
				return n, err
			}
			recs = recs[:0]
		}
	}
	warnCutOff(stderr, path, r)
	if echoes == 0 {
		return n, noEchoError(path)
	}
	return n, nil
}

// noEchoError is the error of a recording at path that holds no echo.
func noEchoError(path string) error {
	return fmt.Errorf("replay %s: the recording holds no echo", path)
}

// requireEcho reads the recording at path up to its first echo, and fails
// as replayJourneys does when it has none.
func requireEcho(path string, stderr io.Writer) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	r, err := tpk.NewReader(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return fmt.Errorf("replay %s: %w", path, err)
	}
	var (
		rec  decode.Record
		snap decode.Snapshot
		out  tpk.EchoOutcome
	)
	for {
		kind, err := r.Next(&rec, &snap, &out)
		switch {
		case errors.Is(err, io.EOF):
			warnCutOff(stderr, path, r)
			return noEchoError(path)
		case err != nil:
			return fmt.Errorf("replay %s: %w", path, err)
		case kind == tpk.KindOutcome:
			return nil
		}
	}
}

// warnCutOff says, once r has been read to the end, that the recording at
// path ends in an incomplete block, if it does.
func warnCutOff(stderr io.Writer, path string, r *tpk.Reader) {
	if n := r.Truncated(); n > 0 {
		fmt.Fprintf(stderr, "tracepkt-perf: %s was cut off: the last %d bytes are an incomplete block and were ignored\n", path, n)
	}
}
