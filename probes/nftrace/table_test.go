package nftrace

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// listExprs renders expressions as `nft --debug=netlink` does (libnftnl's expression
// printers), for the kinds traceRules uses.
func listExprs(t *testing.T, exprs []expr.Any) string {
	t.Helper()
	words := func(b []byte) string {
		// libnftnl prints register data as 32-bit host-endian words.
		var out []string
		for i := 0; i < len(b); i += 4 {
			var w [4]byte
			copy(w[:], b[i:])
			out = append(out, fmt.Sprintf("0x%08x", binary.LittleEndian.Uint32(w[:])))
		}
		return strings.Join(out, " ")
	}
	metaKeys := map[expr.MetaKey]string{expr.MetaKeyL4PROTO: "l4proto", expr.MetaKeyNFTRACE: "nftrace"}
	bases := map[expr.PayloadBase]string{expr.PayloadBaseLLHeader: "link", expr.PayloadBaseNetworkHeader: "network", expr.PayloadBaseTransportHeader: "transport"}
	var b strings.Builder
	for _, e := range exprs {
		switch e := e.(type) {
		case *expr.Meta:
			if e.SourceRegister {
				fmt.Fprintf(&b, "  [ meta set %s with reg %d ]\n", metaKeys[e.Key], e.Register)
			} else {
				fmt.Fprintf(&b, "  [ meta load %s => reg %d ]\n", metaKeys[e.Key], e.Register)
			}
		case *expr.Cmp:
			op, ok := map[expr.CmpOp]string{expr.CmpOpEq: "eq", expr.CmpOpGte: "gte", expr.CmpOpLte: "lte"}[e.Op]
			if !ok {
				t.Fatalf("cmp op %v", e.Op)
			}
			fmt.Fprintf(&b, "  [ cmp %s reg %d %s ]\n", op, e.Register, words(e.Data))
		case *expr.Payload:
			fmt.Fprintf(&b, "  [ payload load %db @ %s header + %d => reg %d ]\n", e.Len, bases[e.Base], e.Offset, e.DestRegister)
		case *expr.Bitwise:
			fmt.Fprintf(&b, "  [ bitwise reg %d = ( reg %d & %s ) ^ %s ]\n", e.DestRegister, e.SourceRegister, words(e.Mask), words(e.Xor))
		case *expr.Verdict:
			if e.Kind != expr.VerdictJump {
				t.Fatalf("verdict %v", e.Kind)
			}
			fmt.Fprintf(&b, "  [ immediate reg 0 jump -> %s ]\n", e.Chain)
		case *expr.Immediate:
			fmt.Fprintf(&b, "  [ immediate reg %d %s ]\n", e.Register, words(e.Data))
		default:
			t.Fatalf("unexpected expression %T", e)
		}
	}
	return b.String()
}

// TestTraceRules compares the helper rules to what nft 1.0.6 generates (nft --debug=netlink)
// for
//
//	meta l4proto icmp @th,32,16 0x4242 meta nftrace set 1
//	meta l4proto ipv6-icmp @th,32,16 0x4242 meta nftrace set 1
func TestTraceRules(t *testing.T) {
	want := []string{`  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000001 ]
  [ payload load 2b @ transport header + 4 => reg 1 ]
  [ cmp eq reg 1 0x00004242 ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
`, `  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x0000003a ]
  [ payload load 2b @ transport header + 4 => reg 1 ]
  [ cmp eq reg 1 0x00004242 ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
`}
	rules := traceRules(Match{EchoID: 0x4242})
	if len(rules) != len(want) {
		t.Fatalf("%d rules, want %d", len(rules), len(want))
	}
	for i, r := range rules {
		if got := listExprs(t, r); got != want[i] {
			t.Errorf("rule %d:\n%s\nwant:\n%s", i, got, want[i])
		}
	}
	// With a cookie, the payload's first 4 bytes too, for an echo whose id a NAT rewrote.
	withCookie := traceRules(Match{EchoID: 0x4242, EchoCookie: 0xfeed0001})
	if len(withCookie) != 4 || listExprs(t, withCookie[0]) != want[0] ||
		!strings.Contains(listExprs(t, withCookie[2]), "payload load 4b @ transport header + 8 => reg 1 ]\n  [ cmp eq reg 1 0x0100edfe ]") ||
		!strings.Contains(listExprs(t, withCookie[3]), "cmp eq reg 1 0x0000003a") {
		t.Errorf("rules with a cookie: %d, %q", len(withCookie), withCookie)
	}
	// The echo id is compared in network byte order.
	if got := listExprs(t, traceRules(Match{EchoID: 0x1234})[0]); !strings.Contains(got, "cmp eq reg 1 0x00003412") {
		t.Errorf("echo id 0x1234:\n%s", got)
	}
}

