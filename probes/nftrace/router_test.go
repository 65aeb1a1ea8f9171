package nftrace

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
)

// routerRules is R's native nftables ruleset: ICMP jumps to chk, which never matches our
// echo (192.0.2.1 is TEST-NET-1, no address of the topology), so it returns; ICMPv6 is
// accepted by a rule. Handles in a fresh namespace: forward 1, chk 2, then the rules in
// order: 3, 4, 5.
const routerRules = `table inet filt {
	chain forward {
		type filter hook forward priority 0; policy accept;
		meta l4proto icmp jump chk
		meta l4proto ipv6-icmp counter accept
	}
	chain chk {
		ip daddr 192.0.2.1 drop
	}
}
`

// routerSetup builds A —veth— R —veth— B with the rulesets of TestRouter: iptables-nft in
// A (OUTPUT, with a user chain) and B (INPUT), routerRules in R.
func routerSetup(t *testing.T) (*topology.Topology, *topology.RouterNet) {
	t.Helper()
	requireNftables(t)
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	r, err := topo.Router(topology.UniqueName("nt"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	// A: table ip filter: chains OUTPUT 1, TP_OUT 2; rules 3 (jump), 4 (return), 5 (accept).
	for _, args := range [][]string{
		{"iptables", "-A", "OUTPUT", "-j", "TP_OUT"},
		{"iptables", "-A", "TP_OUT", "-p", "icmp", "-j", "RETURN"},
		{"iptables", "-A", "OUTPUT", "-p", "icmp", "-j", "ACCEPT"},
		{"ip6tables", "-A", "OUTPUT", "-p", "ipv6-icmp", "-j", "ACCEPT"},
	} {
		if args[2] == "OUTPUT" && args[4] == "TP_OUT" {
			run(t, r.A.Name, "", "iptables", "-N", "TP_OUT")
		}
		run(t, r.A.Name, "", args...)
	}
	run(t, r.B.Name, "", "iptables", "-A", "INPUT", "-p", "icmp", "-j", "ACCEPT")
	run(t, r.B.Name, "", "ip6tables", "-A", "INPUT", "-p", "ipv6-icmp", "-j", "ACCEPT")
	run(t, r.R.Name, routerRules, "nft", "-f", "-")
	return topo, r
}

func TestRouter(t *testing.T) {
	topo, r := routerSetup(t)
	a, rr, b := uint32(r.A.Inode), uint32(r.R.Inode), uint32(r.B.Inode)
	before := rulesets(t, r.A.Name, r.R.Name, r.B.Name)

	// What iptables-nft and routerRules produce on an echo that gets through.
	aOut4 := []row{
		{a, "ip", "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "JUMP", "TP_OUT", 3, "counter jump TP_OUT", true},
		{a, "ip", "filter", "TP_OUT", decode.HookOutput, decode.TraceRule, "RETURN", "", 4, "meta l4proto icmp counter return", true},
		{a, "ip", "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "ACCEPT", "", 5, "meta l4proto icmp counter accept", true},
	}
	rFwd4 := func(req bool) []row {
		return []row{
			{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "JUMP", "chk", 3, "meta l4proto icmp jump chk", req},
			{rr, "inet", "filt", "chk", decode.HookForward, decode.TraceReturn, "CONTINUE", "", 0, "", req},
			{rr, "inet", "filt", "forward", decode.HookForward, decode.TracePolicy, "ACCEPT", "", 0, "", req},
		}
	}
	bIn4 := row{b, "ip", "filter", "INPUT", decode.HookInput, decode.TraceRule, "ACCEPT", "", 2, "meta l4proto icmp counter accept", true}

	aOut6 := row{a, "ip6", "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "ACCEPT", "", 2, "meta l4proto ipv6-icmp counter accept", true}
	rFwd6 := func(req bool) row {
		return row{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "ACCEPT", "", 4, "meta l4proto ipv6-icmp counter accept", req}
	}
	bIn6 := row{b, "ip6", "filter", "INPUT", decode.HookInput, decode.TraceRule, "ACCEPT", "", 2, "meta l4proto ipv6-icmp counter accept", true}

	// R drops echo requests from the drop subtests on: handle 6 (v4) and 7 (v6).
	rDrop4 := row{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "DROP", "", 6, "icmp type echo-request drop", true}
	rDrop6 := row{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "DROP", "", 7, "icmpv6 type echo-request drop", true}

	for _, tc := range []struct {
		name  string
		dst   netip.Addr
		drop  bool
		want  []row
		reply bool
	}{
		{"accept/ipv4", r.Target4, false, slices.Concat(aOut4, rFwd4(true), rFwd4(false), []row{bIn4}), true},
		{"accept/ipv6", r.Target6, false, []row{aOut6, rFwd6(true), rFwd6(false), bIn6}, true},
		{"drop/ipv4", r.Target4, true, slices.Concat(aOut4, []row{rDrop4}), false},
		{"drop/ipv6", r.Target6, true, []row{aOut6, rDrop6}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.drop && tc.dst == r.Target4 {
				run(t, r.R.Name, "", "nft", "insert", "rule", "inet", "filt", "forward", "icmp", "type", "echo-request", "drop")
				run(t, r.R.Name, "", "nft", "insert", "rule", "inet", "filt", "forward", "icmpv6", "type", "echo-request", "drop")
				before[r.R.Name] = rulesets(t, r.R.Name)[r.R.Name]
			}
			id, err := ping.RandomID()
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			tr, err := Open(netnsList(r.A, r.R, r.B), Match{EchoID: id})
			if err != nil {
				t.Fatal(err)
			}
			opened := time.Since(start)
			err = echo(t, topo, r.A, tc.dst, id, 7)
			if tc.reply && err != nil || !tc.reply && !isTimeout(err) {
				t.Errorf("echo: %v (want reply: %v)", err, tc.reply)
			}
			start = time.Now()
			events, err := tr.Drain(5 * time.Millisecond)
			drained := time.Since(start)
			if err != nil {
				t.Errorf("Drain: %v", err)
			}
			start = time.Now()
			if err := tr.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			t.Logf("Open %v, Drain %v (first, with chain and rule lookups), Close %v", opened, drained, time.Since(start))
			checkRows(t, events, tc.want)
			checkEchoFields(t, events, id, 7, r.A4.Addr(), r.A6.Addr(), tc.dst)
			checkRulesetsUnchanged(t, before)
		})
	}
}

// checkRows compares events to want, row by row.
func checkRows(t *testing.T, events []decode.NetfilterEvent, want []row) {
	t.Helper()
	got := rows(events)
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%s\nwant:\n%s", rowsString(got), rowsString(want))
	}
}

func rowsString(rs []row) string {
	s := ""
	for _, r := range rs {
		s += "\t" + r.String() + "\n"
	}
	return s
}

// checkEchoFields checks the packet fields of every event: our echo, from A to dst or back.
func checkEchoFields(t *testing.T, events []decode.NetfilterEvent, id, seq uint16, a4, a6, dst netip.Addr) {
	t.Helper()
	for _, e := range events {
		wantSrc, wantDst := ends(&e, a4, a6, dst)
		if e.EchoID != id || e.Seq != seq || e.Src != wantSrc || e.Dst != wantDst || e.Source != "nftrace" || e.Time != 0 || e.TraceID == 0 {
			t.Errorf("event %+v: want echo id %d seq %d %v -> %v, source nftrace, time 0, a trace id", e, id, seq, wantSrc, wantDst)
		}
		wantType := map[bool]map[bool]uint8{false: {true: 8, false: 0}, true: {true: 128, false: 129}}[dst.Is6()][e.IsRequest()]
		if e.ICMPType != wantType {
			t.Errorf("event %+v: ICMP type %d, want %d", e, e.ICMPType, wantType)
		}
	}
}

// ends returns the source and destination event e should show: of a request from A (a4 or
// a6, of dst's family) to dst, or of its reply.
func ends(e *decode.NetfilterEvent, a4, a6, dst netip.Addr) (src, to netip.Addr) {
	src = a4
	if dst.Is6() {
		src = a6
	}
	if !e.IsRequest() {
		return dst, src
	}
	return src, dst
}

// TestRuleTextFollowsRuleset: a table deleted and made again restarts its rule handles; the
// rule text of a later echo comes from the new ruleset, not from the cached listing.
func TestRuleTextFollowsRuleset(t *testing.T) {
	topo, r := routerSetup(t)
	rr := uint32(r.R.Inode)
	id, err := ping.RandomID()
	if err != nil {
		t.Fatal(err)
	}
	tr := openTracer(t, netnsList(r.R), id)
	if err := echo(t, topo, r.A, r.Target4, id, 1); err != nil {
		t.Fatal(err)
	}
	events, err := tr.Drain(5 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if got := rows(events); len(got) == 0 || got[0].Handle != 3 || got[0].Rule != "meta l4proto icmp jump chk" {
		t.Fatalf("first echo:\n%s", rowsString(got))
	}

	// Handles: forward 1, unused 2, the rule 3.
	run(t, r.R.Name, "", "nft", "delete", "table", "inet", "filt")
	run(t, r.R.Name, "table inet filt {\n\tchain forward {\n\t\ttype filter hook forward priority 0; policy accept;\n\t\tmeta l4proto icmp counter accept\n\t}\n\tchain unused {\n\t}\n}\n", "nft", "-f", "-")
	if err := echo(t, topo, r.A, r.Target4, id, 2); err != nil {
		t.Fatal(err)
	}
	events, err = tr.Drain(5 * time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, events, []row{
		{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "ACCEPT", "", 3, "meta l4proto icmp counter accept", true},
		{rr, "inet", "filt", "forward", decode.HookForward, decode.TraceRule, "ACCEPT", "", 3, "meta l4proto icmp counter accept", false},
	})
}
