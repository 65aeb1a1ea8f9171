package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// traceLost traces one echo from src to target that must not be answered:
// the tool must exit 1. It returns the echo as JSON.
func traceLost(t *testing.T, src *topology.Netns, target netip.Addr, args ...string) jsonEcho {
	t.Helper()
	res := runTool(t, src, append([]string{"--json", target.String()}, args...)...)
	if res.code != 1 {
		t.Fatalf("exit %d, want 1; stderr:\n%s\nstdout:\n%s", res.code, res.stderr, res.stdout)
	}
	var e jsonEcho
	if err := jsonUnmarshal(res.stdout, &e); err != nil {
		t.Fatalf("decode %q: %v", res.stdout, err)
	}
	return e
}

// wantLoss says how an echo must have been lost: its result, and where
// and why its packet was dropped (an empty reason: no drop expected).
type wantLoss struct {
	result         string
	reason         string
	netns          uint64
	ifname         string
	hint           string // a word the hint must contain
	errFrom        netip.Addr
	errType, code  uint8
	mtu            uint32
	withoutAnError bool
}

// kernelReasons reports whether this kernel names its drops: skb:kfree_skb
// has a reason from 5.17. It asks the kernel's version, not the tool's
// format parser, so that a parser finding no reasons fails the tests.
func kernelReasons(t *testing.T) bool {
	t.Helper()
	return testenv.KernelAtLeast(t, 5, 17)
}

func assertLoss(t *testing.T, e jsonEcho, w wantLoss) {
	t.Helper()
	wantDrop := w.reason != ""
	byRule := w.reason == "NETFILTER_DROP" // the rule says why: no hint
	if wantDrop && !kernelReasons(t) {
		w.reason = "" // the location alone
	}
	desc := fmt.Sprintf("result %q drop %+v icmp_error %+v hint %q rows:\n%s", e.Result, e.Drop, e.ICMPError, e.Hint, strings.Join(rows(e), "\n"))
	t.Log(desc)
	if e.Result != w.result {
		t.Errorf("result %q, want %q; %s", e.Result, w.result, desc)
	}
	if wantDrop {
		d := e.Drop
		var badLocation error
		if d != nil {
			badLocation = testenv.KernelLocation(t, d.Location)
		}
		switch {
		case d == nil:
			t.Errorf("no drop, want %s in %d after %s; %s", w.reason, w.netns, w.ifname, desc)
		case d.Reason != w.reason || uint64(d.Netns) != w.netns || d.Ifname != w.ifname:
			t.Errorf("drop %s at %s in %d after %s, want %s in %d after %s; %s", d.Reason, d.Location, d.Netns, d.Ifname, w.reason, w.netns, w.ifname, desc)
		case badLocation != nil:
			t.Errorf("drop %s: %v", d.Reason, badLocation)
		case !strings.Contains(d.Hint, w.hint):
			t.Errorf("drop hint %q, want it to say %q", d.Hint, w.hint)
		case byRule && d.Hint != "":
			t.Errorf("drop hint %q after a netfilter DROP, want none: the rule says why", d.Hint)
		}
	}
	if w.errFrom.IsValid() {
		x := e.ICMPError
		switch {
		case x == nil:
			t.Errorf("no icmp_error, want type %d code %d from %s; %s", w.errType, w.code, w.errFrom, desc)
		case x.From != w.errFrom.String() || x.Type != w.errType || x.Code != w.code || x.MTU != w.mtu || x.Text == "":
			t.Errorf("icmp_error %+v, want type %d code %d mtu %d from %s", *x, w.errType, w.code, w.mtu, w.errFrom)
		}
	}
	if w.withoutAnError && e.ICMPError != nil {
		t.Errorf("unexpected icmp_error %+v", *e.ICMPError)
	}
}

// TestE2EDropNoRouteOnward: the router has no route to the target's
// network; it drops the request and answers network unreachable.
func TestE2EDropNoRouteOnward(t *testing.T) {
	topo, n := router(t)
	r := inode(t, n.R)
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []netip.Prefix{n.B4.Masked(), n.B6.Masked()} {
		inNetns(t, n.R, "ip", "route", "del", p.String(), "dev", n.RLinkB)
	}
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		want := wantLoss{result: "unreachable", reason: "IP_INNOROUTES", netns: r, ifname: n.RLinkA, hint: "no route",
			errFrom: n.RA4.Addr(), errType: 3, code: 0}
		if target.Is6() {
			want.errFrom, want.errType = n.RA6.Addr(), 1
		}
		assertLoss(t, traceLost(t, n.Source, target), want)
	})
}

// TestE2EDropForwardingOff: forwarding is off in the router.
func TestE2EDropForwardingOff(t *testing.T) {
	topo, n := router(t)
	r := inode(t, n.R)
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.R.Forwarding(false); err != nil {
		t.Fatal(err)
	}
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		want := wantLoss{result: "dropped", reason: "IP_INADDRERRORS", netns: r, ifname: n.RLinkA, hint: "forwarding", withoutAnError: true}
		assertLoss(t, traceLost(t, n.Source, target), want)
	})
}

