package main

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// tunnelKind is one kind of overlay the tunnel tests build between two
// nodes.
type tunnelKind struct {
	name string // the subtest's
	kind string // the tunnel's kind, as the tool's rows and `ip -d link` say it
	// routed: each node has a pod network of its own and routes the
	// other's through the tunnel, the bridge its pod's gateway (IPIP,
	// GRE, flannel's VXLAN); else one pod network is bridged across it.
	routed bool
	v6     bool // an IPv6 underlay
	// link is a node's tunnel device, from its underlay address to the
	// other node's.
	link func(name string, local, peer netip.Addr) netlink.Link
}

func linkAttrs(name string) netlink.LinkAttrs {
	a := netlink.NewLinkAttrs()
	a.Name = name
	return a
}

// vxlanLink is a VXLAN device as flannel makes one: VNI 42 on the IANA
// port, without learning (the FDB entries are static).
func vxlanLink(name string, local, _ netip.Addr) netlink.Link {
	return &netlink.Vxlan{LinkAttrs: linkAttrs(name), VxlanId: 42, SrcAddr: local.AsSlice(), Port: 4789}
}

var tunnelKinds = []tunnelKind{
	{name: "vxlan", kind: "vxlan", link: vxlanLink},
	{name: "vxlan-ipv6-underlay", kind: "vxlan", v6: true, link: vxlanLink},
	// Flannel routes: each node's pods have a network of their own, the
	// VXLAN device an address, and the other node's pods are reached
	// through it.
	{name: "vxlan-routed", kind: "vxlan", routed: true, link: vxlanLink},
	{name: "geneve", kind: "geneve", link: func(name string, _, peer netip.Addr) netlink.Link {
		return &netlink.Geneve{LinkAttrs: linkAttrs(name), ID: 7, Remote: peer.AsSlice()}
	}},
	{name: "ipip", kind: "ipip", routed: true, link: func(name string, local, peer netip.Addr) netlink.Link {
		return &netlink.Iptun{LinkAttrs: linkAttrs(name), Local: local.AsSlice(), Remote: peer.AsSlice()}
	}},
	{name: "gre", kind: "gre", routed: true, link: func(name string, local, peer netip.Addr) netlink.Link {
		return &netlink.Gretun{LinkAttrs: linkAttrs(name), Local: local.AsSlice(), Remote: peer.AsSlice(), IKey: 5, OKey: 5}
	}},
}

// overlayNet is two "nodes" joined by an underlay veth (uA, uB), each with
// a bridge (brA, brB) and a pod namespace behind a veth port (hA, hB), and
// a tunnel device on each (tunA, tunB) between the underlay addresses.
type overlayNet struct {
	kind                     tunnelKind
	nodeA, nodeB, podA, podB *topology.Netns
	uA, uB, brA, brB         string
	hA, hB, tunA, tunB       string
	underA, underB           netip.Addr
	podA4, podB4             netip.Addr
	// The tunnel as the kernel has it, read with `ip -d link` apart from
	// what the test asked for: the VNI or GRE key (0: none) and the UDP
	// port (0: not a UDP tunnel).
	id, port uint32
}

// requireTunnelKind skips when this kernel has no kind of link, like the
// development machines', which have VXLAN built in but not Geneve, IPIP
// or GRE, and load no modules; these run in the distro kernels of the test
// matrix, where their absence is a failure.
func requireTunnelKind(t *testing.T, kind string, err error) {
	t.Helper()
	if err == nil || !errors.Is(err, unix.EOPNOTSUPP) {
		return
	}
	if os.Getenv(vmtest.GuestEnvVar) == "1" {
		t.Fatalf("%s tunnels are required in the test VM: %v", kind, err)
	}
	testenv.Elsewhere(t, "this kernel has no %s tunnels (%v): they run in make test-matrix", kind, err)
}

