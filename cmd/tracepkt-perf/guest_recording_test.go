package main

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
)

// guestRecordingsEnv names the directory of recordings a guest of the kernel
// matrix left (make test-vm sets it for TestReplayGuestRecordings).
const guestRecordingsEnv = "TRACEPKT_GUEST_RECORDINGS"

// TestE2EGuestRecording records, inside a guest of the kernel matrix, runs
// with both netfilter sources (an iptables-legacy ACCEPT seen by kprobes, an
// nftables DROP seen by nftrace) and leaves each recording with the table the
// live run printed for the host, where TestReplayGuestRecordings replays
// them: recordings made on the guest's kernel must replay on another one.
func TestE2EGuestRecording(t *testing.T) {
	dir := os.Getenv(vmtest.GuestFilesEnvVar)
	if dir == "" {
		t.Skipf("records for the host only in a guest of the kernel matrix (%s is not set): make test-vm runs it", vmtest.GuestFilesEnvVar)
	}
	requireKprobes(t)
	release := testenv.KernelRelease(t)
	out := filepath.Join(dir, "recordings")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	topo, n := routerWithRules(t, "; add rule inet tpfilt forward icmp type echo-request drop; add rule inet tpfilt forward icmpv6 type echo-request drop")
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		legacyRules(t, n.A, target, []string{"-A", "OUTPUT", "-p", "PROTO", "-j", "ACCEPT"})
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(out, release+"-"+strings.ReplaceAll(t.Name(), "/", "-"))
		res := runTool(t, n.Source, "--record", name+".tpk", "-W", "500ms", target.String())
		if res.code != 1 {
			t.Fatalf("exit %d, want 1 (dropped); stderr:\n%s", res.code, res.stderr)
		}
		for _, want := range []string{"filter.OUTPUT  ACCEPT", "tpfilt.forward  DROP"} {
			if !strings.Contains(strings.Join(strings.Fields(res.stdout), "  "), strings.Join(strings.Fields(want), "  ")) {
				t.Errorf("live run shows no %q row:\n%s", want, res.stdout)
			}
		}
		if err := os.WriteFile(name+".table", []byte(res.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReplayGuestRecordings replays on this kernel what TestE2EGuestRecording
// recorded in a guest: each must print exactly the table of its live run.
// make test-vm runs it on the host after each guest.
func TestReplayGuestRecordings(t *testing.T) {
	dir := os.Getenv(guestRecordingsEnv)
	if dir == "" {
		t.Skipf("%s is not set: make test-vm runs this after a guest recorded", guestRecordingsEnv)
	}
	tpks, err := filepath.Glob(filepath.Join(dir, "*.tpk"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tpks) == 0 {
		t.Fatalf("no recordings in %s: did TestE2EGuestRecording run in the guest?", dir)
	}
	for _, tpk := range tpks {
		t.Run(filepath.Base(tpk), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(tpk, ".tpk") + ".table")
			if err != nil {
				t.Fatal(err)
			}
			res := runTool(t, nil, "--replay", tpk)
			if res.code != 1 || res.stderr != "" {
				t.Fatalf("replay: exit %d (want 1, as the live run), stderr %q", res.code, res.stderr)
			}
			if res.stdout != string(want) {
				t.Errorf("replay of %s:\n%s\nthe live run printed:\n%s", tpk, res.stdout, want)
			}
		})
	}
}
