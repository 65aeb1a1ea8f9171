package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// The test binary doubles as the tool: with this variable set it runs main,
// so end-to-end tests can run it inside `ip netns exec` and in the test VM.
const asToolEnv = "TRACEPKT_PERF_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asToolEnv) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// testBinary is the path of this test binary, which runs as the tool.
func testBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return self
}

type toolResult struct {
	stdout, stderr string
	code           int
}

// runTool runs the tool with args inside netns (this namespace when nil).
func runTool(t *testing.T, netns *topology.Netns, args ...string) toolResult {
	t.Helper()
	self := testBinary(t)
	argv := append([]string{self}, args...)
	if netns != nil && netns.Name != "" {
		testenv.RequireCommands(t, "ip")
		argv = append([]string{"ip", "netns", "exec", netns.Name}, argv...)
	}
	return runCmd(t, exec.Command(argv[0], argv[1:]...))
}

// runCmd runs the tool's command line, in cmd.Env when set, and collects
// what it printed.
func runCmd(t *testing.T, cmd *exec.Cmd) toolResult {
	t.Helper()
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, asToolEnv+"=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := toolResult{stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()}
	if err != nil && res.code < 0 {
		t.Fatalf("run %v: %v", cmd.Args, err)
	}
	return res
}

// startTool starts the tool in this namespace with its stdout on a pipe.
func startTool(t *testing.T, args ...string) (*exec.Cmd, io.ReadCloser, *bytes.Buffer) {
	t.Helper()
	self := testBinary(t)
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), asToolEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, stdout, &stderr
}

// readUntil reads r until what was read contains want.
func readUntil(t *testing.T, r io.Reader, want string, stderr *bytes.Buffer) string {
	t.Helper()
	var out []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(out, []byte(want)) {
		n, err := r.Read(buf)
		if err != nil {
			t.Fatalf("output ended before %q: %v\n%s%s", want, err, out, stderr.String())
		}
		out = append(out, buf[:n]...)
	}
	return string(out)
}

// traceJSON traces count echoes to target from inside src and returns them.
func traceJSON(t *testing.T, topo *topology.Topology, src *topology.Netns, target netip.Addr, extra ...string) []jsonEcho {
	t.Helper()
	if err := topo.CheckOwnRoute(src, target); err != nil {
		t.Fatalf("not tracing: %v", err)
	}
	return echoesOf(t, runTool(t, src, append([]string{"--json", "-W", "3s", "-i", "20ms", target.String()}, extra...)...))
}

// echoesOf decodes what a --json run printed; it must have exited 0.
func echoesOf(t *testing.T, res toolResult) []jsonEcho {
	t.Helper()
	if res.code != 0 {
		t.Fatalf("exit %d, stderr:\n%s\nstdout:\n%s", res.code, res.stderr, res.stdout)
	}
	return decodeEchoes(t, res.stdout)
}

// decodeEchoes reads the JSON objects --json printed, one per echo.
func decodeEchoes(t *testing.T, stdout string) []jsonEcho {
	t.Helper()
	var echoes []jsonEcho
	dec := json.NewDecoder(strings.NewReader(stdout))
	for dec.More() {
		var e jsonEcho
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("decode %q: %v", stdout, err)
		}
		echoes = append(echoes, e)
	}
	return echoes
}

func jsonUnmarshal(s string, v any) error {
	return json.NewDecoder(strings.NewReader(s)).Decode(v)
}

// row is what an end-to-end test asserts of each hop.
func row(netns uint64, ifname, dir, typ string) string {
	return fmt.Sprintf("%d %s %s %s", netns, ifname, dir, typ)
}

