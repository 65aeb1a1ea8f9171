package main

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// linkLocal reads the link-local address of link in ns with ip, not
// through the topology code that made it.
func linkLocal(t *testing.T, ns *topology.Netns, link string) netip.Addr {
	t.Helper()
	out := inNetns(t, ns, "ip", "-6", "-o", "addr", "show", "dev", link, "scope", "link")
	// "3: eth0    inet6 fe80::1/64 scope link ..."
	f := strings.Fields(out)
	for i, w := range f {
		if w == "inet6" && i+1 < len(f) {
			if p, err := netip.ParsePrefix(f[i+1]); err == nil {
				return p.Addr()
			}
		}
	}
	t.Fatalf("no link-local address on %s in %v: %q", link, ns, out)
	return netip.Addr{}
}

// TestE2ELinkLocal: a link-local target is on every link, so without a
// zone it is refused (one line, exit 2, asking for %iface, as ping does),
// and with one it is traced out of that interface. The source namespace
// has two veths, so the first route to fe80::/64 is not necessarily the
// right one; it has nothing else, so nothing leaves the test's namespaces.
func TestE2ELinkLocal(t *testing.T) {
	testenv.RequireRoot(t)
	topo := testenv.Topology(t)
	var src, dst, other *topology.Netns
	for _, p := range []struct {
		ns     **topology.Netns
		prefix string
	}{{&src, "lls"}, {&dst, "lld"}, {&other, "llo"}} {
		ns, err := topo.Netns(topology.UniqueName(p.prefix))
		if err != nil {
			t.Fatal(err)
		}
		*p.ns = ns
	}
	// other's veth first: the route the kernel would pick without a zone.
	if err := topo.Veth("eth1", src, "eth0", other); err != nil {
		t.Fatal(err)
	}
	if err := topo.Veth("eth0", src, "eth0", dst); err != nil {
		t.Fatal(err)
	}
	target := linkLocal(t, dst, "eth0")
	srcIno, dstIno := inode(t, src), inode(t, dst)

	res := runTool(t, src, "--json", "-W", "3s", target.String())
	if res.code != 2 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 ||
		!strings.Contains(res.stderr, "link-local") || !strings.Contains(res.stderr, target.String()+"%") || res.stdout != "" {
		t.Errorf("%s without a zone: exit %d, stderr %q, stdout %q; want exit 2 and one line asking for %%iface", target, res.code, res.stderr, res.stdout)
	}

	zoned := target.WithZone("eth0")
	echoes := echoesOf(t, runTool(t, src, "--json", "-W", "3s", zoned.String()))
	if len(echoes) != 1 || echoes[0].Result != "reply" {
		t.Fatalf("%s: %+v", zoned, echoes)
	}
	want := []string{
		row(srcIno, "eth0", "out", "request"),
		row(dstIno, "eth0", "in", "request"),
		row(dstIno, "eth0", "out", "reply"),
		row(srcIno, "eth0", "in", "reply"),
	}
	if got := rows(echoes[0]); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("%s rows:\n%s\nwant:\n%s", zoned, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
