package main

import (
	"reflect"
	"strings"
	"testing"
)

// TestKprobeCapsRoundTrip: what a 5.10 run records about its kprobes reads
// back from the header, and gives the same notes in a replay.
func TestKprobeCapsRoundTrip(t *testing.T) {
	c := runCaps{
		netfilter:       nfKprobe,
		argsFromVersion: []string{"ipt_do_table(skb, state, table)", "ip6t_do_table(skb, state, table)"},
		kprobeNoBTF:     []string{"nft_do_chain"},
	}
	got := parseCaps(c.strings())
	if !reflect.DeepEqual(got, c) {
		t.Errorf("parseCaps(strings()) = %+v, want %+v", got, c)
	}
	want := []string{
		"netfilter: ipt_do_table(skb, state, table): argument order taken from the kernel version, as its module has no BTF on this kernel",
		"netfilter: ip6t_do_table(skb, state, table): argument order taken from the kernel version, as its module has no BTF on this kernel",
		"netfilter: no kprobe on nft_do_chain: its module has no BTF on this kernel (before 5.11), so what it reads cannot be found; nftables chains are shown by --netfilter nftrace (or auto)",
	}
	if notes := got.notes(); len(notes) < len(want) || strings.Join(notes[:len(want)], "\n") != strings.Join(want, "\n") {
		t.Errorf("notes:\n%s\nwant first:\n%s", strings.Join(notes, "\n"), strings.Join(want, "\n"))
	}
}