// rows are the device rows of e: what the device-path tests assert. Netfilter
// and drop rows depend on the host's own firewall (Docker's iptables, ufw),
// and the tests of those assert them on their own.
func rows(e jsonEcho) []string {
	var out []string
	for _, h := range e.Hops {
		if h.Probe == "net_dev_queue" || h.Probe == "netif_receive_skb" {
			out = append(out, row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
		}
	}
	return out
}

// wantDeviceRows checks that the device rows of e are want, in order.
func wantDeviceRows(t *testing.T, e jsonEcho, want ...string) {
	t.Helper()
	if got := rows(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func assertJourney(t *testing.T, e jsonEcho, target netip.Addr, want []string) {
	t.Helper()
	if e.Result != "reply" || e.Target != target.String() || e.LostSamples != 0 || e.RTTNs <= 0 {
		t.Errorf("echo %d: result %q target %q lost %d rtt %d", e.Seq, e.Result, e.Target, e.LostSamples, e.RTTNs)
	}
	// The copies the kernel frees after delivering them are not drops.
	if e.Drop != nil || e.ICMPError != nil || e.Hint != "" {
		t.Errorf("echo %d got its reply, yet drop %+v, icmp_error %+v, hint %q", e.Seq, e.Drop, e.ICMPError, e.Hint)
	}
	got := rows(e)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("echo %d rows:\n%s\nwant:\n%s", e.Seq, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for i, h := range e.Hops {
		if i > 0 && h.TNs < e.Hops[i-1].TNs {
			t.Errorf("hop %d at %dns is before hop %d", i, h.TNs, i-1)
		}
		dst := h.Dst
		if h.Type == "reply" {
			dst = h.Src
		}
		if dst != target.String() {
			t.Errorf("hop %d: %s -> %s, want the echo to be to %s", i, h.Src, h.Dst, target)
		}
	}
}

// inode reads a namespace's inode through a process living in it, not
// through the topology code that made it.
func inode(t *testing.T, ns *topology.Netns) uint64 {
	t.Helper()
	if ns.Name == "" {
		cmd := exec.Command("sleep", "30")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return testenv.NetnsInodeOfPid(t, cmd.Process.Pid)
	}
	cmd := testenv.StartInNetns(t, ns.Name, "sleep", "30")
	return testenv.NetnsInodeOfPid(t, cmd.Process.Pid)
}

// vethPair builds the root namespace joined to a new one, removed with t.
func vethPair(t *testing.T) (*topology.Topology, *topology.VethPairNet) {
	t.Helper()
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	n, err := topo.VethPair(topology.UniqueName("tp"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	return topo, n
}

// dockerBridge builds a bridge in this namespace and a container namespace
// behind a veth port, removed with t.
func dockerBridge(t *testing.T) (*topology.Topology, *topology.DockerBridgeNet) {
	t.Helper()
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	name := topology.UniqueName("tp")
	n, err := topo.DockerBridge(topology.DockerBridgeConfig{Bridge: name + "b", HostVeth: name + "h", Netns: name, V4: v4, V6: v6})
	if err != nil {
		t.Fatal(err)
	}
	return topo, n
}

// router builds A -> R -> B, removed with t.
func router(t *testing.T) (*topology.Topology, *topology.RouterNet) {
	t.Helper()
	v4, v6 := topology.TestNets()
	return routerNamed(t, topology.UniqueName("tp"), v4, v6)
}

// routerNamed builds A -> R -> B with the given prefix and networks, removed with t.
func routerNamed(t *testing.T, prefix string, v4, v6 netip.Prefix) (*topology.Topology, *topology.RouterNet) {
	t.Helper()
	topo := testenv.Topology(t)
	n, err := topo.Router(prefix, v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	return topo, n
}

// nthPrefix is the i-th address of p's network, with p's length.
func nthPrefix(p netip.Prefix, i int) netip.Prefix {
	a := p.Masked().Addr()
	for range i {
		a = a.Next()
	}
	return netip.PrefixFrom(a, p.Bits())
}

func families(t *testing.T, target4, target6 netip.Addr, f func(t *testing.T, target netip.Addr)) {
	t.Run("ipv4", func(t *testing.T) { f(t, target4) })
	t.Run("ipv6", func(t *testing.T) { f(t, target6) })
}

// TestE2EVethPair traces through a veth pair with each way of attaching the
// device probes: BTF-typed and plain raw tracepoints, and the perf
// tracepoint event that is the fallback. The target's namespace has a
// firewall of its own, as a host with Docker's iptables or ufw has: its
// verdicts add netfilter rows, which change nothing of the device rows.
func TestE2EVethPair(t *testing.T) {
	topo, n := vethPair(t)
	root, peer := inode(t, n.Root), inode(t, n.Netns)
	testenv.RequireCommands(t, "nft")
	inNetns(t, n.Netns, "nft", "add table inet tpfw; add chain inet tpfw in { type filter hook input priority 0; policy accept; }; "+
		"add rule inet tpfw in meta l4proto { icmp, ipv6-icmp } counter accept; add chain inet tpfw out { type filter hook output priority 0; policy accept; }")
	for _, attach := range []string{"auto", "tp_btf", "raw_tp", "perf"} {
		t.Run(attach, func(t *testing.T) {
			families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
				echoes := traceJSON(t, topo, n.Source, target, "-c", "2", "--attach", attach)
				if len(echoes) != 2 {
					t.Fatalf("%d echoes, want 2", len(echoes))
				}
				for _, e := range echoes {
					assertJourney(t, e, target, []string{
						row(root, n.HostLink, "out", "request"),
						row(peer, "eth0", "in", "request"),
						row(peer, "eth0", "out", "reply"),
						row(root, n.HostLink, "in", "reply"),
					})
					if len(e.Hops) == 4 {
						t.Errorf("echo %d: no netfilter row from the namespace's firewall", e.Seq)
					}
				}
			})
		})
	}
}

// TestE2ECheckAttach: --check says how each device probe attaches, under
// each --attach.
func TestE2ECheckAttach(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct{ attach, want string }{
		{"auto", "tp_btf + BPF program load"},
		{"raw", "tp_btf + BPF program load"},
		{"raw_tp", "raw_tp + BPF program load"},
		{"perf", "perf + BPF program load"},
	} {
		res := runTool(t, nil, "--check", "--attach", tc.attach)
		if res.code != 0 {
			t.Fatalf("--check --attach %s: exit %d\n%s%s", tc.attach, res.code, res.stdout, res.stderr)
		}
		for _, probe := range []string{"net:net_dev_queue", "net:netif_receive_skb", "skb:kfree_skb"} {
			if !strings.Contains(res.stdout, probe) || !lineHas(res.stdout, probe, tc.want) {
				t.Errorf("--check --attach %s: no line %q with %q:\n%s", tc.attach, probe, tc.want, res.stdout)
			}
		}
	}
}

// lineHas reports whether a line of out holds both a and b.
func lineHas(out, a, b string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, a) && strings.Contains(l, b) {
			return true
		}
	}
	return false
}

func TestE2EDockerBridge(t *testing.T) {
	topo, n := dockerBridge(t)
	root, ctr := inode(t, n.Root), inode(t, n.Container)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		echoes := traceJSON(t, topo, n.Source, target)
		if len(echoes) != 1 {
			t.Fatalf("%d echoes, want 1", len(echoes))
		}
		assertJourney(t, echoes[0], target, []string{
			row(root, n.Bridge, "out", "request"),
			row(root, n.HostVeth, "out", "request"),
			row(ctr, "eth0", "in", "request"),
			row(ctr, "eth0", "out", "reply"),
			row(root, n.HostVeth, "in", "reply"),
			row(root, n.Bridge, "in", "reply"),
		})
	})
}

// TestE2ERouter runs the tool inside namespace A (under `ip netns exec`,
// which hides the host's tracefs: the tool must mount its own).
func TestE2ERouter(t *testing.T) {
	topo, n := router(t)
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		echoes := traceJSON(t, topo, n.Source, target)
		if len(echoes) != 1 {
			t.Fatalf("%d echoes, want 1", len(echoes))
		}
		assertJourney(t, echoes[0], target, []string{
			row(a, "eth0", "out", "request"),
			row(r, "eth0", "in", "request"),
			row(r, "eth1", "out", "request"),
			row(b, "eth0", "in", "request"),
			row(b, "eth0", "out", "reply"),
			row(r, "eth1", "in", "reply"),
			row(r, "eth0", "out", "reply"),
			row(a, "eth0", "in", "reply"),
		})
	})
}