// TestE2EDropRPFilter: the route back to the source leaves by another
// device than the request came in by, and the router filters strictly.
// IPv4 only: IPv6 has no rp_filter sysctl.
func TestE2EDropRPFilter(t *testing.T) {
	topo, n := router(t)
	r := inode(t, n.R)
	// Resolve the neighbours first: with the route back through the wrong
	// device, the router would filter A's ARP requests too.
	if err := testenv.Ping(t, topo, n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	inNetns(t, n.R, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf."+n.RLinkA+".rp_filter=1")
	inNetns(t, n.R, "ip", "route", "add", netip.PrefixFrom(n.A4.Addr(), 32).String(), "via", n.B4.Addr().String(), "dev", n.RLinkB)
	assertLoss(t, traceLost(t, n.Source, n.Target4), wantLoss{result: "dropped", reason: "IP_RPFILTER", netns: r, ifname: n.RLinkA,
		hint: "rp_filter", withoutAnError: true})
}

// TestE2EDropNeighbourFailed pings an unused address of the target's
// subnet: the router's neighbour resolution fails after about 3 s.
func TestE2EDropNeighbourFailed(t *testing.T) {
	topo, n := router(t)
	r := inode(t, n.R)
	families(t, n.B4.Addr().Next(), n.B6.Addr().Next(), func(t *testing.T, target netip.Addr) {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		e := traceLost(t, n.Source, target, "-W", "6s")
		want := wantLoss{result: "unreachable", reason: "NEIGH_FAILED", netns: r, ifname: n.RLinkB, hint: "FAILED",
			errFrom: n.RA4.Addr(), errType: 3, code: 1}
		if target.Is6() {
			// ndisc's error report frees without a reason.
			want.reason, want.errFrom, want.errType, want.code = "NOT_SPECIFIED", n.RA6.Addr(), 1, 3
		}
		assertLoss(t, e, want)
	})
}

// TestE2EDropTooBig sends a 1400-byte payload with DF across a router
// whose link onward has an MTU of 1280.
func TestE2EDropTooBig(t *testing.T) {
	topo, n := router(t)
	r := inode(t, n.R)
	inNetns(t, n.R, "ip", "link", "set", n.RLinkB, "mtu", "1280")
	inNetns(t, n.B, "ip", "link", "set", n.BLink, "mtu", "1280")
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		want := wantLoss{result: "too-big", reason: "PKT_TOO_BIG", netns: r, ifname: n.RLinkA, hint: "1280",
			errFrom: n.RA4.Addr(), errType: 3, code: 4, mtu: 1280}
		if target.Is6() {
			// ip6_forward has set the output device when it finds the packet too big.
			want.ifname, want.errFrom, want.errType, want.code = n.RLinkB, n.RA6.Addr(), 2, 0
		}
		assertLoss(t, traceLost(t, n.Source, target, "-M", "do", "-s", "1400"), want)
		// Now the sender knows the path MTU: its kernel refuses the next one.
		e := traceLost(t, n.Source, target, "-M", "do", "-s", "1400")
		if x := e.ICMPError; e.Result != "too-big" || x == nil || x.From != "" || x.MTU != 1280 || len(e.Hops) != 0 {
			t.Errorf("second echo: result %q icmp_error %+v hops %v; want too-big refused here, mtu 1280, no hop", e.Result, x, rows(e))
		}
	})
}

// TestE2ETTLExceeded sends with TTL 1 through the router.
func TestE2ETTLExceeded(t *testing.T) {
	topo, n := router(t)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		want := wantLoss{result: "ttl-exceeded", errFrom: n.RA4.Addr(), errType: 11}
		if target.Is6() {
			want.errFrom, want.errType = n.RA6.Addr(), 3
		}
		assertLoss(t, traceLost(t, n.Source, target, "-t", "1"), want)
	})
}

