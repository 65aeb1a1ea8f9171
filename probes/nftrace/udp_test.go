package nftrace

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
	"golang.org/x/sys/unix"
)

// udpRouterRules is R's ruleset for TestUDPRun (B's addresses filled in): a request to
// port 53 is sent on to port 5353 by a DNAT rule, then accepted by a forward rule; its
// reply is accepted by the forward policy (the nat chains see only a flow's first packet).
// Handles in a fresh namespace, each table counting its own: prerouting 1 and its rule 2;
// forward 1 and its rule 2.
const udpRouterRules = `table ip nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		udp dport 53 dnat to %s:5353
	}
}
table ip6 nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		udp dport 53 dnat to [%s]:5353
	}
}
table inet filt {
	chain forward {
		type filter hook forward priority 0; policy accept;
		udp dport 5353 accept
	}
}
`

// udpClientRules is A's: the request is accepted by a rule in output, the reply by the
// input policy. Handles: output 1, input 2, the rule 3.
const udpClientRules = `table inet filt {
	chain output {
		type filter hook output priority 0; policy accept;
		udp dport 53 accept
	}
	chain input {
		type filter hook input priority 0; policy accept;
	}
}
`

// udpServerRules is B's: the request is accepted by a rule in input. Handles: input 1,
// the rule 2.
const udpServerRules = `table inet filt {
	chain input {
		type filter hook input priority 0; policy accept;
		udp dport 5353 accept
	}
}
`

// udpAnswer is what B's server sends back to every datagram: no mark of ours.
var udpAnswer = []byte("answer")