// TestE2ENoRoute traces from a namespace with nothing but lo: the echo cannot
// leave it, and the tool must say so and exit 2.
func TestE2ENoRoute(t *testing.T) {
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("tp"))
	if err != nil {
		t.Fatal(err)
	}
	v4, v6 := topology.TestNets()
	for _, target := range []netip.Addr{v4.Addr().Next(), v6.Addr().Next()} {
		res := runTool(t, ns, target.String())
		want := fmt.Sprintf("tracepkt-perf: no route to %s\n", target)
		if res.code != 2 || res.stderr != want || res.stdout != "" {
			t.Errorf("%s: exit %d, stderr %q, stdout %q; want exit 2, stderr %q", target, res.code, res.stderr, res.stdout, want)
		}
	}
}

// TestE2EParallelRuns traces the same target from two runs at once: each
// must see exactly its own echoes, with its own id.
func TestE2EParallelRuns(t *testing.T) {
	topo, n := vethPair(t)
	root, peer := inode(t, n.Root), inode(t, n.Netns)
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil || n.Source.Name != "" {
		t.Fatalf("not tracing from %v: %v", n.Source, err)
	}
	// The runs' goroutines only run them: every check, and every t.Fatal,
	// happens here once both are done.
	cmds := make([]*exec.Cmd, 2)
	outs := make([]bytes.Buffer, len(cmds))
	errs := make([]error, len(cmds))
	var wg sync.WaitGroup
	for i := range cmds {
		cmds[i] = exec.Command(testBinary(t), "--json", "-W", "3s", "-i", "20ms", "-c", "5", n.Target4.String())
		cmds[i].Env = append(os.Environ(), asToolEnv+"=1")
		cmds[i].Stdout = &outs[i]
		wg.Go(func() { errs[i] = cmds[i].Run() })
	}
	wg.Wait()
	var results [][]jsonEcho
	for i := range cmds {
		if errs[i] != nil {
			t.Fatalf("run %d: %v\n%s", i, errs[i], outs[i].String())
		}
		echoes := decodeEchoes(t, outs[i].String())
		if len(echoes) != 5 {
			t.Fatalf("run %d: %d echoes, want 5", i, len(echoes))
		}
		results = append(results, echoes)
	}
	if results[0][0].EchoID == results[1][0].EchoID {
		t.Fatalf("both runs used echo id %d", results[0][0].EchoID)
	}
	for _, echoes := range results {
		for _, e := range echoes {
			if e.EchoID != echoes[0].EchoID {
				t.Errorf("echo id changed within a run: %d then %d", echoes[0].EchoID, e.EchoID)
			}
			assertJourney(t, e, n.Target4, []string{
				row(root, n.HostLink, "out", "request"),
				row(peer, "eth0", "in", "request"),
				row(peer, "eth0", "out", "reply"),
				row(root, n.HostLink, "in", "reply"),
			})
		}
	}
}

