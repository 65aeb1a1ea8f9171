package main

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// Recordings of real runs for --stats, --diff and --svg live in testdata;
// go test -update (as root) records them again from live runs. These
// functions make them; the tests that read them need no root.

// recordRun records a live run from src to target into testdata/name.tpk.
func recordRun(t *testing.T, topo *topology.Topology, src *topology.Netns, target netip.Addr, name string, args ...string) {
	t.Helper()
	if err := topo.CheckOwnRoute(src, target); err != nil {
		t.Fatal(err)
	}
	res := runTool(t, src, append(append([]string{"--record", filepath.Join("testdata", name+".tpk")}, args...), target.String())...)
	if res.code > 1 {
		t.Fatalf("live run: exit %d\n%s", res.code, res.stderr)
	}
}

// routerRows is the path of an echo from A through R to B and back, with
// the namespaces' inodes: the request leaves R by rOut and enters B by bIn,
// the reply comes back over R's eth1.
func routerRows(a, r, b uint64, rOut, bIn string) []string {
	return []string{
		row(a, "eth0", "out", "request"), row(r, "eth0", "in", "request"), row(r, rOut, "out", "request"), row(b, bIn, "in", "request"),
		row(b, "eth0", "out", "reply"), row(r, "eth1", "in", "reply"), row(r, "eth0", "out", "reply"), row(a, "eth0", "in", "reply"),
	}
}

