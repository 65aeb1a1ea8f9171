package hint

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// ip runs ip(8) with args inside ns.
func ip(t *testing.T, ns *topology.Netns, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...).CombinedOutput(); err != nil {
		t.Fatalf("ip netns exec %s %v: %v: %s", ns.Name, args, err, out)
	}
}

// explainIn runs Explain for l in ns.
func explainIn(t *testing.T, ns *topology.Netns, l Loss) string {
	t.Helper()
	f, err := os.Open(ns.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, err := Explain(f, l)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// ifindex is the index of link name in ns, read with net.InterfaceByName
// inside it.
func ifindex(t *testing.T, ns *topology.Netns, name string) uint32 {
	t.Helper()
	var idx int
	if err := ns.Do(func() error {
		i, err := net.InterfaceByName(name)
		if err == nil {
			idx = i.Index
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return uint32(idx)
}

// TestExplainWithoutReason explains losses in a router as on a kernel whose
// drops carry no reason (before 5.17): from the state alone.
func TestExplainWithoutReason(t *testing.T) {
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	n, err := topo.Router(topology.UniqueName("hx"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	in := ifindex(t, n.R, n.RLinkA)
	ip(t, n.R, "ip", "link", "set", n.RLinkB, "mtu", "1280")
	for _, tc := range []struct {
		name string
		l    Loss
		want string
	}{
		{"too big v4", Loss{Src: n.A4.Addr(), Dst: n.Target4, Ifindex: in, In: true, Len: 1428},
			"the packet (1428 bytes) does not fit the MTU toward " + n.Target4.String() + ": eth1 has mtu 1280"},
		{"too big v6", Loss{Src: n.A6.Addr(), Dst: n.Target6, Ifindex: in, In: true, Len: 1448},
			"the packet (1448 bytes) does not fit the MTU toward " + n.Target6.String() + ": eth1 has mtu 1280"},
		{"fits", Loss{Src: n.A4.Addr(), Dst: n.Target4, Ifindex: in, In: true, Len: 1280},
			"route lookup in r for " + n.Target4.String() + ": " + n.Target4.String() + " dev eth1"},
		{"with a reason, its own hint", Loss{Src: n.A4.Addr(), Dst: n.Target4, Ifindex: in, In: true, Len: 1428, Reason: "PKT_TOO_BIG"},
			"the packet does not fit the MTU toward " + n.Target4.String() + ": eth1 has mtu 1280"},
	} {
		tc.l.Netns = "r"
		if got := explainIn(t, n.R, tc.l); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}

	// The route back to A through B: the reverse-path filter refuses A's
	// packets, and the route lookup says so with EXDEV.
	ip(t, n.R, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1", "net.ipv4.conf."+n.RLinkA+".rp_filter=1")
	ip(t, n.R, "ip", "route", "add", netip.PrefixFrom(n.A4.Addr(), 32).String(), "via", n.B4.Addr().String(), "dev", n.RLinkB)
	got := explainIn(t, n.R, Loss{Netns: "r", Src: n.A4.Addr(), Dst: n.Target4, Ifindex: in, In: true, Len: 84})
	want := "reverse-path filter: net.ipv4.conf.eth0.rp_filter = 1 (all: 1), and the route back to " + n.A4.Addr().String() + " leaves through eth1, not eth0"
	if got != want {
		t.Errorf("rp_filter: %q, want %q", got, want)
	}
	if strings.Contains(got, "route lookup") {
		t.Errorf("rp_filter hint is the bare lookup: %q", got)
	}
}
