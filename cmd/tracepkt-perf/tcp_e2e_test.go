package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
)

// svcPorts are the ports of the Services kubeProxyRules writes: Port to an
// endpoint that listens on EpPort, Port+1 to one where nothing listens,
// Port+2 a Service without endpoints, Port+3 to an endpoint the node drops.
type svcPorts struct {
	Proto        string
	Port, EpPort int
}

var (
	tcpServices = svcPorts{"tcp", 80, 8080}
	udpServices = svcPorts{"udp", 53, 5353}
)

// kubeProxyRules is a Service's rule set as kube-proxy's iptables mode
// writes it (iptables-save shape, cut to one Service and its ports), for
// iptables-restore --noflush in the node's namespace: s.Port to an
// endpoint that listens on s.EpPort, s.Port+1 to one where nothing
// listens, s.Port+2 a Service without endpoints (REJECTed in filter),
// s.Port+3 to an endpoint the node's FORWARD chain drops. Traffic from
// outside clusterNet is marked for masquerade, as with --cluster-cidr.
func kubeProxyRules(vip, ep netip.Addr, clusterNet netip.Prefix, s svcPorts) string {
	bits := "/32"
	if vip.Is6() {
		bits = "/128"
	}
	dnat := func(a netip.Addr, port int) string { return netip.AddrPortFrom(a, uint16(port)).String() }
	var b strings.Builder
	b.WriteString(`*nat
:KUBE-SERVICES - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-SVC-TPKWEB - [0:0]
:KUBE-SEP-TPKWEB1 - [0:0]
:KUBE-SVC-TPKDEAD - [0:0]
:KUBE-SEP-TPKDEAD1 - [0:0]
:KUBE-SVC-TPKFW - [0:0]
:KUBE-SEP-TPKFW1 - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
`)
	for _, svc := range []struct {
		name, sep string
		port      int
		to        string
	}{{"TPKWEB", "TPKWEB1", s.Port, dnat(ep, s.EpPort)}, {"TPKDEAD", "TPKDEAD1", s.Port + 1, dnat(ep, s.EpPort+1)}, {"TPKFW", "TPKFW1", s.Port + 3, dnat(ep, s.EpPort+3)}} {
		fmt.Fprintf(&b, "-A KUBE-SERVICES -d %s%s -p %s -m comment --comment \"default/%s cluster IP\" -m %s --dport %d -j KUBE-SVC-%s\n",
			vip, bits, s.Proto, strings.ToLower(svc.name), s.Proto, svc.port, svc.name)
		fmt.Fprintf(&b, "-A KUBE-SVC-%s ! -s %s -d %s%s -p %s -m comment --comment \"default/%s cluster IP\" -m %s --dport %d -j KUBE-MARK-MASQ\n",
			svc.name, clusterNet, vip, bits, s.Proto, strings.ToLower(svc.name), s.Proto, svc.port)
		fmt.Fprintf(&b, "-A KUBE-SVC-%s -m comment --comment \"default/%s -> %s\" -j KUBE-SEP-%s\n", svc.name, strings.ToLower(svc.name), svc.to, svc.sep)
		// An endpoint reaching itself through its Service (hairpin) is masqueraded.
		fmt.Fprintf(&b, "-A KUBE-SEP-%s -s %s%s -m comment --comment \"default/%s\" -j KUBE-MARK-MASQ\n", svc.sep, ep, bits, strings.ToLower(svc.name))
		fmt.Fprintf(&b, "-A KUBE-SEP-%s -p %s -m comment --comment \"default/%s\" -m %s -j DNAT --to-destination %s\n", svc.sep, s.Proto, strings.ToLower(svc.name), s.Proto, svc.to)
	}
	reject := "icmp-port-unreachable"
	if vip.Is6() {
		reject = "icmp6-port-unreachable"
	}
	fmt.Fprintf(&b, `COMMIT
*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A FORWARD -m conntrack --ctstate NEW -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD
-A KUBE-SERVICES -d %[1]s%[2]s -p %[3]s -m comment --comment "default/tpknone has no endpoints" -m %[3]s --dport %[4]d -j REJECT --reject-with %[5]s
-A KUBE-FORWARD -d %[6]s -p %[3]s -m %[3]s --dport %[7]d -j DROP
COMMIT
`, vip, bits, s.Proto, s.Port+2, reject, ep, s.EpPort+3)
	return b.String()
}