// statRows are the rows of a path of --stats --json.
func statRows(hops []jsonStatHop) []string {
	var out []string
	for _, h := range hops {
		out = append(out, row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
	}
	return out
}

// recordStatsRouter records 50 echoes through a router namespace, and
// checks the recorded path against the namespaces' inodes read from /proc
// while they exist.
func recordStatsRouter(t *testing.T) {
	topo, n := router(t)
	recordRun(t, topo, n.Source, n.Target4, "stats-router-ipv4", "-c", "50", "-i", "0.01")
	s, _ := replayStats(t, "stats-router-ipv4", 0)
	want := routerRows(inode(t, n.A), inode(t, n.R), inode(t, n.B), "eth1", "eth0")
	if len(s.Paths) != 1 || !slices.Equal(statRows(s.Paths[0].Hops), want) {
		t.Fatalf("recorded paths %+v, want one:\n%s", s.Paths, strings.Join(want, "\n"))
	}
}

// recordReroute records echoes through a router that, after the fifth
// reply, routes the target over a second link (R eth2 -> B eth1); the
// replies keep coming back over the first.
func recordReroute(t *testing.T) {
	topo, n := router(t)
	second, _ := topology.TestNets()
	if err := topo.Veth("eth2", n.R, "eth1", n.B); err != nil {
		t.Fatal(err)
	}
	rAddr := netip.PrefixFrom(second.Addr().Next(), second.Bits())
	bAddr := netip.PrefixFrom(rAddr.Addr().Next(), second.Bits())
	if err := topo.AddAddr("eth2", n.R, rAddr); err != nil {
		t.Fatal(err)
	}
	if err := topo.AddAddr("eth1", n.B, bAddr); err != nil {
		t.Fatal(err)
	}
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	self := testBinary(t)
	cmd := exec.Command("ip", "netns", "exec", n.Source.Name, self, "--record", filepath.Join("testdata", "stats-reroute-ipv4.tpk"),
		"-c", "12", "-i", "100ms", n.Target4.String())
	cmd.Env = append(os.Environ(), asToolEnv+"=1")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	replies := 0
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "reply from") {
			if replies++; replies == 5 {
				if err := topo.AddRoute(n.R, netip.PrefixFrom(n.Target4, 32), bAddr.Addr()); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if err := cmd.Wait(); err != nil || replies != 12 {
		t.Fatalf("live run: %v, %d replies", err, replies)
	}
}

// recordDiffs records a router path working (diff-ok), then with a rule in
// R that drops echo requests (diff-drop), then with one that rejects them
// (diff-reject), then working again on the same topology built anew, with
// the same names and other namespace inodes (diff-ok-again).
func recordDiffs(t *testing.T) {
	prefix := topology.UniqueName("tp")
	v4, _ := topology.TestNets()
	t.Run("first", func(t *testing.T) {
		topo, n := routerNamed(t, prefix, v4, netip.Prefix{})
		recordRun(t, topo, n.Source, n.Target4, "diff-ok-ipv4", "-c", "5", "-i", "0.01")
		inNetns(t, n.R, "nft", "add table inet tpstats; add chain inet tpstats forward { type filter hook forward priority 0; policy accept; }; add rule inet tpstats forward icmp type echo-request drop")
		recordRun(t, topo, n.Source, n.Target4, "diff-drop-ipv4", "-c", "2", "-i", "0.01", "-W", "300ms")
		inNetns(t, n.R, "nft", "flush chain inet tpstats forward; add rule inet tpstats forward icmp type echo-request reject with icmp type admin-prohibited")
		recordRun(t, topo, n.Source, n.Target4, "diff-reject-ipv4", "-c", "2", "-i", "0.01", "-W", "300ms")
	})
	t.Run("again", func(t *testing.T) {
		topo, n := routerNamed(t, prefix, v4, netip.Prefix{})
		recordRun(t, topo, n.Source, n.Target4, "diff-ok-again-ipv4", "-c", "5", "-i", "0.01")
	})
}

// recordSVGExample records the README's picture: a container on a
// docker-like bridge reaching a database behind a router namespace, with a
// second container on the bridge. The namespaces have the names the
// picture shows; a run fails when one of them exists already.
func recordSVGExample(t *testing.T) {
	topo := testenv.Topology(t)
	names := []string{"tp-host", "tp-web-1", "tp-web-2", "tp-router", "tp-db-1"}
	nss := map[string]*topology.Netns{}
	for _, name := range names {
		if _, err := os.Stat(filepath.Join("/run/netns", name)); err == nil {
			t.Fatalf("namespace %s exists: remove it to record the example", name)
		}
		ns, err := topo.Netns(name)
		if err != nil {
			t.Fatal(err)
		}
		nss[name] = ns
	}
	host, rtr, db := nss["tp-host"], nss["tp-router"], nss["tp-db-1"]
	lan, _ := topology.TestNets()
	link, _ := topology.TestNets()
	dbNet, _ := topology.TestNets()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(topo.Bridge("br0", host))
	must(topo.AddAddr("br0", host, nthPrefix(lan, 1)))
	for i, web := range []string{"web-1", "web-2"} {
		ns := nss["tp-"+web]
		veth := "veth-" + strings.ReplaceAll(web, "-", "")
		must(topo.Veth(veth, host, "eth0", ns))
		must(topo.SetMaster(veth, host, "br0"))
		must(topo.AddAddr("eth0", ns, nthPrefix(lan, 2+i)))
		must(topo.AddRoute(ns, netip.MustParsePrefix("0.0.0.0/0"), nthPrefix(lan, 1).Addr()))
	}
	must(topo.Veth("veth-rtr", host, "eth0", rtr))
	must(topo.AddAddr("veth-rtr", host, nthPrefix(link, 1)))
	must(topo.AddAddr("eth0", rtr, nthPrefix(link, 2)))
	must(topo.Veth("eth1", rtr, "eth0", db))
	must(topo.AddAddr("eth1", rtr, nthPrefix(dbNet, 1)))
	must(topo.AddAddr("eth0", db, nthPrefix(dbNet, 2)))
	must(topo.AddRoute(host, dbNet, nthPrefix(link, 2).Addr()))
	must(topo.AddRoute(rtr, lan, nthPrefix(link, 1).Addr()))
	must(topo.AddRoute(db, netip.MustParsePrefix("0.0.0.0/0"), nthPrefix(dbNet, 1).Addr()))
	must(host.Forwarding(true))
	must(rtr.Forwarding(true))
	recordRun(t, topo, nss["tp-web-1"], nthPrefix(dbNet, 2).Addr(), "svg-example-ipv4", "-c", "20", "-i", "0.01")
}

// TestE2EStats runs --stats live through a router: the table with 100
// echoes, and the JSON object and the picture with 20.
func TestE2EStats(t *testing.T) {
	topo, n := router(t)
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	if err := topo.CheckOwnRoute(n.Source, n.Target4); err != nil {
		t.Fatal(err)
	}
	want := routerRows(a, r, b, "eth1", "eth0")

	names := []string{n.A.Name, n.R.Name, n.R.Name, n.B.Name, n.B.Name, n.R.Name, n.R.Name, n.A.Name}
	res := runTool(t, n.Source, "-c", "100", "-i", "0.01", "--stats", n.Target4.String())
	lines := strings.Split(res.stdout, "\n")
	if res.code != 0 || len(lines) < 11 || lines[0] != fmt.Sprintf("100 echoes to %s: 100 replies", n.Target4) ||
		!strings.HasPrefix(lines[2], "#  NETWORK NS") || !strings.HasPrefix(lines[11], "round trip p50 ") {
		t.Fatalf("exit %d:\n%s%s", res.code, res.stdout, res.stderr)
	}
	for i, w := range want {
		f := strings.Fields(lines[3+i])
		if got := strings.Join([]string{strings.Trim(f[2], "()"), f[3], f[4], f[5]}, " "); got != w || f[1] != names[i] || f[6] != "100" {
			t.Errorf("row %d: %q, want %s with 100 echoes", i+1, lines[3+i], w)
		}
	}

	svgOut := filepath.Join(t.TempDir(), "live.svg")
	res = runTool(t, n.Source, "-c", "20", "-i", "0.01", "--stats", "--json", "--svg", svgOut, n.Target4.String())
	var s jsonStats
	if err := jsonUnmarshal(res.stdout, &s); err != nil || res.code != 0 {
		t.Fatalf("exit %d, %v:\n%s%s", res.code, err, res.stdout, res.stderr)
	}
	if s.Echoes != 20 || s.Replied != 20 || len(s.Paths) != 1 || s.Paths[0].RTTP50Ns <= 0 {
		t.Fatalf("%+v", s)
	}
	var got []string
	for i, h := range s.Paths[0].Hops {
		got = append(got, row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
		if i > 0 && !(h.P50Ns > 0 && h.P50Ns <= h.P90Ns && h.P90Ns <= h.P99Ns && h.P99Ns <= h.MaxNs) || h.Echoes != 20 {
			t.Errorf("hop %d: %+v", i+1, h)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("path:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	doc, err := os.ReadFile(svgOut)
	if err != nil {
		t.Fatal(err)
	}
	els := testenv.SVGElements(t, doc)
	if hops, boxes := testenv.Classed(els, "hop"), testenv.SVGBoxes(els); len(hops) != 8 || !slices.Equal(boxes, []string{n.A.Name, n.R.Name, n.B.Name}) {
		t.Errorf("%d hops drawn, boxes %v", len(hops), boxes)
	}
	checkSVGPath(t, els, testenv.SVGHops(t, els), s.Paths[0].Hops)
	testenv.RenderSVG(t, "live", doc)
}
