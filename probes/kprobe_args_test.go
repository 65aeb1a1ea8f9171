package probes

import (
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
)

func TestParseRelease(t *testing.T) {
	for _, tc := range []struct {
		release      string
		major, minor int
	}{
		{"5.10.0-46-amd64", 5, 10},
		{"6.18.44-fc-v669", 6, 18},
		{"5.15-rc3", 5, 15},
		{"4.18.0-553.el8_10.x86_64", 4, 18},
	} {
		major, minor, err := parseRelease(tc.release)
		if err != nil || major != tc.major || minor != tc.minor {
			t.Errorf("parseRelease(%q) = %d, %d, %v; want %d, %d", tc.release, major, minor, err, tc.major, tc.minor)
		}
	}
	for _, bad := range []string{"", "6", "x.y", "6.x"} {
		if _, _, err := parseRelease(bad); err == nil {
			t.Errorf("parseRelease(%q): no error", bad)
		}
	}
}

// TestLegacyTableProtoByVersion: without module BTF, ipt_do_table's
// prototype comes from the kernel version, and must give the offsets that
// the module's own BTF gives on kernels of that version.
func TestLegacyTableProtoByVersion(t *testing.T) {
	for _, tc := range []struct {
		major, minor int
		before516    bool
		params       string
	}{
		{5, 10, true, "skb state table"},
		{5, 15, true, "skb state table"},
		{5, 16, false, "priv skb state"},
		{6, 1, false, "priv skb state"},
	} {
		spec := netfilterSpec(t, tc.before516)
		want, err := LookupNetfilterOffsets(spec, spec, decode.ProbeIptDoTable)
		if err != nil {
			t.Fatal(err)
		}
		proto, err := legacyTableProto(spec, tc.major, tc.minor)
		if err != nil {
			t.Fatalf("%d.%d: %v", tc.major, tc.minor, err)
		}
		args := newNetfilterArgs(proto, "ip_tables", "x")
		if got := strings.Join(args.Params, " "); got != tc.params {
			t.Errorf("%d.%d: parameters %q, want %q", tc.major, tc.minor, got, tc.params)
		}
		got, err := lookupNetfilterOffsets(spec, spec, proto, decode.ProbeIptDoTable)
		if err != nil {
			t.Fatalf("%d.%d: %v", tc.major, tc.minor, err)
		}
		if got != want {
			t.Errorf("%d.%d: offsets\n got %+v\nwant %+v (from the BTF prototype)", tc.major, tc.minor, got, want)
		}
	}
}

func TestNetfilterArgsString(t *testing.T) {
	for _, tc := range []struct {
		args NetfilterArgs
		want string
	}{
		{NetfilterArgs{Params: []string{"skb", "state", "table"}, Module: "ip_tables", FromVersion: "5.10.0-46-amd64"},
			"arguments (skb, state, table) from the kernel version (5.10.0-46-amd64; the order changed in 5.16): module ip_tables has no BTF"},
		{NetfilterArgs{Params: []string{"priv", "skb", "state"}, Module: "ip_tables"}, "arguments (priv, skb, state) from the BTF of module ip_tables"},
		{NetfilterArgs{Params: []string{"pkt", "priv"}}, "arguments (pkt, priv) from the kernel's BTF"},
	} {
		if got := tc.args.String(); got != tc.want {
			t.Errorf("got  %s\nwant %s", got, tc.want)
		}
	}
}