// serviceRules loads a Service's rules for one family in the node: the
// command that reads them and the rules it is given on standard input.
type serviceRules func(vip, ep netip.Addr) (argv []string, rules string)

// iptablesRules are kubeProxyRules for restore4 and restore6
// (iptables-restore or iptables-legacy-restore and their IPv6 twins).
// The client is outside the cluster network: its probes are masqueraded.
func iptablesRules(restore4, restore6 string, s svcPorts) serviceRules {
	return func(vip, ep netip.Addr) ([]string, string) {
		restore := restore4
		if vip.Is6() {
			restore = restore6
		}
		return []string{restore, "--noflush"}, kubeProxyRules(vip, ep, netip.PrefixFrom(ep, ep.BitLen()), s)
	}
}

// nftRules are kubeProxyNftRules, for `nft -f -`.
func nftRules(s svcPorts) serviceRules {
	return func(vip, ep netip.Addr) ([]string, string) {
		return []string{"nft", "-f", "-"}, kubeProxyNftRules(vip, ep, s)
	}
}

// serviceNode builds client A -> node R -> endpoint B, with a Service
// address on no interface that R translates to B (rules, loaded in R for
// each family), and in B a TCP listener or a DNS responder on s.EpPort. It
// returns the Service addresses, which A, R and B can each probe.
func serviceNode(t *testing.T, s svcPorts, rules serviceRules) (n *topology.RouterNet, vip4, vip6 netip.Addr, epPort int) {
	t.Helper()
	topo, n := router(t)
	testenv.RequireCommands(t, "ss")
	epPort = s.EpPort
	// The Service addresses: unassigned addresses of B's networks, routed
	// by R toward B, so a packet R does not translate stays in the topology.
	// B routes them through its gateway, as a pod's default route takes
	// the Service range: B reaching itself through its Service (hairpin)
	// goes through R.
	vip4, vip6 = lastHost(n.B4), lastHost(n.B6)
	for _, f := range []struct{ vip, ep, rb netip.Addr }{{vip4, n.Target4, n.RB4.Addr()}, {vip6, n.Target6, n.RB6.Addr()}} {
		host := netip.PrefixFrom(f.vip, f.vip.BitLen()).String()
		inNetns(t, n.R, "ip", "route", "add", host, "dev", n.RLinkB)
		inNetns(t, n.B, "ip", "route", "add", host, "via", f.rb.String(), "dev", n.BLink)
		for _, src := range []*topology.Netns{n.A, n.R, n.B} {
			if err := topo.CheckOwnRoute(src, f.vip); err != nil {
				t.Fatalf("not probing: %v", err)
			}
		}
		argv, text := rules(f.vip, f.ep)
		testenv.RequireCommands(t, argv[0])
		cmd := exec.Command("ip", append([]string{"netns", "exec", n.R.Name}, argv...)...)
		cmd.Stdin = strings.NewReader(text)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
	}
	if s.Proto == "udp" {
		dnsResponder(t, n.B, epPort)
	} else {
		listen(t, n.B, epPort)
	}
	return n, vip4, vip6, epPort
}

// probeJSON runs the tool with --json and args inside src, requires exit
// status code, and returns the first probe it printed, with the run.
func probeJSON(t *testing.T, src *topology.Netns, code int, args ...string) (jsonEcho, toolResult) {
	t.Helper()
	res := runTool(t, src, append([]string{"--json"}, args...)...)
	if res.code != code {
		t.Fatalf("exit %d, want %d\n%s%s", res.code, code, res.stderr, res.stdout)
	}
	return decodeEchoes(t, res.stdout)[0], res
}

