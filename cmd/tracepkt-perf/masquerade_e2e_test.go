package main

import (
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
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

// TestE2ESourceNATWhereSent: the prober's own namespace A rewrites the
// source of what it sends to B (another address of A's, ports 41000-41009)
// in its nat POSTROUTING, before the first hop, where the tool sees the
// probe already rewritten; and, for a port of an address of no namespace,
// its destination in OUTPUT. The translations are shown against the
// addresses and ports the prober sent from and to, with A's rules, in the
// summary, in the JSON of the first hop and in a replay of the run's
// recording. Echoes have no translations: only TCP and UDP probes.
func TestE2ESourceNATWhereSent(t *testing.T) {
	topo, n := router(t)
	testenv.RequireCommands(t, "nft", "conntrack", "ss")
	a := inode(t, n.A)
	const ports = "41000-41009"
	snat4, snat6 := nthPrefix(n.A4, 3), nthPrefix(n.A6, 3)
	vip4, vip6 := lastHost(n.B4), lastHost(n.B6)
	if err := topo.AddAddr(n.ALink, n.A, snat4); err != nil {
		t.Fatal(err)
	}
	// Deprecated, so that the kernel sends from A's first address, as it
	// does for IPv4, and still takes what comes to this one.
	inNetns(t, n.A, "ip", "-6", "addr", "add", snat6.String(), "dev", n.ALink, "nodad", "preferred_lft", "0")
	rules := fmt.Sprintf(`table ip tpsnat {
	chain out {
		type nat hook output priority -100; policy accept;
		ip daddr %[1]s tcp dport 8080 dnat to %[2]s:80
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr %[2]s meta l4proto { tcp, udp } snat to %[3]s:%[7]s
	}
}
table ip6 tpsnat {
	chain out {
		type nat hook output priority -100; policy accept;
		ip6 daddr %[4]s tcp dport 8080 dnat to [%[5]s]:80
	}
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip6 daddr %[5]s meta l4proto { tcp, udp } snat to [%[6]s]:%[7]s
	}
}
`, vip4, n.Target4, snat4.Addr(), vip6, n.Target6, snat6.Addr(), ports)
	cmd := exec.Command("ip", "netns", "exec", n.A.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	listen(t, n.B, 80)
	dnsResponder(t, n.B, 53)

	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		family, ctFamily, sent, snat, vip := "ip", "ipv4", n.A4.Addr(), snat4.Addr(), vip4
		if target.Is6() {
			hostOnly(t, "IPv6 NAT where sent: the kernel's IPv6 NAT paths are the Service tests' in the guests")
			family, ctFamily, sent, snat, vip = "ip6", "ipv6", n.A6.Addr(), snat6.Addr(), vip6
		}
		for _, dst := range []netip.Addr{target, vip} {
			if err := topo.CheckOwnRoute(n.A, dst); err != nil {
				t.Fatalf("not probing: %v", err)
			}
		}
		listing := inNetns(t, n.A, "nft", "-a", "list", "table", family, "tpsnat")
		snatRule, dnatRule := ruleText(t, listing, "snat to"), ruleText(t, listing, "dnat to")
		snatHandle, dnatHandle := ruleHandle(t, listing, "snat to"), ruleHandle(t, listing, "dnat to")
		for _, c := range []struct {
			name, proto, result string
			to                  netip.AddrPort
		}{
			{"tcp", "tcp", "open", netip.AddrPortFrom(target, 80)},
			{"udp", "udp", "reply", netip.AddrPortFrom(target, 53)},
			{"tcp through an OUTPUT DNAT", "tcp", "open", netip.AddrPortFrom(vip, 8080)},
		} {
			t.Run(c.name, func(t *testing.T) {
				rec := filepath.Join(t.TempDir(), "snat.tpk")
				e, live := probeJSON(t, n.A, 0, "-W", "2s", "--record", rec, "--"+c.proto, fmt.Sprint(c.to.Port()), c.to.Addr().String())
				if e.Result != c.result {
					t.Fatalf("result %q, want %q", e.Result, c.result)
				}
				// What A's conntrack made of the probe: the port the
				// prober sent from, and the one the rule gave it.
				ct := inNetns(t, n.A, "conntrack", "-L", "-f", ctFamily, "-p", c.proto, "-d", c.to.Addr().String(), "--dport", fmt.Sprint(c.to.Port()))
				var flows []string
				for _, l := range strings.Split(ct, "\n") {
					if strings.Contains(l, " src=") {
						flows = append(flows, l)
					}
				}
				tuples := map[string][]string{} // original, then reply
				if len(flows) == 1 {
					for _, w := range strings.Fields(flows[0]) {
						if k, v, ok := strings.Cut(w, "="); ok {
							tuples[k] = append(tuples[k], v)
						}
					}
				}
				var from, to uint16
				if len(tuples["sport"]) == 2 && len(tuples["dport"]) == 2 {
					fmt.Sscan(tuples["sport"][0], &from)
					fmt.Sscan(tuples["dport"][1], &to)
				}
				if len(flows) != 1 || len(tuples["src"]) != 2 || tuples["src"][0] != sent.String() || tuples["dst"][1] != snat.String() ||
					tuples["src"][1] != target.String() || from == 0 || to < 41000 || to > 41009 {
					t.Fatalf("conntrack in %s: want one flow from %s rewritten to %s:%s, answered by %s:\n%s", n.A.Name, sent, snat, ports, target, ct)
				}
				before, after := netip.AddrPortFrom(sent, from).String(), netip.AddrPortFrom(snat, to).String()
				dnatTo := netip.AddrPortFrom(target, 80).String()

				// The first hop, A's eth0 out, already carries the rewritten
				// addresses, and shows the translations; no other hop shows one.
				var nat []string
				hops := deviceHops(e)
				for i, h := range hops {
					for _, x := range h.NAT {
						nat = append(nat, fmt.Sprintf("hop %d %s: %s %s -> %s @%d %s.%s %q", i,
							row(uint64(h.Netns), h.Ifname, h.Dir, h.Type), x.Kind, x.Before, x.After, x.Netns, x.Table, x.Chain, x.Rule))
					}
				}
				first := row(a, "eth0", "out", map[string]string{"tcp": "syn", "udp": "request"}[c.proto])
				var want, lines []string
				dst := c.to.String()
				if c.to.Addr() == vip {
					dst = dnatTo
					want = append(want, fmt.Sprintf("hop 0 %s: DNAT %s -> %s @%d tpsnat.out %q", first, c.to, dnatTo, a, dnatRule))
					lines = append(lines, fmt.Sprintf("  DNAT %s -> %s in network namespace %s (%d) (tpsnat.out rule %d: %s)\n", c.to, dnatTo, n.A.Name, a, dnatHandle, dnatRule))
				}
				want = append(want, fmt.Sprintf("hop 0 %s: SNAT %s -> %s @%d tpsnat.post %q", first, before, after, a, snatRule))
				lines = append(lines, fmt.Sprintf("  SNAT %s -> %s in network namespace %s (%d) (tpsnat.post rule %d: %s)\n", before, after, n.A.Name, a, snatHandle, snatRule))
				if h := hops[0]; h.Src != after || h.Sport != to || h.Dst != dst {
					t.Errorf("first hop %s -> %s (port %d), want %s -> %s", h.Src, h.Dst, h.Sport, after, dst)
				}
				if strings.Join(nat, "\n") != strings.Join(want, "\n") {
					t.Errorf("translations:\n%s\nwant:\n%s", strings.Join(nat, "\n"), strings.Join(want, "\n"))
				}

				// A replay shows the same, as JSON and in the summary.
				replayed := runTool(t, nil, "--json", "--replay", rec)
				if replayed.code != 0 || replayed.stdout != live.stdout {
					t.Errorf("replay: exit %d, output differs from the live run's:\n%s\nlive:\n%s", replayed.code, replayed.stdout, live.stdout)
				}
				table := runTool(t, nil, "--replay", rec)
				if table.code != 0 || !strings.Contains(table.stdout, strings.Join(lines, "")) {
					t.Errorf("replay as a table: exit %d, no lines\n%s\nin:\n%s%s", table.code, strings.Join(lines, ""), table.stderr, table.stdout)
				}
			})
		}
	})
}

// ruleText is the text, as nft lists it, of the one rule of an `nft -a
// list` output that contains text (see ruleHandle).
func ruleText(t *testing.T, listing, text string) string {
	t.Helper()
	ruleHandle(t, listing, text)
	for _, line := range strings.Split(listing, "\n") {
		if rule, _, ok := strings.Cut(line, " # handle "); ok && strings.Contains(line, text) {
			return strings.TrimSpace(rule)
		}
	}
	return ""
}
