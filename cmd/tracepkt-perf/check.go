package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// errCoreMissing: --check found that the core trace cannot run (exit 2).
var errCoreMissing = fmt.Errorf("the core trace cannot run on this kernel")

// check prints the capability matrix of the running kernel: what the core
// trace needs, and which netfilter source auto would pick; verbose adds the
// namespaces as a run would name them.
func check(stdout io.Writer, verbose bool, mode probes.AttachMode) error {
	fmt.Fprintf(stdout, "tracepkt-perf capabilities of kernel %s\n\n", kernelRelease())
	core := true
	line := func(name string, err error, okText string, required bool) {
		status := "ok     " + okText
		if err != nil {
			status = "no     " + err.Error()
			if required {
				core = false
				status = "MISSING " + err.Error()
			}
		}
		fmt.Fprintf(stdout, "  %-24s %s\n", name, strings.TrimSpace(status))
	}

	fs, fsErr := tracefs.Open()
	mount := ""
	if fsErr == nil {
		mount = fs.Root
	}
	line("tracefs", fsErr, mount, true)
	offsets, btfErr := probes.KernelOffsets()
	// As a run does, so that the program loads below answer for one.
	if err := allowBPFMemory(); err != nil {
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
		} else if err == nil {
			_, err = fs.EventID(group, event)
		}
		line(group+":"+event, err, how, true)
	}
	kprobes := fsErr
	if kprobes == nil {
		kprobes = fs.KprobesSupported()
	}
	line("kprobes", kprobes, "kprobe_events", false)
	if kprobes == nil {
		// How each netfilter function's arguments are found, or why they are not.
		for _, p := range decode.NetfilterProbes() {
			args, err := probes.KernelNetfilterArgs(p)
			line("kprobe "+p.Kprobe(), err, args.String(), false)
		}
	}
	line("nftrace", nftraceSupported(), "NFNLGRP_NFTRACE", false)
	line("iptables backend", nil, iptablesBackend(), false)
	if fsErr == nil {
		plan, err := netfilterSource("auto", fs)
		line("netfilter source", err, "auto picks "+plan.sources.String(), false)
	}
	if verbose {
		if err := printNamespaces(stdout); err != nil {
			return err
		}
	}
	if core {
		fmt.Fprintln(stdout, "\ncore trace: ready")
		return nil
	}
	fmt.Fprintln(stdout, "\ncore trace: cannot run here")
	return errCoreMissing
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

// nftraceSupported returns nil when this process can listen to nftables
// trace events.
func nftraceSupported() error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink netfilter socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("bind netlink socket: %w", err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_ADD_MEMBERSHIP, unix.NFNLGRP_NFTRACE); err != nil {
		return fmt.Errorf("join NFNLGRP_NFTRACE: %w", err)
	}
	return nil
}
