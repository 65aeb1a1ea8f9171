package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// TestE2EAsymmetricConntrack: A reaches B over a direct link, B answers
// through the router R, whose forward chain drops what conntrack calls
// invalid (the rule firewalls and Kubernetes nodes carry). R never saw the
// request, so conntrack there has no connection for the answer: the echo
// reply and the SYN-ACK are invalid to it, and dropped. The tool must name
// the drop by its rule and say why the answer was invalid: the request went
// around R. An answer another rule drops there is said to have come back
// another way, without the why; with both ways through R, nothing is.
func TestE2EAsymmetricConntrack(t *testing.T) {
	topo, n := router(t)
	d4, d6 := topology.TestNets()
	// The direct link: A has the first address, B the second.
	direct := nthPrefix
	if err := topo.Veth("eth1", n.A, "eth1", n.B); err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		ns *topology.Netns
		p  netip.Prefix
	}{{n.A, direct(d4, 1)}, {n.B, direct(d4, 2)}, {n.A, direct(d6, 1)}, {n.B, direct(d6, 2)}} {
		if err := topo.AddAddr("eth1", a.ns, a.p); err != nil {
			t.Fatal(err)
		}
	}
	// B takes the request on eth1 from an address it routes through eth0.
	inNetns(t, n.B, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth1.rp_filter=0")
	inNetns(t, n.R, "nft", "add table inet tpct; add chain inet tpct forward { type filter hook forward priority filter; policy accept; }; "+
		"add rule inet tpct forward ct state invalid counter drop")
	listen(t, n.B, 80)
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	cell := func(ns *topology.Netns, inode uint64) string { return fmt.Sprintf("%s (%d)", ns.Name, inode) }

	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		via, src := direct(d4, 2).Addr(), n.A4.Addr()
		if target.Is6() {
			via, src = direct(d6, 2).Addr(), n.A6.Addr()
		}
		// The request's way around R, from A's address on its link to R,
		// which B routes back through R.
		inNetns(t, n.A, "ip", "route", "add", netip.PrefixFrom(target, target.BitLen()).String(), "via", via.String(), "src", src.String())
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name           string
			args           []string
			request, reply string
		}{
			{"echo", nil, "request", "reply"},
			{"tcp", []string{"--tcp", "80"}, "syn", "syn-ack"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				e := traceLost(t, n.Source, target, append([]string{"-W", "500ms"}, tc.args...)...)
				want := []string{
					row(a, "eth1", "out", tc.request),
					row(b, "eth1", "in", tc.request),
					row(b, "eth0", "out", tc.reply),
					row(r, "eth1", "in", tc.reply),
					nfWant(r, "eth1", "tpct.forward", "DROP", "ct state invalid counter drop"),
					row(r, "eth1", "drop", tc.reply),
				}
				if got := rowsWithNetfilter(e); e.Result != "dropped" || strings.Join(got, "\n") != strings.Join(want, "\n") {
					t.Errorf("result %s, rows:\n%s\nwant:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
				hint := fmt.Sprintf("asymmetric routes: the request went %s -> %s, never through %s, so conntrack there has no connection for the %s: to it the %s is invalid (ct state invalid)",
					cell(n.A, a), cell(n.B, b), cell(n.R, r), tc.reply, tc.reply)
				if e.Drop == nil || e.Drop.Hint != hint || uint64(e.Drop.Netns) != r {
					t.Errorf("drop %+v\nwant in %d, with the hint %q", e.Drop, r, hint)
				}
				if tc.name != "echo" || target.Is6() {
					return // each run is slow in an emulated guest: the table once
				}
				if table := runTool(t, n.Source, append(append([]string{"-W", "500ms"}, tc.args...), target.String())...); !strings.Contains(table.stdout, "\n  "+hint+"\n") {
					t.Errorf("the table lacks the hint:\n%s", table.stdout)
				}
			})
		}
		if target.Is6() {
			return // what follows depends on no family
		}
		// Another rule of R drops the SYN-ACK first: the hint says only
		// where the request went.
		inNetns(t, n.R, "nft", "insert rule inet tpct forward tcp sport 80 counter drop")
		t.Cleanup(func() {
			handle := ruleHandle(t, inNetns(t, n.R, "nft", "-a", "list", "chain", "inet", "tpct", "forward"), "tcp sport 80")
			inNetns(t, n.R, "nft", "delete", "rule", "inet", "tpct", "forward", "handle", fmt.Sprint(handle))
		})
		other := func(name, hint string) {
			if err := topo.CheckOwnRoute(n.Source, target); err != nil {
				t.Fatal(err)
			}
			e := traceLost(t, n.Source, target, "-W", "500ms", "--tcp", "80")
			rows := rowsWithNetfilter(e)
			if e.Result != "dropped" || len(rows) < 2 || rows[len(rows)-2] != nfWant(r, "eth1", "tpct.forward", "DROP", "tcp sport 80 counter drop") || e.Drop == nil || e.Drop.Hint != hint {
				t.Errorf("%s: result %s, drop %+v, want the hint %q; rows:\n%s", name, e.Result, e.Drop, hint, strings.Join(rows, "\n"))
			}
		}
		other("around R", fmt.Sprintf("asymmetric routes: the request went %s -> %s, never through %s, where the syn-ack was dropped", cell(n.A, a), cell(n.B, b), cell(n.R, r)))
		// Both ways through R: R saw the SYN.
		inNetns(t, n.A, "ip", "route", "del", netip.PrefixFrom(target, target.BitLen()).String())
		other("through R", "")
	})
}
