package main

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// dockerPublishRules is the ruleset Docker writes (iptables backend) for its
// default bridge with one container at ctr publishing port 8080 to its TCP
// port 80 and port 5353 to its UDP port 53 (`docker run -p 8080:80 -p
// 5353:53/udp`), in iptables-restore form for one family.
// Docker 27's shape is hostfw_e2e_test.go's dockerRules with the container's
// per-port ACCEPT in filter DOCKER and its hairpin masquerade; Docker 28's
// (moby's integration/network/bridge/iptablesdoc) moves the FORWARD rules
// into DOCKER-FORWARD, DOCKER-CT and DOCKER-BRIDGE, ends filter DOCKER with
// a DROP of anything else routed to the bridge, and drops in raw PREROUTING
// what is sent to the container's address from outside the bridge. Both
// DNAT in nat DOCKER, from PREROUTING and from OUTPUT for local addresses
// other than loopback. FORWARD's policy is DROP, as Docker sets it when it
// turns forwarding on itself.
func dockerPublishRules(version int, bridge string, subnet netip.Prefix, ctr netip.Addr) string {
	host, loopback := "/32", "127.0.0.0/8"
	if ctr.Is6() {
		host, loopback = "/128", "::1/128"
	}
	r := strings.NewReplacer("BR", bridge, "SUBNET", subnet.String(), "CTRPORT", netip.AddrPortFrom(ctr, 80).String(),
		"CTRDNS", netip.AddrPortFrom(ctr, 53).String(), "CTR", ctr.String()+host, "LOOPBACK", loopback)
	if version == 27 {
		return r.Replace(`*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d LOOPBACK -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s SUBNET ! -o BR -j MASQUERADE
-A POSTROUTING -s CTR -d CTR -p tcp -m tcp --dport 80 -j MASQUERADE
-A POSTROUTING -s CTR -d CTR -p udp -m udp --dport 53 -j MASQUERADE
-A DOCKER -i BR -j RETURN
-A DOCKER ! -i BR -p tcp -m tcp --dport 8080 -j DNAT --to-destination CTRPORT
-A DOCKER ! -i BR -p udp -m udp --dport 5353 -j DNAT --to-destination CTRDNS
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o BR -j DOCKER
-A FORWARD -i BR ! -o BR -j ACCEPT
-A FORWARD -i BR -o BR -j ACCEPT
-A DOCKER -d CTR ! -i BR -o BR -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER -d CTR ! -i BR -o BR -p udp -m udp --dport 53 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i BR ! -o BR -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o BR -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
`)
	}
	return r.Replace(`*raw
-A PREROUTING -d CTR ! -i BR -j DROP
COMMIT
*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d LOOPBACK -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s SUBNET ! -o BR -j MASQUERADE
-A DOCKER ! -i BR -p tcp -m tcp --dport 8080 -j DNAT --to-destination CTRPORT
-A DOCKER ! -i BR -p udp -m udp --dport 5353 -j DNAT --to-destination CTRDNS
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-BRIDGE - [0:0]
:DOCKER-CT - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-INTERNAL - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
-A DOCKER -d CTR ! -i BR -o BR -p tcp -m tcp --dport 80 -j ACCEPT
-A DOCKER -d CTR ! -i BR -o BR -p udp -m udp --dport 53 -j ACCEPT
-A DOCKER ! -i BR -o BR -j DROP
-A DOCKER-BRIDGE -o BR -j DOCKER
-A DOCKER-CT -o BR -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-INTERNAL
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i BR -j ACCEPT
COMMIT
`)
}

// dockerHostNet is a Docker host of the test's own: a client namespace
// joined to a "host" namespace by a veth pair, and a "container" namespace
// behind a bridge of the host, docker0 as Docker makes it.
type dockerHostNet struct {
	Client, Host, Container *topology.Netns
	Bridge, HostVeth        string // in Host
	// Client4/6 are the client's addresses, Host4/6 the host's on the
	// client's link: the address a published port is probed at.
	Client4, Client6, Host4, Host6 netip.Addr
	Subnet4, Subnet6               netip.Prefix // the bridge's networks
	Ctr4, Ctr6                     netip.Addr   // the container's addresses
}

// firstSecond returns the first and second addresses of p, with p's length.
func firstSecond(p netip.Prefix) (netip.Prefix, netip.Prefix) {
	a := p.Masked().Addr().Next()
	return netip.PrefixFrom(a, p.Bits()), netip.PrefixFrom(a.Next(), p.Bits())
}