// TestTraceRulesTCP checks the helper rules of a TCP run, with cookie 0xc0ffee00 and span
// 32 (16 probes), against what nft 1.0.6 generates (nft --debug=netlink) for
//
//	meta l4proto tcp @th,32,32 0xc0ffee00-0xc0ffee1f meta nftrace set 1
//	meta l4proto tcp @th,64,32 0xc0ffee01-0xc0ffee20 meta nftrace set 1
func TestTraceRulesTCP(t *testing.T) {
	m := decode.TCPMark{EchoID: 0x4242, Cookie: 0xc0ffee00, Span: 32}
	want := []string{`  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ payload load 4b @ transport header + 4 => reg 1 ]
  [ cmp gte reg 1 0x00eeffc0 ]
  [ cmp lte reg 1 0x1feeffc0 ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
`, `  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000006 ]
  [ payload load 4b @ transport header + 8 => reg 1 ]
  [ cmp gte reg 1 0x01eeffc0 ]
  [ cmp lte reg 1 0x20eeffc0 ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
`}
	rules := traceRules(Match{EchoID: m.EchoID, TCP: &m})
	if len(rules) != len(want) {
		t.Fatalf("%d rules, want %d", len(rules), len(want))
	}
	for i, r := range rules {
		if got := listExprs(t, r); got != want[i] {
			t.Errorf("rule %d:\n%s\nwant:\n%s", i, got, want[i])
		}
	}
}

// TestTraceRulesUDP checks the helper rules of UDP runs with cookie 0x5eed0035 and echo id
// 0x7d00, sending DNS queries (the mark at Offset 32) or a 504-byte user payload, and the
// reply rule TraceReplies adds for port 47794, against what nft 1.0.6 generates (nft
// --debug=netlink) for
//
//	meta l4proto udp @th,320,32 0x5eed0035 @th,368,16 0x7d00 meta nftrace set 1 jump seq
//	meta l4proto udp udp dport 47794 meta nftrace set 1
//	meta l4proto udp @th,4096,32 0x5eed0035 @th,4144,16 0x7d00 meta nftrace set 1 jump seq
//	@th,4143,1 1 jump seq_bit0
//	@th,4128,1 1 jump seq_bit15
//
// The runs whose mark a trace does not show whole have the seq chain; the default
// payload's does not (TestUDPRun lists its table).
func TestTraceRulesUDP(t *testing.T) {
	m, err := decode.NewUDPMark(0x7d00, 0x5eed0035, decode.DNSPort, nil)
	if err != nil {
		t.Fatal(err)
	}
	user, err := decode.NewUDPMark(0x7d00, 0x5eed0035, 7, make([]byte, decode.MaxPayload-decode.MarkLen))
	if err != nil {
		t.Fatal(err)
	}
	def, err := decode.NewUDPMark(0x7d00, 0x5eed0035, 7, nil)
	if err != nil {
		t.Fatal(err)
	}
	if seqRules(Match{EchoID: def.EchoID, UDP: &def}) != nil || len(seqRules(Match{EchoID: m.EchoID, UDP: &m})) != 16 {
		t.Error("a seq chain for the default payload, or not 16 rules for the DNS query's")
	}
	for _, tc := range []struct {
		name  string
		rules [][]expr.Any
		want  string
	}{
		{"request", traceRules(Match{EchoID: m.EchoID, UDP: &m}), `  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000011 ]
  [ payload load 4b @ transport header + 40 => reg 1 ]
  [ cmp eq reg 1 0x3500ed5e ]
  [ payload load 2b @ transport header + 46 => reg 1 ]
  [ cmp eq reg 1 0x0000007d ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
  [ immediate reg 0 jump -> seq ]
`},
		{"reply", replyRules(47794), `  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000011 ]
  [ payload load 2b @ transport header + 2 => reg 1 ]
  [ cmp eq reg 1 0x0000b2ba ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
`},
		{"request behind a user payload", traceRules(Match{EchoID: user.EchoID, UDP: &user}), `  [ meta load l4proto => reg 1 ]
  [ cmp eq reg 1 0x00000011 ]
  [ payload load 4b @ transport header + 512 => reg 1 ]
  [ cmp eq reg 1 0x3500ed5e ]
  [ payload load 2b @ transport header + 518 => reg 1 ]
  [ cmp eq reg 1 0x0000007d ]
  [ immediate reg 1 0x00000001 ]
  [ meta set nftrace with reg 1 ]
  [ immediate reg 0 jump -> seq ]
`},
		{"bit 0 of its probe number", seqRules(Match{EchoID: user.EchoID, UDP: &user})[:1], `  [ payload load 1b @ transport header + 517 => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00000001 ) ^ 0x00000000 ]
  [ cmp eq reg 1 0x00000001 ]
  [ immediate reg 0 jump -> seq_bit0 ]
`},
		{"bit 15", seqRules(Match{EchoID: user.EchoID, UDP: &user})[15:], `  [ payload load 1b @ transport header + 516 => reg 1 ]
  [ bitwise reg 1 = ( reg 1 & 0x00000080 ) ^ 0x00000000 ]
  [ cmp eq reg 1 0x00000080 ]
  [ immediate reg 0 jump -> seq_bit15 ]
`},
	} {
		if len(tc.rules) != 1 {
			t.Fatalf("%s: %d rules, want 1", tc.name, len(tc.rules))
		}
		if got := listExprs(t, tc.rules[0]); got != tc.want {
			t.Errorf("%s rule:\n%s\nwant:\n%s", tc.name, got, tc.want)
		}
	}
}

