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
		return exportPcapng(o, r, stderr)
	}
	rc := newRenderContext(r.Header().Capabilities)
	w := newJourneyWriter(o.jsonOut, stdout, rc)
	var (
		rec  decode.Record
		recs []decode.Record
		snap decode.Snapshot
		out  tpk.EchoOutcome
	)
	unanswered := 0
	for {
		kind, err := r.Next(&rec, &snap, &out)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("replay %s: %w", o.replay, err)
		}
		switch kind {
		case tpk.KindSnapshot:
			rc.setSnapshot(&snap)
		case tpk.KindRecord:
			recs = append(recs, rec)
		case tpk.KindOutcome:
			j := out.Journey(recs)
			if !j.Replied {
				unanswered++
			}
			if err := w.Journey(&j); err != nil {
				return err
			}
			recs = recs[:0]
		}
	}
	if n := r.Truncated(); n > 0 {
		fmt.Fprintf(stderr, "tracepkt-perf: %s was cut off: the last %d bytes are an incomplete block and were ignored\n", o.replay, n)
	}
	if unanswered > 0 {
		return errUnanswered
	}
	return nil
}