// dockerHost builds a dockerHostNet with forwarding on in the host, a TCP
// listener on port 80 and a DNS responder on port 53 in the container;
// everything is removed with t.
func dockerHost(t *testing.T) *dockerHostNet {
	t.Helper()
	topo := testenv.Topology(t)
	prefix := topology.UniqueName("tp")
	n := &dockerHostNet{Bridge: "docker0", HostVeth: "veth" + prefix[2:]}
	var err error
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	n.Client, err = topo.Netns(prefix + "-c")
	must(err)
	n.Host, err = topo.Netns(prefix + "-h")
	must(err)
	n.Container, err = topo.Netns(prefix + "-k")
	must(err)
	must(n.Host.Forwarding(true))
	must(topo.Veth("eth0", n.Client, "eth0", n.Host))
	must(topo.Bridge(n.Bridge, n.Host))
	must(topo.Veth(n.HostVeth, n.Host, "eth0", n.Container))
	must(topo.SetMaster(n.HostVeth, n.Host, n.Bridge))
	link4, link6 := topology.TestNets()
	n.Subnet4, n.Subnet6 = topology.TestNets()
	for _, f := range []struct {
		link, subnet  netip.Prefix
		client, host  *netip.Addr
		ctr           *netip.Addr
		defaultPrefix netip.Prefix
	}{
		{link4, n.Subnet4, &n.Client4, &n.Host4, &n.Ctr4, netip.MustParsePrefix("0.0.0.0/0")},
		{link6, n.Subnet6, &n.Client6, &n.Host6, &n.Ctr6, netip.MustParsePrefix("::/0")},
	} {
		host, client := firstSecond(f.link)
		gw, ctr := firstSecond(f.subnet)
		must(topo.AddAddr("eth0", n.Host, host))
		must(topo.AddAddr("eth0", n.Client, client))
		must(topo.AddRoute(n.Client, f.defaultPrefix, host.Addr()))
		must(topo.AddAddr(n.Bridge, n.Host, gw))
		must(topo.AddAddr("eth0", n.Container, ctr))
		must(topo.AddRoute(n.Container, f.defaultPrefix, gw.Addr()))
		*f.client, *f.host, *f.ctr = client.Addr(), host.Addr(), ctr.Addr()
		if err := topo.CheckOwnRoute(n.Client, host.Addr()); err != nil {
			t.Fatalf("not probing: %v", err)
		}
	}
	var ln net.Listener
	must(n.Container.Do(func() (err error) {
		ln, err = net.Listen("tcp", ":80")
		return err
	}))
	t.Cleanup(func() { ln.Close() })
	dnsResponder(t, n.Container, 53)
	return n
}

// TestE2EPublishedPortDocker answers "why does curl host:8080 not reach my
// container" under Docker's own rules for `docker run -p 8080:80`, as
// Docker 27 and 28 write them with iptables-nft, IPv4 and IPv6, in a host
// namespace of the test's own: reached from a client and from the host
// itself (DNAT in OUTPUT), a port not published, and a DOCKER-USER DROP.
func TestE2EPublishedPortDocker(t *testing.T) {
	for _, version := range []int{27, 28} {
		t.Run(fmt.Sprintf("docker%d", version), func(t *testing.T) {
			if version == 27 {
				hostOnly(t, "Docker 27's rule shape: the kernel paths of Docker 28's")
			}
			testenv.RequireCommands(t, "iptables-restore", "ip6tables-restore", "iptables", "ip6tables", "nft")
			n := dockerHost(t)
			for _, f := range []struct {
				restore string
				subnet  netip.Prefix
				ctr     netip.Addr
			}{{"iptables-restore", n.Subnet4, n.Ctr4}, {"ip6tables-restore", n.Subnet6, n.Ctr6}} {
				cmd := exec.Command("ip", "netns", "exec", n.Host.Name, f.restore, "--noflush")
				cmd.Stdin = strings.NewReader(dockerPublishRules(version, n.Bridge, f.subnet, f.ctr))
				if out, err := cmd.CombinedOutput(); err != nil {
					t.Fatalf("%s: %v\n%s", f.restore, err, out)
				}
			}
			publishedPortCases(t, n)
			publishedUDPCases(t, n)
		})
	}
}

