package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// version is the tool's version, recorded in every recording.
const version = "0.1.0"

// Capabilities recorded in a header; the notes under the table are derived
// from them, so a replay shows the live run's notes.
const (
	capNetfilter    = "netfilter:"     // the netfilter source used
	capNoKprobes    = "kprobes:no"     // the kernel had no kprobes
	capLegacyTables = "legacy-tables:" // iptables-legacy tables loaded, comma separated
)

// newHeader describes this run for a recording.
func newHeader(netfilter string, fs *tracefs.FS) decode.Header {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	h := decode.Header{
		ToolVersion:   version,
		KernelRelease: unix.ByteSliceToString(uts.Release[:]),
		Hostname:      host,
		BootID:        strings.TrimSpace(string(boot)),
		StartWall:     time.Now().UTC(),
		StartKtime:    uint64(ts.Nano()),
		Args:          os.Args,
	}
	for _, p := range decode.Probes() {
		group, event := p.Tracepoint()
		h.Capabilities = append(h.Capabilities, "probe:"+group+":"+event)
	}
	h.Capabilities = append(h.Capabilities, capNetfilter+netfilter)
	if fs.KprobesSupported() != nil {
		h.Capabilities = append(h.Capabilities, capNoKprobes)
	}
	if tables := legacyTables(); len(tables) > 0 {
		h.Capabilities = append(h.Capabilities, capLegacyTables+strings.Join(tables, ","))
	}
	return h
}

// legacyTables lists the iptables-legacy tables loaded in this namespace.
func legacyTables() []string {
	var tables []string
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		b, _ := os.ReadFile(f)
		tables = append(tables, strings.Fields(string(b))...)
	}
	return tables
}

// renderContext is what rendering needs beyond a journey: the names of
// namespaces and the notes of the run, from a live run or a recording alike.
type renderContext struct {
	names     map[uint32]string
	netfilter string
	notes     []string
}

func newRenderContext(caps []string) *renderContext {
	rc := &renderContext{names: map[uint32]string{}}
	noKprobes := false
	var legacy string
	for _, c := range caps {
		switch {
		case strings.HasPrefix(c, capNetfilter):
			rc.netfilter = strings.TrimPrefix(c, capNetfilter)
		case c == capNoKprobes:
			noKprobes = true
		case strings.HasPrefix(c, capLegacyTables):
			legacy = strings.TrimPrefix(c, capLegacyTables)
		}
	}
	if legacy != "" && !strings.Contains(rc.netfilter, "kprobe") && rc.netfilter != "off" {
		why := "nftables tracing cannot see them"
		if noKprobes {
			why += ", and this kernel has no kprobes"
		}
		rc.notes = append(rc.notes, fmt.Sprintf("netfilter: iptables-legacy rules (tables %s) are not shown: %s", legacy, why))
	}
	if rc.netfilter == "kprobe" {
		rc.notes = append(rc.notes, "netfilter: kprobes show each table's or chain's verdict; --netfilter nftrace (or auto) shows the nftables rule that decided")
	}
	return rc
}

func (rc *renderContext) setSnapshot(s *decode.Snapshot) {
	for _, ns := range s.Namespaces {
		if len(ns.Names) > 0 {
			rc.names[ns.Inode] = ns.Names[0]
		}
	}
}

// netnsCell is the NETWORK NS column: the inode, and the name when known.
func (rc *renderContext) netnsCell(inode uint32) string {
	s := strconv.FormatUint(uint64(inode), 10)
	if name := rc.names[inode]; name != "" {
		s += " (" + name + ")"
	}
	return s
}

// replay renders a recording like the live run did, or exports it to pcapng.
func replay(o options, stdout, stderr io.Writer) error {
	f, err := os.Open(o.replay)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	defer f.Close()
	r, err := decode.NewReader(bufio.NewReaderSize(f, 1<<16))
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
		out  decode.EchoOutcome
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
		case decode.KindSnapshot:
			rc.setSnapshot(&snap)
		case decode.KindRecord:
			recs = append(recs, rec)
		case decode.KindOutcome:
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

func exportPcapng(o options, r *decode.Reader, stderr io.Writer) error {
	out, err := os.Create(o.pcapng)
	if err != nil {
		return fmt.Errorf("pcapng: %w", err)
	}
	bw := bufio.NewWriter(out)
	n, err := decode.ExportPcapng(bw, r)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pcapng %s: %w", o.pcapng, err)
	}
	fmt.Fprintf(stderr, "wrote %d packets to %s\n", n, o.pcapng)
	if t := r.Truncated(); t > 0 {
		fmt.Fprintf(stderr, "tracepkt-perf: %s was cut off: the last %d bytes are an incomplete block and were ignored\n", o.replay, t)
	}
	return nil
}
