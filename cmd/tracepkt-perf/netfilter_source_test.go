package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/tracefs"
	"golang.org/x/sys/unix"
)

func nftraceWorks() error { return nil }

// TestNetfilterSourceByArch: on a kernel with kprobes, auto takes kprobes
// on amd64 only; elsewhere their register offsets would be wrong, so auto
// means nftrace, and --netfilter kprobe says why it cannot run.
func TestNetfilterSourceByArch(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kprobe_events"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	withKprobes := &tracefs.FS{Root: dir}
	without := &tracefs.FS{Root: t.TempDir()}
	for _, c := range []struct {
		fs   *tracefs.FS
		arch string
		want string
	}{
		{withKprobes, "amd64", "kprobe+nftrace"},
		{withKprobes, "arm64", "nftrace"},
		{withKprobes, "riscv64", "nftrace"},
		{without, "amd64", "nftrace"},
	} {
		plan, err := netfilterSource("auto", c.fs, c.arch, nftraceWorks)
		if err != nil || plan.sources.String() != c.want || (len(plan.kprobes) > 0) != strings.Contains(c.want, "kprobe") {
			t.Errorf("auto on %s (kprobes %v): %+v, %v; want %s", c.arch, c.fs == withKprobes, plan, err, c.want)
		}
	}
	_, err := netfilterSource("kprobe", withKprobes, "arm64", nftraceWorks)
	if err == nil || !strings.Contains(err.Error(), "amd64 only, this is arm64") {
		t.Errorf("--netfilter kprobe on arm64: %v", err)
	}
	if err := netfilterKprobes(withKprobes, "arm64"); err == nil || !strings.Contains(err.Error(), "arm64") {
		t.Errorf("the --check row on arm64: %v", err)
	}
}

// TestNetfilterSourceWithoutNftrace: where the nftrace socket cannot be
// opened (nf_tables neither loaded nor loadable), auto goes on with what
// is left, kprobes or nothing, and says why under the table; --netfilter
// nftrace fails (exit 2) before anything is traced.
func TestNetfilterSourceWithoutNftrace(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "kprobe_events"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	withKprobes := &tracefs.FS{Root: dir}
	without := &tracefs.FS{Root: t.TempDir()}
	missing := func() error { return fmt.Errorf("open nftrace socket: %w", unix.EPROTONOSUPPORT) }
	const note = "netfilter: nftables tracing cannot run here (open nftrace socket: protocol not supported): nftables and iptables-nft rules are not shown"
	for _, c := range []struct {
		fs   *tracefs.FS
		want string
	}{
		{withKprobes, "kprobe"},
		{without, "off"},
	} {
		plan, err := netfilterSource("auto", c.fs, "amd64", missing)
		if err != nil || plan.sources.String() != c.want || (len(plan.kprobes) > 0) != (c.want == "kprobe") {
			t.Errorf("auto without nftrace (kprobes %v): %+v, %v; want %s", c.fs == withKprobes, plan, err, c.want)
			continue
		}
		// The notes come from the header, so a replay shows them too.
		notes := newRenderContext(newHeader(plan, c.fs, 0, false).Capabilities).notes
		if len(notes) != 1 || notes[0] != note {
			t.Errorf("auto without nftrace (kprobes %v): notes %q, want only %q", c.fs == withKprobes, notes, note)
		}
	}
	_, err := netfilterSource("nftrace", without, "amd64", missing)
	if !errors.Is(err, unix.EPROTONOSUPPORT) || exitCode(err, io.Discard) != 2 {
		t.Errorf("--netfilter nftrace without nftrace: %v, want EPROTONOSUPPORT, exit 2", err)
	}
}
