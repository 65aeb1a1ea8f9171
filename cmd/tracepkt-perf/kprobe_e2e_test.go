package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// requireKprobes skips on a kernel without kprobes, such as the
// development machines'; these tests run in the distro kernels of the test
// matrix, where kprobes are required and their absence is a failure.
func requireKprobes(t *testing.T) *tracefs.FS {
	t.Helper()
	testenv.RequireRoot(t)
	fs, err := tracefs.Open()
	if err == nil {
		err = fs.KprobesSupported()
	}
	if err != nil {
		if os.Getenv(vmtest.GuestEnvVar) == "1" {
			t.Fatalf("kprobes are required in the test VM: %v", err)
		}
		testenv.Elsewhere(t, "this kernel has no kprobes (%v): the kprobe tests run in make test-matrix", err)
	}
	return fs
}

// legacyRules adds iptables-legacy rules of the target's family.
func legacyRules(t *testing.T, ns *topology.Netns, target netip.Addr, rules ...[]string) {
	t.Helper()
	cmd, proto, typ := "iptables-legacy", "icmp", "--icmp-type"
	if target.Is6() {
		cmd, proto, typ = "ip6tables-legacy", "ipv6-icmp", "--icmpv6-type"
	}
	for _, r := range rules {
		args := []string{cmd}
		for _, a := range r {
			switch a {
			case "PROTO":
				a = proto
			case "TYPE":
				a = typ
			}
			args = append(args, a)
		}
		inNetns(t, ns, args...)
	}
}

func traceDrop(t *testing.T, topo *topology.Topology, n *topology.RouterNet, target netip.Addr, args ...string) jsonEcho {
	t.Helper()
	if err := topo.CheckOwnRoute(n.Source, target); err != nil {
		t.Fatal(err)
	}
	res := runTool(t, n.Source, append([]string{"--json", "-W", "500ms", target.String()}, args...)...)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1 (no reply); stderr:\n%s", res.code, res.stderr)
	}
	var e jsonEcho
	if err := jsonUnmarshal(res.stdout, &e); err != nil {
		t.Fatal(err)
	}
	return e
}

func assertRows(t *testing.T, e jsonEcho, want []string) {
	t.Helper()
	if got := rowsWithNetfilter(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// legacyArgs is what the tool must say of the arguments of an
// iptables-legacy table function (ipt_do_table, module ip_tables): their
// order for the running kernel's version (it changed in 5.16), and where it
// came from: the module's BTF when /sys/kernel/btf has it (5.11 and later),
// else the kernel version. Its module must be loaded.
func legacyArgs(t *testing.T, fn, module string) (params, from string, fromVersion bool) {
	t.Helper()
	params = "(priv, skb, state)"
	if !testenv.KernelAtLeast(t, 5, 16) {
		params = "(skb, state, table)"
	}
	if _, err := os.Stat("/sys/kernel/btf/" + module); err == nil {
		return params, "from the BTF of module " + module, false
	}
	return params, "from the kernel version", true
}

// TestE2EKprobeLegacy traces iptables-legacy tables, which only kprobes see:
// an ACCEPT in the source's OUTPUT and a DROP in the router's FORWARD. The
// function's argument order is the kernel's: (skb, state, table) before 5.16,
// where, before 5.11, no module BTF says so and the kernel version does.
func TestE2EKprobeLegacy(t *testing.T) {
	requireKprobes(t)
	topo, n := router(t)
	a, r := inode(t, n.A), inode(t, n.R)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		legacyRules(t, n.A, target, []string{"-A", "OUTPUT", "-p", "PROTO", "-j", "ACCEPT"})
		legacyRules(t, n.R, target, []string{"-A", "FORWARD", "-p", "PROTO", "TYPE", "echo-request", "-j", "DROP"})
		fn, module := "ipt_do_table", "ip_tables"
		if target.Is6() {
			fn, module = "ip6t_do_table", "ip6_tables"
		}
		params, from, fromVersion := legacyArgs(t, fn, module)
		check := runTool(t, nil, "--check")
		if want := fmt.Sprintf("kprobe %-17s ok     arguments %s %s", fn, params, from); !strings.Contains(check.stdout, want) {
			t.Errorf("--check does not say %q:\n%s", want, check.stdout)
		}
		for _, mode := range []string{"kprobe", "auto"} {
			e := traceDrop(t, topo, n, target, "--netfilter", mode)
			note := fn + params + ": argument order taken from the kernel version"
			if hasNote := slices.ContainsFunc(e.Notes, func(s string) bool { return strings.Contains(s, note) }); hasNote != fromVersion {
				t.Errorf("%s: notes %q: a note %q is %v, want %v", mode, e.Notes, note, hasNote, fromVersion)
			}
			assertRows(t, e, []string{
				nfWant(a, "eth0", "filter.OUTPUT", "ACCEPT", ""),
				row(a, "eth0", "out", "request"),
				row(r, "eth0", "in", "request"),
				nfWant(r, "eth0", "filter.FORWARD", "DROP", ""),
				row(r, "eth0", "drop", "request"),
			})
			for _, h := range e.Hops {
				if h.Netfilter != nil && (h.Netfilter.Source != "kprobe" || h.KtimeNs == 0) {
					t.Errorf("%s: netfilter row %+v: want source kprobe with a kernel time", mode, *h.Netfilter)
				}
			}
		}
	})
}

