package main

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// dnsResponder answers DNS queries in ns on port (serveDNS), and checks
// with ss that the socket is there.
func dnsResponder(t *testing.T, ns *topology.Netns, port int) {
	t.Helper()
	serveDNS(t, ns.Do, port)
	if out := inNetns(t, ns, "ss", "-Huln", fmt.Sprintf("sport = :%d", port)); !strings.Contains(out, fmt.Sprintf(":%d", port)) {
		t.Fatalf("no UDP socket on %d in %s: %q", port, ns, out)
	}
}

// serveDNS answers, until t ends, on port (both families) of a socket
// opened inside enter, the DNS queries it is sent as a name server with
// nothing to say would: the query's id and question, the response bit, no
// records, no EDNS option echoed (so the answer carries no mark of the
// prober's). Anything else it reads and leaves unanswered, as DNS servers
// do with what is not a query.
func serveDNS(t *testing.T, enter func(func() error) error, port int) {
	t.Helper()
	var conn net.PacketConn
	if err := enter(func() (err error) {
		conn, err = net.ListenPacket("udp", fmt.Sprintf(":%d", port))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if errors.Is(err, net.ErrClosed) {
				return
			}
			if err != nil {
				continue
			}
			if answer := dnsAnswer(buf[:n]); answer != nil {
				conn.WriteTo(answer, from)
			}
		}
	}()
}

// dnsQueryHex is a DNS query for the root's NS records (id 0xabcd, one
// question, no EDNS), as `dig . NS` asks it: the payload of a probe to a
// DNS server on a port other than 53, where the tool's default is not a
// query.
const dnsQueryHex = "abcd010000010000000000000000020001"

// dnsAnswer is the answer to a DNS query of one question (RFC 1035), nil
// for anything else.
func dnsAnswer(q []byte) []byte {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // the root label, type, class
	if end > len(q) {
		return nil
	}
	a := append([]byte(nil), q[:end]...)
	a[2] |= 0x80                          // a response
	a[3] = 0x80                           // recursion available, no error
	binary.BigEndian.PutUint16(a[10:], 0) // no additional records
	return a
}

// occupy holds, in ns, a UDP flow from from to to that to answered, so its
// conntrack entry takes from: a masquerade to from's address and a port
// range holding from's port must pick another port.
func occupy(t *testing.T, ns *topology.Netns, from, to netip.AddrPort) {
	t.Helper()
	var conn *net.UDPConn
	if err := ns.Do(func() (err error) {
		conn, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(from), net.UDPAddrFromAddrPort(to))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	q, _ := hex.DecodeString(dnsQueryHex)
	if _, err := conn.Write(q); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 512)); err != nil {
		t.Fatalf("the flow %s -> %s holding the port got no answer: %v", from, to, err)
	}
}

