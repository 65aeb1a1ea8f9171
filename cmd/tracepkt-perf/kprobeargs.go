package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes"
)

// resolveKprobes keeps the netfilter functions whose arguments can be found
// on this kernel and records, for the notes, the functions whose argument
// order came from the kernel version rather than BTF, and those left out
// because their module has no BTF (kernels before 5.11). Functions whose
// module is not loaded stay: there is nothing for them to show, and the
// tracer leaves them out.
func (plan *netfilterPlan) resolveKprobes() {
	var keep []decode.Probe
	for _, p := range plan.kprobes {
		args, err := probes.KernelNetfilterArgs(p)
		switch {
		case errors.Is(err, probes.ErrNoModuleBTF):
			plan.kprobeNoBTF = append(plan.kprobeNoBTF, p.Kprobe())
			continue
		case err == nil && args.FromVersion != "":
			plan.argsFromVersion = append(plan.argsFromVersion, p.Kprobe()+"("+strings.Join(args.Params, ", ")+")")
		}
		keep = append(keep, p)
	}
	plan.kprobes = keep
}

// kprobeNotes say where argument orders came from when not from BTF, and
// which netfilter functions had no kprobe for want of their module's BTF.
func (c runCaps) kprobeNotes() []string {
	var notes []string
	for _, fn := range c.argsFromVersion {
		notes = append(notes, fmt.Sprintf("netfilter: %s: argument order taken from the kernel version, as its module has no BTF on this kernel", fn))
	}
	for _, fn := range c.kprobeNoBTF {
		notes = append(notes, fmt.Sprintf("netfilter: no kprobe on %s: its module has no BTF on this kernel (before 5.11), so what it reads cannot be found; nftables chains are shown by --netfilter nftrace (or auto)", fn))
	}
	return notes
}
