package vmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// guestTracefs is where the guest's /init mounts tracefs.
const guestTracefs = "/sys/kernel/tracing"

// requireGuest skips tb unless it runs inside a tracepkt-vmtest guest: the
// checks below load modules and add kprobes, which the development machine's
// kernel cannot do and another host should not have done to it.
func requireGuest(tb testing.TB) {
	tb.Helper()
	if os.Getenv(GuestEnvVar) != "1" {
		testenv.Elsewhere(tb, "not inside a tracepkt-vmtest guest (%s is not 1): run it with make test-vm", GuestEnvVar)
	}
}

// TestGuestCapabilities asserts what the kprobe tests run in the guest rely
// on: kprobe_events, fentry, the iptables and nftables modules, and their
// functions. In the guest a missing capability is a failure, never a skip.
func TestGuestCapabilities(t *testing.T) {
	requireGuest(t)
	kprobeEvents := filepath.Join(guestTracefs, "kprobe_events")
	if _, err := os.Stat(kprobeEvents); err != nil {
		t.Fatalf("kernel has no kprobe events: %v", err)
	}

	t.Run("kprobe on ipt_do_table", func(t *testing.T) {
		modprobe(t, "ip_tables")
		group := fmt.Sprintf("tracepkt_vmtest_%d", os.Getpid())
		eventDir := filepath.Join(guestTracefs, "events", group, "ipt")
		t.Cleanup(func() {
			if _, err := os.Stat(eventDir); err == nil {
				appendLine(t, kprobeEvents, "-:"+group+"/ipt")
			}
		})
		appendLine(t, kprobeEvents, "p:"+group+"/ipt ipt_do_table")
		id, err := os.ReadFile(filepath.Join(eventDir, "id"))
		if err != nil {
			t.Fatalf("kprobe event was not created: %v", err)
		}
		if _, err := strconv.ParseUint(strings.TrimSpace(string(id)), 10, 32); err != nil {
			t.Errorf("event id %q: %v", id, err)
		}
		appendLine(t, kprobeEvents, "-:"+group+"/ipt")
		if _, err := os.Stat(eventDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("kprobe event still there after removal: stat: %v", err)
		}
	})

	t.Run("fentry on nf_hook_slow", func(t *testing.T) {
		prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
			Type:         ebpf.Tracing,
			AttachType:   ebpf.AttachTraceFEntry,
			AttachTo:     "nf_hook_slow",
			Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
			License:      "GPL",
		})
		if err != nil {
			t.Fatalf("load fentry program: %v", err)
		}
		defer prog.Close()
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			t.Fatalf("attach fentry: %v", err)
		}
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("nft_do_chain", func(t *testing.T) {
		modprobe(t, "nf_tables")
		if !testenv.KernelText(t, "nft_do_chain") {
			t.Error("nft_do_chain not in /proc/kallsyms after modprobe nf_tables")
		}
	})
}

func modprobe(tb testing.TB, module string) {
	tb.Helper()
	if out, err := exec.Command("modprobe", module).CombinedOutput(); err != nil {
		tb.Fatalf("modprobe %s: %v: %s", module, err, out)
	}
}

// appendLine writes a command to a tracefs control file; appending matters,
// as truncating kprobe_events would remove every kprobe.
func appendLine(tb testing.TB, file, line string) {
	tb.Helper()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		tb.Fatalf("write %q to %s: %v", line, file, err)
	}
}
