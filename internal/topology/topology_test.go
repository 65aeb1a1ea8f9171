package topology_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// nth is the n-th address of network, with its prefix length.
func nth(t *testing.T, network netip.Prefix, n int) netip.Prefix {
	t.Helper()
	a := network.Masked().Addr()
	for range n {
		a = a.Next()
	}
	return netip.PrefixFrom(a, network.Bits())
}

func TestVethPair(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	name := topology.UniqueName("tp")
	n, err := topo.VethPair(name, v4, v6)
	if err != nil {
		t.Fatal(err)
	}

	if n.Netns.Name != name || n.Netns.Path != "/run/netns/"+name || n.HostLink != name+"h" || n.PeerLink != "eth0" {
		t.Errorf("names: netns %q at %q, links %q/%q", n.Netns.Name, n.Netns.Path, n.HostLink, n.PeerLink)
	}
	if n.Host4 != nth(t, v4, 1) || n.Peer4 != nth(t, v4, 2) || n.Host6 != nth(t, v6, 1) || n.Peer6 != nth(t, v6, 2) {
		t.Errorf("addresses %v %v %v %v in %v %v", n.Host4, n.Peer4, n.Host6, n.Peer6, v4, v6)
	}
	if self := testenv.NetnsInodeOfPid(t, os.Getpid()); n.Root.Inode != self || n.Source != n.Root {
		t.Errorf("root netns inode %d, source %v; this process is in %d", n.Root.Inode, n.Source, self)
	}
	if n.Target4 != n.Peer4.Addr() || n.Target6 != n.Peer6.Addr() {
		t.Errorf("targets %v %v, want eth0's %v %v", n.Target4, n.Target6, n.Peer4, n.Peer6)
	}
	wantNetnsInode(t, n.Netns)
	wantLink(t, "", n.HostLink, "veth", "", n.Host4, n.Host6)
	wantLink(t, n.Netns.Name, "eth0", "veth", "", n.Peer4, n.Peer6)
	wantLink(t, n.Netns.Name, "lo", "", "")
	if _, ok := lookupLink(t, n.Netns.Name, n.HostLink); ok {
		t.Errorf("%s is also in %s", n.HostLink, n.Netns.Name)
	}

	wantPings(t, topo, n.Source, n.Target4, n.Target6)
	wantPings(t, topo, n.Netns, n.Host4.Addr(), n.Host6.Addr())
	wantNotOwn(t, topo, n.Source)
	wantNotOwn(t, topo, n.Netns)

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	wantGone(t, []string{n.HostLink}, n.Netns)
}

func TestDockerBridge(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	cfg := topology.DemoConfig(topology.UniqueName("tp"), v4, v6)
	n, err := topo.DockerBridge(cfg)
	if err != nil {
		t.Fatal(err)
	}

	if n.Bridge != cfg.Bridge || n.HostVeth != cfg.Bridge+"h" || n.ContainerLink != "eth0" || n.Container.Name != cfg.Netns {
		t.Errorf("names: bridge %q, host veth %q, container link %q, netns %q", n.Bridge, n.HostVeth, n.ContainerLink, n.Container.Name)
	}
	if n.Gateway4 != nth(t, v4, 1) || n.Container4 != nth(t, v4, 2) || n.Gateway6 != nth(t, v6, 1) || n.Container6 != nth(t, v6, 2) {
		t.Errorf("addresses %v %v %v %v in %v %v", n.Gateway4, n.Container4, n.Gateway6, n.Container6, v4, v6)
	}
	if n.Source != n.Root || n.Target4 != n.Container4.Addr() || n.Target6 != n.Container6.Addr() {
		t.Errorf("source %v, targets %v %v", n.Source, n.Target4, n.Target6)
	}
	wantNetnsInode(t, n.Container)
	br := wantLink(t, "", n.Bridge, "bridge", "", n.Gateway4, n.Gateway6)
	if d := br.Linkinfo.InfoData; d.StpState == nil || *d.StpState != 0 || d.ForwardDelay == nil || *d.ForwardDelay != 0 {
		t.Errorf("bridge %s: stp_state %v, forward_delay %v; want 0 and 0", n.Bridge, d.StpState, d.ForwardDelay)
	}
	host := wantLink(t, "", n.HostVeth, "veth", n.Bridge)
	for _, l := range []ipLink{br, host} {
		if l.Ifalias != cfg.Alias {
			t.Errorf("link %s: alias %q, want %q", l.Ifname, l.Ifalias, cfg.Alias)
		}
	}
	wantLink(t, n.Container.Name, "eth0", "veth", "", n.Container4, n.Container6)
	wantDefaultRoute(t, n.Container.Name, n.Gateway4, n.Gateway6)

	wantPings(t, topo, n.Source, n.Target4, n.Target6)
	wantPings(t, topo, n.Container, n.Gateway4.Addr(), n.Gateway6.Addr())
	wantNotOwn(t, topo, n.Source)
	// The container's default route leads into the root namespace, whose own routes leave
	// the topology: that must be rejected too.
	wantNotOwn(t, topo, n.Container)

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	wantGone(t, []string{n.Bridge, n.HostVeth}, n.Container)
}