// TestExplainOffset: a kernel's ERANGE is explained when the mark lies past the 255 bytes
// of 8-bit payload offsets, and only then.
func TestExplainOffset(t *testing.T) {
	refused := fmt.Errorf("add table inet t: %w", unix.ERANGE)
	for _, tc := range []struct {
		name    string
		err     error
		offset  int
		explain bool
	}{
		{"mark past 255", refused, 242, true},
		{"mark within 255", refused, 241, false},
		{"another error", fmt.Errorf("add table inet t: %w", unix.EINVAL), 504, false},
	} {
		m := decode.UDPMark{Offset: tc.offset}
		got := explainOffset(tc.err, Match{UDP: &m})
		if !errors.Is(got, tc.err) || (got != tc.err) != tc.explain {
			t.Errorf("%s: %v", tc.name, got)
		}
		if tc.explain && !strings.Contains(got.Error(), "payloads of at most 241 bytes") {
			t.Errorf("%s: %v", tc.name, got)
		}
	}
	if got := explainOffset(refused, Match{EchoID: 1}); got != refused {
		t.Errorf("echo run: %v", got)
	}
}

// TestInstallMessages checks the batch that creates the helper table: message order,
// acknowledgements, the owner flag and the chains' hooks and priority.
func TestInstallMessages(t *testing.T) {
	const name = "tracepkt_42_0badcafe"
	nft := func(m uint16) netlink.HeaderType { return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | m) }
	wantTypes := []netlink.HeaderType{
		unix.NFNL_MSG_BATCH_BEGIN,
		nft(unix.NFT_MSG_NEWTABLE),
		nft(unix.NFT_MSG_NEWCHAIN), nft(unix.NFT_MSG_NEWRULE), nft(unix.NFT_MSG_NEWRULE),
		nft(unix.NFT_MSG_NEWCHAIN), nft(unix.NFT_MSG_NEWRULE), nft(unix.NFT_MSG_NEWRULE),
		unix.NFNL_MSG_BATCH_END,
	}
	for _, owner := range []bool{true, false} {
		msgs, err := installMessages(name, Match{EchoID: 0x4242}, owner)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != len(wantTypes) {
			t.Fatalf("owner=%v: %d messages, want %d", owner, len(msgs), len(wantTypes))
		}
		var chains []chainKey
		for i, m := range msgs {
			if m.Header.Type != wantTypes[i] {
				t.Errorf("owner=%v: message %d has type %v, want %v", owner, i, m.Header.Type, wantTypes[i])
			}
			inBatch := i > 0 && i < len(msgs)-1
			if ack := m.Header.Flags&netlink.Acknowledge != 0; ack != inBatch || m.Header.Flags&netlink.Echo != 0 {
				t.Errorf("owner=%v: message %d has flags %v", owner, i, m.Header.Flags)
			}
			switch m.Header.Type {
			case nft(unix.NFT_MSG_NEWTABLE):
				attrs, err := netlink.UnmarshalAttributes(m.Data[nfgenMsgLen:])
				if err != nil {
					t.Fatal(err)
				}
				want := uint32(0)
				if owner {
					want = tableFlagOwner
				}
				for _, a := range attrs {
					switch a.Type {
					case unix.NFTA_TABLE_NAME:
						if got := strings.TrimRight(string(a.Data), "\x00"); got != name {
							t.Errorf("table name %q", got)
						}
					case unix.NFTA_TABLE_FLAGS:
						if got := binary.BigEndian.Uint32(a.Data); got != want {
							t.Errorf("owner=%v: table flags %#x, want %#x", owner, got, want)
						}
					}
				}
				if m.Data[0] != unix.NFPROTO_INET {
					t.Errorf("table family %d", m.Data[0])
				}
			case nft(unix.NFT_MSG_NEWCHAIN):
				k, info, err := parseChain(m.Data)
				if err != nil {
					t.Fatal(err)
				}
				chains = append(chains, k)
				wantHook := map[string]decode.Hook{chainPrerouting: decode.HookPrerouting, chainOutput: decode.HookOutput}[k.Chain]
				if !info.Base || info.Hook != wantHook {
					t.Errorf("chain %+v: %+v, want a base chain at %v", k, info, wantHook)
				}
				if prio := chainPriority(t, m.Data); prio != math.MinInt32 {
					t.Errorf("chain %s priority %d, want %d", k.Chain, prio, math.MinInt32)
				}
			}
		}
		want := []chainKey{{unix.NFPROTO_INET, name, chainPrerouting}, {unix.NFPROTO_INET, name, chainOutput}}
		if fmt.Sprint(chains) != fmt.Sprint(want) {
			t.Errorf("chains %v, want %v", chains, want)
		}
	}
}

