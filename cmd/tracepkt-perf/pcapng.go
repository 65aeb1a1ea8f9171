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
	n, err := writePcapngFile(o.pcapng, func(w io.Writer) (int, error) { return pcapng.Export(w, r) })
	if errors.Is(err, tpk.ErrCorrupt) {
		return fmt.Errorf("replay %s: %w", o.replay, err) // the recording is at fault, as the other modes say
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "wrote %d packets to %s\n", n, o.pcapng)
	warnCutOff(stderr, o.replay, r)
	return nil
}

// writePcapngFile has write fill the pcapng file at path, which appears
// only once it is whole, and returns how many packets write wrote.
func writePcapngFile(path string, write func(io.Writer) (int, error)) (int, error) {
	out, err := createOutFile(path)
	if err != nil {
		return 0, fmt.Errorf("pcapng: %w", err)
	}
	bw := bufio.NewWriter(out)
	n, err := write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err == nil {
		err = out.publish()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, tpk.ErrCorrupt) {
		err = fmt.Errorf("pcapng %s: %w", path, err)
	}
	return n, err
}