func TestRouter(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	name := topology.UniqueName("tp")
	n, err := topo.Router(name, v4, v6)
	if err != nil {
		t.Fatal(err)
	}

	v4hi := netip.PrefixFrom(nth(t, v4, 128).Addr(), 25)
	v6hi := netip.MustParsePrefix(strings.TrimSuffix(v6.Addr().String(), "::") + ":8000::/65")
	if v6.Addr().String() == strings.TrimSuffix(v6.Addr().String(), "::") {
		t.Fatalf("unexpected test net %v", v6)
	}
	v4lo, v6lo := netip.PrefixFrom(v4.Addr(), 25), netip.PrefixFrom(v6.Addr(), 65)
	for _, c := range []struct {
		got, want netip.Prefix
	}{
		{n.RA4, nth(t, v4lo, 1)}, {n.A4, nth(t, v4lo, 2)}, {n.RB4, nth(t, v4hi, 1)}, {n.B4, nth(t, v4hi, 2)},
		{n.RA6, nth(t, v6lo, 1)}, {n.A6, nth(t, v6lo, 2)}, {n.RB6, nth(t, v6hi, 1)}, {n.B6, nth(t, v6hi, 2)},
	} {
		if c.got != c.want {
			t.Errorf("address %v, want %v", c.got, c.want)
		}
	}
	if n.A.Name != name+"-a" || n.R.Name != name+"-r" || n.B.Name != name+"-b" {
		t.Errorf("netns names %q %q %q", n.A.Name, n.R.Name, n.B.Name)
	}
	if n.Source != n.A || n.Target4 != n.B4.Addr() || n.Target6 != n.B6.Addr() {
		t.Errorf("source %v, targets %v %v", n.Source, n.Target4, n.Target6)
	}
	for _, ns := range []*topology.Netns{n.A, n.R, n.B} {
		wantNetnsInode(t, ns)
	}
	wantLink(t, n.A.Name, n.ALink, "veth", "", n.A4, n.A6)
	wantLink(t, n.R.Name, n.RLinkA, "veth", "", n.RA4, n.RA6)
	wantLink(t, n.R.Name, n.RLinkB, "veth", "", n.RB4, n.RB6)
	wantLink(t, n.B.Name, n.BLink, "veth", "", n.B4, n.B6)
	if _, ok := lookupLink(t, n.A.Name, "eth1"); ok {
		t.Errorf("eth1 in %s", n.A.Name)
	}
	wantDefaultRoute(t, n.A.Name, n.RA4, n.RA6)
	wantDefaultRoute(t, n.B.Name, n.RB4, n.RB6)
	for _, p := range []string{"ipv4/ip_forward", "ipv6/conf/all/forwarding"} {
		for _, ns := range []*topology.Netns{n.A, n.R} {
			out, err := ipCmd("", "netns", "exec", ns.Name, "cat", "/proc/sys/net/"+p).Output()
			want := map[bool]string{true: "1", false: "0"}[ns == n.R]
			if err != nil || strings.TrimSpace(string(out)) != want {
				t.Errorf("%s in %s: %q (%v), want %s", p, ns.Name, out, err, want)
			}
		}
	}

	wantPings(t, topo, n.Source, n.Target4, n.Target6)
	wantPings(t, topo, n.B, n.A4.Addr(), n.A6.Addr())
	wantNotOwn(t, topo, n.A)
	wantNotOwn(t, topo, n.B)
	root, err := topology.RootNetns()
	if err != nil {
		t.Fatal(err)
	}
	// Nothing of this topology lives in the root namespace: even its own targets are not
	// reached from there.
	if err := topo.CheckOwnRoute(root, n.Target4); !errors.Is(err, topology.ErrNotOwnRoute) {
		t.Errorf("CheckOwnRoute(root, %v) = %v, want ErrNotOwnRoute", n.Target4, err)
	}

	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	wantGone(t, nil, n.A, n.R, n.B)
}