// TestE2EKprobeNftables traces an nftables chain through nft_do_chain. On a
// kernel whose modules have no BTF (before 5.11), nft_do_chain's structs are
// unknown: the run leaves it out and says so under the table.
func TestE2EKprobeNftables(t *testing.T) {
	requireKprobes(t)
	topo, n := router(t)
	inNetns(t, n.R, "nft", "add table inet tpfilt; add chain inet tpfilt forward { type filter hook forward priority 0; }; "+
		"add rule inet tpfilt forward icmp type echo-request drop; add rule inet tpfilt forward icmpv6 type echo-request drop")
	a, r := inode(t, n.A), inode(t, n.R)
	_, noBTF := os.Stat("/sys/kernel/btf/nf_tables")
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		e := traceDrop(t, topo, n, target, "--netfilter", "kprobe")
		if noBTF != nil {
			// No netfilter row; the drop probe still sees the free.
			assertRows(t, e, []string{row(a, "eth0", "out", "request"), row(r, "eth0", "in", "request"), row(r, "eth0", "drop", "request")})
			note := "netfilter: no kprobe on nft_do_chain: its module has no BTF on this kernel"
			if !slices.ContainsFunc(e.Notes, func(s string) bool { return strings.HasPrefix(s, note) }) {
				t.Errorf("notes %q: none says %q", e.Notes, note)
			}
			check := runTool(t, nil, "--check")
			if want := "kprobe nft_do_chain      no     nft_do_chain (module nf_tables): its module has no BTF"; !strings.Contains(check.stdout, want) {
				t.Errorf("--check does not say %q:\n%s", want, check.stdout)
			}
			return
		}
		assertRows(t, e, []string{
			row(a, "eth0", "out", "request"),
			row(r, "eth0", "in", "request"),
			nfWant(r, "eth0", "tpfilt.forward", "DROP", ""),
			row(r, "eth0", "drop", "request"),
		})
		if nf := e.Hops[2].Netfilter; nf == nil || nf.Family != "inet" || nf.Hook != "FORWARD" {
			t.Errorf("netfilter row %+v: want family inet, hook FORWARD", nf)
		}
	})
}

