package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// traceUnanswered checks what every echo that reaches the target's
// namespace and is never answered shows, and returns its hint: the
// request's rows up to its arrival in the target, no ICMP error, and for
// IPv4 result timeout without a drop (the kernel consumes the request);
// IPv6 frees it as a drop without a reason, in icmpv6_rcv, which the drop
// row shows with the hint.
func traceUnanswered(t *testing.T, e jsonEcho, target uint64, ifname string) string {
	t.Helper()
	desc := strings.Join(rows(e), "\n")
	last := e.Hops[len(e.Hops)-1]
	if e.Family == "ipv6" && e.Drop != nil {
		d := e.Drop
		if e.Result != "dropped" || uint64(d.Netns) != target || d.Ifname != ifname || !strings.HasPrefix(d.Location, "icmpv6_rcv+") || !slices.Contains([]string{"", "NOT_SPECIFIED"}, d.Reason) {
			t.Errorf("result %q, drop %+v; want the request freed by icmpv6_rcv after %s in %d\n%s", e.Result, d, ifname, target, desc)
		}
		return d.Hint
	}
	switch {
	case e.Result != "timeout" || e.Drop != nil || e.ICMPError != nil:
		t.Errorf("result %q, drop %+v, icmp_error %+v; want timeout without a drop or an error\n%s", e.Result, e.Drop, e.ICMPError, desc)
	case uint64(last.Netns) != target || last.Ifname != ifname || last.Dir != "in" || last.Type != "request":
		t.Errorf("last row %s, want the request entering %s in %d\n%s", row(uint64(last.Netns), last.Ifname, last.Dir, last.Type), ifname, target, desc)
	}
	return e.Hint
}

// TestE2EUnansweredEchoIgnored: the target's namespace ignores echo
// requests (net.ipv4.icmp_echo_ignore_all, net.ipv6.icmp.echo_ignore_all):
// the kernel consumes the request without a drop, and the hint names the
// setting.
func TestE2EUnansweredEchoIgnored(t *testing.T) {
	topo, n := router(t)
	b := inode(t, n.B)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		key := "net.ipv4.icmp_echo_ignore_all"
		if target.Is6() {
			key = "net.ipv6.icmp.echo_ignore_all"
		}
		inNetns(t, n.B, "sysctl", "-qw", key+"=1")
		defer inNetns(t, n.B, "sysctl", "-qw", key+"=0")
		hint := traceUnanswered(t, traceLost(t, n.Source, target, "-W", "0.5"), b, n.BLink)
		if want := fmt.Sprintf("%s ignores echo requests: %s = 1 in %s", target, key, n.B.Name); hint != want {
			t.Errorf("hint %q, want %q", hint, want)
		}
	})
}

// TestE2EUnansweredNoRouteBack: the target has no route back to the
// source (its default route removed): it cannot send the reply, and the
// hint says so with the failed lookup.
func TestE2EUnansweredNoRouteBack(t *testing.T) {
	topo, n := router(t)
	b := inode(t, n.B)
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
	}
	inNetns(t, n.B, "ip", "-4", "route", "del", "default")
	inNetns(t, n.B, "ip", "-6", "route", "del", "default")
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		src := n.A4.Addr()
		if target.Is6() {
			src = n.A6.Addr()
		}
		hint := traceUnanswered(t, traceLost(t, n.Source, target, "-W", "0.5"), b, n.BLink)
		want := fmt.Sprintf("%s cannot answer %s: route lookup in %s for %s: no route (network unreachable)", target, src, n.B.Name, src)
		if hint != want {
			t.Errorf("hint %q, want %q", hint, want)
		}
	})
}
