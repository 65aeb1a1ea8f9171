package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// dnsResponder answers, in ns on port (both families), the DNS queries
// it is sent as a name server with nothing to say would: the query's id
// and question, the response bit, no records, no EDNS option echoed (so
// the answer carries no mark of the prober's). Anything else it reads and
// leaves unanswered, as DNS servers do with what is not a query. It checks
// with ss that the socket is there.
func dnsResponder(t *testing.T, ns *topology.Netns, port int) {
	t.Helper()
	var conn net.PacketConn
	if err := ns.Do(func() (err error) {
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
	if out := inNetns(t, ns, "ss", "-Huln", fmt.Sprintf("sport = :%d", port)); !strings.Contains(out, fmt.Sprintf(":%d", port)) {
		t.Fatalf("no UDP socket on %d in %s: %q", port, ns, out)
	}
}

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
	q := []byte{0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1}
	if _, err := conn.Write(q); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 512)); err != nil {
		t.Fatalf("the flow %s -> %s holding the port got no answer: %v", from, to, err)
	}
}

// TestE2EUDPThroughServiceNAT: DNS to a Service through kube-proxy's
// iptables rules, with the masquerade forced off the client's port by a
// flow that holds the first port of its range: the reply, which carries no
// mark of ours, is followed back by its tuple.
func TestE2EUDPThroughServiceNAT(t *testing.T) {
	n, vip4, vip6, epPort := serviceNode(t, "iptables-restore", "ip6tables-restore", udpServices)
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	families(t, vip4, vip6, func(t *testing.T, vip netip.Addr) {
		ep, ra, rb, iptables := n.Target4, n.RA4.Addr(), n.RB4.Addr(), "iptables"
		if vip.Is6() {
			ep, ra, rb, iptables = n.Target6, n.RA6.Addr(), n.RB6.Addr(), "ip6tables"
		}
		to := func(a netip.Addr, p int) string { return netip.AddrPortFrom(a, uint16(p)).String() }
		// Masquerade to the ports 40000-40001 of R, the first held by R's own flow.
		inNetns(t, n.R, iptables, "-t", "nat", "-I", "POSTROUTING", "1", "-p", "udp", "-d", ep.String(), "--dport", fmt.Sprint(epPort),
			"-j", "MASQUERADE", "--to-ports", "40000-40001")
		occupy(t, n.R, netip.AddrPortFrom(rb, 40000), netip.AddrPortFrom(ep, uint16(epPort)))
		t.Run("reply", func(t *testing.T) {
			e, _ := probeJSON(t, n.A, 0, "-W", "2s", "--udp", "53", vip.String())
			if e.Result != "reply" || e.Protocol != "udp" || e.Port != 53 || e.AnswerFrom != vip.String() || e.RTTNs <= 0 {
				t.Errorf("result %q protocol %q port %d answer from %q rtt %d", e.Result, e.Protocol, e.Port, e.AnswerFrom, e.RTTNs)
			}
			want := []string{
				row(a, "eth0", "out", "request"), row(r, "eth0", "in", "request"), row(r, "eth1", "out", "request"), row(b, "eth0", "in", "request"),
				row(b, "eth0", "out", "reply"), row(r, "eth1", "in", "reply"), row(r, "eth0", "out", "reply"), row(a, "eth0", "in", "reply"),
			}
			if got := rows(e); strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			var sport uint16
			var nat []string
			for _, h := range e.Hops {
				if h.Type == "request" && h.Netns == uint32(a) {
					sport = h.Sport
				}
				for _, x := range h.NAT {
					nat = append(nat, fmt.Sprintf("%s %s %s -> %s @%d", row(uint64(h.Netns), h.Ifname, h.Dir, h.Type), x.Kind, x.Before, x.After, x.Netns))
				}
			}
			src := to(n.A4.Addr(), int(sport))
			if vip.Is6() {
				src = to(n.A6.Addr(), int(sport))
			}
			// The source port taken is the second of the range: the first is held.
			wantNAT := []string{
				fmt.Sprintf("%s DNAT %s -> %s @%d", row(r, "eth1", "out", "request"), to(vip, 53), to(ep, epPort), r),
				fmt.Sprintf("%s SNAT %s -> %s @%d", row(r, "eth1", "out", "request"), src, to(rb, 40001), r),
				fmt.Sprintf("%s reverse SNAT %s -> %s @%d", row(r, "eth0", "out", "reply"), to(rb, 40001), src, r),
				fmt.Sprintf("%s reverse DNAT %s -> %s @%d", row(r, "eth0", "out", "reply"), to(ep, epPort), to(vip, 53), r),
			}
			if strings.Join(nat, "\n") != strings.Join(wantNAT, "\n") {
				t.Errorf("translations:\n%s\nwant:\n%s", strings.Join(nat, "\n"), strings.Join(wantNAT, "\n"))
			}
			if out := inNetns(t, n.R, "conntrack", "-L", "-p", "udp", "--orig-port-src", fmt.Sprint(sport)); !strings.Contains(out, fmt.Sprintf("dport=%d", 40001)) {
				t.Errorf("conntrack in %s has no entry masqueraded to port 40001 for source port %d:\n%s", n.R.Name, sport, out)
			}
		})
		t.Run("closed", func(t *testing.T) {
			e, res := probeJSON(t, n.A, 1, "-W", "2s", "--udp", "54", vip.String())
			code := uint8(3)
			if vip.Is6() {
				code = 4
			}
			if e.Result != "closed" || e.ICMPError == nil || e.ICMPError.Code != code || e.ICMPError.From != vip.String() {
				t.Errorf("result %q icmp error %+v, want closed, port unreachable from %s", e.Result, e.ICMPError, vip)
			}
			text := runTool(t, n.A, "-W", "2s", "--udp", "54", vip.String())
			want := fmt.Sprintf("closed: no socket on %s (seq 1): %s answered \"port unreachable\" (sent from network namespace %s (%d))", to(vip, 54), vip, n.B.Name, b)
			if text.code != 1 || !strings.Contains(text.stdout, want) {
				t.Errorf("exit %d, no %q in\n%s%s\n(json: %s)", text.code, want, text.stderr, text.stdout, res.stdout)
			}
		})
		t.Run("no endpoints", func(t *testing.T) {
			e, _ := probeJSON(t, n.A, 1, "-W", "2s", "--udp", "55", vip.String())
			// REJECTed in the node's filter table, answered from its address toward A.
			if e.Result != "unreachable" || e.ICMPError == nil || e.ICMPError.From != ra.String() {
				t.Errorf("result %q icmp error %+v, want unreachable from %s", e.Result, e.ICMPError, ra)
			}
		})
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