// udpServiceReply probes vip's port 53 from src, through R's Service NAT
// to a DNS responder on B's epPort: src is A, a client outside the cluster
// network; R, the node itself, whose probe is translated before its first
// hop (OUTPUT, POSTROUTING); or B, the endpoint reaching itself through
// its Service (hairpin), which R sends back where it came from. It checks
// the reply: exit 0, its device rows; the DNAT's row, the rule of dnatBy
// (table.chain) with the handle `nft -a list` gives it, ACCEPT, on the
// request in R; and the translations in R, the DNAT by dnatBy and the
// masquerade by snatBy to the port R's conntrack holds for the flow, which
// it returns, undone on the reply.
func udpServiceReply(t *testing.T, n *topology.RouterNet, src *topology.Netns, vip netip.Addr, epPort int, dnatBy, snatBy string) (e jsonEcho, masq int) {
	t.Helper()
	s, r, b := inode(t, src), inode(t, n.R), inode(t, n.B)
	ep, rb, a, family, nftFamily := n.Target4, n.RB4.Addr(), n.A4.Addr(), "ipv4", "ip"
	if vip.Is6() {
		ep, rb, a, family, nftFamily = n.Target6, n.RB6.Addr(), n.A6.Addr(), "ipv6", "ip6"
	}
	// The probe's source, and the interface of R on its side.
	client, rIn := rb, ""
	switch src {
	case n.A:
		client, rIn = a, n.RLinkA
	case n.B:
		client, rIn = ep, n.RLinkB
	}
	table, chain, _ := strings.Cut(dnatBy, ".")
	dnat := "dnat to " + netip.AddrPortFrom(ep, uint16(epPort)).String()
	handle := ruleHandle(t, inNetns(t, n.R, "nft", "-a", "list", "chain", nftFamily, table, chain), dnat)

	e, _ = probeJSON(t, src, 0, "-W", "2s", "--udp", "53", vip.String())
	if e.Result != "reply" || e.Protocol != "udp" || e.Port != 53 || e.AnswerFrom != vip.String() || e.RTTNs <= 0 {
		t.Errorf("result %q protocol %q port %d answer from %q rtt %d", e.Result, e.Protocol, e.Port, e.AnswerFrom, e.RTTNs)
	}
	request := []string{row(r, n.RLinkB, "out", "request"), row(b, n.BLink, "in", "request")}
	reply := []string{row(b, n.BLink, "out", "reply"), row(r, n.RLinkB, "in", "reply")}
	if src != n.R {
		request = append([]string{row(s, "eth0", "out", "request"), row(r, rIn, "in", "request")}, request...)
		reply = append(reply, row(r, rIn, "out", "reply"), row(s, "eth0", "in", "reply"))
	}
	wantDeviceRows(t, e, append(request, reply...)...)

	var sport uint16 // the prober's, where it sends from another namespace than R's
	var rules []string
	for _, h := range e.Hops {
		if h.Type == "request" && h.Netns == uint32(s) && src != n.R && sport == 0 {
			sport = h.Sport
		}
		if nf := h.Netfilter; nf != nil && nf.RuleHandle == uint64(handle) && nf.Table == table && nf.Chain == chain {
			rules = append(rules, fmt.Sprintf("%s %d %s %s %q", h.Type, h.Netns, nf.Family, nf.Verdict, nf.Rule))
		}
	}
	// The DNAT's row: the rule nft lists, once, on the request in R.
	if len(rules) != 1 || !strings.HasPrefix(rules[0], fmt.Sprintf("request %d %s ACCEPT ", r, nftFamily)) || !strings.Contains(rules[0], dnat) {
		t.Errorf("rows of %s rule %d:\n%s\nwant one: request %d %s ACCEPT, %q", dnatBy, handle, strings.Join(rules, "\n"), r, nftFamily, dnat)
	}
	// The flow as R's conntrack has it: the prober's port (the node's own
	// is masqueraded before any hop sees it), and the port the masquerade
	// took, where the reply tuple's goes.
	filter := []string{"-f", family, "--orig-src", client.String(), "--orig-dst", vip.String(), "--orig-port-dst", "53"}
	if sport != 0 {
		filter = append(filter, "--orig-port-src", fmt.Sprint(sport))
	}
	ports, out := udpFlow(t, n.R, filter...)
	if ports[1] != 53 || ports[2] != epPort || sport != 0 && ports[0] != int(sport) {
		t.Fatalf("conntrack in %s: not one flow from %s (port %d) to %s, reply from port %d:\n%s", n.R.Name, client, sport, netip.AddrPortFrom(vip, 53), epPort, out)
	}
	sport, masq = uint16(ports[0]), ports[3]
	to := func(a netip.Addr, p int) string { return netip.AddrPortFrom(a, uint16(p)).String() }
	// Both seen where the request leaves R, toward B; undone where the
	// reply leaves R. In the node's own probe, the reply is undone after
	// its last hop, where no device sees it: only the request's show.
	wantNAT := []string{
		fmt.Sprintf("%s DNAT %s -> %s @%d %s", request[len(request)-2], to(vip, 53), to(ep, epPort), r, dnatBy),
		fmt.Sprintf("%s SNAT %s -> %s @%d %s", request[len(request)-2], to(client, int(sport)), to(rb, masq), r, snatBy),
	}
	if src != n.R {
		wantNAT = append(wantNAT,
			fmt.Sprintf("%s reverse SNAT %s -> %s @%d .", reply[2], to(rb, masq), to(client, int(sport)), r),
			fmt.Sprintf("%s reverse DNAT %s -> %s @%d .", reply[2], to(ep, epPort), to(vip, 53), r))
	}
	if got, _ := natRows(e); strings.Join(got, "\n") != strings.Join(wantNAT, "\n") {
		t.Errorf("translations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantNAT, "\n"))
	}
	// The reply's netfilter rows: R forwards it back to the prober's port,
	// from the endpoint still (conntrack undoes the DNAT in POSTROUTING),
	// and accepts it. To the node itself it goes to R's INPUT, where
	// neither rule set has a chain: no rows.
	var replyRows []string
	for _, h := range e.Hops {
		if nf := h.Netfilter; nf != nil && h.Type == "reply" {
			replyRows = append(replyRows, fmt.Sprintf("%d %s %s -> %s %s", h.Netns, nf.Hook, h.Src, h.Dst, nf.Verdict))
		}
	}
	forwarded := fmt.Sprintf("%d FORWARD %s -> %s ", r, to(ep, epPort), to(client, int(sport)))
	bad := src != n.R && (len(replyRows) == 0 || !strings.HasSuffix(replyRows[len(replyRows)-1], " ACCEPT")) || src == n.R && len(replyRows) != 0
	for _, row := range replyRows {
		bad = bad || !strings.HasPrefix(row, forwarded)
	}
	if bad {
		t.Errorf("netfilter rows of the reply:\n%s\nwant (none from the node): %s..., the last ACCEPT", strings.Join(replyRows, "\n"), forwarded)
	}
	return e, masq
}

// udpFlow returns the ports of the one UDP flow that conntrack lists in ns
// for filter (options of conntrack -L): the source and destination ports
// of its original tuple, then of its reply tuple; all 0 unless one flow
// is listed. It returns the listing too.
func udpFlow(t *testing.T, ns *topology.Netns, filter ...string) (ports [4]int, listing string) {
	t.Helper()
	listing = inNetns(t, ns, append([]string{"conntrack", "-L", "-p", "udp"}, filter...)...)
	var flows [][]string // the lines of flows, not conntrack's count of them
	for _, line := range strings.Split(listing, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "udp" {
			flows = append(flows, f)
		}
	}
	if len(flows) != 1 {
		return ports, listing
	}
	i := 0
	for _, f := range flows[0] {
		if k, v, _ := strings.Cut(f, "="); (k == "sport" || k == "dport") && i < len(ports) {
			ports[i], _ = strconv.Atoi(v)
			i++
		}
	}
	return ports, listing
}

// udpServiceFromNodeAndHairpin are the cases of udpServiceReply from R,
// the node, and from B, the endpoint (hairpin): both masqueraded by
// kube-proxy's own rules, R's traffic as from outside the cluster network,
// B's as an endpoint reaching itself.
func udpServiceFromNodeAndHairpin(t *testing.T, n *topology.RouterNet, vip netip.Addr, epPort int, dnatBy, masqBy string) {
	t.Helper()
	for _, c := range []struct {
		name string
		from *topology.Netns
	}{{"from the node", n.R}, {"hairpin", n.B}} {
		t.Run(c.name, func(t *testing.T) {
			if vip.Is6() {
				hostOnly(t, "IPv6 UDP "+c.name+": the IPv4 case and TCP's IPv6 one take the kernel's paths in the guests")
			}
			udpServiceReply(t, n, c.from, vip, epPort, dnatBy, masqBy)
		})
	}
}

// udpServiceUnanswered probes, from A, the Service ports of vip that
// svcPorts lays out with no answer: 54, translated to an endpoint port
// with no socket, which B's kernel answers (closed), and 55, a Service
// without endpoints, which R rejects, answering from its address on A's
// side (unreachable). Both answers are a port unreachable, exit status 1.
func udpServiceUnanswered(t *testing.T, n *topology.RouterNet, vip netip.Addr) {
	t.Helper()
	b := inode(t, n.B)
	ra, code := n.RA4.Addr(), uint8(3)
	if vip.Is6() {
		ra, code = n.RA6.Addr(), 4
	}
	to := func(a netip.Addr, p int) string { return netip.AddrPortFrom(a, uint16(p)).String() }
	t.Run("closed", func(t *testing.T) {
		e, res := probeJSON(t, n.A, 1, "-W", "2s", "--udp", "54", vip.String())
		if e.Result != "closed" || e.ICMPError == nil || e.ICMPError.Code != code || e.ICMPError.From != vip.String() {
			t.Errorf("result %q icmp error %+v, want closed, port unreachable from %s", e.Result, e.ICMPError, vip)
		}
		text := runTool(t, n.A, "-W", "2s", "--udp", "54", vip.String())
		want := fmt.Sprintf("closed: no socket on %s (seq 1): %s answered \"destination unreachable: port unreachable\" (sent from network namespace %s (%d))", to(vip, 54), vip, n.B.Name, b)
		if text.code != 1 || !strings.Contains(text.stdout, want) {
			t.Errorf("exit %d, no %q in\n%s%s\n(json: %s)", text.code, want, text.stderr, text.stdout, res.stdout)
		}
	})
	t.Run("no endpoints", func(t *testing.T) {
		e, _ := probeJSON(t, n.A, 1, "-W", "2s", "--udp", "55", vip.String())
		if e.Result != "unreachable" || e.ICMPError == nil || e.ICMPError.Code != code || e.ICMPError.From != ra.String() {
			t.Errorf("result %q icmp error %+v, want unreachable, port unreachable from %s", e.Result, e.ICMPError, ra)
		}
		for _, h := range e.Hops {
			if len(h.NAT) != 0 {
				t.Errorf("a Service without endpoints translated: %s", natText(h.NAT))
			}
		}
	})
}

// TestE2EUDPThroughServiceNAT: DNS to a Service through kube-proxy's
// iptables rules, with the masquerade forced off the client's port by a
// flow that holds the first port of its range: the reply, which carries no
// mark of ours, is followed back by its tuple.
func TestE2EUDPThroughServiceNAT(t *testing.T) {
	n, vip4, vip6, epPort := serviceNode(t, udpServices, iptablesRules("iptables-restore", "ip6tables-restore", udpServices))
	r, b := inode(t, n.R), inode(t, n.B)
	families(t, vip4, vip6, func(t *testing.T, vip netip.Addr) {
		ep, rb, a, iptables := n.Target4, n.RB4.Addr(), n.A4.Addr(), "iptables"
		if vip.Is6() {
			ep, rb, a, iptables = n.Target6, n.RB6.Addr(), n.A6.Addr(), "ip6tables"
		}
		// Masquerade A's flows to the ports 40000-40009 of R, the first held
		// by R's own flow; the node's and the endpoint's own are kube-proxy's.
		inNetns(t, n.R, iptables, "-t", "nat", "-I", "POSTROUTING", "1", "-p", "udp", "-s", a.String(), "-d", ep.String(), "--dport", fmt.Sprint(epPort),
			"-j", "MASQUERADE", "--to-ports", "40000-40009")
		occupy(t, n.R, netip.AddrPortFrom(rb, 40000), netip.AddrPortFrom(ep, uint16(epPort)))
		t.Run("reply", func(t *testing.T) {
			// The reply is traced in R from where R's NAT gave it back the
			// prober's port on (udpServiceReply checks its FORWARD rows).
			_, masq := udpServiceReply(t, n, n.A, vip, epPort, "nat.KUBE-SEP-TPKWEB1", "nat.POSTROUTING")
			if masq <= 40000 || masq > 40009 {
				t.Errorf("source port masqueraded to %d, want 40001-40009", masq)
			}
		})
		t.Run("recorded, replayed, summed up", func(t *testing.T) {
			hostOnly(t, "recording and replay, of the journey the JSON case asserts")
			rec := filepath.Join(t.TempDir(), "dns.tpk")
			live := runTool(t, n.A, "--json", "-c", "3", "-i", "0", "-W", "2s", "--record", rec, "--udp", "53", vip.String())
			if live.code != 0 {
				t.Fatalf("exit %d\n%s%s", live.code, live.stderr, live.stdout)
			}
			replayed := runTool(t, nil, "--json", "--replay", rec)
			if replayed.code != 0 || replayed.stdout != live.stdout {
				t.Errorf("replay: exit %d, output differs from the live run's:\n%s\nlive:\n%s", replayed.code, replayed.stdout, live.stdout)
			}
			for i, e := range decodeEchoes(t, live.stdout) {
				if e.Seq != uint16(i+1) || e.Result != "reply" {
					t.Errorf("probe %d: seq %d result %q", i+1, e.Seq, e.Result)
				}
			}
			st := runTool(t, nil, "--stats", "--replay", rec)
			want := fmt.Sprintf("3 UDP probes to %s: 3 replies\n", netip.AddrPortFrom(vip, 53))
			if st.code != 0 || !strings.HasPrefix(st.stdout, want) {
				t.Errorf("--stats: exit %d, want it to start %q:\n%s%s", st.code, want, st.stderr, st.stdout)
			}
			pcap := filepath.Join(t.TempDir(), "dns.pcapng")
			if res := runTool(t, nil, "--replay", rec, "--pcapng", pcap); res.code != 0 {
				t.Fatalf("--pcapng: exit %d\n%s", res.code, res.stderr)
			}
			testenv.RequireCommands(t, "tshark")
			out, err := exec.Command("tshark", "-r", pcap, "-T", "fields", "-e", "udp.dstport", "-e", "dns.flags.response").Output()
			if err != nil {
				t.Fatal(err)
			}
			// Each probe: 4 request hops to 53 then 5353, 4 reply hops.
			if lines := strings.Fields(string(out)); !strings.Contains(string(out), "5353\t0") || !strings.Contains(string(out), "\t1") || len(lines) != 3*8*2 {
				t.Errorf("tshark of the export:\n%s", out)
			}
		})
		udpServiceFromNodeAndHairpin(t, n, vip, epPort, "nat.KUBE-SEP-TPKWEB1", "nat.KUBE-POSTROUTING")
		udpServiceUnanswered(t, n, vip)
		t.Run("no answer", func(t *testing.T) {
			// Not a DNS query: the responder's socket takes it and says nothing.
			res := runTool(t, n.A, "-W", "1s", "--udp", "53", "--payload", "00", vip.String())
			want := fmt.Sprintf("the request was last seen entering eth0 in network namespace %s (%d), no drop seen there: a socket took it and did not answer", n.B.Name, b)
			if res.code != 1 || !strings.Contains(res.stdout, want) {
				t.Errorf("exit %d, no %q in\n%s%s", res.code, want, res.stderr, res.stdout)
			}
		})
		t.Run("dropped in FORWARD", func(t *testing.T) {
			e, _ := probeJSON(t, n.A, 1, "-W", "1s", "--udp", "56", vip.String())
			if e.Result != "dropped" || e.Drop == nil || e.Drop.Netns != uint32(r) || e.Drop.Type != "request" {
				t.Errorf("result %q drop %+v, want dropped in %d", e.Result, e.Drop, r)
			}
		})
	})
}

// TestE2EUDPThroughKubeProxyNftables: DNS to a Service through kube-proxy's
// nftables rules: the reply, translated by the endpoint chain's dnat (the
// rule nft lists) and the masquerading chain; a Service port whose endpoint
// has no socket; a Service without endpoints.
func TestE2EUDPThroughKubeProxyNftables(t *testing.T) {
	n, vip4, vip6, epPort := serviceNode(t, udpServices, nftRules(udpServices))
	_, endpoint := kubeProxyNftChains(udpServices, 0)
	families(t, vip4, vip6, func(t *testing.T, vip netip.Addr) {
		t.Run("reply", func(t *testing.T) {
			udpServiceReply(t, n, n.A, vip, epPort, "kube-proxy."+endpoint, "kube-proxy.masquerading")
		})
		udpServiceFromNodeAndHairpin(t, n, vip, epPort, "kube-proxy."+endpoint, "kube-proxy.masquerading")
		udpServiceUnanswered(t, n, vip)
	})
}

// publishedUDPCases probe a Docker host's published UDP port (`-p
// 5353:53/udp`, a DNS responder in the container) from a client: a DNS
// query, given as the payload since the port probed is not 53, is answered
// through the DNAT of the host's DOCKER chain; a port not published is
// closed by the host's own kernel.
func publishedUDPCases(t *testing.T, n *dockerHostNet) {
	c, h, k := inode(t, n.Client), inode(t, n.Host), inode(t, n.Container)
	t.Run("udp", func(t *testing.T) {
		families(t, n.Host4, n.Host6, func(t *testing.T, host netip.Addr) {
			ctr, code := n.Ctr4, uint8(3)
			if host.Is6() {
				hostOnly(t, "IPv6 NAT, which the Service tests cover in the guests")
				ctr, code = n.Ctr6, 4
			}
			t.Run("from a client", func(t *testing.T) {
				e, res := probeJSON(t, n.Client, 0, "-W", "2s", "--udp", "5353", "--payload", dnsQueryHex, host.String())
				if e.Result != "reply" || e.Protocol != "udp" || e.Port != 5353 || e.AnswerFrom != host.String() {
					t.Errorf("result %q protocol %q port %d answer from %q, want a UDP reply from %s", e.Result, e.Protocol, e.Port, e.AnswerFrom, host)
				}
				wantDeviceRows(t, e,
					row(c, "eth0", "out", "request"), row(h, "eth0", "in", "request"), row(h, n.Bridge, "out", "request"), row(h, n.HostVeth, "out", "request"), row(k, "eth0", "in", "request"),
					row(k, "eth0", "out", "reply"), row(h, n.HostVeth, "in", "reply"), row(h, n.Bridge, "in", "reply"), row(h, "eth0", "out", "reply"), row(c, "eth0", "in", "reply"))
				wantPublishedNAT(t, n, e, res, netip.AddrPortFrom(host, 5353), netip.AddrPortFrom(ctr, 53), "request", "reply")
			})
			t.Run("not published", func(t *testing.T) {
				// Nothing DNATs 5354: the host's own kernel has no socket there.
				e, _ := probeJSON(t, n.Client, 1, "-W", "2s", "--udp", "5354", host.String())
				if e.Result != "closed" || e.ICMPError == nil || e.ICMPError.Code != code || e.ICMPError.From != host.String() {
					t.Errorf("result %q icmp error %+v, want closed, port unreachable from %s", e.Result, e.ICMPError, host)
				}
				wantDeviceRows(t, e, row(c, "eth0", "out", "request"), row(h, "eth0", "in", "request"), row(h, "eth0", "out", "unreachable"), row(c, "eth0", "in", "unreachable"))
				if got, _ := natRows(e); len(got) != 0 {
					t.Errorf("translations of a port not published:\n%s", strings.Join(got, "\n"))
				}
			})
		})
	})
}
