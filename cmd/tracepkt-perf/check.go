package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/caps"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/probes/nftrace"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// errCoreMissing: --check found that the core trace cannot run (exit 2).
var errCoreMissing = fmt.Errorf("the core trace cannot run on this kernel")

// missingCapsError: --check found that the core trace cannot run for want
// of capabilities, which a kernel refuses as it would refuse a missing
// feature (exit 2).
type missingCapsError struct{ caps []caps.Cap }

func (e missingCapsError) Error() string {
	return "the core trace needs " + caps.Names(e.caps) + ", which this process does not hold"
}

// checkRow is one capability: the --check table and its JSON share it.
type checkRow struct {
	Name     string `json:"name"`
	OK       bool   `json:"ok"`
	Required bool   `json:"required"`
	Detail   string `json:"detail"`
}

// checkReport is what --check found; with --json it is printed as is.
type checkReport struct {
	Kernel          string     `json:"kernel"`
	Root            bool       `json:"root"`
	Capabilities    []checkRow `json:"capabilities"`
	CoreReady       bool       `json:"core_ready"`
	MissingCaps     []string   `json:"missing_capabilities,omitempty"`
	NetfilterSource string     `json:"netfilter_source,omitempty"`
	Verdict         string     `json:"verdict"`
}

// check prints the capability matrix of the running kernel: what the core
// trace needs, and which netfilter source auto would pick; verbose adds the
// namespaces as a run would name them.
func check(stdout io.Writer, jsonOut, verbose bool, mode probes.AttachMode) error {
	rep, err := checkKernel(mode)
	if jsonOut {
		enc := json.NewEncoder(stdout)
		if werr := enc.Encode(rep); werr != nil {
			return werr
		}
		return err
	}
	fmt.Fprintf(stdout, "tracepkt-perf capabilities of kernel %s\n\n", rep.Kernel)
	for _, r := range rep.Capabilities {
		status := "ok     "
		if !r.OK {
			status = "no     "
			if r.Required {
				status = "MISSING "
			}
		}
		fmt.Fprintf(stdout, "  %-24s %s\n", r.Name, strings.TrimSpace(status+r.Detail))
	}
	if verbose && rep.Root {
		if err := printNamespaces(stdout); err != nil {
			return err
		}
	}
	_, werr := fmt.Fprintf(stdout, "\ncore trace: %s\n", rep.Verdict)
	return errors.Join(err, werr)
}

// checkKernel fills the report; the error says why the core trace cannot run.
func checkKernel(mode probes.AttachMode) (checkReport, error) {
	rep := checkReport{Kernel: kernelRelease(), Root: os.Geteuid() == 0, CoreReady: true}
	// Each failed operation a required row stands for: those a missing
	// capability explains decide the verdict.
	var refused []error
	line := func(name string, err error, okText string, required bool) {
		r := checkRow{Name: name, OK: err == nil, Required: required, Detail: okText}
		if err != nil {
			r.Detail = err.Error()
			if required {
				rep.CoreReady = false
				refused = append(refused, err)
			}
		}
		rep.Capabilities = append(rep.Capabilities, r)
	}

	fs, fsErr := tracefs.Open()
	mount := ""
	if fsErr == nil {
		defer fs.Close()
		mount = fs.Root
		if fs.Private {
			mount = tracefs.DefaultMount + " (mounted for this run only)"
		}
	}
	line("tracefs", fsErr, mount, true)
	offsets, btfErr := probes.KernelOffsets()
	// As a run does, so that the program loads below answer for one.
	if err := probes.AllowBPFMemory(); err != nil {
		line("RLIMIT_MEMLOCK", err, "", true)
	}
	line("BTF", btfErr, "/sys/kernel/btf/vmlinux", true)
	for _, p := range decode.Probes() {
		group, event := p.Tracepoint()
		err := fsErr
		how := "tracepoint"
		if err == nil && btfErr == nil {
			var path probes.ProbeAttachment
			path, err = probes.CheckAttach(fs, offsets, p, mode)
			how = path.String() + " + BPF program load"
			if err == nil {
				// A run reads formats (skb:kfree_skb's, for drop
				// reasons) from tracefs files only root may read.
				_, err = fs.Format(group, event)
			}
		} else if err == nil {
			_, err = fs.EventID(group, event)
		}
		line(group+":"+event, err, how, true)
	}
	kprobes := fsErr
	if kprobes == nil {
		kprobes = netfilterKprobes(fs, runtime.GOARCH)
	}
	line("kprobes", kprobes, "kprobe_events", false)
	if kprobes == nil {
		// How each netfilter function's arguments are found, or why they are not.
		for _, p := range decode.NetfilterProbes() {
			args, err := probes.KernelNetfilterArgs(p)
			line("kprobe "+p.Kprobe(), err, args.String(), false)
		}
	}
	line("nftrace", nftrace.Supported(), "NFNLGRP_NFTRACE", false)
	line("iptables backend", nil, iptablesBackend(), false)
	if fsErr == nil {
		plan, err := netfilterSource("auto", fs, runtime.GOARCH, nftrace.Supported)
		rep.NetfilterSource = plan.sources.String()
		line("netfilter source", err, "auto picks "+plan.sources.String(), false)
	}
	// What a run opens besides its programs.
	line("perf rings", probes.CheckRings(), "BPF-output perf events", true)
	line("raw ICMP socket", ping.CheckSocket(false), "", true)
	if lack := caps.MissingOf(refused...); len(lack) > 0 {
		for _, c := range lack {
			rep.MissingCaps = append(rep.MissingCaps, c.String())
		}
		rep.Verdict = "cannot run without " + caps.Names(lack)
		return rep, missingCapsError{lack}
	}
	if !rep.CoreReady {
		rep.Verdict = "cannot run here"
		return rep, errCoreMissing
	}
	rep.Verdict = "ready"
	return rep, nil
}

// iptablesBackend says which iptables the system's command drives, and
// which legacy tables (IPv4 and IPv6) are loaded in this namespace.
func iptablesBackend() string {
	backend := "no iptables command"
	if out, err := exec.Command("iptables", "-V").Output(); err == nil {
		v := strings.TrimSpace(string(out))
		switch {
		case strings.Contains(v, "nf_tables"):
			backend = "nf_tables (" + v + ")"
		case strings.Contains(v, "legacy"):
			backend = "legacy (" + v + ")"
		default:
			backend = v
		}
	}
	if tables := legacyTables(); len(tables) > 0 {
		backend += "; legacy tables loaded: " + strings.Join(tables, ", ")
	}
	return backend
}
