package main

import (
	"bufio"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// waitCounter waits until the nftables rule with comment name in ns has
// counted a packet: the test's own view that an echo reached it.
func waitCounter(t *testing.T, ns *topology.Netns, table string) {
	t.Helper()
	re := regexp.MustCompile(`counter packets [1-9]`)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if re.MatchString(inNetns(t, ns, "nft", "list", "table", "inet", table)) {
			return
		}
	}
	t.Fatalf("no packet reached the rule of table %s", table)
}

// TestE2EInterruptedDrop: a signal while the echo is being dropped shows
// what was seen of it, marked interrupted, with the drop named, and exits 1.
func TestE2EInterruptedDrop(t *testing.T) {
	topo, n := vethPair(t)
	testenv.RequireCommands(t, "nft")
	root, peer := inode(t, n.Root), inode(t, n.Netns)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			table := topology.UniqueName("tpd")
			inNetns(t, n.Netns, "nft", "add table inet "+table+"; add chain inet "+table+" in { type filter hook input priority 0; policy accept; }; add rule inet "+table+" in icmp type echo-request counter drop")
			defer inNetns(t, n.Netns, "nft", "delete table inet "+table)
			if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
				t.Fatal(err)
			}
			cmd, stdout, stderr := startTool(t, "--json", "-c", "1", "-W", "30", n.Target4.String())
			waitCounter(t, n.Netns, table)
			// The nftables trace message left before the packet was dropped,
			// and the tool drains what came: a short settle suffices.
			time.Sleep(50 * time.Millisecond)
			if err := cmd.Process.Signal(sig); err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(stdout)
			cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s\nstdout:\n%s", code, stderr, out)
			}
			var e jsonEcho
			if err := jsonUnmarshal(string(out), &e); err != nil {
				t.Fatalf("%v: %q", err, out)
			}
			want := []string{
				row(root, n.HostLink, "out", "request"),
				row(peer, "eth0", "in", "request"),
				nfWant(peer, "eth0", table+".in", "DROP", "icmp type echo-request counter drop"),
				row(peer, "eth0", "drop", "request"),
			}
			if got := rowsRuledIn(e, peer); e.Result != "interrupted" || strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("result %q, rows:\n%s\nwant interrupted, rows:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
	// The table tells it in words.
	table := topology.UniqueName("tpd")
	inNetns(t, n.Netns, "nft", "add table inet "+table+"; add chain inet "+table+" in { type filter hook input priority 0; policy accept; }; add rule inet "+table+" in icmp type echo-request counter drop")
	defer inNetns(t, n.Netns, "nft", "delete table inet "+table)
	cmd, stdout, stderr := startTool(t, "-c", "3", "-i", "0", "-W", "30", n.Target4.String())
	waitCounter(t, n.Netns, table)
	time.Sleep(50 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	out, _ := io.ReadAll(stdout)
	cmd.Wait()
	want := fmt.Sprintf("interrupted: no reply from %s (seq 1) after ", n.Target4)
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), want) ||
		!strings.Contains(string(out), "the request was dropped by "+table+".in (rule ") || strings.Contains(string(out), "seq 2") {
		t.Errorf("exit %d, stdout:\n%s\nstderr:\n%s\nwant exit 1 and %q with the drop", code, out, stderr, want)
	}
}

// TestE2EBroadcastRefused: a subnet's broadcast address is refused with
// one line, before anything is sent (the drop-all rule counts nothing).
func TestE2EBroadcastRefused(t *testing.T) {
	_, n := vethPair(t)
	bcast := lastAddr(n.Host4.Masked())
	res := runTool(t, nil, "-W", "0.2", bcast.String())
	want := fmt.Sprintf("tracepkt-perf: %s is a broadcast address here: tracepkt-perf traces an echo to one host\n", bcast)
	if res.code != 2 || !strings.HasPrefix(res.stderr, want) || res.stdout != "" {
		t.Errorf("exit %d, stderr %q, stdout %q; want exit 2 and %q", res.code, res.stderr, res.stdout, want)
	}
}

// lastAddr is the last address of p: its broadcast address in IPv4.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	for i := 0; i < 4; i++ {
		b[3-i] |= byte(host >> (8 * i))
	}
	return netip.AddrFrom4(b)
}

