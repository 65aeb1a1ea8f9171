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

// newHeader describes this run for a recording; proto is decode.ProtoTCP
// or decode.ProtoUDP for a run of TCP or UDP probes.
func newHeader(netfilter netfilterPlan, fs *tracefs.FS, proto uint8, listen bool) tpk.Header {
	host, _ := os.Hostname()
	boot, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	h := tpk.Header{
		ToolVersion:   version,
		KernelRelease: kernelRelease(),
		Hostname:      host,
		BootID:        strings.TrimSpace(string(boot)),
		StartWall:     time.Now().UTC(),
		StartKtime:    uint64(ts.Nano()),
		Args:          os.Args,
		Proto:         proto,
	}
	for _, p := range decode.Probes() {
		group, event := p.Tracepoint()
		h.Capabilities = append(h.Capabilities, "probe:"+group+":"+event)
	}
	caps := runCaps{
		netfilter: netfilter.sources, noKprobes: fs.KprobesSupported() != nil, legacyTables: strings.Join(legacyTables(), ","),
		argsFromVersion: netfilter.argsFromVersion, kprobeNoBTF: netfilter.kprobeNoBTF,
		nftraceMissing: netfilter.nftraceMissing, listen: listen,
	}
	h.Capabilities = append(h.Capabilities, caps.strings()...)
	return h
}

// kernelRelease is the running kernel's release, as uname -r prints it.
func kernelRelease() string {
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	return unix.ByteSliceToString(uts.Release[:])
}

// legacyTables lists the iptables-legacy tables loaded in this namespace,
// IPv4 then IPv6.
func legacyTables() []string {
	var tables []string
	for _, f := range []string{"/proc/net/ip_tables_names", "/proc/net/ip6_tables_names"} {
		b, _ := os.ReadFile(f)
		tables = append(tables, strings.Fields(string(b))...)
	}
	return tables
}