func TestDemo(t *testing.T) {
	cfg := topology.Demo()
	pid := os.Getpid()
	want := topology.DockerBridgeConfig{
		Bridge:   "tpdemo0",
		HostVeth: "tpdemo0h",
		Netns:    "tpdemo0-" + strconv.Itoa(pid),
		V4:       netip.MustParsePrefix("172.31.250.0/24"),
		V6:       netip.MustParsePrefix("fd00:7470::/64"),
	}
	alias := cfg.Alias
	cfg.Alias = ""
	if cfg != want {
		t.Errorf("Demo() = %+v, want %+v", cfg, want)
	}
	if !regexp.MustCompile(`^tracepkt-perf demo pid ` + strconv.Itoa(pid) + ` start [1-9][0-9]*$`).MatchString(alias) {
		t.Errorf("demo alias %q", alias)
	}
}

// TestSweepDemo kills a process that built a demo network and sweeps what it left.
func TestSweepDemo(t *testing.T) {
	t.Parallel()
	testenv.RequireRoot(t)
	bridge := topology.UniqueName("tp")
	t.Cleanup(func() { _ = topology.SweepDemo(bridge) }) // runs last, after the helper is gone
	v4, v6 := topology.TestNets()
	cmd, netns := startDemoHelper(t, bridge, v4, v6)

	err := topology.SweepDemo(bridge)
	var inUse *topology.DemoInUseError
	if !errors.Is(err, topology.ErrDemoInUse) || !errors.As(err, &inUse) || inUse.Pid != cmd.Process.Pid || inUse.Bridge != bridge {
		t.Fatalf("SweepDemo(%s) with live owner %d = %v, want ErrDemoInUse naming it", bridge, cmd.Process.Pid, err)
	}
	wantLink(t, "", bridge, "bridge", "")

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	wantLink(t, "", bridge, "bridge", "")
	wantLink(t, "", bridge+"h", "veth", bridge)
	path := filepath.Join("/run/netns", netns)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the killed demo left no %s: %v", path, err)
	}

	if err := topology.SweepDemo(bridge); err != nil {
		t.Fatalf("SweepDemo(%s) after the owner died: %v", bridge, err)
	}
	wantGone(t, []string{bridge, bridge + "h"}, &topology.Netns{Name: netns, Path: path})
	if err := topology.SweepDemo(bridge); err != nil {
		t.Errorf("SweepDemo(%s) with nothing left: %v", bridge, err)
	}
}