// assertDemoRemoved checks that a demo left no link and no namespace behind.
func assertDemoRemoved(t *testing.T) {
	t.Helper()
	if _, err := os.Stat("/sys/class/net/" + topology.DemoBridge); err == nil {
		t.Errorf("demo bridge %s still exists", topology.DemoBridge)
	}
	entries, _ := os.ReadDir("/run/netns")
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), topology.DemoBridge+"-") {
			t.Errorf("demo namespace %s still exists", e.Name())
		}
	}
}

// TestE2EDemoReadOnlyRun runs the demo where /run/netns is read-only: in a
// mount namespace of its own (and a network namespace of its own, so its
// bridge is nobody's business), with an empty directory bound read-only
// over /run/netns. It fails for that reason, saying so, not because its
// own bridge is "in use by" itself.
func TestE2EDemoReadOnlyRun(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "unshare", "mount")
	cmd := exec.Command("unshare", "--mount", "--net", "sh", "-c",
		`mount --bind -o ro "$1" /run/netns && exec "$0" --demo`, testBinary(t), t.TempDir())
	res := runCmd(t, cmd)
	const want = "tracepkt-perf: demo: build topology: create netns " + topology.DemoBridge + "-"
	if res.code != 2 || res.stdout != "" || strings.Count(res.stderr, "\n") != 1 || !strings.HasPrefix(res.stderr, want) ||
		!strings.Contains(res.stderr, "/run/netns is read-only") {
		t.Errorf("demo with /run/netns read-only: exit %d, stdout %q, stderr %q; want exit 2 and one line %q... saying /run/netns is read-only",
			res.code, res.stdout, res.stderr, want)
	}
	assertDemoRemoved(t)
}