// chainPriority returns NFTA_HOOK_PRIORITY of an NFT_MSG_NEWCHAIN message.
func chainPriority(t *testing.T, b []byte) int32 {
	t.Helper()
	ad, err := netlink.NewAttributeDecoder(b[nfgenMsgLen:])
	if err != nil {
		t.Fatal(err)
	}
	ad.ByteOrder = binary.BigEndian
	var prio int32
	for ad.Next() {
		if ad.Type() == unix.NFTA_CHAIN_HOOK {
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if nad.Type() == unix.NFTA_HOOK_PRIORITY {
						prio = nad.Int32()
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return prio
}

func TestHelperTablePid(t *testing.T) {
	for name, want := range map[string]int{
		"tracepkt_1234_0badcafe": 1234,
		"tracepkt_1_a":           1,
		"tracepkt_1234_":         0,
		"tracepkt__0badcafe":     0,
		"tracepkt_0_0badcafe":    0,
		"tracepkt_01_0badcafe":   0,
		"tracepkt_12_0BADCAFE":   0,
		"tracepkt_12_0bad_cafe":  0,
		"tracepkt_-1_0badcafe":   0,
		"filter":                 0,
		"xtracepkt_12_ab":        0,
	} {
		pid, ok := helperTablePid(name)
		if pid != want || ok != (want != 0) {
			t.Errorf("helperTablePid(%q) = %d, %v; want %d", name, pid, ok, want)
		}
	}
	if !isHelperTable(unix.NFPROTO_INET, "tracepkt_1234_0badcafe") || isHelperTable(unix.NFPROTO_IPV4, "tracepkt_1234_0badcafe") {
		t.Error("isHelperTable: only inet tables are helper tables")
	}
	name, err := newTableName()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := helperTablePid(name); !ok || len(name) > 32 {
		t.Errorf("newTableName() = %q: not a helper table name of at most 32 bytes", name)
	}
}
