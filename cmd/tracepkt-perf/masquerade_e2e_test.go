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
// probe already rewritten. The translation is shown against the address
// and port the prober sent from, with A's rule, in the summary, in the
// JSON of the first hop and in a replay of the run's recording. Echoes
// have no translations: only TCP and UDP probes.
func TestE2ESourceNATWhereSent(t *testing.T) {
	topo, n := router(t)
	testenv.RequireCommands(t, "nft", "conntrack", "ss")
	a := inode(t, n.A)
	const ports = "41000-41009"
	snat4, snat6 := nthPrefix(n.A4, 3), nthPrefix(n.A6, 3)
	if err := topo.AddAddr(n.ALink, n.A, snat4); err != nil {
		t.Fatal(err)
	}
	// Deprecated, so that the kernel sends from A's first address, as it
	// does for IPv4, and still takes what comes to this one.
	inNetns(t, n.A, "ip", "-6", "addr", "add", snat6.String(), "dev", n.ALink, "nodad", "preferred_lft", "0")
	rules := fmt.Sprintf(`table ip tpsnat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip daddr %s meta l4proto { tcp, udp } snat to %s:%s
	}
}
table ip6 tpsnat {
	chain post {
		type nat hook postrouting priority srcnat; policy accept;
		ip6 daddr %s meta l4proto { tcp, udp } snat to [%s]:%s
	}
}
`, n.Target4, snat4.Addr(), ports, n.Target6, snat6.Addr(), ports)
	cmd := exec.Command("ip", "netns", "exec", n.A.Name, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft -f: %v\n%s", err, out)
	}
	listen(t, n.B, 80)
	dnsResponder(t, n.B, 53)

	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		if err := topo.CheckOwnRoute(n.A, target); err != nil {
			t.Fatalf("not probing: %v", err)
		}
		family, ctFamily, sent, snat := "ip", "ipv4", n.A4.Addr(), snat4.Addr()
		if target.Is6() {
			family, ctFamily, sent, snat = "ip6", "ipv6", n.A6.Addr(), snat6.Addr()
		}
		listing := inNetns(t, n.A, "nft", "-a", "list", "table", family, "tpsnat")
		handle := ruleHandle(t, listing, "snat to")
		for _, c := range []struct {
			proto, result string
			port          uint16
		}{{"tcp", "open", 80}, {"udp", "reply", 53}} {
			t.Run(c.proto, func(t *testing.T) {
				rec := filepath.Join(t.TempDir(), "snat.tpk")
				e, live := probeJSON(t, n.A, 0, "-W", "2s", "--record", rec, "--"+c.proto, fmt.Sprint(c.port), target.String())
				if e.Result != c.result {
					t.Fatalf("result %q, want %q", e.Result, c.result)
				}
				// What A's conntrack made of the probe: the port the
				// prober sent from, and the one the rule gave it.
				ct := inNetns(t, n.A, "conntrack", "-L", "-f", ctFamily, "-p", c.proto, "-d", target.String(), "--dport", fmt.Sprint(c.port))
				var flows []string
				for _, l := range strings.Split(ct, "\n") {
					if strings.Contains(l, " src=") {
						flows = append(flows, l)
					}
				}
				var src, replyDst string
				var from, to uint16
				if len(flows) == 1 {
					for _, w := range strings.Fields(flows[0]) {
						k, v, _ := strings.Cut(w, "=")
						switch {
						case k == "src" && src == "":
							src = v
						case k == "dst" && src != "" && v != target.String():
							replyDst = v
						case k == "sport" && from == 0:
							fmt.Sscan(v, &from)
						case k == "dport" && v != fmt.Sprint(c.port):
							fmt.Sscan(v, &to)
						}
					}
				}
				if len(flows) != 1 || src != sent.String() || replyDst != snat.String() || from == 0 || to < 41000 || to > 41009 {
					t.Fatalf("conntrack in %s: want one flow from %s rewritten to %s:%s:\n%s", n.A.Name, sent, snat, ports, ct)
				}
				before, after := netip.AddrPortFrom(sent, from).String(), netip.AddrPortFrom(snat, to).String()

				// The first hop, A's eth0 out, already carries the rewritten
				// source, and shows the translation; no other hop shows one.
				var nat []string
				hops := deviceHops(e)
				for i, h := range hops {
					for _, x := range h.NAT {
						nat = append(nat, fmt.Sprintf("hop %d %s: %s %s -> %s @%d %s.%s %q", i,
							row(uint64(h.Netns), h.Ifname, h.Dir, h.Type), x.Kind, x.Before, x.After, x.Netns, x.Table, x.Chain, x.Rule))
					}
				}
				first := hops[0]
				typ := map[string]string{"tcp": "syn", "udp": "request"}[c.proto]
				rule := ruleText(t, listing, "snat to")
				want := []string{fmt.Sprintf("hop 0 %s: SNAT %s -> %s @%d tpsnat.post %q", row(a, "eth0", "out", typ), before, after, a, rule)}
				if first.Src != after || first.Sport != to {
					t.Errorf("first hop from %s (port %d), want %s", first.Src, first.Sport, after)
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
				line := fmt.Sprintf("  SNAT %s -> %s in network namespace %s (%d) (tpsnat.post rule %d: %s)\n", before, after, n.A.Name, a, handle, rule)
				if table.code != 0 || !strings.Contains(table.stdout, line) {
					t.Errorf("replay as a table: exit %d, no line\n%s\nin:\n%s%s", table.code, line, table.stderr, table.stdout)
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