// TestE2ERejected: the target's INPUT chain rejects echo requests with port
// unreachable (REJECT's default) and with administratively prohibited.
func TestE2ERejected(t *testing.T) {
	topo, n := router(t)
	for _, tc := range []struct {
		name                     string
		code4, code6             uint8
		rejectWith4, rejectWith6 string
	}{
		{name: "port-unreachable", code4: 3, code6: 4},
		{name: "admin-prohibited", code4: 13, code6: 1, rejectWith4: "icmp-admin-prohibited", rejectWith6: "icmp6-adm-prohibited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, fam := range []struct{ cmd, proto, typ, with string }{
				{"iptables", "icmp", "--icmp-type", tc.rejectWith4}, {"ip6tables", "ipv6-icmp", "--icmpv6-type", tc.rejectWith6},
			} {
				// Echo requests only: neighbour discovery is ICMPv6 too.
				rule := []string{fam.cmd, "-I", "INPUT", "-p", fam.proto, fam.typ, "echo-request", "-j", "REJECT"}
				if fam.with != "" {
					rule = append(rule, "--reject-with", fam.with)
				}
				inNetns(t, n.B, rule...)
				t.Cleanup(func() {
					inNetns(t, n.B, append([]string{fam.cmd, "-D"}, rule[2:]...)...)
				})
			}
			families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
				if err := topo.CheckOwnRoute(n.Source, target); err != nil {
					t.Fatal(err)
				}
				want := wantLoss{result: "unreachable", errFrom: target, errType: 3, code: tc.code4}
				if target.Is6() {
					want.errType, want.code = 1, tc.code6
				}
				e := traceLost(t, n.Source, target)
				assertLoss(t, e, want)
				table := runTool(t, n.Source, target.String())
				if e.ICMPError == nil {
					return
				}
				if !strings.Contains(table.stdout, fmt.Sprintf("%s answered %q (REJECT?)", target, e.ICMPError.Text)) || table.code != 1 {
					t.Errorf("exit %d, summary:\n%s", table.code, table.stdout)
				}
			})
		})
	}
}

// TestE2EDropInInput: an nftables and an iptables-nft rule in the target's
// INPUT drop the request: the drop is NETFILTER_DROP in the target's
// namespace, and the rule that decided is shown.
func TestE2EDropInInput(t *testing.T) {
	topo, n := router(t)
	b := inode(t, n.B)
	for _, tc := range []struct {
		name           string
		add, del       [][]string
		chain4, chain6 string
		rule4, rule6   string
	}{
		{name: "nftables",
			add: [][]string{{"nft", "add table inet tpdrop; add chain inet tpdrop input { type filter hook input priority 0; }; " +
				"add rule inet tpdrop input icmp type echo-request drop; add rule inet tpdrop input icmpv6 type echo-request drop"}},
			del:    [][]string{{"nft", "delete table inet tpdrop"}},
			chain4: "tpdrop.input", chain6: "tpdrop.input", rule4: "icmp type echo-request drop", rule6: "icmpv6 type echo-request drop"},
		{name: "iptables-nft",
			add:    [][]string{{"iptables", "-I", "INPUT", "-p", "icmp", "-j", "DROP"}, {"ip6tables", "-I", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request", "-j", "DROP"}},
			del:    [][]string{{"iptables", "-D", "INPUT", "-p", "icmp", "-j", "DROP"}, {"ip6tables", "-D", "INPUT", "-p", "ipv6-icmp", "--icmpv6-type", "echo-request", "-j", "DROP"}},
			chain4: "filter.INPUT", chain6: "filter.INPUT", rule4: "drop", rule6: "drop"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, c := range tc.add {
				inNetns(t, n.B, c...)
			}
			t.Cleanup(func() {
				for _, c := range tc.del {
					inNetns(t, n.B, c...)
				}
			})
			families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
				if err := topo.CheckOwnRoute(n.Source, target); err != nil {
					t.Fatal(err)
				}
				chain, rule := tc.chain4, tc.rule4
				if target.Is6() {
					chain, rule = tc.chain6, tc.rule6
				}
				e := traceLost(t, n.Source, target, "-W", "500ms")
				assertLoss(t, e, wantLoss{result: "dropped", reason: "NETFILTER_DROP", netns: b, ifname: n.BLink, withoutAnError: true})
				var verdict *jsonNetfilter
				for _, h := range e.Hops {
					if h.Netfilter != nil && h.Netfilter.Verdict == "DROP" {
						verdict = h.Netfilter
					}
				}
				if verdict == nil || verdict.Table+"."+verdict.Chain != chain || !strings.HasSuffix(verdict.Rule, rule) {
					t.Errorf("DROP verdict %+v, want %s with a rule ending in %q", verdict, chain, rule)
				}
			})
		})
	}
}

// TestE2EDropNoCarrier: the target's end of the router's link onward is
// down, so the router's end has no carrier: the hint says so.
func TestE2EDropNoCarrier(t *testing.T) {
	topo, n := router(t)
	r := inode(t, n.R)
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
	}
	inNetns(t, n.B, "ip", "link", "set", n.BLink, "down")
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		e := traceLost(t, n.Source, target)
		t.Logf("result %q drop %+v hint %q rows %v", e.Result, e.Drop, e.Hint, rows(e))
		hint := e.Hint
		if e.Drop != nil {
			hint = e.Drop.Hint
			if uint64(e.Drop.Netns) != r {
				t.Errorf("drop in %d, want the router %d", e.Drop.Netns, r)
			}
		}
		if !strings.Contains(hint, "no carrier") || !strings.Contains(hint, n.RLinkB) {
			t.Errorf("hint %q, want it to say %s has no carrier", hint, n.RLinkB)
		}
	})
}