// TestE2EDemo runs the demo: per family, the container answers, the
// firewall namespace's own rule drops the request, and the router with no
// route onward drops it and answers unreachable; then the Service, which
// the node translates to the pod: open at one port, closed at the next,
// rejected (unreachable) at the one without endpoints; exit 0, as the demo
// meant.
func TestE2EDemo(t *testing.T) {
	testenv.RequireRoot(t)
	root := inode(t, &topology.Netns{})
	cmd, stdout, stderr := startTool(t, "--demo", "--json")
	// The demo's namespaces, read through processes started in them while
	// the demo runs (its failing echoes wait for their timeouts), never
	// from the tool's own output.
	base := topology.DemoBridge + "-" + strconv.Itoa(cmd.Process.Pid)
	ns := map[string]uint64{}
	for _, name := range []string{base, base + "-fw", base + "-r", base + "-node", base + "-pod"} {
		// The file comes first, its bind mount after: wait for the namespace.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(2 * time.Millisecond) {
			var fs unix.Statfs_t
			if err := unix.Statfs("/run/netns/"+name, &fs); err == nil && fs.Type == unix.NSFS_MAGIC {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the demo made no namespace %s", name)
			}
		}
		sleeper := testenv.StartInNetns(t, name, "sleep", "30")
		ns[name] = testenv.NetnsInodeOfPid(t, sleeper.Process.Pid)
	}
	out, _ := io.ReadAll(stdout)
	cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	echoes := decodeEchoes(t, string(out))
	if len(echoes) != 12 {
		t.Fatalf("%d echoes and TCP probes, want 12:\n%s", len(echoes), out)
	}
	ctr, fw, rtr, node, podNs := ns[base], ns[base+"-fw"], ns[base+"-r"], ns[base+"-node"], ns[base+"-pod"]
	if distinct := map[uint64]bool{root: true, ctr: true, fw: true, rtr: true, node: true, podNs: true}; len(distinct) != 6 {
		t.Errorf("root %d, container %d, firewall %d, router %d, node %d, pod %d: want six namespaces", root, ctr, fw, rtr, node, podNs)
	}
	for i, fam := range []struct{ container, firewall, far, router string }{
		{"172.31.250.2", "172.31.250.3", "172.31.251.2", "172.31.250.4"},
		{"fd00:7470::2", "fd00:7470::3", "fd00:7470:0:1::2", "fd00:7470::4"},
	} {
		ctrEcho, fwEcho, farEcho := echoes[3*i], echoes[3*i+1], echoes[3*i+2]
		assertJourney(t, ctrEcho, netip.MustParseAddr(fam.container), []string{
			row(root, "tpdemo0", "out", "request"),
			row(root, "tpdemo0h", "out", "request"),
			row(ctr, "eth0", "in", "request"),
			row(ctr, "eth0", "out", "reply"),
			row(root, "tpdemo0h", "in", "reply"),
			row(root, "tpdemo0", "in", "reply"),
		})
		assertLoss(t, fwEcho, wantLoss{result: "dropped", reason: "NETFILTER_DROP", netns: fw, ifname: "eth0", withoutAnError: true})
		if d := fwEcho.Drop; d == nil || !strings.HasSuffix(d.NetnsName, "-fw") {
			t.Errorf("firewall drop %+v: want it named after the demo's firewall namespace", d)
		}
		assertLoss(t, farEcho, wantLoss{result: "unreachable", reason: "IP_INNOROUTES", netns: rtr, ifname: "eth0", hint: "no route",
			errFrom: netip.MustParseAddr(fam.router), errType: map[bool]uint8{true: 3, false: 1}[i == 0]})
	}
	for i, fam := range []struct{ vip, node, nodeLink, pod string }{
		{"172.31.254.10", "172.31.250.5", "172.31.253.1", "172.31.253.2"},
		{"fd00:7470:0:4::a", "fd00:7470::5", "fd00:7470:0:3::1", "fd00:7470:0:3::2"},
	} {
		vip, pod := netip.MustParseAddr(fam.vip), netip.MustParseAddr(fam.pod)
		assertDemoService(t, echoes[6+3*i:9+3*i], vip, netip.MustParseAddr(fam.node), netip.MustParseAddr(fam.nodeLink), pod, root, node, podNs)
	}
	assertDemoRemoved(t)
}