// newOverlay builds the two nodes and the overlay of kind k between them.
func newOverlay(t *testing.T, k tunnelKind) (*topology.Topology, *overlayNet) {
	t.Helper()
	testenv.RequireCommands(t, "ip", "bridge")
	topo := testenv.Topology(t)
	name := topology.UniqueName("tp")
	n := &overlayNet{kind: k, uA: name + "u", uB: name + "u", brA: name + "b", brB: name + "b",
		hA: name + "h", hB: name + "h", tunA: name + "t", tunB: name + "t"}
	var err error
	for _, ns := range []struct {
		p    **topology.Netns
		name string
	}{{&n.nodeA, name + "A"}, {&n.nodeB, name + "B"}, {&n.podA, name + "A1"}, {&n.podB, name + "B1"}} {
		if *ns.p, err = topo.Netns(ns.name); err != nil {
			t.Fatal(err)
		}
	}
	under4, under6 := topology.TestNets()
	under := under4
	if k.v6 {
		under = under6
	}
	n.underA, n.underB = under.Addr().Next(), under.Addr().Next().Next()
	if err := topo.Veth(n.uA, n.nodeA, n.uB, n.nodeB); err != nil {
		t.Fatal(err)
	}
	// Bridged, both pods are in podNets[0]; routed, each node's pod network
	// is its own, and the tunnel devices have addresses in transit.
	podNets := []netip.Prefix{testNet4()}
	var transit netip.Prefix
	if k.routed {
		podNets = append(podNets, testNet4())
		transit = testNet4()
	}
	type node struct {
		ns, pod           *topology.Netns
		u, br, h, tun     string
		local, peer       netip.Addr
		podNet            netip.Prefix
		pod4, gw, tunAddr netip.Addr
		otherNet          netip.Prefix
		otherTun          netip.Addr
	}
	nodes := []node{
		{ns: n.nodeA, pod: n.podA, u: n.uA, br: n.brA, h: n.hA, tun: n.tunA, local: n.underA, peer: n.underB, podNet: podNets[0]},
		{ns: n.nodeB, pod: n.podB, u: n.uB, br: n.brB, h: n.hB, tun: n.tunB, local: n.underB, peer: n.underA, podNet: podNets[len(podNets)-1]},
	}
	if k.routed {
		for i := range nodes {
			nodes[i].gw, nodes[i].pod4 = nodes[i].podNet.Addr().Next(), nodes[i].podNet.Addr().Next().Next()
			nodes[i].tunAddr = transit.Addr().Next()
			if i == 1 {
				nodes[i].tunAddr = nodes[i].tunAddr.Next()
			}
		}
		nodes[0].otherNet, nodes[0].otherTun = nodes[1].podNet, nodes[1].tunAddr
		nodes[1].otherNet, nodes[1].otherTun = nodes[0].podNet, nodes[0].tunAddr
	} else {
		nodes[0].pod4, nodes[1].pod4 = podNets[0].Addr().Next(), podNets[0].Addr().Next().Next()
	}
	n.podA4, n.podB4 = nodes[0].pod4, nodes[1].pod4
	for _, nd := range nodes {
		if err := topo.AddAddr(nd.u, nd.ns, netip.PrefixFrom(nd.local, under.Bits())); err != nil {
			t.Fatal(err)
		}
		if err := topo.Bridge(nd.br, nd.ns); err != nil {
			t.Fatal(err)
		}
		if err := topo.Veth(nd.h, nd.ns, "eth0", nd.pod); err != nil {
			t.Fatal(err)
		}
		if err := topo.SetMaster(nd.h, nd.ns, nd.br); err != nil {
			t.Fatal(err)
		}
		if err := topo.AddAddr("eth0", nd.pod, netip.PrefixFrom(nd.pod4, nd.podNet.Bits())); err != nil {
			t.Fatal(err)
		}
		err := topo.Link(nd.ns, k.link(nd.tun, nd.local, nd.peer))
		requireTunnelKind(t, k.kind, err)
		if err != nil {
			t.Fatal(err)
		}
		if k.kind == "vxlan" {
			// A static FDB entry: frames to any MAC go to the other node.
			out, err := exec.Command("bridge", "-n", nd.ns.Name, "fdb", "append", "00:00:00:00:00:00", "dev", nd.tun, "dst", nd.peer.String()).CombinedOutput()
			if err != nil {
				t.Fatalf("bridge fdb append in %s: %v\n%s", nd.ns.Name, err, out)
			}
		}
		if !k.routed {
			if err := topo.SetMaster(nd.tun, nd.ns, nd.br); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := nd.ns.Forwarding(true); err != nil {
			t.Fatal(err)
		}
		for _, a := range []struct {
			link string
			p    netip.Prefix
		}{{nd.br, netip.PrefixFrom(nd.gw, nd.podNet.Bits())}, {nd.tun, netip.PrefixFrom(nd.tunAddr, transit.Bits())}} {
			if err := topo.AddAddr(a.link, nd.ns, a.p); err != nil {
				t.Fatal(err)
			}
		}
		if err := topo.AddRoute(nd.pod, netip.MustParsePrefix("0.0.0.0/0"), nd.gw); err != nil {
			t.Fatal(err)
		}
	}
	if k.routed {
		for _, nd := range nodes {
			if err := topo.AddRoute(nd.ns, nd.otherNet, nd.otherTun); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Nothing leaves the test's namespaces: the pods reach each other
	// through them, and each node the other's underlay address.
	for _, c := range []struct {
		from *topology.Netns
		to   netip.Addr
	}{{n.podA, n.podB4}, {n.podB, n.podA4}, {n.nodeA, n.underB}, {n.nodeB, n.underA}} {
		if err := topo.CheckOwnRoute(c.from, c.to); err != nil {
			t.Fatalf("not tracing: %v", err)
		}
	}
	n.id, n.port = tunnelFacts(t, n.nodeA, n.tunA, k.kind)
	return topo, n
}

// testNet4 is a fresh IPv4 test network.
func testNet4() netip.Prefix {
	v4, _ := topology.TestNets()
	return v4
}

// tunnelFacts reads a tunnel device's VNI or key and UDP port with `ip -d
// -j link show`, and checks its kind.
func tunnelFacts(t *testing.T, ns *topology.Netns, link, kind string) (id, port uint32) {
	t.Helper()
	out, err := exec.Command("ip", "-n", ns.Name, "-d", "-j", "link", "show", link).CombinedOutput()
	if err != nil {
		t.Fatalf("ip -d -j link show %s: %v\n%s", link, err, out)
	}
	var links []struct {
		Linkinfo struct {
			InfoKind string         `json:"info_kind"`
			InfoData map[string]any `json:"info_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -d -j link show %s: %v\n%s", link, err, out)
	}
	info := links[0].Linkinfo
	if info.InfoKind != kind {
		t.Fatalf("ip -d link: %s is a %q, want %q", link, info.InfoKind, kind)
	}
	num := func(key string) uint32 {
		switch v := info.InfoData[key].(type) {
		case float64:
			return uint32(v)
		case string: // a GRE key, as an IPv4 address
			if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
				b := a.As4()
				return binary.BigEndian.Uint32(b[:])
			}
			if u, err := strconv.ParseUint(v, 0, 32); err == nil {
				return uint32(u)
			}
		}
		return 0
	}
	switch kind {
	case "vxlan", "geneve":
		id, port = num("id"), num("port")
		if id == 0 || port == 0 {
			t.Fatalf("ip -d -j link show %s: no id or port in %v", link, info.InfoData)
		}
	case "gre":
		if id = num("okey"); id == 0 || num("ikey") != id {
			t.Fatalf("ip -d -j link show %s: keys in %v", link, info.InfoData)
		}
	}
	return id, port
}

// tunnelWant is the tunnel the hops on the underlay must show, the request's
// from A to B.
func (n *overlayNet) tunnelWant(request bool) jsonTunnel {
	w := jsonTunnel{Kind: n.kind.kind, OuterSrc: n.underA.String(), OuterDst: n.underB.String(), OuterDport: uint16(n.port)}
	if !request {
		w.OuterSrc, w.OuterDst = w.OuterDst, w.OuterSrc
	}
	switch {
	case n.kind.kind == "vxlan" || n.kind.kind == "geneve":
		w.VNI = &n.id
	case n.id != 0:
		w.Key = &n.id
	}
	return w
}

// cell is how the table shows the tunnel: "vxlan vni 42 a -> b:4789".
func (w jsonTunnel) cell() string {
	return strings.Join(append([]string{w.Kind}, w.details()...), " ")
}

func (w jsonTunnel) details() []string {
	var d []string
	switch {
	case w.VNI != nil:
		d = append(d, fmt.Sprintf("vni %d", *w.VNI))
	case w.Key != nil:
		d = append(d, fmt.Sprintf("key %d", *w.Key))
	}
	dst, _ := netip.ParseAddr(w.OuterDst)
	if w.OuterDport != 0 {
		return append(d, fmt.Sprintf("%s -> %s", w.OuterSrc, netip.AddrPortFrom(dst, w.OuterDport)))
	}
	return append(d, fmt.Sprintf("%s -> %s", w.OuterSrc, w.OuterDst))
}

// wantRows are the device rows of an echo from pod A1 to pod B1 across the
// overlay, request then reply.
func (n *overlayNet) wantRows(t *testing.T) (request, reply []string) {
	type side struct {
		node, pod     uint64
		h, br, tun, u string
	}
	a := side{inode(t, n.nodeA), inode(t, n.podA), n.hA, n.brA, n.tunA, n.uA}
	b := side{inode(t, n.nodeB), inode(t, n.podB), n.hB, n.brB, n.tunB, n.uB}
	// Bridged, the bridge hands frames from port to port with no row of
	// its own; routed, it is the pods' gateway and receives and sends them.
	path := func(typ string, from, to side) []string {
		rows := []string{row(from.pod, "eth0", "out", typ), row(from.node, from.h, "in", typ)}
		if n.kind.routed {
			rows = append(rows, row(from.node, from.br, "in", typ))
		}
		rows = append(rows, row(from.node, from.tun, "out", typ), row(from.node, from.u, "out", typ),
			row(to.node, to.u, "in", typ), row(to.node, to.tun, "in", typ))
		if n.kind.routed {
			rows = append(rows, row(to.node, to.br, "out", typ))
		}
		return append(rows, row(to.node, to.h, "out", typ), row(to.pod, "eth0", "in", typ))
	}
	return path("request", a, b), path("reply", b, a)
}

// TestE2ETunnel traces echoes from pod A1 to pod B1 across an overlay of
// each kind: every hop on both nodes, the underlay's with the tunnel
// (kind, VNI or key, outer addresses and port, as `ip -d link` and the
// test's addresses say), the summary naming the crossings; a recording of
// the run replays as the live run printed it, and its table has the
// tunnel's column. A firewall dropping VXLAN on the far node's underlay is
// named as the drop, on that node's underlay hop; a missing FDB entry, on
// the near node's VXLAN device.
func TestE2ETunnel(t *testing.T) {
	for _, k := range tunnelKinds {
		t.Run(k.name, func(t *testing.T) { testTunnelEcho(t, k) })
	}
	t.Run("vxlan-nft-drop", testTunnelDrop)
	t.Run("vxlan-no-fdb", testTunnelNoFDB)
	t.Run("vxlan-no-underlay-route", testTunnelNoUnderlayRoute)
	t.Run("vxlan-vni-mismatch", func(t *testing.T) { testTunnelReceiver(t, "vni") })
	t.Run("vxlan-no-device", func(t *testing.T) { testTunnelReceiver(t, "none") })
	t.Run("vxlan-device-down", func(t *testing.T) { testTunnelReceiver(t, "down") })
	t.Run("vxlan-mtu", testTunnelMTU)
}

func testTunnelEcho(t *testing.T, k tunnelKind) {
	_, n := newOverlay(t, k)
	request, reply := n.wantRows(t)
	rec := filepath.Join(t.TempDir(), k.name+".tpk")
	live := runTool(t, n.podA, "--json", "-c", "2", "-W", "3s", "-i", "20ms", "--record", rec, n.podB4.String())
	echoes := echoesOf(t, live)
	if len(echoes) != 2 {
		t.Fatalf("%d echoes, want 2:\n%s", len(echoes), live.stdout)
	}
	for _, e := range echoes {
		assertJourney(t, e, n.podB4, append(append([]string(nil), request...), reply...))
		for i, h := range e.Hops {
			if h.Probe != "net_dev_queue" && h.Probe != "netif_receive_skb" {
				continue
			}
			got := jsonOf(h.Tunnel)
			if h.Ifname != n.uA && h.Ifname != n.uB {
				if h.Tunnel != nil {
					t.Errorf("echo %d hop %d on %s: tunnel %s, want none", e.Seq, i, h.Ifname, got)
				}
				continue
			}
			w := n.tunnelWant(h.Type == "request")
			udp := w.OuterDport != 0
			if h.Tunnel == nil || (h.Tunnel.OuterSport != 0) != udp {
				t.Errorf("echo %d hop %d on %s: tunnel %s, want %s with a source port: %v", e.Seq, i, h.Ifname, got, jsonOf(w), udp)
				continue
			}
			w.OuterSport = h.Tunnel.OuterSport // the sender's hash of the inner flow
			if want := jsonOf(w); got != want {
				t.Errorf("echo %d hop %d on %s: tunnel %s, want %s", e.Seq, i, h.Ifname, got, want)
			}
		}
	}
	replayed := runTool(t, nil, "--json", "--replay", rec)
	if replayed.code != 0 || replayed.stdout != live.stdout {
		t.Errorf("replay: exit %d, output differs from the live run's:\n%s\nlive:\n%s", replayed.code, replayed.stdout, live.stdout)
	}
	table := runTool(t, nil, "--replay", rec)
	req, rep := n.tunnelWant(true), n.tunnelWant(false)
	// The table names a namespace and its inode.
	cellA := fmt.Sprintf("%s (%d)", n.nodeA.Name, inode(t, n.nodeA))
	cellB := fmt.Sprintf("%s (%d)", n.nodeB.Name, inode(t, n.nodeB))
	for _, line := range []string{
		fmt.Sprintf("the request crossed a %s tunnel (%s) from network namespace %s to network namespace %s",
			k.kind, strings.Join(req.details(), ", "), cellA, cellB),
		fmt.Sprintf("the reply crossed a %s tunnel (%s) from network namespace %s to network namespace %s",
			k.kind, strings.Join(rep.details(), ", "), cellB, cellA),
		"TUNNEL",
		req.cell(),
		rep.cell(),
	} {
		if !strings.Contains(table.stdout, line) {
			t.Errorf("the table lacks %q:\n%s", line, table.stdout)
		}
	}
}

// testTunnelDrop: node B's firewall drops VXLAN on its underlay. The
// request is lost there: the drop is node B's, after its underlay device,
// on the outer packet, and the journey is still the inner echo's.
func testTunnelDrop(t *testing.T) {
	testenv.RequireCommands(t, "nft")
	topo, n := newOverlay(t, tunnelKinds[0])
	// Resolve the pods' neighbours first: with the rule in place, ARP
	// would be lost in the tunnel too, and the echo never leave pod A1.
	if err := testenv.Ping(t, topo, n.podA, n.podB4); err != nil {
		t.Fatal(err)
	}
	testenv.Nft(t, n.nodeB, fmt.Sprintf(`table inet tpdrop {
	chain input {
		type filter hook input priority 0; policy accept;
		iifname %q udp dport %d drop
	}
}
`, n.uB, n.port))
	request, _ := n.wantRows(t)
	e := traceLost(t, n.podA, n.podB4, "-W", "1s")
	assertLoss(t, e, wantLoss{result: "dropped", reason: "NETFILTER_DROP", netns: inode(t, n.nodeB), ifname: n.uB, withoutAnError: true})
	if got := rows(e); strings.Join(got, "\n") != strings.Join(request[:5], "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(request[:5], "\n"))
	}
	if e.Target != n.podB4.String() {
		t.Errorf("target %s, want the inner echo's %s", e.Target, n.podB4)
	}
	for _, h := range e.Hops {
		if h.Ifname == n.uB && h.Probe == "netif_receive_skb" {
			w := n.tunnelWant(true)
			if h.Tunnel != nil {
				w.OuterSport = h.Tunnel.OuterSport
			}
			if got, want := jsonOf(h.Tunnel), jsonOf(w); got != want {
				t.Errorf("the dropped packet on %s: tunnel %s, want %s", n.uB, got, want)
			}
		}
	}
}

// traceDrop traces an echo from pod A to pod B (with args) that the change
// made before loses: its rows must be the request's first hops of the intact overlay,
// and its drop the request's in ns on ifname.
func (n *overlayNet) traceDrop(t *testing.T, hops int, ns *topology.Netns, ifname string, args ...string) *jsonEchoDrop {
	t.Helper()
	request, _ := n.wantRows(t)
	e := traceLost(t, n.podA, n.podB4, append([]string{"-W", "1s"}, args...)...)
	if got := rows(e); strings.Join(got, "\n") != strings.Join(request[:hops], "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(request[:hops], "\n"))
	}
	d := e.Drop
	if e.Result != "dropped" || d == nil {
		t.Fatalf("result %q drop %s, want dropped", e.Result, jsonOf(d))
	}
	if uint64(d.Netns) != inode(t, ns) || d.Ifname != ifname || d.Type != "request" {
		t.Errorf("drop %s, want the request's in %s on %s", jsonOf(d), ns.Name, ifname)
	}
	return d
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// testTunnelNoFDB: node A's VXLAN device has lost its FDB entry for the
// other node. The request dies in node A, in the VXLAN driver's transmit,
// on the VXLAN device: no underlay hop. Where the kernel names it, the
// reason is NO_TX_TARGET.
func testTunnelNoFDB(t *testing.T) {
	topo, n := newOverlay(t, tunnelKinds[0])
	// Resolve the pods' neighbours first, so that the echo leaves pod A1
	// and node A's bridge knows pod B1's MAC behind the VXLAN port.
	if err := testenv.Ping(t, topo, n.podA, n.podB4); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("bridge", "-n", n.nodeA.Name, "fdb", "del", "00:00:00:00:00:00", "dev", n.tunA, "dst", n.underB.String()).CombinedOutput(); err != nil {
		t.Fatalf("bridge fdb del in %s: %v\n%s", n.nodeA.Name, err, out)
	}
	d := n.traceDrop(t, 3, n.nodeA, n.tunA)
	if !strings.HasPrefix(d.Location, "vxlan_xmit+") {
		t.Errorf("drop %s, want it in vxlan_xmit", jsonOf(d))
	}
	if err := testenv.KernelLocation(t, d.Location); err != nil {
		t.Error(err)
	}
	// The hint reads node A's FDB, not its routes: the device was chosen before.
	if want := fmt.Sprintf("%s (vxlan vni %d) has no FDB entry with a remote and no group: frames to %s have no node to go to", n.tunA, n.id, n.podB4); !strings.HasPrefix(d.Hint, want) {
		t.Errorf("drop hint %q, want %q", d.Hint, want)
	}
	if kernelReasons(t) && hasReason(t, "NO_TX_TARGET") && d.Reason != "NO_TX_TARGET" {
		t.Errorf("drop reason %q, want NO_TX_TARGET", d.Reason)
	}
}

// testTunnelNoUnderlayRoute: node A has lost its route to node B's underlay
// address. The request dies in node A on the VXLAN device, whose FDB names
// node B; the hint says the underlay cannot reach it.
func testTunnelNoUnderlayRoute(t *testing.T) {
	topo, n := newOverlay(t, tunnelKinds[0])
	if err := testenv.Ping(t, topo, n.podA, n.podB4); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ip", "-n", n.nodeA.Name, "route", "flush", "dev", n.uA).CombinedOutput(); err != nil {
		t.Fatalf("ip route flush dev %s in %s: %v\n%s", n.uA, n.nodeA.Name, err, out)
	}
	d := n.traceDrop(t, 3, n.nodeA, n.tunA)
	if want := fmt.Sprintf("%s (vxlan vni %d) sends to %s, which the underlay has no route to", n.tunA, n.id, n.underB); !strings.HasPrefix(d.Hint, want) {
		t.Errorf("drop hint %q, want %q", d.Hint, want)
	}
}

// testTunnelMTU: node A's VXLAN device has the MTU flannel gives it (its
// underlay's less VXLAN's 50 bytes), the pods keep 1500. A request of 1488
// bytes does not fit the bridge port it must leave by, and the bridge drops
// it without a reason; the hint says so, not that a route is missing.
func testTunnelMTU(t *testing.T) {
	topo, n := newOverlay(t, tunnelKinds[0])
	if err := testenv.Ping(t, topo, n.podA, n.podB4); err != nil {
		t.Fatal(err)
	}
	inNetns(t, n.nodeA, "ip", "link", "set", n.tunA, "mtu", "1450")
	d := n.traceDrop(t, 2, n.nodeA, n.tunA, "-s", "1460")
	want := fmt.Sprintf("the packet (1488 bytes) does not fit %s (vxlan, mtu 1450), the port of bridge %s it leaves by: a bridge drops frames larger than the port's MTU, so what is sent to %s must fit 1450 bytes (the senders' interface MTU)",
		n.tunA, n.brA, n.podB4)
	if d.Hint != want {
		t.Errorf("drop hint %q\nwant %q", d.Hint, want)
	}
	if err := testenv.KernelLocation(t, d.Location); err != nil {
		t.Error(err)
	}
}

// testTunnelReceiver: node B's VXLAN device is replaced by one with another
// VNI (flannel's VNI changed on one node only), or removed, or set down. The
// request dies as it arrives at node B's underlay device: no VXLAN device
// there takes its VNI (VXLAN_VNI_NOT_FOUND where the kernel names it), or
// none takes its port (NO_SOCKET: a device that is down has closed its
// socket). The hint says which devices node B has.
func testTunnelReceiver(t *testing.T, change string) {
	topo, n := newOverlay(t, tunnelKinds[0])
	if err := testenv.Ping(t, topo, n.podA, n.podB4); err != nil {
		t.Fatal(err)
	}
	if err := topo.Guard(n.podA, netip.PrefixFrom(n.podB4, 24).Masked()); err != nil {
		t.Fatal(err)
	}
	const otherVNI = 43
	switch change {
	case "down":
		inNetns(t, n.nodeB, "ip", "link", "set", n.tunB, "down")
	default:
		if err := topo.DeleteLink(n.nodeB, n.tunB); err != nil {
			t.Fatal(err)
		}
	}
	if change == "vni" {
		if err := topo.Link(n.nodeB, &netlink.Vxlan{LinkAttrs: linkAttrs(n.tunB), VxlanId: otherVNI, SrcAddr: n.underB.AsSlice(), Port: int(n.port)}); err != nil {
			t.Fatal(err)
		}
		if err := topo.SetMaster(n.tunB, n.nodeB, n.brB); err != nil {
			t.Fatal(err)
		}
	}
	d := n.traceDrop(t, 5, n.nodeB, n.uB)
	if err := testenv.KernelLocation(t, d.Location); err != nil {
		t.Error(err)
	}
	want := fmt.Sprintf("no vxlan device in %s takes UDP port %d: the datagram from %s (vni %d) has no device to go to (ip -d link show type vxlan)",
		n.nodeB.Name, n.port, n.underA, n.id)
	reason := "NO_SOCKET"
	switch change {
	case "vni":
		id, port := tunnelFacts(t, n.nodeB, n.tunB, "vxlan")
		if port != n.port || id != otherVNI {
			t.Fatalf("node B's new device: vni %d port %d, want %d and %d", id, port, otherVNI, n.port)
		}
		want = fmt.Sprintf("the vxlan datagram from %s carries vni %d, and no vxlan device in %s on UDP port %d has it: %s has vni %d (ip -d link show type vxlan)",
			n.underA, n.id, n.nodeB.Name, n.port, n.tunB, id)
		reason = "VXLAN_VNI_NOT_FOUND"
	case "down":
		want = fmt.Sprintf("%s (vxlan vni %d), which takes the datagrams from %s, is down", n.tunB, n.id, n.underA)
	}
	if d.Hint != want {
		t.Errorf("drop hint %q\nwant %q", d.Hint, want)
	}
	if kernelReasons(t) && hasReason(t, reason) && d.Reason != reason {
		t.Errorf("drop reason %q, want %s", d.Reason, reason)
	}
}

// hasReason says whether this kernel's skb:kfree_skb names reason.
func hasReason(t *testing.T, reason string) bool {
	t.Helper()
	fs, err := tracefs.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	reasons, err := fs.Symbols("skb", "kfree_skb", "reason")
	if err != nil {
		t.Fatalf("the drop reasons of skb:kfree_skb: %v", err)
	}
	for _, name := range reasons {
		if name == reason {
			return true
		}
	}
	return false
}