// TestUDPRun traces UDP requests from A to B's port 53, sent on by R's DNAT rule to port
// 5353, and their replies, for the default payload (the mark alone, visible in the trace),
// a DNS query (the mark 32 bytes into the payload, out of the trace's sight: the probe
// number is the query's id) and a user payload of the largest size (the mark 504 bytes in:
// the helper rules load payload at transport header offsets 512 to 518, and the probe
// number comes from the seq chain), and checks a datagram with another cookie is not
// traced.
func TestUDPRun(t *testing.T) {
	requireNftables(t)
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	r, err := topo.Router(topology.UniqueName("nu"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	run(t, r.R.Name, fmt.Sprintf(udpRouterRules, r.Target4, r.Target6), "nft", "-f", "-")
	run(t, r.A.Name, udpClientRules, "nft", "-f", "-")
	run(t, r.B.Name, udpServerRules, "nft", "-f", "-")
	before := rulesets(t, r.A.Name, r.R.Name, r.B.Name)
	for _, dst := range []netip.Addr{r.Target4, r.Target6} {
		if err := topo.CheckOwnRoute(r.A, dst); err != nil {
			t.Fatalf("not sending: %v", err)
		}
	}
	udpServer(t, r.B)

	a, rr, b := uint32(r.A.Inode), uint32(r.R.Inode), uint32(r.B.Inode)
	// rows is what a request to dst and its reply make, in the order Drain returns them:
	// grouped by namespace, in the order given to Open.
	rows := func(dst netip.Addr) []row {
		nat, to := "ip", fmt.Sprintf("%s:5353", dst)
		if dst.Is6() {
			nat, to = "ip6", fmt.Sprintf("[%s]:5353", dst)
		}
		return []row{
			{a, "inet", "filt", "output", decode.HookOutput, decode.TraceRule, "ACCEPT", "", 3, "udp dport 53 accept", true},
			{a, "inet", "filt", "input", decode.HookInput, decode.TracePolicy, "ACCEPT", "", 0, "", false},
			{rr, nat, "nat", "prerouting", decode.HookPrerouting, decode.TraceRule, "ACCEPT", "", 2, "udp dport 53 dnat to " + to, true},
			{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "ACCEPT", "", 2, "udp dport 5353 accept", true},
			{rr, "inet", "filt", "forward", decode.HookForward, decode.TracePolicy, "ACCEPT", "", 0, "", false},
			{b, "inet", "filt", "input", decode.HookInput, decode.TraceRule, "ACCEPT", "", 2, "udp dport 5353 accept", true},
		}
	}
	user := bytes.Repeat([]byte("user payload "), 40)[:decode.MaxPayload-decode.MarkLen]
	for _, tc := range []struct {
		name string
		dst  netip.Addr
		port uint16 // given to NewUDPMark: 53 makes a DNS query
		user []byte
	}{
		{"default/ipv4", r.Target4, 7, nil},
		{"default/ipv6", r.Target6, 7, nil},
		{"dns/ipv4", r.Target4, 53, nil},
		{"user/ipv4", r.Target4, 7, user},
		{"user/ipv6", r.Target6, 7, user},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := decode.NewUDPMark(0x7d00, 0x5eed0000|uint32(tc.port), tc.port, tc.user)
			if err != nil {
				t.Fatal(err)
			}
			conn := udpClient(t, r.A)
			if tc.user != nil && !longPayloadOffsets(t, r.A.Name) {
				// A kernel of 8-bit payload offsets (before Linux 6.2, as nft itself
				// finds above) cannot load the mark: Open says so, and how long a
				// payload can be.
				_, err := Open(netnsList(r.A, r.R, r.B), Match{EchoID: m.EchoID, UDP: &m})
				want := fmt.Sprintf("the mark behind a payload of %d bytes needs %d: payloads of at most 241 bytes can be traced here", len(tc.user), 8+len(tc.user)+6)
				if err == nil || !errors.Is(err, unix.ERANGE) || !strings.Contains(err.Error(), want) {
					t.Fatalf("Open on a kernel of 8-bit payload offsets: %v, want ERANGE and %q", err, want)
				}
				return
			}
			tr := openUDPTracer(t, netnsList(r.A, r.R, r.B), m)
			sport := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
			if err := tr.TraceReplies(sport); err != nil {
				t.Fatal(err)
			}
			switch tc.name {
			case "default/ipv4":
				checkUDPHelperTable(t, r.A.Name, tr.Table(), sport)
			case "dns/ipv4":
				// The mark 32 bytes in, its probe number at 44: the seq chain reads
				// bytes 45 (bits 0-7) and 44 (8-15).
				got := run(t, r.A.Name, "", "nft", "list", "table", "inet", tr.Table())
				for _, line := range []string{
					"\t\tmeta l4proto udp @th,320,32 0x5eed0035 @th,368,16 0x7d00 meta nftrace set 1 jump seq\n",
					"\tchain seq {\n\t\t@th,360,8 & 0x1 == 0x1 jump seq_bit0\n",
					"\t\t@th,352,8 & 0x80 == 0x80 jump seq_bit15\n\t}\n",
					"\tchain seq_bit15 {\n\t}\n",
				} {
					if !strings.Contains(got, line) {
						t.Errorf("nft list table:\n%s\nwant a line %q", got, line)
					}
				}
			}
			// Probe 0x8421: bits in both bytes of its number, for the seq chain to read
			// behind the user payload.
			if err := udpExchange(conn, tc.dst, m.Payload(0x8421)); err != nil {
				t.Fatal(err)
			}
			events, err := tr.Drain(5 * time.Millisecond)
			if err != nil {
				t.Fatalf("Drain: %v", err)
			}
			want := rows(tc.dst)
			checkRows(t, events, want)
			checkRuleTexts(t, map[uint32]string{a: r.A.Name, rr: r.R.Name, b: r.B.Name}, want)
			checkUDPFields(t, events, m.EchoID, 0x8421, r.A4.Addr(), r.A6.Addr(), tc.dst)
		})
	}

	// Another flow to the prober's port number through a namespace that traces replies: B
	// sends to R's own address, from another port, after a request of the run went
	// through. R's rule for replies (udp dport <port>) marks it; it is neither from where
	// a request went nor to where one came from, so it is not taken for a reply.
	t.Run("another flow to the prober's port", func(t *testing.T) {
		m, err := decode.NewUDPMark(0x7d00, 0x5eed0002, 7, nil)
		if err != nil {
			t.Fatal(err)
		}
		conn := udpClient(t, r.A)
		sport := uint16(conn.LocalAddr().(*net.UDPAddr).Port)
		tr := openUDPTracer(t, netnsList(r.A, r.R, r.B), m)
		if err := tr.TraceReplies(sport); err != nil {
			t.Fatal(err)
		}
		if err := udpExchange(conn, r.Target4, m.Payload(1)); err != nil {
			t.Fatal(err)
		}
		events, err := tr.Drain(5 * time.Millisecond)
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
		checkRows(t, events, rows(r.Target4))
		var stray *net.UDPConn
		if err := r.B.Do(func() (err error) {
			stray, err = net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(r.RB4.Addr(), sport)))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer stray.Close()
		if _, err := stray.Write([]byte("not a reply")); err != nil {
			t.Fatal(err)
		}
		if events, err = tr.Drain(50 * time.Millisecond); err != nil {
			t.Fatalf("Drain: %v", err)
		}
		checkRows(t, events, nil)
	})

	// A datagram of another run, with another cookie: for a DNS query the trace does not
	// show the cookie, so only the helper rule keeps it out.
	for _, port := range []uint16{7, 53} {
		t.Run(fmt.Sprintf("other cookie/port %d", port), func(t *testing.T) {
			m, err := decode.NewUDPMark(0x7d00, 0x5eed0001, port, nil)
			if err != nil {
				t.Fatal(err)
			}
			other := m
			other.Cookie++
			conn := udpClient(t, r.A)
			tr := openUDPTracer(t, netnsList(r.A, r.R, r.B), m)
			if err := tr.TraceReplies(uint16(conn.LocalAddr().(*net.UDPAddr).Port)); err != nil {
				t.Fatal(err)
			}
			// Another socket, so that its reply goes to another port too.
			if err := udpExchange(udpClient(t, r.A), r.Target4, other.Payload(5)); err != nil {
				t.Fatal(err)
			}
			events, err := tr.Drain(5 * time.Millisecond)
			if err != nil {
				t.Fatalf("Drain: %v", err)
			}
			checkRows(t, events, nil)
		})
	}
	checkRulesetsUnchanged(t, before)
}