// hostOnly skips, in a test guest, a case that shows no kernel behaviour
// of its own: each run of the tool costs seconds under emulation.
func hostOnly(t *testing.T, what string) {
	t.Helper()
	if os.Getenv(vmtest.GuestEnvVar) == "1" {
		testenv.Elsewhere(t, "%s: no kernel behaviour of its own, tested in the host suite", what)
	}
}

// ruleHandle is the handle of the one rule of an `nft -a list` output
// that contains text.
func ruleHandle(t *testing.T, listing, text string) int {
	t.Helper()
	var handles []int
	for _, line := range strings.Split(listing, "\n") {
		if _, h, ok := strings.Cut(line, "# handle "); ok && strings.Contains(line, text) {
			var n int
			if _, err := fmt.Sscan(h, &n); err != nil {
				t.Fatalf("handle of %q: %v", line, err)
			}
			handles = append(handles, n)
		}
	}
	if len(handles) != 1 {
		t.Fatalf("%d rules with %q in:\n%s", len(handles), text, listing)
	}
	return handles[0]
}

// listen holds a TCP socket listening on port in ns (both families) until
// t ends, and checks with ss that it listens there.
func listen(t *testing.T, ns *topology.Netns, port int) {
	t.Helper()
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if out := inNetns(t, ns, "ss", "-Htln", fmt.Sprintf("sport = :%d", port)); !strings.Contains(out, "LISTEN") {
		t.Fatalf("no listener on %d in %s: %q", port, ns, out)
	}
}

// lastHost is the last address of p but one (below IPv4's broadcast): an
// address of p's network that Router gives no interface.
func lastHost(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(a)*8; i++ {
		a[i/8] |= 0x80 >> (i % 8)
	}
	a[len(a)-1]--
	addr, _ := netip.AddrFromSlice(a)
	return addr
}

