package main

import (
	"fmt"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// nfSources are the netfilter sources a run uses; the zero value is not
// known (a recording that does not say).
type nfSources uint8

const (
	nfOff nfSources = 1 << iota // --netfilter off: none
	nfKprobe
	nfNftrace
)

// nfSourceNames are the names --check prints and recordings and JSON keep.
var nfSourceNames = map[nfSources]string{
	nfOff: "off", nfKprobe: "kprobe", nfNftrace: "nftrace", nfKprobe | nfNftrace: "kprobe+nftrace",
}

func (s nfSources) String() string { return nfSourceNames[s] }

// parseNFSources is the inverse of String; unknown names are not known (0).
func parseNFSources(name string) nfSources {
	for s, n := range nfSourceNames {
		if n == name {
			return s
		}
	}
	return 0
}

// netfilterPlan is what --netfilter resolved to on this kernel.
type netfilterPlan struct {
	sources nfSources
	auto    bool           // --netfilter auto: its kprobes are optional
	kprobes []decode.Probe // netfilter functions to put kprobes on
	// nftraceMissing says why auto could not take nftables tracing.
	nftraceMissing string
	// Set by resolveKprobes: "fn(params)" whose argument order came from
	// the kernel version, and functions left out (module without BTF).
	argsFromVersion, kprobeNoBTF []string
}

// netfilterSource resolves --netfilter on this kernel and architecture;
// nftrace says whether nftables tracing can be listened to here.
// auto takes kprobes for iptables-legacy, which nothing else sees, and
// nftables tracing for nftables and iptables-nft rules, which it shows down
// to the rule; where the netfilter kprobes cannot run (no kprobes, or an
// architecture whose calling convention they do not know), nftables tracing
// alone. Where nftables tracing cannot run (nf_tables not loaded nor
// loadable: there are no nftables rules then), auto goes on without it and
// says why under the table; --netfilter nftrace fails.
func netfilterSource(want string, fs *tracefs.FS, arch string, nftrace func() error) (netfilterPlan, error) {
	kprobes := netfilterKprobes(fs, arch)
	legacy := []decode.Probe{decode.ProbeIptDoTable, decode.ProbeIp6tDoTable}
	switch want {
	case "off":
		return netfilterPlan{sources: nfOff}, nil
	case "nftrace":
		if err := nftrace(); err != nil {
			return netfilterPlan{}, fmt.Errorf("--netfilter nftrace: %w", err)
		}
		return netfilterPlan{sources: nfNftrace}, nil
	case "kprobe":
		if kprobes != nil {
			return netfilterPlan{}, fmt.Errorf("--netfilter kprobe: %w; --netfilter nftrace works on every kernel with nftables", kprobes)
		}
		return netfilterPlan{sources: nfKprobe, kprobes: decode.NetfilterProbes()}, nil
	}
	plan := netfilterPlan{auto: true}
	if err := nftrace(); err != nil {
		plan.nftraceMissing = err.Error()
		plan.sources = nfOff
	} else {
		plan.sources = nfNftrace
	}
	if kprobes == nil {
		plan.sources = plan.sources&^nfOff | nfKprobe
		plan.kprobes = legacy
	}
	return plan, nil
}

// netfilterKprobes returns nil when the netfilter kprobes can run here: the
// kernel has kprobes, and their programs know arch's calling convention.
func netfilterKprobes(fs *tracefs.FS, arch string) error {
	if arch != "amd64" {
		return fmt.Errorf("%w, this is %s", probes.ErrUnsupportedArch, arch)
	}
	return fs.KprobesSupported()
}

// Capabilities a header records beside the probes; the notes under the
// table are derived from them, so a replay shows the live run's notes.
const (
	capNetfilter    = "netfilter:"     // the netfilter sources used
	capNoKprobes    = "kprobes:no"     // the kernel had no kprobes
	capListen       = "listen"         // a listener's run (--listen): it sent nothing
	capLegacyTables = "legacy-tables:" // iptables-legacy tables loaded, comma separated
	// Kernels whose modules have no BTF (before 5.11):
	capArgsFromVersion = "kprobe-args-from-version:" // fn(params): argument order from the kernel version
	capKprobeNoBTF     = "kprobe-no-btf:"            // fn: no kprobe, its module has no BTF
	// auto could not take nftables tracing: why.
	capNftraceMissing = "nftrace-missing:"
)

// runCaps is what the capabilities of a header say about netfilter.
type runCaps struct {
	netfilter    nfSources
	noKprobes    bool
	legacyTables string // comma separated
	// See netfilterPlan.
	argsFromVersion, kprobeNoBTF []string
	nftraceMissing               string
	listen                       bool
}

// strings lists c as header capabilities.
func (c runCaps) strings() []string {
	caps := []string{capNetfilter + c.netfilter.String()}
	if c.noKprobes {
		caps = append(caps, capNoKprobes)
	}
	if c.legacyTables != "" {
		caps = append(caps, capLegacyTables+c.legacyTables)
	}
	for _, fn := range c.argsFromVersion {
		caps = append(caps, capArgsFromVersion+fn)
	}
	for _, fn := range c.kprobeNoBTF {
		caps = append(caps, capKprobeNoBTF+fn)
	}
	if c.nftraceMissing != "" {
		caps = append(caps, capNftraceMissing+c.nftraceMissing)
	}
	if c.listen {
		caps = append(caps, capListen)
	}
	return caps
}

// parseCaps reads what strings wrote, ignoring other capabilities.
func parseCaps(caps []string) runCaps {
	var c runCaps
	for _, s := range caps {
		switch {
		case strings.HasPrefix(s, capNetfilter):
			c.netfilter = parseNFSources(strings.TrimPrefix(s, capNetfilter))
		case s == capNoKprobes:
			c.noKprobes = true
		case s == capListen:
			c.listen = true
		case strings.HasPrefix(s, capLegacyTables):
			c.legacyTables = strings.TrimPrefix(s, capLegacyTables)
		case strings.HasPrefix(s, capArgsFromVersion):
			c.argsFromVersion = append(c.argsFromVersion, strings.TrimPrefix(s, capArgsFromVersion))
		case strings.HasPrefix(s, capKprobeNoBTF):
			c.kprobeNoBTF = append(c.kprobeNoBTF, strings.TrimPrefix(s, capKprobeNoBTF))
		case strings.HasPrefix(s, capNftraceMissing):
			c.nftraceMissing = strings.TrimPrefix(s, capNftraceMissing)
		}
	}
	return c
}

// notes are the lines under the table that say what netfilter rows the
// run could not show.
func (c runCaps) notes() []string {
	var notes []string
	if c.nftraceMissing != "" {
		notes = append(notes, fmt.Sprintf("netfilter: nftables tracing cannot run here (%s): nftables and iptables-nft rules are not shown", c.nftraceMissing))
	}
	if c.legacyTables != "" && c.netfilter&(nfKprobe|nfOff) == 0 {
		why := "nftables tracing cannot see them"
		if c.noKprobes {
			why += ", and this kernel has no kprobes"
		}
		notes = append(notes, fmt.Sprintf("netfilter: iptables-legacy rules (tables %s) are not shown: %s", c.legacyTables, why))
	}
	notes = append(notes, c.kprobeNotes()...)
	if c.netfilter == nfKprobe && c.nftraceMissing == "" {
		notes = append(notes, "netfilter: kprobes show each table's or chain's verdict; --netfilter nftrace (or auto) shows the nftables rule that decided")
	}
	return notes
}
