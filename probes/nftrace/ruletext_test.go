package nftrace

import (
	"maps"
	"testing"

	"golang.org/x/sys/unix"
)

// rulesetListing is `nft --handle --stateless list ruleset` (nft 1.0.6) of a namespace with
// iptables-nft rules (whose comment match nft does not show), a native table with a set, a
// chain comment and a comment holding a brace, a netdev table, and the helper table of a
// run; then a rule nft wrapped, written by hand, as nft wraps long anonymous sets.
const rulesetListing = `table ip filter { # handle 1
	chain TP_OUT { # handle 1
		meta l4proto icmp  counter return # handle 4
	}

	chain OUTPUT { # handle 2
		type filter hook output priority filter; policy accept;
		counter jump TP_OUT # handle 3
		tcp dport 22 ct state new counter accept # handle 5
	}
}
table inet filt { # handle 2
	set blocked { # handle 3
		type ipv4_addr
		elements = { 192.0.2.1, 192.0.2.2 }
	}

	chain forward { # handle 1
		comment "forwarding"
		type filter hook forward priority filter; policy accept;
		ip saddr { 192.0.2.10, 192.0.2.11 } counter drop # handle 5
		ip daddr @blocked drop comment "blocked { hosts" # handle 6
		meta l4proto icmp jump chk # handle 7
	}

	chain chk { # handle 2
		icmp type echo-request limit rate 10/second accept # handle 8
	}
}
table netdev nd { # handle 3
	chain ing { # handle 1
		type filter hook ingress device "lo" priority filter; policy accept;
		counter # handle 2
	}
}
table inet tracepkt_13411_087925e3 { # handle 4 progname tracepkt-perf
	flags owner

	chain prerouting { # handle 1
		type filter hook prerouting priority -2147483648; policy accept;
		icmp id 45441 meta nftrace set 1 # handle 2
		icmpv6 parameter-problem 2978021376/16 meta nftrace set 1 # handle 3
	}
}
table ip6 "wrapped" { # handle 5
	chain input { # handle 1
		type filter hook input priority filter; policy accept;
		ip6 saddr { fd00::1, fd00::2,
			    fd00::3 } drop # handle 2
		accept # handle 3
	}
}# Warning: table ip filter is managed by iptables-nft, do not touch!
`

func TestParseRuleset(t *testing.T) {
	ip, inet, netdev, ip6 := uint8(unix.NFPROTO_IPV4), uint8(unix.NFPROTO_INET), uint8(unix.NFPROTO_NETDEV), uint8(unix.NFPROTO_IPV6)
	want := map[ruleKey]string{
		{ip, "filter", 4}:                    "meta l4proto icmp  counter return",
		{ip, "filter", 3}:                    "counter jump TP_OUT",
		{ip, "filter", 5}:                    "tcp dport 22 ct state new counter accept",
		{inet, "filt", 5}:                    "ip saddr { 192.0.2.10, 192.0.2.11 } counter drop",
		{inet, "filt", 6}:                    `ip daddr @blocked drop comment "blocked { hosts"`,
		{inet, "filt", 7}:                    "meta l4proto icmp jump chk",
		{inet, "filt", 8}:                    "icmp type echo-request limit rate 10/second accept",
		{netdev, "nd", 2}:                    "counter",
		{inet, "tracepkt_13411_087925e3", 2}: "icmp id 45441 meta nftrace set 1",
		{inet, "tracepkt_13411_087925e3", 3}: "icmpv6 parameter-problem 2978021376/16 meta nftrace set 1",
		{ip6, "wrapped", 2}:                  "ip6 saddr { fd00::1, fd00::2, fd00::3 } drop",
		{ip6, "wrapped", 3}:                  "accept",
	}
	got := parseRuleset([]byte(rulesetListing))
	if !maps.Equal(got, want) {
		for k, v := range got {
			if want[k] != v {
				t.Errorf("rule %+v = %q, want %q", k, v, want[k])
			}
		}
		for k, v := range want {
			if _, ok := got[k]; !ok {
				t.Errorf("rule %+v (%q) missing", k, v)
			}
		}
	}
}

func TestCutHandle(t *testing.T) {
	for _, tc := range []struct {
		line, text string
		handle     uint64
		ok         bool
	}{
		{"accept # handle 3", "accept", 3, true},
		{`drop comment "# handle 9" # handle 12`, `drop comment "# handle 9"`, 12, true},
		{"table inet t { # handle 4 progname nft", "table inet t { # handle 4 progname nft", 0, false},
		{"type filter hook input priority filter; policy accept;", "type filter hook input priority filter; policy accept;", 0, false},
	} {
		text, handle, ok := cutHandle(tc.line)
		if text != tc.text || handle != tc.handle || ok != tc.ok {
			t.Errorf("cutHandle(%q) = %q, %d, %v; want %q, %d, %v", tc.line, text, handle, ok, tc.text, tc.handle, tc.ok)
		}
	}
}