// assertDemoService checks the demo's three TCP probes to the Service at
// vip, which node translates to pod: open, closed, rejected.
func assertDemoService(t *testing.T, probes []jsonEcho, vip, nodeAddr, nodeLink, pod netip.Addr, root, node, podNs uint64) {
	t.Helper()
	to := func(a netip.Addr, p int) string { return netip.AddrPortFrom(a, uint16(p)).String() }
	there := []string{
		row(root, "tpdemo0", "out", "syn"), row(root, "tpdemo0n", "out", "syn"),
		row(node, "eth0", "in", "syn"), row(node, "eth1", "out", "syn"), row(podNs, "eth0", "in", "syn"),
	}
	back := func(typ string) []string {
		return []string{row(podNs, "eth0", "out", typ), row(node, "eth1", "in", typ), row(node, "eth0", "out", typ),
			row(root, "tpdemo0n", "in", typ), row(root, "tpdemo0", "in", typ)}
	}
	for i, w := range []struct {
		port, epPort int
		result       string
		rows         []string
	}{
		{80, 8080, "open", slices.Concat(there, back("syn-ack"), []string{
			row(root, "tpdemo0", "out", "rst"), row(root, "tpdemo0n", "out", "rst"),
			row(node, "eth0", "in", "rst"), row(node, "eth1", "out", "rst"), row(podNs, "eth0", "in", "rst")})},
		{81, 8081, "closed", slices.Concat(there, back("rst"))},
		{82, 0, "unreachable", []string{
			row(root, "tpdemo0", "out", "syn"), row(root, "tpdemo0n", "out", "syn"), row(node, "eth0", "in", "syn"),
			row(node, "eth0", "out", "unreachable"), row(root, "tpdemo0n", "in", "unreachable"), row(root, "tpdemo0", "in", "unreachable")}},
	} {
		e := probes[i]
		if e.Result != w.result || e.Protocol != "tcp" || e.Port != uint16(w.port) || e.Target != vip.String() {
			t.Errorf("probe %d: %s %s port %d result %q, want tcp to %s port %d %s", i, e.Target, e.Protocol, e.Port, e.Result, vip, w.port, w.result)
		}
		if got := rows(e); strings.Join(got, "\n") != strings.Join(w.rows, "\n") {
			t.Errorf("%s rows:\n%s\nwant:\n%s", to(vip, w.port), strings.Join(got, "\n"), strings.Join(w.rows, "\n"))
		}
		// Every translation happens in the node, by its kube-proxy
		// table: to the endpoint and from the node's address toward the
		// pod (masquerade, a random port), and back.
		var nat []string
		for _, h := range e.Hops {
			for _, x := range h.NAT {
				after := x.After
				if x.Kind == "SNAT" {
					after = netip.AddrPortFrom(netip.MustParseAddrPort(after).Addr(), 0).String()
				}
				nat = append(nat, fmt.Sprintf("%s %s %s -> %s @%d %s.%s", row(uint64(h.Netns), h.Ifname, h.Dir, h.Type), x.Kind, x.Before, after, x.Netns, x.Table, x.Chain))
			}
		}
		if w.epPort == 0 {
			if len(nat) != 0 {
				t.Errorf("%s: translations %q, want none", to(vip, w.port), nat)
			}
			code := map[bool]uint8{true: 4, false: 3}[vip.Is6()]
			if e.ICMPError == nil || e.ICMPError.Code != code || e.ICMPError.From != nodeAddr.String() {
				t.Errorf("%s: icmp error %+v, want port unreachable (code %d) from %s", to(vip, w.port), e.ICMPError, code, nodeAddr)
			}
			continue
		}
		endpoint := fmt.Sprintf("kube-proxy.endpoint-%s-demo/%s/tcp/http__%s/%d",
			map[int]string{80: "DEMOWEB0", 81: "DEMOCLS0"}[w.port], map[int]string{80: "web", 81: "closed"}[w.port], pod, w.epPort)
		var src string
		for _, h := range e.Hops {
			if h.Probe == "net_dev_queue" && h.Type == "syn" && h.Netns == uint32(root) {
				src = netip.MustParseAddrPort(h.Src).String()
				break
			}
		}
		want := []string{
			fmt.Sprintf("%s DNAT %s -> %s @%d %s", row(node, "eth1", "out", "syn"), to(vip, w.port), to(pod, w.epPort), node, endpoint),
			fmt.Sprintf("%s SNAT %s -> %s @%d kube-proxy.masquerading", row(node, "eth1", "out", "syn"), src, to(nodeLink, 0), node),
		}
		if len(nat) < 2 || strings.Join(nat[:2], "\n") != strings.Join(want, "\n") {
			t.Errorf("%s translations:\n%s\nwant first:\n%s", to(vip, w.port), strings.Join(nat, "\n"), strings.Join(want, "\n"))
		}
		if e.AnswerFrom != vip.String() {
			t.Errorf("%s answered from %q, want the Service address", to(vip, w.port), e.AnswerFrom)
		}
	}
}