// TestE2EKprobeCleanup kills a run with SIGKILL, which leaves its kprobes
// behind, and checks that the next run sweeps them.
func TestE2EKprobeCleanup(t *testing.T) {
	fs := requireKprobes(t)
	topo, n := vethPair(t)
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	self := testBinary(t)
	cmd := exec.Command(self, "--netfilter", "kprobe", "-c", "100", "-i", "50ms", n.Target4.String())
	cmd.Env = append(os.Environ(), asToolEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := bufio.NewScanner(out)
	for s.Scan() && !strings.Contains(s.Text(), "reply from") {
	}
	// Lines read "p:group/event symbol", or "r<maxactive>:..." for return probes.
	group := regexp.MustCompile(fmt.Sprintf(`^[pr][0-9]*:tracepkt_%d_[0-9a-f]{8}/`, cmd.Process.Pid))
	ours := func() (n int, all []string) {
		b, err := os.ReadFile(filepath.Join(fs.Root, "kprobe_events"))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if strings.Contains(l, "tracepkt_") {
				all = append(all, l)
				if group.MatchString(l) {
					n++
				}
			}
		}
		return n, all
	}
	if n, all := ours(); n < 2 || n != len(all) {
		t.Errorf("while running: %d probes in the run's own group, of tracepkt probes %q", n, all)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if n, _ := ours(); n == 0 {
		t.Fatal("SIGKILL left no probe behind: nothing for the sweep to do")
	}
	res := runTool(t, n.Source, "--netfilter", "kprobe", n.Target4.String())
	if res.code != 0 {
		t.Fatalf("second run: exit %d\n%s", res.code, res.stderr)
	}
	if _, all := ours(); len(all) != 0 {
		t.Errorf("after the second run, kprobe_events still holds %q", all)
	}
	if b, _ := os.ReadFile(filepath.Join(fs.Root, "kprobe_events")); bytes.Contains(b, []byte("tracepkt_")) {
		t.Errorf("kprobe_events: %s", b)
	}
}

// netem delays what dev sends in ns (this namespace when unnamed) by 1 ms:
// the packet then leaves from a timer's softirq, which on an idle CPU runs
// with no task of its own (pid 0), as a NIC's interrupt would.
func netem(t *testing.T, ns *topology.Netns, dev string) {
	t.Helper()
	args := []string{"tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", "1ms"}
	if ns.Name != "" {
		inNetns(t, ns, args...)
		return
	}
	testenv.RequireCommands(t, "tc")
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}

// holdPatched keeps patched, from now until the test's end, the kernel code
// that the tool's attaching and detaching would patch: each tracepoint it
// attaches is enabled in two trace instances of the test's own, so that one
// probe more or less changes neither the tracepoint's static key nor its
// static call, and a kprobe of the test's own is enabled on each netfilter
// function, so that the tool's kprobes join it without arming anything. A
// flood started after this call crosses no code while it changes. Under TCG,
// the 6.12 guest once died of an int3 it could not account for, in
// sk_skb_reason_drop at skb:kfree_skb's jump label, while the tool enabled
// that tracepoint with the flood freeing a thousand packets a second there.
func holdPatched(t *testing.T, fs *tracefs.FS) {
	t.Helper()
	kprobes, err := fs.NewKprobeGroup()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := kprobes.Close(); err != nil {
			t.Error(err)
		}
	})
	var events [][2]string
	for _, p := range decode.Probes() {
		group, event := p.Tracepoint()
		events = append(events, [2]string{group, event})
	}
	var kevents [][2]string
	for _, p := range decode.NetfilterProbes() {
		fn := p.Kprobe()
		if _, err := kprobes.Add(fn, fn, false); errors.Is(err, tracefs.ErrNoSymbol) {
			continue // the tool has none there either
		} else if err != nil {
			t.Fatal(err)
		}
		kevents = append(kevents, [2]string{kprobes.Group, fn})
	}
	for i := range 2 {
		dir := filepath.Join(fs.Root, "instances", fmt.Sprintf("%s-hold%d", kprobes.Group, i))
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		var enabled []string
		t.Cleanup(func() {
			for _, e := range enabled {
				if err := os.WriteFile(e, []byte("0"), 0); err != nil {
					t.Error(err)
				}
			}
			if err := os.Remove(dir); err != nil {
				t.Error(err)
			}
		})
		if err := os.WriteFile(filepath.Join(dir, "buffer_size_kb"), []byte("4"), 0); err != nil {
			t.Fatal(err)
		}
		hold := events
		if i == 0 {
			hold = append(hold, kevents...)
		}
		for _, ev := range hold {
			e := filepath.Join(dir, "events", ev[0], ev[1], "enable")
			if err := os.WriteFile(e, []byte("1"), 0); err != nil {
				t.Fatal(err)
			}
			enabled = append(enabled, e)
		}
	}
}

