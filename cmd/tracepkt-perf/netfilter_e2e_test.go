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
		if len(echoes) != 1 || !strings.Contains(echoes[0].NetfilterSource, "nftrace") {
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
			row(r, "eth0", "drop", "request"),
		}
		reason := "NETFILTER_DROP"
		if !kernelReasons(t) {
			reason = "" // the location alone
		}
		if d := e.Drop; d == nil || d.Reason != reason || uint64(d.Netns) != r || d.Ifname != "eth0" || d.Hint != "" {
			t.Errorf("drop %+v, want %q in %d after eth0, without a hint (the rule says why)", d, reason, r)
		} else if err := testenv.KernelLocation(t, d.Location); err != nil {
			t.Error(err)
		}
		if got := rowsWithNetfilter(e); e.Result != "dropped" || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("result %s, rows:\n%s\nwant:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		table := runTool(t, n.Source, "-W", "500ms", target.String())
		wantSummary := fmt.Sprintf("the request was dropped by tpfilt.forward (rule %d: %s) in network namespace %s (%d)", e.Hops[3].Netfilter.RuleHandle, rule, n.R.Name, r)
		if !strings.Contains(table.stdout, wantSummary) {
			t.Errorf("table output lacks %q:\n%s", wantSummary, table.stdout)
		}
	})
}

// TestE2ERecordReplay records a run and replays it, as a user without
// privileges: the replay must print exactly what the live run printed.
func TestE2ERecordReplay(t *testing.T) {
	topo, n := vethPair(t)
	dir := openTempDir(t)
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

// openTempDir is a directory removed with t and open to an unprivileged
// user (t.TempDir's parent is not).
func openTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "tracepkt-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// runToolAs runs a copy of the tool, in dir, as another user (no privileges):
// the test binary's own directory may not be open to that user.
func runToolAs(t *testing.T, uid uint32, dir string, args ...string) toolResult {
	t.Helper()
	self := testBinary(t)
	bin, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(dir, "tracepkt-perf")
	if err := os.WriteFile(tool, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tool, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return runCmd(t, cmd)
}

// TestE2ENetfilterDockerNAT traces a ping from a docker-like host (a namespace
// of the test's own, so the real root ruleset is never touched) into its
// container through a bridge, with a docker-like nat and filter ruleset:
// every chain shows, in hook order, with its verdict and the deciding rule.
func TestE2ENetfilterDockerNAT(t *testing.T) {
	topo := testenv.Topology(t)
	testenv.RequireCommands(t, "iptables", "ip6tables")
	name := topology.UniqueName("tp")
	host, err := topo.Netns(name + "-h")
	if err != nil {
		t.Fatal(err)
	}
	ctr, err := topo.Netns(name + "-c")
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := topology.TestNets()
	gw4, c4 := netip.PrefixFrom(v4.Addr().Next(), v4.Bits()), netip.PrefixFrom(v4.Addr().Next().Next(), v4.Bits())
	gw6, c6 := netip.PrefixFrom(v6.Addr().Next(), v6.Bits()), netip.PrefixFrom(v6.Addr().Next().Next(), v6.Bits())
	for _, step := range []func() error{
		func() error { return topo.Bridge("docker0", host) },
		func() error { return topo.Veth("vethc", host, "eth0", ctr) },
		func() error { return topo.SetMaster("vethc", host, "docker0") },
		func() error { return topo.AddAddr("docker0", host, gw4) },
		func() error { return topo.AddAddr("docker0", host, gw6) },
		func() error { return topo.AddAddr("eth0", ctr, c4) },
		func() error { return topo.AddAddr("eth0", ctr, c6) },
		func() error { return topo.AddRoute(ctr, netip.MustParsePrefix("0.0.0.0/0"), gw4.Addr()) },
		func() error { return topo.AddRoute(ctr, netip.MustParsePrefix("::/0"), gw6.Addr()) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	for _, cmd := range []string{"iptables", "ip6tables"} {
		net, proto := v4.String(), "icmp"
		if cmd == "ip6tables" {
			net, proto = v6.String(), "ipv6-icmp"
		}
		for _, rule := range [][]string{
			{"-t", "nat", "-A", "POSTROUTING", "-s", net, "!", "-o", "docker0", "-j", "MASQUERADE"},
			{"-t", "nat", "-A", "OUTPUT", "-d", "192.0.2.0/24", "-j", "RETURN"},
			{"-A", "FORWARD", "-o", "docker0", "-j", "ACCEPT"},
			{"-A", "OUTPUT", "-p", proto, "-j", "ACCEPT"},
			{"-A", "INPUT", "-p", proto, "-j", "ACCEPT"},
		} {
			if cmd == "ip6tables" && rule[len(rule)-1] == "RETURN" {
				rule = []string{"-t", "nat", "-A", "OUTPUT", "-d", "2001:db8::/32", "-j", "RETURN"}
			}
			inNetns(t, host, append([]string{cmd}, rule...)...)
		}
	}
	h, c := inode(t, host), inode(t, ctr)
	families(t, c4.Addr(), c6.Addr(), func(t *testing.T, target netip.Addr) {
		icmp := "icmp"
		if target.Is6() {
			icmp = "ipv6-icmp"
		}
		echoes := traceJSON(t, topo, host, target)
		if len(echoes) != 1 {
			t.Fatalf("%d echoes", len(echoes))
		}
		want := []string{
			nfWant(h, "docker0", "nat.OUTPUT", "ACCEPT", ""),
			nfWant(h, "docker0", "filter.OUTPUT", "ACCEPT", "meta l4proto "+icmp+" counter accept"),
			nfWant(h, "docker0", "nat.POSTROUTING", "ACCEPT", ""),
			row(h, "docker0", "out", "request"),
			row(h, "vethc", "out", "request"),
			row(c, "eth0", "in", "request"),
			row(c, "eth0", "out", "reply"),
			row(h, "vethc", "in", "reply"),
			row(h, "docker0", "in", "reply"),
			nfWant(h, "docker0", "filter.INPUT", "ACCEPT", "meta l4proto "+icmp+" counter accept"),
		}
		assertRows(t, echoes[0], want)
		for _, hop := range echoes[0].Hops {
			if nf := hop.Netfilter; nf != nil && nf.Rule == "" && !nf.Policy {
				t.Errorf("%s.%s decided without a rule and not by policy", nf.Table, nf.Chain)
			}
		}
	})
}