// TestE2EDemoOneFamily: with -6 the demo probes only IPv6 addresses, its
// service scene included.
func TestE2EDemoOneFamily(t *testing.T) {
	testenv.RequireRoot(t)
	hostOnly(t, "-6 chooses the demo's probes")
	res := runTool(t, nil, "--demo", "-6", "--json")
	if res.code != 0 {
		t.Fatalf("exit %d\n%s%s", res.code, res.stderr, res.stdout)
	}
	var got []string
	for _, e := range decodeEchoes(t, res.stdout) {
		got = append(got, fmt.Sprintf("%s %s %d %s", e.Target, e.Protocol, e.Port, e.Result))
	}
	want := []string{
		"fd00:7470::2  0 reply", "fd00:7470::3  0 dropped", "fd00:7470:0:1::2  0 unreachable",
		"fd00:7470:0:4::a tcp 80 open", "fd00:7470:0:4::a tcp 81 closed", "fd00:7470:0:4::a tcp 82 unreachable",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("probes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	assertDemoRemoved(t)
}

// TestE2EDemoRecorded: a recording holds echoes or TCP probes, so a
// recorded demo leaves its service scene out, says so, and records its
// echoes, which replay as they were shown.
func TestE2EDemoRecorded(t *testing.T) {
	testenv.RequireRoot(t)
	hostOnly(t, "the demo's recording and its replay")
	rec := filepath.Join(t.TempDir(), "demo.tpk")
	live := runTool(t, nil, "--demo", "-4", "--json", "--record", rec)
	const note = "demo: the service scene's TCP probes are left out of a recording, which holds echoes or TCP probes, not both\n"
	if live.code != 0 || !strings.Contains(live.stderr, note) {
		t.Fatalf("exit %d, want 0 and %q in stderr:\n%s", live.code, note, live.stderr)
	}
	var got []string
	for _, e := range decodeEchoes(t, live.stdout) {
		got = append(got, e.Target+" "+e.Result)
	}
	if want := []string{"172.31.250.2 reply", "172.31.250.3 dropped", "172.31.251.2 unreachable"}; strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("echoes:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	replayed := runTool(t, nil, "--json", "--replay", rec)
	if replayed.code != 1 || replayed.stdout != live.stdout {
		t.Errorf("replay: exit %d (want 1: two echoes failed), output differs from the live run's:\n%s\nlive:\n%s", replayed.code, replayed.stdout, live.stdout)
	}
	assertDemoRemoved(t)
}

// TestE2EDemoKilled kills a demo with SIGKILL once its whole topology is
// built: it leaves its bridge, links and namespaces (the service scene's
// node, with its kube-proxy tables, and pod included); the next demo sweeps
// them, runs, and leaves nothing; the machine's own ruleset never changed.
func TestE2EDemoKilled(t *testing.T) {
	testenv.RequireRoot(t)
	hostOnly(t, "the next demo's sweep")
	before := ruleset(t, &topology.Netns{})
	cmd, stdout, stderr := startTool(t, "--demo", "-c", "100", "-i", "50ms")
	readUntil(t, stdout, "reply from", stderr)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	base := topology.DemoBridge + "-" + strconv.Itoa(cmd.Process.Pid)
	for _, name := range []string{base, base + "-fw", base + "-r", base + "-far", base + "-node", base + "-pod"} {
		if _, err := os.Stat("/run/netns/" + name); err != nil {
			t.Errorf("the killed demo left no namespace %s: nothing to sweep (%v)", name, err)
		}
	}
	if res := runTool(t, nil, "--demo", "-4", "-W", "0.3"); res.code != 0 {
		t.Errorf("the demo after a killed one: exit %d\n%s", res.code, res.stderr)
	}
	assertDemoRemoved(t)
	if after := ruleset(t, &topology.Netns{}); after != before {
		t.Errorf("ruleset changed by a killed demo:\n%s\nwas:\n%s", after, before)
	}
}

// TestE2EDemoInterrupted stops a long demo after its first echo with each
// catchable signal that ends a process, and by closing its stdout (as
// `--demo | head -1` does): it must remove everything it built. After a
// signal it exits 1 and says how far it got, since it did not show what it
// meant to (an echo the signal cut short is shown as interrupted); after a
// closed stdout, 2 with the write error.
func TestE2EDemoInterrupted(t *testing.T) {
	testenv.RequireRoot(t)
	before := ruleset(t, &topology.Netns{})
	for _, stop := range []string{"SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGPIPE", "closed stdout"} {
		t.Run(stop, func(t *testing.T) {
			cmd, stdout, stderr := startTool(t, "--demo", "-c", "100", "-i", "50ms")
			out := readUntil(t, stdout, "reply from", stderr)
			if stop == "closed stdout" {
				stdout.Close()
			} else if err := cmd.Process.Signal(signalNamed(stop)); err != nil {
				t.Fatal(err)
			} else {
				rest, _ := io.ReadAll(stdout)
				out += string(rest)
			}
			cmd.Wait()
			code := cmd.ProcessState.ExitCode()
			switch {
			case stop == "closed stdout" && (code != 2 || !strings.Contains(stderr.String(), "broken pipe")):
				t.Errorf("demo with a closed stdout exited %d, stderr:\n%s", code, stderr)
			case stop != "closed stdout" && (code != 1 || !strings.Contains(stderr.String(), "\ntracepkt-perf: interrupted during the demo, after ")):
				t.Errorf("demo stopped by %s exited %d, stderr:\n%s\nstdout:\n%s", stop, code, stderr, out)
			}
			assertDemoRemoved(t)
			assertNoPrograms(t)
			if after := ruleset(t, &topology.Netns{}); after != before {
				t.Errorf("ruleset changed by an interrupted run:\n%s\nwas:\n%s", after, before)
			}
		})
	}
}

func signalNamed(name string) os.Signal {
	for _, s := range stopSignals {
		if unix.SignalName(s.(syscall.Signal)) == name {
			return s
		}
	}
	panic("no stop signal " + name)
}

// assertNoPrograms checks that no tracepkt BPF program is still loaded; the
// tool runs in child processes, so only a leak in the kernel would keep one.
func assertNoPrograms(t *testing.T) {
	t.Helper()
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return
		}
		if err != nil {
			t.Fatalf("list BPF programs: %v", err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err == nil && strings.HasPrefix(info.Name, "tracepkt_") {
			t.Errorf("BPF program %d (%s) still loaded", id, info.Name)
		}
	}
}