// longPayloadOffsets tells whether the kernel loads packet bytes further than 255 bytes
// into the transport header, asking nft itself in ns: a rule that loads a byte 520 bytes
// in, in a table of its own, removed after.
func longPayloadOffsets(tb testing.TB, ns string) bool {
	tb.Helper()
	table := topology.UniqueName("off")
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("table inet %s {\n\tchain c {\n\t\t@th,4160,8 1\n\t}\n}\n", table))
	out, err := cmd.CombinedOutput()
	if err == nil {
		run(tb, ns, "", "nft", "delete", "table", "inet", table)
		return true
	}
	if !strings.Contains(string(out), "out of range") {
		tb.Fatalf("nft: a rule loading 520 bytes into the transport header: %v\n%s", err, out)
	}
	return false
}

// openUDPTracer opens a tracer of a UDP run and closes it when tb ends.
func openUDPTracer(tb testing.TB, nss []netns.Netns, m decode.UDPMark) *Tracer {
	tb.Helper()
	tr, err := Open(nss, Match{EchoID: m.EchoID, UDP: &m})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := tr.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return tr
}

// udpServer answers every datagram to port 5353 of ns with udpAnswer until tb ends.
func udpServer(tb testing.TB, ns *topology.Netns) {
	tb.Helper()
	var pc net.PacketConn
	if err := ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", ":5353")
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(udpAnswer, from)
		}
	}()
	tb.Cleanup(func() { pc.Close(); <-done })
}

