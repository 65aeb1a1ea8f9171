package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// inNetns runs a command inside a namespace the test created.
func inNetns(t *testing.T, ns *topology.Netns, args ...string) string {
	t.Helper()
	testenv.RequireCommands(t, "ip", args[0])
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %v\n%s", ns.Name, args, err, out)
	}
	return string(out)
}

// ruleset is a namespace's whole nftables ruleset, with handles.
func ruleset(t *testing.T, ns *topology.Netns) string {
	t.Helper()
	if ns.Name == "" {
		out, err := exec.Command("nft", "-a", "-s", "list", "ruleset").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list ruleset: %v\n%s", err, out)
		}
		return string(out)
	}
	return inNetns(t, ns, "nft", "-a", "-s", "list", "ruleset")
}

// nfRow is what the tests assert of a netfilter row.
func nfWant(netns uint64, ifname, chain, verdict, rule string) string {
	return fmt.Sprintf("%d %s netfilter %s %s %q", netns, ifname, chain, verdict, rule)
}

func rowsWithNetfilter(e jsonEcho) []string {
	var out []string
	for _, h := range e.Hops {
		if nf := h.Netfilter; nf != nil {
			out = append(out, nfWant(uint64(h.Netns), h.Ifname, nf.Table+"."+nf.Chain, nf.Verdict, nf.Rule))
			continue
		}
		out = append(out, row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
	}
	return out
}

// routerWithRules builds A -> R -> B with iptables-nft rules in A and B and
// an nftables forward chain in R, and checks that tracing leaves every
// ruleset as it was.
// rRules are nft commands for R's forward chain, applied before the rulesets
// are taken as the reference.
func routerWithRules(t *testing.T, rRules string) (*topology.Topology, *topology.RouterNet) {
	topo, n := router(t)
	testenv.RequireCommands(t, "nft", "iptables", "ip6tables")
	for _, cmd := range [][]string{{"iptables", "-A", "OUTPUT", "-p", "icmp", "-j", "ACCEPT"}, {"ip6tables", "-A", "OUTPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"}} {
		inNetns(t, n.A, cmd...)
	}
	for _, cmd := range [][]string{{"iptables", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT"}, {"ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"}} {
		inNetns(t, n.B, cmd...)
	}
	inNetns(t, n.R, "nft", "add table inet tpfilt; add chain inet tpfilt forward { type filter hook forward priority 0; policy accept; }"+rRules)
	root := &topology.Netns{}
	before := map[*topology.Netns]string{}
	for _, ns := range []*topology.Netns{root, n.A, n.R, n.B} {
		before[ns] = ruleset(t, ns)
	}
	t.Cleanup(func() {
		for ns, want := range before {
			if got := ruleset(t, ns); got != want {
				t.Errorf("ruleset of %q changed:\n%s\nwas:\n%s", ns.Name, got, want)
			}
		}
	})
	return topo, n
}

func TestE2ENetfilterAcceptPath(t *testing.T) {
	topo, n := routerWithRules(t, "")
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		table, icmp := "filter", "icmp"
		if target.Is6() {
			icmp = "ipv6-icmp"
		}
		echoes := traceJSON(t, topo, n.Source, target)
		if len(echoes) != 1 || echoes[0].NetfilterSource != "nftrace" {
			t.Fatalf("echoes %+v", echoes)
		}
		want := []string{
			nfWant(a, "eth0", table+".OUTPUT", "ACCEPT", "meta l4proto "+icmp+" counter accept"),
			row(a, "eth0", "out", "request"),
			row(r, "eth0", "in", "request"),
			nfWant(r, "eth0", "tpfilt.forward", "ACCEPT", ""),
			row(r, "eth1", "out", "request"),
			row(b, "eth0", "in", "request"),
			nfWant(b, "eth0", table+".INPUT", "ACCEPT", "meta l4proto "+icmp+" counter accept"),
			row(b, "eth0", "out", "reply"),
			row(r, "eth1", "in", "reply"),
			nfWant(r, "eth1", "tpfilt.forward", "ACCEPT", ""),
			row(r, "eth0", "out", "reply"),
			row(a, "eth0", "in", "reply"),
		}
		if got := rowsWithNetfilter(echoes[0]); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

func TestE2ENetfilterDropInForward(t *testing.T) {
	topo, n := routerWithRules(t, "; add rule inet tpfilt forward icmp type echo-request drop; add rule inet tpfilt forward icmpv6 type echo-request drop")
	a, r := inode(t, n.A), inode(t, n.R)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		icmp, rule := "icmp", "icmp type echo-request drop"
		if target.Is6() {
			icmp, rule = "ipv6-icmp", "icmpv6 type echo-request drop"
		}
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		res := runTool(t, n.Source, "--json", "-W", "500ms", target.String())
		if res.code != 1 {
			t.Fatalf("exit %d, want 1; stderr:\n%s", res.code, res.stderr)
		}
		var e jsonEcho
		if err := jsonUnmarshal(res.stdout, &e); err != nil {
			t.Fatal(err)
		}
		want := []string{
			nfWant(a, "eth0", "filter.OUTPUT", "ACCEPT", "meta l4proto "+icmp+" counter accept"),
			row(a, "eth0", "out", "request"),
			row(r, "eth0", "in", "request"),
			nfWant(r, "eth0", "tpfilt.forward", "DROP", rule),
		}
		if got := rowsWithNetfilter(e); e.Result != "timeout" || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("result %s, rows:\n%s\nwant:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		table := runTool(t, n.Source, "-W", "500ms", target.String())
		wantSummary := fmt.Sprintf("the request was dropped by tpfilt.forward (rule %d: %s) in network namespace %d", e.Hops[3].Netfilter.RuleHandle, rule, r)
		if !strings.Contains(table.stdout, wantSummary) {
			t.Errorf("table output lacks %q:\n%s", wantSummary, table.stdout)
		}
	})
}

// TestE2ERecordReplay records a run and replays it, as a user without
// privileges: the replay must print exactly what the live run printed.
func TestE2ERecordReplay(t *testing.T) {
	topo, n := vethPair(t)
	// Open to the unprivileged replaying user (t.TempDir's parent is not).
	dir, err := os.MkdirTemp("", "tracepkt-replay-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, mode := range [][]string{nil, {"--json"}} {
		file := filepath.Join(dir, fmt.Sprintf("run%d.tpk", len(mode)))
		if err := topo.CheckOwnRoute(n.Source, n.Target6); err != nil {
			t.Fatal(err)
		}
		live := runTool(t, n.Source, append([]string{"--record", file, "-c", "2", "-i", "10ms", n.Target6.String()}, mode...)...)
		if live.code != 0 {
			t.Fatalf("live: exit %d\n%s", live.code, live.stderr)
		}
		if err := os.Chmod(file, 0o644); err != nil {
			t.Fatal(err)
		}
		replayed := runToolAs(t, 65534, dir, append([]string{"--replay", file}, mode...)...)
		if replayed.code != 0 || replayed.stdout != live.stdout {
			t.Errorf("replay (exit %d, stderr %q):\n%s\nlive:\n%s", replayed.code, replayed.stderr, replayed.stdout, live.stdout)
		}
	}
	// Writing to a path that cannot be written fails before anything is attached.
	res := runTool(t, n.Source, "--record", "/nonexistent/dir/x.tpk", n.Target4.String())
	if res.code != 2 || !strings.Contains(res.stderr, "record: open /nonexistent/dir/x.tpk") || res.stdout != "" {
		t.Errorf("unwritable recording: exit %d, stderr %q, stdout %q", res.code, res.stderr, res.stdout)
	}
}

// runToolAs runs a copy of the tool, in dir, as another user (no privileges):
// the test binary's own directory may not be open to that user.
func runToolAs(t *testing.T, uid uint32, dir string, args ...string) toolResult {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(dir, "tracepkt-perf")
	if err := os.WriteFile(tool, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, args...)
	cmd.Env = append(os.Environ(), asToolEnv+"=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		t.Fatalf("run as %d: %v", uid, err)
	}
	return toolResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
}