// natRows lists the translations of e, one a line (the hop's row, kind,
// before and after, namespace, table.chain), and returns the last DNAT.
func natRows(e jsonEcho) (got []string, dnat *jsonNAT) {
	for _, hop := range e.Hops {
		for _, x := range hop.NAT {
			if x.Kind == "DNAT" {
				dnat = x
			}
			got = append(got, fmt.Sprintf("%s %s %s -> %s @%d %s.%s", row(uint64(hop.Netns), hop.Ifname, hop.Dir, hop.Type), x.Kind, x.Before, x.After, x.Netns, x.Table, x.Chain))
		}
	}
	return got, dnat
}

// wantDockerDNAT checks that dnat was made by the rule of the host's nat
// DOCKER chain that DNATs to after, whose row in res carries the handle
// `nft -a list` gives it.
func wantDockerDNAT(t *testing.T, n *dockerHostNet, res toolResult, dnat *jsonNAT, after string) {
	t.Helper()
	family := "ip"
	if netip.MustParseAddrPort(after).Addr().Is6() {
		family = "ip6"
	}
	handle := ruleHandle(t, inNetns(t, n.Host, "nft", "-a", "list", "chain", family, "nat", "DOCKER"), "dnat to "+after)
	if dnat == nil || dnat.Table != "nat" || dnat.Chain != "DOCKER" || !strings.Contains(dnat.Rule, "dnat to "+after) ||
		!strings.Contains(res.stdout, fmt.Sprintf(`"rule_handle":%d,`, handle)) {
		t.Errorf("DNAT rule %+v, want nat.DOCKER handle %d", dnat, handle)
	}
}