// udpClient opens a UDP socket in ns on a port the kernel picks, closed when tb ends.
func udpClient(tb testing.TB, ns *topology.Netns) *net.UDPConn {
	tb.Helper()
	var conn *net.UDPConn
	if err := ns.Do(func() (err error) {
		conn, err = net.ListenUDP("udp", nil)
		return err
	}); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}

// udpExchange sends payload to port 53 of dst and waits up to a second for the answer.
func udpExchange(conn *net.UDPConn, dst netip.Addr, payload []byte) error {
	to := netip.AddrPortFrom(dst, 53)
	if _, err := conn.WriteToUDPAddrPort(payload, to); err != nil {
		return err
	}
	if err := conn.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, from, err := conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return err
	}
	if from.Addr().Unmap() != dst || from.Port() != 53 || !bytes.Equal(buf[:n], udpAnswer) {
		return fmt.Errorf("answer %q from %v, want %q from %v", buf[:n], from, udpAnswer, to)
	}
	return nil
}

// checkRuleTexts checks each rule of want against `nft -a list table` in its namespace
// (names: inode to name): the handle is that rule's.
func checkRuleTexts(t *testing.T, names map[uint32]string, want []row) {
	t.Helper()
	for _, w := range want {
		if w.Handle == 0 {
			continue
		}
		listing := run(t, names[w.Netns], "", "nft", "-a", "list", "table", w.Family, w.Table)
		line := fmt.Sprintf("%s # handle %d\n", w.Rule, w.Handle)
		if !strings.Contains(listing, line) {
			t.Errorf("no %q in nft -a list table %s %s:\n%s", line, w.Family, w.Table, listing)
		}
	}
}

// checkUDPFields checks the packet fields of every event: the run's request from A to dst,
// or its reply.
func checkUDPFields(t *testing.T, events []decode.NetfilterEvent, id, seq uint16, a4, a6, dst netip.Addr) {
	t.Helper()
	for _, e := range events {
		wantSrc, wantDst := ends(&e, a4, a6, dst)
		flags := uint8(0)
		if !e.IsRequest() {
			flags = decode.UDPAnswer
		}
		if e.Proto != decode.ProtoUDP || e.TCPFlags != flags || e.ICMPType != 0 || e.EchoID != id || e.Seq != seq || e.Src != wantSrc || e.Dst != wantDst {
			t.Errorf("event %+v: want proto udp, flags %#x, echo id %#x, seq %d, %v -> %v", e, flags, id, seq, wantSrc, wantDst)
		}
	}
}

// checkUDPHelperTable checks the rules of the helper table once TraceReplies added its own,
// as nft lists them.
func checkUDPHelperTable(t *testing.T, ns, table string, sport uint16) {
	t.Helper()
	got := run(t, ns, "", "nft", "list", "table", "inet", table)
	rules := fmt.Sprintf("\t\tmeta l4proto udp @th,64,32 0x5eed0007 @th,112,16 0x7d00 meta nftrace set 1\n\t\tudp dport %d meta nftrace set 1\n", sport)
	for _, chain := range []string{chainPrerouting, chainOutput} {
		if !strings.Contains(got, chain+" {\n\t\ttype filter hook "+chain+" priority -2147483648; policy accept;\n"+rules+"\t}") {
			t.Errorf("chain %s of nft list table:\n%s\nwant its rules:\n%s", chain, got, rules)
		}
	}
}

// TestOpenRefusesMarkOutsidePayload: a mark that does not fit its payload is refused before
// anything is installed.
func TestOpenRefusesMarkOutsidePayload(t *testing.T) {
	for _, off := range []int{-1, 1} {
		m := decode.UDPMark{EchoID: 1, Cookie: 2, Offset: off, Base: make([]byte, decode.MarkLen)}
		if tr, err := Open(nil, Match{EchoID: 1, UDP: &m}); err == nil {
			tr.Close()
			t.Errorf("Open with the mark at %d of %d bytes succeeded", off, len(m.Base))
		}
	}
}
