package main

import (
	"os"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/tracefs"
	"golang.org/x/sys/unix"
)

// Capabilities recorded in a header; the notes under the table are derived
// from them, so a replay shows the live run's notes.
const (
	capNetfilter    = "netfilter:"     // the netfilter source used
	capNoKprobes    = "kprobes:no"     // the kernel had no kprobes
	capLegacyTables = "legacy-tables:" // iptables-legacy tables loaded, comma separated
)

// newHeader describes this run for a recording.
func newHeader(netfilter string, fs *tracefs.FS) tpk.Header {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	h := tpk.Header{
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
