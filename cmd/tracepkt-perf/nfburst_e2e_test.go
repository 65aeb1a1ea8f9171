package main

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
)

// TestE2ENetfilterBackToBack sends echoes back to back (-i 0) through a
// router with rules in every namespace: each echo must keep every netfilter
// row of its own path (the source's OUTPUT, the router's forward chain both
// ways, the target's INPUT), none lost, none given to the next echo, though
// a replied echo no longer waits for more trace messages.
func TestE2ENetfilterBackToBack(t *testing.T) {
	topo, n := routerWithRules(t, "; add rule inet tpfilt forward counter accept")
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	count := 500
	if os.Getenv(vmtest.GuestEnvVar) == "1" {
		count = 50 // seconds of emulation per hundred echoes
	}
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	echoes := echoesOf(t, runTool(t, n.Source, "--json", "-c", strconv.Itoa(count), "-i", "0", "-W", "3s", n.Target4.String()))
	want := strings.Join([]string{
		nfWant(a, "eth0", "filter.OUTPUT", "ACCEPT", "meta l4proto icmp counter accept"),
		row(a, "eth0", "out", "request"),
		row(r, "eth0", "in", "request"),
		nfWant(r, "eth0", "tpfilt.forward", "ACCEPT", "counter accept"),
		row(r, "eth1", "out", "request"),
		row(b, "eth0", "in", "request"),
		nfWant(b, "eth0", "filter.INPUT", "ACCEPT", "meta l4proto icmp counter accept"),
		row(b, "eth0", "out", "reply"),
		row(r, "eth1", "in", "reply"),
		nfWant(r, "eth1", "tpfilt.forward", "ACCEPT", "counter accept"),
		row(r, "eth0", "out", "reply"),
		row(a, "eth0", "in", "reply"),
	}, "\n")
	if len(echoes) != count {
		t.Fatalf("%d echoes, want %d", len(echoes), count)
	}
	bad := 0
	for _, e := range echoes {
		if got := strings.Join(rowsWithNetfilter(e), "\n"); e.Result != "reply" || e.LostSamples != 0 || got != want {
			if bad++; bad <= 3 {
				t.Errorf("echo %d: result %s, lost %d, rows:\n%s\nwant:\n%s", e.Seq, e.Result, e.LostSamples, got, want)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d echoes lack or gained rows", bad, len(echoes))
	}
}
