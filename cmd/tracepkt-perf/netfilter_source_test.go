package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/tracefs"
)

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
		plan, err := netfilterSource("auto", c.fs, c.arch)
		if err != nil || plan.sources.String() != c.want || (len(plan.kprobes) > 0) != strings.Contains(c.want, "kprobe") {
			t.Errorf("auto on %s (kprobes %v): %+v, %v; want %s", c.arch, c.fs == withKprobes, plan, err, c.want)
		}
	}
	_, err := netfilterSource("kprobe", withKprobes, "arm64")
	if err == nil || !strings.Contains(err.Error(), "amd64 only, this is arm64") {
		t.Errorf("--netfilter kprobe on arm64: %v", err)
	}
	if err := netfilterKprobes(withKprobes, "arm64"); err == nil || !strings.Contains(err.Error(), "arm64") {
		t.Errorf("the --check row on arm64: %v", err)
	}
}