// wantPublishedNAT checks the translations of e, a probe from the client
// to the host's published port answered by the container's ctr: the DNAT
// where the request leaves by the bridge (wantDockerDNAT), undone where
// the answer (reply) leaves toward the client, and nothing else: the
// client is not on the bridge's network, so nothing masquerades it.
func wantPublishedNAT(t *testing.T, n *dockerHostNet, e jsonEcho, res toolResult, published, ctr netip.AddrPort, request, reply string) {
	t.Helper()
	h := inode(t, n.Host)
	got, dnat := natRows(e)
	want := []string{
		fmt.Sprintf("%s DNAT %s -> %s @%d nat.DOCKER", row(h, n.Bridge, "out", request), published, ctr, h),
		fmt.Sprintf("%s reverse DNAT %s -> %s @%d .", row(h, "eth0", "out", reply), ctr, published, h),
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("translations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	wantDockerDNAT(t, n, res, dnat, ctr.String())
}

func publishedPortCases(t *testing.T, n *dockerHostNet) {
	c, h, k := inode(t, n.Client), inode(t, n.Host), inode(t, n.Container)
	to := func(a netip.Addr, p uint16) string { return netip.AddrPortFrom(a, p).String() }
	families(t, n.Host4, n.Host6, func(t *testing.T, host netip.Addr) {
		ctr, client, family, iptables := n.Ctr4, n.Client4, "ip", "iptables"
		if host.Is6() {
			hostOnly(t, "IPv6 NAT, which the Service tests cover in the guests")
			ctr, client, family, iptables = n.Ctr6, n.Client6, "ip6", "ip6tables"
		}
		wantDNAT := func(t *testing.T, res toolResult, dnat *jsonNAT) {
			t.Helper()
			wantDockerDNAT(t, n, res, dnat, to(ctr, 80))
		}

		t.Run("from a client", func(t *testing.T) {
			e, res := probeJSON(t, n.Client, 0, "-W", "2s", "--tcp", "8080", host.String())
			if e.Result != "open" || e.Port != 8080 || e.AnswerFrom != host.String() {
				t.Errorf("result %q port %d answer from %q, want open from %s", e.Result, e.Port, e.AnswerFrom, host)
			}
			want := []string{
				row(c, "eth0", "out", "syn"), row(h, "eth0", "in", "syn"), row(h, n.Bridge, "out", "syn"), row(h, n.HostVeth, "out", "syn"), row(k, "eth0", "in", "syn"),
				row(k, "eth0", "out", "syn-ack"), row(h, n.HostVeth, "in", "syn-ack"), row(h, n.Bridge, "in", "syn-ack"), row(h, "eth0", "out", "syn-ack"), row(c, "eth0", "in", "syn-ack"),
				row(c, "eth0", "out", "rst"), row(h, "eth0", "in", "rst"), row(h, n.Bridge, "out", "rst"), row(h, n.HostVeth, "out", "rst"), row(k, "eth0", "in", "rst"),
			}
			if got := rows(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			wantPublishedNAT(t, n, e, res, netip.AddrPortFrom(host, 8080), netip.AddrPortFrom(ctr, 80), "syn", "syn-ack")
		})

		t.Run("from the host", func(t *testing.T) {
			// curl to the host's own address: translated in OUTPUT, before
			// the SYN's first hop.
			e, res := probeJSON(t, n.Host, 0, "-W", "2s", "--tcp", "8080", host.String())
			if e.Result != "open" || e.AnswerFrom != host.String() {
				t.Errorf("result %q answer from %q, want open from %s", e.Result, e.AnswerFrom, host)
			}
			want := []string{
				row(h, n.Bridge, "out", "syn"), row(h, n.HostVeth, "out", "syn"), row(k, "eth0", "in", "syn"),
				row(k, "eth0", "out", "syn-ack"), row(h, n.HostVeth, "in", "syn-ack"), row(h, n.Bridge, "in", "syn-ack"),
				row(h, n.Bridge, "out", "rst"), row(h, n.HostVeth, "out", "rst"), row(k, "eth0", "in", "rst"),
			}
			if got := rows(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			got, dnat := natRows(e)
			wantFirst := fmt.Sprintf("%s DNAT %s -> %s @%d nat.DOCKER", row(h, n.Bridge, "out", "syn"), to(host, 8080), to(ctr, 80), h)
			if len(got) == 0 || got[0] != wantFirst {
				t.Errorf("translations:\n%s\nwant first:\n%s", strings.Join(got, "\n"), wantFirst)
			}
			wantDNAT(t, res, dnat)
		})

		t.Run("not published", func(t *testing.T) {
			// Nothing DNATs 8081: the host's own stack answers, with an RST.
			e, _ := probeJSON(t, n.Client, 1, "-W", "2s", "--tcp", "8081", host.String())
			if e.Result != "closed" || e.AnswerFrom != host.String() {
				t.Errorf("result %q answer from %q, want closed by %s", e.Result, e.AnswerFrom, host)
			}
			want := []string{row(c, "eth0", "out", "syn"), row(h, "eth0", "in", "syn"), row(h, "eth0", "out", "rst"), row(c, "eth0", "in", "rst")}
			if got := rows(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got, _ := natRows(e); len(got) != 0 {
				t.Errorf("translations of a port not published:\n%s", strings.Join(got, "\n"))
			}
			table := runTool(t, n.Client, "-W", "2s", "--tcp", "8081", host.String())
			wantText := fmt.Sprintf("closed: %s answered RST in ", to(host, 8081))
			sentFrom := fmt.Sprintf("(sent from network namespace %s (%d))", n.Host.Name, h)
			if table.code != 1 || !strings.Contains(table.stdout, wantText) || !strings.Contains(table.stdout, sentFrom) {
				t.Errorf("exit %d, want 1, %q and %q in\n%s%s", table.code, wantText, sentFrom, table.stderr, table.stdout)
			}
		})

		t.Run("DOCKER-USER drop", func(t *testing.T) {
			rule := []string{"DOCKER-USER", "-s", netip.PrefixFrom(client, client.BitLen()).String(), "-j", "DROP"}
			inNetns(t, n.Host, append([]string{iptables, "-I"}, rule...)...)
			t.Cleanup(func() { inNetns(t, n.Host, append([]string{iptables, "-D"}, rule...)...) })
			handle := ruleHandle(t, inNetns(t, n.Host, "nft", "-a", "list", "chain", family, "filter", "DOCKER-USER"), " drop")
			e, _ := probeJSON(t, n.Client, 1, "-W", "1s", "--tcp", "8080", host.String())
			reason := "NETFILTER_DROP"
			if !kernelReasons(t) {
				reason = ""
			}
			if e.Result != "dropped" || e.Drop == nil || e.Drop.Netns != uint32(h) || e.Drop.Type != "syn" || e.Drop.Reason != reason {
				t.Errorf("result %q drop %+v, want dropped (%q) in %d", e.Result, e.Drop, reason, h)
			}
			var verdict *jsonNetfilter
			for _, hop := range e.Hops {
				if nf := hop.Netfilter; nf != nil && nf.Verdict == "DROP" {
					verdict = nf
				}
			}
			if verdict == nil || verdict.Table != "filter" || verdict.Chain != "DOCKER-USER" || verdict.RuleHandle != uint64(handle) {
				t.Errorf("dropping verdict %+v, want filter.DOCKER-USER rule %d", verdict, handle)
			}
		})
	})
}