// TestE2ETargetVethDeleted deletes the target's veth while a run goes on.
// A guard route for the test's networks is installed first, so the later
// echoes fail with "unreachable" here instead of following the default
// route out of the machine. The run shows the echoes before, then says the
// route went away, with exit 2.
func TestE2ETargetVethDeleted(t *testing.T) {
	for _, family := range []string{"ipv4", "ipv6"} {
		t.Run(family, func(t *testing.T) {
			topo, n := vethPair(t)
			target := n.Target4
			if family == "ipv6" {
				target = n.Target6
			}
			for _, p := range []netip.Prefix{n.Host4, n.Host6} {
				if err := topo.Guard(n.Root, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := topo.CheckOwnRoute(n.Source, target); err != nil {
				t.Fatal(err)
			}
			cmd, stdout, stderr := startTool(t, "-c", "20", "-i", "0.1", "-W", "0.3", target.String())
			r := bufio.NewReader(stdout)
			first := readUntil(t, r, "reply from", stderr)
			if err := topo.DeleteLink(n.Root, n.HostLink); err != nil {
				t.Fatal(err)
			}
			rest, _ := io.ReadAll(r)
			cmd.Wait()
			out := first + string(rest)
			wantErr := fmt.Sprintf("tracepkt-perf: no route to %s any more (seq ", target)
			if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.HasPrefix(stderr.String(), wantErr) {
				t.Errorf("exit %d, stderr %q; want exit 2 and %q...\nstdout:\n%s", code, stderr, wantErr, out)
			}
			if strings.Contains(out, "seq 20") {
				t.Errorf("the run went on after the route went away:\n%s", out)
			}
		})
	}
}

// TestE2ENetfilterLookupFails: when looking up a rule's text fails (here an
// nft(8) that always fails), the echo keeps every row it saw, and a note
// says what failed.
func TestE2ENetfilterLookupFails(t *testing.T) {
	topo, n := vethPair(t)
	testenv.RequireCommands(t, "nft")
	root, peer := inode(t, n.Root), inode(t, n.Netns)
	table := topology.UniqueName("tpa")
	inNetns(t, n.Netns, "nft", "add table inet "+table+"; add chain inet "+table+" in { type filter hook input priority 0; policy accept; }; add rule inet "+table+" in icmp type echo-request counter accept")
	defer inNetns(t, n.Netns, "nft", "delete table inet "+table)
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "nft"), []byte("#!/bin/sh\necho 'nft: broken on purpose' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	self := testBinary(t)
	cmd := exec.Command(self, "--json", n.Target4.String())
	cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
	res := runCmd(t, cmd)
	if res.code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s\nstdout:\n%s", res.code, res.stderr, res.stdout)
	}
	var e jsonEcho
	if err := jsonUnmarshal(res.stdout, &e); err != nil {
		t.Fatal(err)
	}
	want := []string{
		row(root, n.HostLink, "out", "request"),
		row(peer, "eth0", "in", "request"),
		nfWant(peer, "eth0", table+".in", "ACCEPT", ""),
		row(peer, "eth0", "out", "reply"),
		row(root, n.HostLink, "in", "reply"),
	}
	if got := rowsRuledIn(e, peer); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if notes := strings.Join(e.Notes, "\n"); !strings.Contains(notes, "netfilter: ") || !strings.Contains(notes, "may be missing their hook or rule") {
		t.Errorf("notes %q do not say the lookup failed", e.Notes)
	}
}

// rowsRuledIn are e's rows with the netfilter rows of the namespaces in
// ruled only: a test that sends from the machine's own namespace owns the
// rules of the namespaces it made, not the machine's firewall, whose chains
// the echo crosses too (Docker's, a distribution's).
func rowsRuledIn(e jsonEcho, ruled ...uint64) []string {
	var out []string
	for _, h := range e.Hops {
		if h.Netfilter != nil && !slices.Contains(ruled, uint64(h.Netns)) {
			continue
		}
		out = append(out, rowsWithNetfilter(jsonEcho{Hops: []jsonHop{h}})...)
	}
	return out
}

// netfilterRows are the netfilter rows of e alone.
func netfilterRows(e jsonEcho) []string {
	var out []string
	for _, h := range e.Hops {
		if nf := h.Netfilter; nf != nil {
			out = append(out, nfWant(uint64(h.Netns), h.Ifname, nf.Table+"."+nf.Chain, nf.Verdict, nf.Rule))
		}
	}
	return out
}

// TestE2ENetfilterRowNamesItsInterface: a request dropped at OUTPUT never
// reached a device, yet its netfilter row names the interface it was routed
// to, from the running system or, in a recording, from its snapshot.
func TestE2ENetfilterRowNamesItsInterface(t *testing.T) {
	topo, n := router(t)
	testenv.RequireCommands(t, "nft")
	a := inode(t, n.A)
	inNetns(t, n.A, "nft", "add table inet tpo; add chain inet tpo out { type filter hook output priority 0; policy accept; }; add rule inet tpo out icmp type echo-request drop")
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "drop.tpk")
	want := nfWant(a, "eth0", "tpo.out", "DROP", "icmp type echo-request drop")
	for _, args := range [][]string{{"--json"}, {"--json", "--record", file}} {
		res := runTool(t, n.Source, append(args, "-W", "0.2", n.Target4.String())...)
		if len(args) > 1 {
			res = runTool(t, nil, "--replay", file, "--json")
		}
		var e jsonEcho
		if err := jsonUnmarshal(res.stdout, &e); err != nil {
			t.Fatalf("%v: exit %d, %v: %q %s", args, res.code, err, res.stdout, res.stderr)
		}
		if got := strings.Join(netfilterRows(e), "\n"); res.code != 1 || got != want {
			t.Errorf("%v: exit %d, rows:\n%s\nwant:\n%s", args, res.code, got, want)
		}
		// The packet had no device yet: its drop row takes the namespace
		// from the packet's socket.
		for _, h := range e.Hops {
			if h.Dir == "drop" && uint64(h.Netns) != a {
				t.Errorf("%v: drop row in namespace %d, want %d (the sender's)", args, h.Netns, a)
			}
		}
		if e.Drop != nil && uint64(e.Drop.Netns) != a {
			t.Errorf("%v: drop in namespace %d, want %d (the sender's)", args, e.Drop.Netns, a)
		}
	}
	// The send itself fails (EPERM): the run still shows the drop, exit 1.
	res := runTool(t, n.Source, "-W", "0.2", n.Target4.String())
	wantSummary := fmt.Sprintf("no reply from %s (seq 1): the request was dropped by tpo.out (rule ", n.Target4)
	if res.code != 1 || !strings.Contains(res.stdout, wantSummary) || !strings.Contains(res.stdout, "the kernel refused to send the request") {
		t.Errorf("table: exit %d\n%s\nwant %q", res.code, res.stdout, wantSummary)
	}
}
