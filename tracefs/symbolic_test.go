package tracefs

import (
	"os"
	"strings"
	"testing"
)

// The format files of skb:kfree_skb were captured from the kernels of the
// matrix (Debian 6.1, 6.12) and the development kernel (6.18): the same
// names sit at different values.
func TestParseSymbolsKfreeSkb(t *testing.T) {
	for _, tc := range []struct {
		kernel string
		want   map[uint64]string
		count  int
	}{
		{"6.1", map[uint64]string{1: "NOT_SPECIFIED", 2: "NO_SOCKET", 7: "NETFILTER_DROP", 11: "IP_RPFILTER", 62: "IP_INADDRERRORS", 63: "IP_INNOROUTES", 64: "PKT_TOO_BIG"}, 66},
		{"6.12", map[uint64]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET", 11: "NETFILTER_DROP"}, 0},
		{"6.18", map[uint64]string{2: "NOT_SPECIFIED", 3: "NO_SOCKET", 12: "NETFILTER_DROP", 16: "IP_RPFILTER", 58: "NEIGH_FAILED", 87: "IP_INADDRERRORS", 88: "IP_INNOROUTES", 93: "PKT_TOO_BIG", 104: "QUEUE_PURGE"}, 0},
	} {
		t.Run(tc.kernel, func(t *testing.T) {
			f, err := os.Open("testdata/kfree_skb-" + tc.kernel + ".format")
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			syms, err := parseSymbols(f, "reason")
			if err != nil {
				t.Fatal(err)
			}
			for v, name := range tc.want {
				if syms[v] != name {
					t.Errorf("value %d = %q, want %q", v, syms[v], name)
				}
			}
			if tc.count != 0 && len(syms) != tc.count {
				t.Errorf("%d names, want %d", len(syms), tc.count)
			}
			if _, ok := syms[0]; ok {
				t.Errorf("value 0 named %q: the list starts at NOT_SPECIFIED", syms[0])
			}
		})
	}
}

func TestParseSymbolsNone(t *testing.T) {
	const format = "name: kfree_skb\nformat:\n\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;\n\nprint fmt: \"skbaddr=%p protocol=%u location=%p\", REC->skbaddr, REC->protocol, REC->location\n"
	syms, err := parseSymbols(strings.NewReader(format), "reason")
	if err != nil || len(syms) != 0 {
		t.Errorf("parseSymbols of a 5.10 format = %v, %v; want none", syms, err)
	}
	if _, err := parseSymbols(strings.NewReader(`print fmt: "%s", __print_symbolic(REC->reason, { 1, "A" }, { x, "B" })`), "reason"); err == nil {
		t.Error("a bad value parsed")
	}
}
