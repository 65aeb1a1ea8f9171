package main

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// TestE2EEchoThroughRandomMasquerade: R masquerades what leaves toward B
// with random ports, as kube-proxy's KUBE-POSTROUTING and Calico's outgoing
// NAT do, which for an echo rewrites its id. The echo is followed past the
// rewrite by its payload's cookie, on both ways.
func TestE2EEchoThroughRandomMasquerade(t *testing.T) {
	_, n := router(t)
	testenv.RequireCommands(t, "iptables", "ip6tables", "conntrack")
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	for _, ipt := range []string{"iptables", "ip6tables"} {
		inNetns(t, n.R, ipt, "-t", "nat", "-A", "POSTROUTING", "-o", n.RLinkB, "-j", "MASQUERADE", "--random-fully")
	}
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		e, _ := probeJSON(t, n.A, 0, "-W", "2s", target.String())
		want := []string{
			row(a, "eth0", "out", "request"), row(r, "eth0", "in", "request"), row(r, "eth1", "out", "request"), row(b, "eth0", "in", "request"),
			row(b, "eth0", "out", "reply"), row(r, "eth1", "in", "reply"), row(r, "eth0", "out", "reply"), row(a, "eth0", "in", "reply"),
		}
		if got := rows(e); e.Result != "reply" || strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("result %q, rows:\n%s\nwant:\n%s", e.Result, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// R's conntrack has the echo's id rewritten: the reply tuple's id
		// is not the request's.
		family := map[bool]string{false: "ipv4", true: "ipv6"}[target.Is6()]
		proto := map[bool]string{false: "icmp", true: "icmpv6"}[target.Is6()]
		out := inNetns(t, n.R, "conntrack", "-L", "-f", family, "-p", proto, "-d", target.String())
		if !strings.Contains(out, fmt.Sprintf("id=%d ", e.EchoID)) || strings.Count(out, fmt.Sprintf("id=%d ", e.EchoID)) != 1 {
			t.Errorf("conntrack in %s does not show echo id %d rewritten:\n%s", n.R.Name, e.EchoID, out)
		}
	})
}