func TestSweepDemoLeavesOthersAlone(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	root, err := topology.RootNetns()
	if err != nil {
		t.Fatal(err)
	}
	name := topology.UniqueName("tp")
	if err := topo.Bridge(name, root); err != nil {
		t.Fatal(err)
	}
	err = topology.SweepDemo(name)
	if err == nil || errors.Is(err, topology.ErrDemoInUse) {
		t.Errorf("SweepDemo on a bridge without demo alias = %v, want a refusal", err)
	}
	wantLink(t, "", name, "bridge", "")

	// A live demo's namespace is not swept even without its bridge.
	ns, err := topo.Netns(name + "-" + strconv.Itoa(os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	if err := topology.SweepDemo(name + "x"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ns.Path); err != nil {
		t.Errorf("SweepDemo removed a live demo's namespace: %v", err)
	}
}

// TestOnlyOwned checks that a topology refuses to change what it did not create.
func TestOnlyOwned(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	root, err := topology.RootNetns()
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.AddAddr("lo", root, netip.MustParsePrefix("198.18.0.1/32")); !errors.Is(err, topology.ErrNotOwned) {
		t.Errorf("AddAddr on the root lo = %v, want ErrNotOwned", err)
	}
	if err := topo.SetAlias("lo", root, "x"); !errors.Is(err, topology.ErrNotOwned) {
		t.Errorf("SetAlias on the root lo = %v, want ErrNotOwned", err)
	}
	if err := topo.AddRoute(root, netip.MustParsePrefix("198.18.0.0/24"), netip.MustParseAddr("192.0.2.1")); !errors.Is(err, topology.ErrNotOwned) {
		t.Errorf("AddRoute via a foreign gateway = %v, want ErrNotOwned", err)
	}
	if err := topo.AddRoute(root, netip.MustParsePrefix("0.0.0.0/0"), netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Error("AddRoute of a default route in the root namespace succeeded")
	}
	if err := root.Forwarding(true); err == nil {
		t.Error("Forwarding on the root namespace succeeded")
	}
	if err := topo.Veth("a-too-long-name-x", root, "b", root); err == nil {
		t.Error("Veth with a 17-byte name succeeded")
	}
}

func TestCloseIdempotent(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("tp"))
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if err := topo.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	wantGone(t, nil, ns)
	if _, err := topo.Netns(topology.UniqueName("tp")); !errors.Is(err, topology.ErrClosed) {
		t.Errorf("Netns after Close = %v, want ErrClosed", err)
	}
	if err := ns.Do(func() error { return nil }); !errors.Is(err, topology.ErrClosed) {
		t.Errorf("Do after Close = %v, want ErrClosed", err)
	}
}

// TestCloseLeavesNothing builds every preset in one topology and checks that Close leaves no
// file descriptor behind: an open netlink socket or nsfs file would keep a namespace alive.
// It does not run in parallel, so that the count is this test's alone.
func TestCloseLeavesNothing(t *testing.T) {
	testenv.RequireRoot(t)
	fdsBefore, _ := filepath.Glob("/proc/self/fd/*")
	topo := topology.New()
	n1, n2 := topology.UniqueName("tp"), topology.UniqueName("tp")
	v4a, v6a := topology.TestNets()
	v4b, v6b := topology.TestNets()
	v4c, v6c := topology.TestNets()
	vp, err := topo.VethPair(n1, v4a, v6a)
	if err != nil {
		t.Fatal(errors.Join(err, topo.Close()))
	}
	db, err := topo.DockerBridge(topology.DockerBridgeConfig{Bridge: n2, HostVeth: n2 + "h", Netns: n2, V4: v4b, V6: v6b})
	if err != nil {
		t.Fatal(errors.Join(err, topo.Close()))
	}
	rt, err := topo.Router(n1, v4c, v6c)
	if err != nil {
		t.Fatal(errors.Join(err, topo.Close()))
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	fdsAfter, _ := filepath.Glob("/proc/self/fd/*")
	if len(fdsAfter) > len(fdsBefore) {
		t.Errorf("%d open files before, %d after Close", len(fdsBefore), len(fdsAfter))
	}
	wantGone(t, []string{vp.HostLink, db.Bridge, db.HostVeth}, vp.Netns, db.Container, rt.A, rt.R, rt.B)
	wantNotHeld(t, vp.Netns, db.Container, rt.A, rt.R, rt.B)
}

func TestNetnsDo(t *testing.T) {
	t.Parallel()
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("tp"))
	if err != nil {
		t.Fatal(err)
	}
	root, err := topology.RootNetns()
	if err != nil {
		t.Fatal(err)
	}
	var inside uint64
	errFn := errors.New("from fn")
	err = ns.Do(func() error {
		cur, err := topology.RootNetns()
		if err != nil {
			return err
		}
		inside = cur.Inode
		return errFn
	})
	if err != errFn {
		t.Errorf("Do returned %v, want fn's error", err)
	}
	if inside != ns.Inode {
		t.Errorf("inside Do the thread is in net:[%d], want net:[%d]", inside, ns.Inode)
	}
	after, err := topology.RootNetns()
	if err != nil {
		t.Fatal(err)
	}
	if after.Inode != root.Inode {
		t.Errorf("after Do the caller is in net:[%d], want net:[%d]", after.Inode, root.Inode)
	}
	func() {
		defer func() {
			if p := recover(); p != "boom" {
				t.Errorf("recovered %v, want the panic from fn", p)
			}
		}()
		_ = ns.Do(func() error { panic("boom") })
	}()
}

func TestTestNets(t *testing.T) {
	bench := netip.MustParsePrefix("198.18.0.0/15")
	ula := netip.MustParsePrefix("fd00:7470::/32")
	demo := netip.MustParsePrefix("fd00:7470::/64")
	seen := map[netip.Prefix]bool{}
	for range 50 {
		v4, v6 := topology.TestNets()
		if v4.Bits() != 24 || !bench.Contains(v4.Addr()) || v4.Masked() != v4 {
			t.Errorf("v4 test net %v", v4)
		}
		if v6.Bits() != 64 || !ula.Contains(v6.Addr()) || v6.Overlaps(demo) || v6.Masked() != v6 {
			t.Errorf("v6 test net %v", v6)
		}
		if seen[v4] || seen[v6] {
			t.Errorf("test nets %v %v handed out twice", v4, v6)
		}
		seen[v4], seen[v6] = true, true
	}
	re := regexp.MustCompile(`^tp[0-9a-f]{6}$`)
	a, b := topology.UniqueName("tp"), topology.UniqueName("tp")
	if !re.MatchString(a) || a == b {
		t.Errorf("UniqueName: %q, %q", a, b)
	}
}