func TestE2ETCPThroughServiceNAT(t *testing.T) {
	n, vip4, vip6, epPort := serviceNode(t, tcpServices, iptablesRules("iptables-restore", "ip6tables-restore", tcpServices))
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	families(t, vip4, vip6, func(t *testing.T, vip netip.Addr) {
		ep, rb := n.Target4, n.RB4.Addr()
		if vip.Is6() {
			ep, rb = n.Target6, n.RB6.Addr()
		}
		t.Run("open", func(t *testing.T) {
			e, res := probeJSON(t, n.A, 0, "-W", "2s", "--tcp", "80", vip.String())
			if e.Result != "open" || e.Protocol != "tcp" || e.Port != 80 || e.AnswerFrom != vip.String() || e.RTTNs <= 0 {
				t.Errorf("result %q protocol %q port %d answer from %q rtt %d", e.Result, e.Protocol, e.Port, e.AnswerFrom, e.RTTNs)
			}
			want := []string{
				row(a, "eth0", "out", "syn"), row(r, "eth0", "in", "syn"), row(r, "eth1", "out", "syn"), row(b, "eth0", "in", "syn"),
				row(b, "eth0", "out", "syn-ack"), row(r, "eth1", "in", "syn-ack"), row(r, "eth0", "out", "syn-ack"), row(a, "eth0", "in", "syn-ack"),
				row(a, "eth0", "out", "rst"), row(r, "eth0", "in", "rst"), row(r, "eth1", "out", "rst"), row(b, "eth0", "in", "rst"),
			}
			if got := rows(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			// The SYN leaves R translated twice: to the endpoint, and from R's
			// address (masquerade, a random port); the answer is translated back.
			var sport uint16
			var nat []string
			var dnatRule *jsonNAT
			for _, h := range e.Hops {
				if h.Type == "syn" && h.Netns == uint32(a) {
					sport = h.Sport
				}
				for _, x := range h.NAT {
					if x.Kind == "DNAT" {
						dnatRule = x
					}
					after := x.After
					if x.Kind == "SNAT" {
						after = netip.AddrPortFrom(netip.MustParseAddrPort(after).Addr(), 0).String() // fully random
					}
					nat = append(nat, fmt.Sprintf("%s %s %s -> %s @%d", row(uint64(h.Netns), h.Ifname, h.Dir, h.Type), x.Kind, x.Before, after, x.Netns))
				}
			}
			to := func(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
			src := to(n.A4.Addr(), sport)
			if vip.Is6() {
				src = to(n.A6.Addr(), sport)
			}
			wantNAT := []string{
				fmt.Sprintf("%s DNAT %s -> %s @%d", row(r, "eth1", "out", "syn"), to(vip, 80), to(ep, uint16(epPort)), r),
				fmt.Sprintf("%s SNAT %s -> %s @%d", row(r, "eth1", "out", "syn"), src, to(rb, 0), r),
			}
			if len(nat) < 2 || strings.Join(nat[:2], "\n") != strings.Join(wantNAT, "\n") {
				t.Errorf("translations:\n%s\nwant first:\n%s", strings.Join(nat, "\n"), strings.Join(wantNAT, "\n"))
			}
			// The DNAT is tied to the rule that made it, as nft lists it.
			family := "ip"
			if vip.Is6() {
				family = "ip6"
			}
			chain := inNetns(t, n.R, "nft", "-a", "list", "chain", family, "nat", "KUBE-SEP-TPKWEB1")
			handle := ruleHandle(t, chain, "dnat to "+to(ep, uint16(epPort)))
			if dnatRule == nil || dnatRule.Table != "nat" || dnatRule.Chain != "KUBE-SEP-TPKWEB1" || !strings.Contains(dnatRule.Rule, "dnat to") ||
				!strings.Contains(res.stdout, fmt.Sprintf(`"rule_handle":%d,`, handle)) {
				t.Errorf("DNAT rule %+v, want nat.KUBE-SEP-TPKWEB1 handle %d (%s)", dnatRule, handle, chain)
			}
			// The prober's kernel reset the connection: nothing half-open is
			// left on the endpoint, nothing queued on its listener.
			if out := inNetns(t, n.B, "ss", "-Htn", "state", "syn-recv"); strings.TrimSpace(out) != "" {
				t.Errorf("half-open connections left in %s:\n%s", n.B, out)
			}
			if out := inNetns(t, n.B, "ss", "-Htn", "state", "established"); strings.TrimSpace(out) != "" {
				t.Errorf("connections left in %s:\n%s", n.B, out)
			}
		})
		t.Run("open, as a table", func(t *testing.T) {
			hostOnly(t, "the table of the journey the JSON case asserts")
			res := runTool(t, n.A, "-W", "2s", "--tcp", "80", vip.String())
			to := func(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
			want := []string{
				fmt.Sprintf("open: %s answered SYN-ACK in ", to(vip, 80)),
				fmt.Sprintf("\n  DNAT %s -> %s in network namespace %s (%d) (nat.KUBE-SEP-TPKWEB1 rule ", to(vip, 80), to(ep, uint16(epPort)), n.R.Name, r),
				fmt.Sprintf("\n  reverse DNAT %s -> %s in network namespace %s (%d)\n", to(ep, uint16(epPort)), to(vip, 80), n.R.Name, r),
			}
			for _, w := range want {
				if res.code != 0 || !strings.Contains(res.stdout, w) {
					t.Errorf("exit %d, no %q in\n%s%s", res.code, w, res.stderr, res.stdout)
				}
			}
		})
		t.Run("recorded, replayed, summed up", func(t *testing.T) {
			hostOnly(t, "recording and replay, of the journey the JSON case asserts")
			rec := filepath.Join(t.TempDir(), "svc.tpk")
			live := runTool(t, n.A, "--json", "-c", "3", "-i", "0", "-W", "2s", "--record", rec, "--tcp", "80", vip.String())
			if live.code != 0 {
				t.Fatalf("exit %d\n%s%s", live.code, live.stderr, live.stdout)
			}
			replayed := runTool(t, nil, "--json", "--replay", rec)
			if replayed.code != 0 || replayed.stdout != live.stdout {
				t.Errorf("replay: exit %d, output differs from the live run's:\n%s\nlive:\n%s", replayed.code, replayed.stdout, live.stdout)
			}
			st := runTool(t, nil, "--stats", "--replay", rec)
			want := fmt.Sprintf("3 TCP probes to %s: 3 open, 0 closed\n", netip.AddrPortFrom(vip, 80))
			if st.code != 0 || !strings.HasPrefix(st.stdout, want) {
				t.Errorf("--stats: exit %d, want it to start %q:\n%s%s", st.code, want, st.stderr, st.stdout)
			}
		})
		t.Run("from the node", func(t *testing.T) {
			// Sent from the node itself, the probe is translated in OUTPUT,
			// before its first hop.
			e, _ := probeJSON(t, n.R, 0, "-W", "2s", "--tcp", "80", vip.String())
			var first jsonHop
			for _, h := range e.Hops {
				if h.Probe == "net_dev_queue" {
					first = h
					break
				}
			}
			if e.Result != "open" || first.Netns != uint32(r) || len(first.NAT) == 0 {
				t.Fatalf("result %q, first hop %+v", e.Result, first)
			}
			if x := first.NAT[0]; x.Kind != "DNAT" || x.Before != netip.AddrPortFrom(vip, 80).String() ||
				x.After != netip.AddrPortFrom(ep, uint16(epPort)).String() || x.Netns != uint32(r) || x.Chain != "KUBE-SEP-TPKWEB1" {
				t.Errorf("first hop's translation %+v, want DNAT to the endpoint in %d by KUBE-SEP-TPKWEB1", x, r)
			}
		})
		t.Run("hairpin", func(t *testing.T) {
			// The endpoint reaches itself through its Service: R sends the
			// SYN back where it came from, translated to the endpoint and
			// masqueraded to R's address, so the answer comes back through R.
			e, _ := probeJSON(t, n.B, 0, "-W", "2s", "--tcp", "80", vip.String())
			want := []string{
				row(b, "eth0", "out", "syn"), row(r, "eth1", "in", "syn"), row(r, "eth1", "out", "syn"), row(b, "eth0", "in", "syn"),
				row(b, "eth0", "out", "syn-ack"), row(r, "eth1", "in", "syn-ack"), row(r, "eth1", "out", "syn-ack"), row(b, "eth0", "in", "syn-ack"),
			}
			if got := rows(e); e.Result != "open" || len(got) < len(want) || strings.Join(got[:len(want)], "\n") != strings.Join(want, "\n") {
				t.Errorf("result %q, rows:\n%s\nwant first:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			var kinds []string
			for _, h := range e.Hops {
				for _, x := range h.NAT {
					if x.Kind == "SNAT" && netip.MustParseAddrPort(x.After).Addr() != rb {
						t.Errorf("hairpin SNAT %+v, want to %s", x, rb)
					}
					kinds = append(kinds, x.Kind)
				}
			}
			if strings.Join(kinds, " ") != "DNAT SNAT reverse SNAT reverse DNAT" {
				t.Errorf("translations %q, want DNAT SNAT reverse SNAT reverse DNAT", kinds)
			}
		})
		t.Run("closed", func(t *testing.T) {
			res := runTool(t, n.A, "-W", "2s", "--tcp", "81", vip.String())
			want := fmt.Sprintf("closed: %s answered RST in ", netip.AddrPortFrom(vip, 81))
			if res.code != 1 || !strings.Contains(res.stdout, want) || !strings.Contains(res.stdout, fmt.Sprintf("(sent from network namespace %s (%d))", n.B.Name, b)) {
				t.Errorf("exit %d, want 1 and %q, sent from %s\n%s%s", res.code, want, n.B.Name, res.stderr, res.stdout)
			}
			wantNAT := fmt.Sprintf("DNAT %s -> %s in network namespace %s (%d)", netip.AddrPortFrom(vip, 81), netip.AddrPortFrom(ep, uint16(epPort+1)), n.R.Name, r)
			if !strings.Contains(res.stdout, wantNAT) {
				t.Errorf("no %q in\n%s", wantNAT, res.stdout)
			}
		})
		t.Run("no endpoints", func(t *testing.T) {
			e, _ := probeJSON(t, n.A, 1, "-W", "2s", "--tcp", "82", vip.String())
			code := uint8(3)
			if vip.Is6() {
				code = 4
			}
			if e.Result != "unreachable" || e.ICMPError == nil || e.ICMPError.Code != code {
				t.Errorf("result %q icmp error %+v, want unreachable, port unreachable", e.Result, e.ICMPError)
			}
		})
		t.Run("dropped in FORWARD", func(t *testing.T) {
			e, _ := probeJSON(t, n.A, 1, "-W", "1s", "--tcp", "83", vip.String())
			if e.Result != "dropped" || e.Drop == nil || e.Drop.Netns != uint32(r) || e.Drop.Type != "syn" {
				t.Errorf("result %q drop %+v, want dropped in %d", e.Result, e.Drop, r)
			}
		})
	})
}

// kubeProxyNftRules is a Service's rule set as kube-proxy's nftables mode
// writes it (cut to one Service and its ports, as svcPorts lays them out:
// s.Port+3 is left out), for `nft -f -`: a services verdict map, a
// numgen-random chain per Service port, an endpoint chain that DNATs,
// masquerade fully-random for marked packets, and the no-endpoints reject.
func kubeProxyNftRules(vip, ep netip.Addr, s svcPorts) string {
	family, addr, proto := "ip", "ipv4_addr", "ip"
	if vip.Is6() {
		family, addr, proto = "ip6", "ipv6_addr", "ip6"
	}
	var services []string
	var chains strings.Builder
	for i := range 2 {
		svc, endpoint := kubeProxyNftChains(s, i)
		services = append(services, fmt.Sprintf("%s . %s . %d : goto %s", vip, s.Proto, s.Port+i, svc))
		fmt.Fprintf(&chains, `	chain %[1]s {
		%[3]s daddr %[4]s %[5]s dport %[6]d %[3]s saddr != %[7]s jump mark-for-masquerade
		numgen random mod 1 vmap { 0 : goto %[2]s }
	}
	chain %[2]s {
		%[3]s saddr %[7]s jump mark-for-masquerade
		meta l4proto %[5]s dnat to %[8]s
	}
`, svc, endpoint, proto, vip, s.Proto, s.Port+i, ep, netip.AddrPortFrom(ep, uint16(s.EpPort+i)))
	}
	return fmt.Sprintf(`table %[1]s kube-proxy {
	comment "rules for kube-proxy"
	map service-ips {
		type %[2]s . inet_proto . inet_service : verdict
		elements = { %[4]s }
	}
	map no-endpoint-services {
		type %[2]s . inet_proto . inet_service : verdict
		elements = { %[5]s . %[6]s . %[7]d : goto reject-chain }
	}
	chain nat-prerouting { type nat hook prerouting priority -100; policy accept; jump services; }
	chain nat-output { type nat hook output priority -100; policy accept; jump services; }
	chain nat-postrouting { type nat hook postrouting priority 100; policy accept; jump masquerading; }
	chain filter-forward { type filter hook forward priority -110; policy accept; ct state new jump service-endpoints-check; }
	chain filter-output { type filter hook output priority -110; policy accept; ct state new jump service-endpoints-check; }
	chain mark-for-masquerade { mark set mark or 0x4000; }
	chain masquerading {
		mark and 0x4000 == 0 return
		mark set mark xor 0x4000
		masquerade fully-random
	}
	chain services { %[3]s daddr . meta l4proto . th dport vmap @service-ips; }
	chain service-endpoints-check { %[3]s daddr . meta l4proto . th dport vmap @no-endpoint-services; }
	chain reject-chain { reject; }
%[8]s}
`, family, addr, proto, strings.Join(services, ", "), vip, s.Proto, s.Port+2, chains.String())
}

// kubeProxyNftChains are the names kubeProxyNftRules gives the chains of
// the i-th Service port (0: s.Port, 1: s.Port+1) and of its endpoint, in
// kube-proxy's shape: a hash, then namespace/name/protocol/port name.
func kubeProxyNftChains(s svcPorts, i int) (svc, endpoint string) {
	name := fmt.Sprintf("default/web/%s/p%d", s.Proto, s.Port+i)
	return fmt.Sprintf("service-TPKSVC0%d-%s", i, name), fmt.Sprintf("endpoint-TPKEP00%d-%s__ep/%d", i, name, s.EpPort+i)
}

func TestE2ETCPThroughKubeProxyNftables(t *testing.T) {
	n, vip4, vip6, epPort := serviceNode(t, tcpServices, nftRules(tcpServices))
	r := inode(t, n.R)
	families(t, vip4, vip6, func(t *testing.T, vip netip.Addr) {
		ep, family := n.Target4, "ip"
		if vip.Is6() {
			ep, family = n.Target6, "ip6"
		}
		_, endpoint := kubeProxyNftChains(tcpServices, 0)
		listing := inNetns(t, n.R, "nft", "-a", "list", "chain", family, "kube-proxy", endpoint)
		dnat := "dnat to " + netip.AddrPortFrom(ep, uint16(epPort)).String()
		handle := ruleHandle(t, listing, dnat)
		masq := ruleHandle(t, inNetns(t, n.R, "nft", "-a", "list", "chain", family, "kube-proxy", "masquerading"), "masquerade fully-random")

		e, res := probeJSON(t, n.A, 0, "-W", "2s", "--tcp", "80", vip.String())
		var got []string
		for _, h := range e.Hops {
			for _, x := range h.NAT {
				got = append(got, fmt.Sprintf("%s %d %s.%s %q", x.Kind, x.Netns, x.Table, x.Chain, x.Rule))
			}
		}
		want := []string{
			fmt.Sprintf("DNAT %d kube-proxy.%s %q", r, endpoint, "meta l4proto tcp "+dnat),
			fmt.Sprintf("SNAT %d kube-proxy.masquerading %q", r, "masquerade fully-random"),
		}
		if e.Result != "open" || len(got) < 2 || strings.Join(got[:2], "\n") != strings.Join(want, "\n") {
			t.Errorf("result %q, translations:\n%s\nwant first:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		for _, h := range []int{handle, masq} {
			if !strings.Contains(res.stdout, fmt.Sprintf(`"rule_handle":%d,`, h)) {
				t.Errorf("no row of rule %d", h)
			}
		}
		checkNetfilterTuples(t, e, uint64(handle), vip, 80)

		res = runTool(t, n.A, "--json", "-W", "2s", "--tcp", "82", vip.String())
		if res.code != 1 {
			t.Fatalf("no endpoints: exit %d, want 1\n%s%s", res.code, res.stderr, res.stdout)
		}
		if e := decodeEchoes(t, res.stdout)[0]; e.Result != "unreachable" || e.ICMPError == nil {
			t.Errorf("no endpoints: result %q, icmp error %+v", e.Result, e.ICMPError)
		}
	})
}

// checkNetfilterTuples checks the netfilter rows of a TCP probe's journey
// e through a DNAT: the DNAT rule's row (handle) shows the SYN's ports as
// the prober's first hop has them, toward vip:port, before the translation;
// and, where the kernel sends conntrack states with its traces (Linux
// 6.16), the SYN is new on every row, the SYN-ACK established in the reply
// direction on every row.
func checkNetfilterTuples(t *testing.T, e jsonEcho, handle uint64, vip netip.Addr, port uint16) {
	t.Helper()
	if len(e.Hops) == 0 || e.Hops[0].Sport == 0 {
		t.Fatalf("no first hop with ports: %+v", e.Hops)
	}
	sent := e.Hops[0]
	states := testenv.KernelAtLeast(t, 6, 16)
	var dnatRows, replyRows int
	for _, h := range e.Hops {
		nf := h.Netfilter
		if nf == nil {
			continue
		}
		if nf.RuleHandle == handle {
			dnatRows++
			if h.Src != sent.Src || h.Dst != netip.AddrPortFrom(vip, port).String() || h.Sport != sent.Sport || h.Dport != port {
				t.Errorf("DNAT row %s -> %s (ports %d, %d), want %s -> %s", h.Src, h.Dst, h.Sport, h.Dport, sent.Src, netip.AddrPortFrom(vip, port))
			}
		}
		want, dir := "", ""
		switch {
		case !states:
		case h.Type == "syn":
			want, dir = "new", "original"
		case h.Type == "syn-ack":
			want, dir = "established", "reply"
			replyRows++
		default:
			continue
		}
		if nf.CT != want || nf.CTDirection != dir {
			t.Errorf("%s row %s.%s: ct %q %q, want %q %q", h.Type, nf.Table, nf.Chain, nf.CT, nf.CTDirection, want, dir)
		}
	}
	if dnatRows != 1 || states && replyRows == 0 {
		t.Errorf("%d rows of the DNAT rule, %d netfilter rows of the SYN-ACK", dnatRows, replyRows)
	}
}

// TestE2ETCPThroughLegacyIptables: kube-proxy's rules in iptables-legacy, for TCP and UDP,
// which only the kprobe source sees, chain by chain: the translations are
// tied to the nat table's chains at their hooks.
func TestE2ETCPThroughLegacyIptables(t *testing.T) {
	requireKprobes(t)
	for _, c := range []struct {
		services svcPorts
		result   string
	}{{tcpServices, "open"}, {udpServices, "reply"}} {
		t.Run(c.services.Proto, func(t *testing.T) {
			n, vip4, vip6, epPort := serviceNode(t, c.services, iptablesRules("iptables-legacy-restore", "ip6tables-legacy-restore", c.services))
			r := inode(t, n.R)
			families(t, vip4, vip6, func(t *testing.T, vip netip.Addr) {
				ep := n.Target4
				if vip.Is6() {
					ep = n.Target6
				}
				e, _ := probeJSON(t, n.A, 0, "--netfilter", "kprobe", "-W", "2s", "--"+c.services.Proto, fmt.Sprint(c.services.Port), vip.String())
				var got []string
				for _, h := range e.Hops {
					for _, x := range h.NAT {
						got = append(got, fmt.Sprintf("%s %s %d %s.%s", x.Kind, x.After, x.Netns, x.Table, x.Chain))
					}
				}
				if e.Result != c.result || len(got) < 1 || got[0] != fmt.Sprintf("DNAT %s %d nat.PREROUTING", netip.AddrPortFrom(ep, uint16(epPort)), r) {
					t.Errorf("result %q, translations:\n%s\nwant %s, first DNAT to %s in %d by nat.PREROUTING", e.Result, strings.Join(got, "\n"), c.result, ep, r)
				}
				if len(got) < 2 || !strings.HasPrefix(got[1], "SNAT ") || !strings.HasSuffix(got[1], fmt.Sprintf(" %d nat.POSTROUTING", r)) {
					t.Errorf("translations:\n%s\nwant a SNAT by nat.POSTROUTING second", strings.Join(got, "\n"))
				}
			})
		})
	}
}
