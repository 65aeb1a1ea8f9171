package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/tracepkt/tracepkt-perf/decode/pcapng"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// exportPcapng writes the packets of the recording r to o.pcapng.
func exportPcapng(o options, r *tpk.Reader, stderr io.Writer) error {
	out, err := createOutFile(o.pcapng)
	if err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	bw := bufio.NewWriter(out)
	n, err := pcapng.Export(bw, r)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = out.publish()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if errors.Is(err, tpk.ErrCorrupt) {
		return fmt.Errorf("replay %s: %w", o.replay, err) // the recording is at fault, as the other modes say
	}
	if err != nil {
		return fmt.Errorf("pcapng %s: %w", o.pcapng, err)
	}
	fmt.Fprintf(stderr, "wrote %d packets to %s\n", n, o.pcapng)
	warnCutOff(stderr, o.replay, r)
	return nil
}