// TestE2EKprobeConcurrentVerdicts traces echoes through an iptables-legacy
// chain that accepts them after 1000 rules, on one CPU, while on the other
// CPU a flood of unrelated echoes crosses ipt_do_table in another namespace
// and is dropped. Both leave from softirqs of idle CPUs, where the current task is
// pid 0 on either CPU: a pending record keyed by task would take the
// flood's DROP. Every row of ours must keep its own verdict, with no row
// more or less.
func TestE2EKprobeConcurrentVerdicts(t *testing.T) {
	fs := requireKprobes(t)
	testenv.RequireCommands(t, "taskset", "ping", "tc", "iptables-legacy", "iptables-legacy-restore")
	topo, n := router(t)
	// Rules that match nothing before the ACCEPT make each of our calls long
	// enough (about a millisecond under emulation) for the flood's calls to
	// return meanwhile.
	rules := "*filter\n"
	for i := range 1000 {
		rules += fmt.Sprintf("-A FORWARD -s 192.0.2.%d/32 -j DROP\n", i%256)
	}
	rules += "-A FORWARD -p icmp -j ACCEPT\nCOMMIT\n"
	restore := exec.Command("ip", "netns", "exec", n.R.Name, "iptables-legacy-restore")
	restore.Stdin = strings.NewReader(rules)
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("iptables-legacy-restore: %v\n%s", err, out)
	}
	netem(t, n.A, "eth0")
	netem(t, n.B, "eth0")
	floodTopo, f := vethPair(t)
	legacyRules(t, f.Netns, f.Target4, []string{"-A", "INPUT", "-p", "PROTO", "TYPE", "echo-request", "-j", "DROP"})
	netem(t, f.Root, f.HostLink)
	if err := floodTopo.CheckOwnRoute(f.Source, f.Target4); err != nil {
		t.Fatal(err)
	}
	holdPatched(t, fs)
	flood := exec.Command("taskset", "-c", "1", "ping", "-q", "-i", "0.001", f.Target4.String())
	if err := flood.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flood.Process.Kill(); flood.Wait() })

	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	const count = 30
	echoes := echoesOf(t, runCmd(t, exec.Command("ip", "netns", "exec", n.Source.Name, "taskset", "-c", "0", testBinary(t),
		"--json", "--netfilter", "kprobe", "-W", "3s", "-i", "0", "-c", fmt.Sprint(count), n.Target4.String())))
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	want := []string{
		row(a, "eth0", "out", "request"),
		row(r, "eth0", "in", "request"),
		nfWant(r, "eth0", "filter.FORWARD", "ACCEPT", ""),
		row(r, "eth1", "out", "request"),
		row(b, "eth0", "in", "request"),
		row(b, "eth0", "out", "reply"),
		row(r, "eth1", "in", "reply"),
		nfWant(r, "eth1", "filter.FORWARD", "ACCEPT", ""),
		row(r, "eth0", "out", "reply"),
		row(a, "eth0", "in", "reply"),
	}
	if len(echoes) != count {
		t.Fatalf("%d echoes, want %d", len(echoes), count)
	}
	for _, e := range echoes {
		if e.Result != "reply" || e.LostSamples != 0 {
			t.Errorf("echo %d: result %q, lost %d", e.Seq, e.Result, e.LostSamples)
		}
		assertRows(t, e, want)
	}
	// The flood did cross its chain meanwhile.
	out := inNetns(t, f.Netns, "iptables-legacy", "-L", "INPUT", "-v", "-n", "-x")
	if !regexp.MustCompile(`(?m)^\s*[1-9][0-9]*\s+[0-9]+\s+DROP`).MatchString(out) {
		t.Errorf("the flood dropped nothing:\n%s", out)
	}
}
