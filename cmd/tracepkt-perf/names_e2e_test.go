package main

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// switched is two namespaces, web and db, on one bridge that lives in a
// third, sw (a switch): nothing of it touches this namespace.
type switched struct {
	web, db, sw      *topology.Netns
	webPort, dbPort  string // bridge ports in sw
	web4, web6       netip.Prefix
	target4, target6 netip.Addr // db's addresses
}

func buildSwitched(t *testing.T, topo *topology.Topology) *switched {
	t.Helper()
	v4, v6 := topology.TestNets()
	name := topology.UniqueName("tn")
	n := &switched{webPort: name + "w", dbPort: name + "d"}
	var err error
	for _, ns := range []struct {
		p      **topology.Netns
		suffix string
	}{{&n.sw, "-sw"}, {&n.web, "-web"}, {&n.db, "-db"}} {
		if *ns.p, err = topo.Netns(name + ns.suffix); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(topo.Bridge("br0", n.sw))
	must(topo.Veth(n.webPort, n.sw, "eth0", n.web))
	must(topo.Veth(n.dbPort, n.sw, "eth0", n.db))
	must(topo.SetMaster(n.webPort, n.sw, "br0"))
	must(topo.SetMaster(n.dbPort, n.sw, "br0"))
	n.web4 = netip.PrefixFrom(v4.Addr().Next(), v4.Bits())
	n.web6 = netip.PrefixFrom(v6.Addr().Next(), v6.Bits())
	db4 := netip.PrefixFrom(n.web4.Addr().Next(), v4.Bits())
	db6 := netip.PrefixFrom(n.web6.Addr().Next(), v6.Bits())
	n.target4, n.target6 = db4.Addr(), db6.Addr()
	for _, a := range []struct {
		ns *topology.Netns
		p  netip.Prefix
	}{{n.web, n.web4}, {n.web, n.web6}, {n.db, db4}, {n.db, db6}} {
		must(topo.AddAddr("eth0", a.ns, a.p))
	}
	return n
}

// runFrom traces one echo from namespace spec, as the tool run here would.
func runFrom(t *testing.T, topo *topology.Topology, src *topology.Netns, spec string, target netip.Addr, args ...string) toolResult {
	t.Helper()
	if err := topo.CheckOwnRoute(src, target); err != nil {
		t.Fatalf("not tracing: %v", err)
	}
	return runTool(t, nil, append(append([]string{"--from-netns", spec, "-W", "3s"}, args...), target.String())...)
}

// TestE2EFromNetns starts the echo inside web, named by its ip netns name,
// by a PID living in it and by path: the journey starts in web, crosses the
// bridge in sw to db, and the reply ends in web.
func TestE2EFromNetns(t *testing.T) {
	topo := testenv.Topology(t)
	n := buildSwitched(t, topo)
	webPid := testenv.StartInNetns(t, n.web.Name, "sleep", "30").Process.Pid
	web := testenv.NetnsInodeOfPid(t, webPid)
	sw, db := inode(t, n.sw), inode(t, n.db)
	families(t, n.target4, n.target6, func(t *testing.T, target netip.Addr) {
		for _, spec := range []string{n.web.Name, strconv.Itoa(webPid), "/run/netns/" + n.web.Name} {
			echoes := echoesOf(t, runFrom(t, topo, n.web, spec, target, "--json"))
			if len(echoes) != 1 {
				t.Fatalf("--from-netns %s: %d echoes, want 1", spec, len(echoes))
			}
			e := echoes[0]
			assertJourney(t, e, target, []string{
				row(web, "eth0", "out", "request"),
				row(sw, n.webPort, "in", "request"),
				row(sw, n.dbPort, "out", "request"),
				row(db, "eth0", "in", "request"),
				row(db, "eth0", "out", "reply"),
				row(sw, n.dbPort, "in", "reply"),
				row(sw, n.webPort, "out", "reply"),
				row(web, "eth0", "in", "reply"),
			})
			for _, h := range e.Hops {
				want := map[uint64]string{web: n.web.Name, sw: n.sw.Name, db: n.db.Name}[uint64(h.Netns)]
				if h.NetnsName != want || h.NetnsOwner == nil || h.NetnsOwner.Kind != "netns" || h.NetnsOwner.Name != want ||
					h.NetnsOwner.ID != "/run/netns/"+want {
					t.Errorf("--from-netns %s: hop in net:[%d] named %q, owner %+v; want %s", spec, h.Netns, h.NetnsName, h.NetnsOwner, want)
				}
			}
		}
	})
	// With the netfilter source off, and in the table.
	res := runFrom(t, topo, n.web, n.web.Name, n.target4, "--netfilter", "off")
	first := fmt.Sprintf("%s (%d)", n.web.Name, web)
	lines := strings.Split(res.stdout, "\n")
	if res.code != 0 || len(lines) < 9 || !strings.HasPrefix(lines[1], first+"  ") || !strings.HasPrefix(lines[8], first+"  ") {
		t.Errorf("table (exit %d) does not start and end in %s:\n%s%s", res.code, first, res.stdout, res.stderr)
	}
}

// A namespace that does not resolve is one line and exit 2; so is a target
// the source namespace has no route to (the same check as without the flag).
func TestE2EFromNetnsErrors(t *testing.T) {
	topo := testenv.Topology(t)
	n := buildSwitched(t, topo)
	for _, tc := range []struct{ spec, target, want string }{
		{"tpk-no-such-ns", n.target4.String(), `tracepkt-perf: --from-netns: no such network namespace called "tpk-no-such-ns"`},
		{"/nonexistent/netns", n.target4.String(), "tracepkt-perf: --from-netns: no such network namespace: open netns: open /nonexistent/netns"},
		// 192.0.2.0/24 (TEST-NET-1): web has no route to it, and nothing is sent.
		{n.web.Name, "192.0.2.1", "tracepkt-perf: no route to 192.0.2.1"},
	} {
		res := runTool(t, nil, "--from-netns", tc.spec, tc.target)
		if res.code != 2 || res.stdout != "" || strings.Count(res.stderr, "\n") != 1 || !strings.HasPrefix(res.stderr, tc.want) {
			t.Errorf("--from-netns %s %s: exit %d, stdout %q, stderr %q; want one line %q...", tc.spec, tc.target, res.code, res.stdout, res.stderr, tc.want)
		}
	}
	res := runTool(t, nil, "--netns", "tpk-no-such-ns", n.target4.String())
	if res.code != 2 || strings.Count(res.stderr, "\n") != 1 || !strings.Contains(res.stderr, "--netns: no such network namespace") {
		t.Errorf("--netns of nothing: exit %d, stderr %q", res.code, res.stderr)
	}
}

// TestE2ENamesReplay records a run with names, removes every namespace, and
// replays it: the same table, names included.
func TestE2ENamesReplay(t *testing.T) {
	testenv.RequireRoot(t)
	topo := topology.New()
	t.Cleanup(func() { topo.Close() })
	n := buildSwitched(t, topo)
	file := filepath.Join(t.TempDir(), "names.tpk")
	live := runFrom(t, topo, n.web, n.web.Name, n.target6, "--record", file, "--netns", n.web.Name+","+n.db.Name)
	if live.code != 0 || !strings.Contains(live.stdout, n.db.Name+" (") || !strings.Contains(live.stdout, n.sw.Name+" (") {
		t.Fatalf("live run: exit %d, stderr %q, no names in:\n%s", live.code, live.stderr, live.stdout)
	}
	if err := topo.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/" + n.web.Name); err == nil {
		t.Fatalf("%s still exists", n.web.Name)
	}
	replayed := runTool(t, nil, "--replay", file)
	if replayed.code != 0 || replayed.stdout != live.stdout {
		t.Errorf("replay (exit %d, stderr %q):\n%s\nlive:\n%s", replayed.code, replayed.stderr, replayed.stdout, live.stdout)
	}
}

// TestE2ENames traces into namespaces whose processes run in cgroups shaped
// like a Docker container's and a Kubernetes pod's: each row names the
// container or the pod, and the host says host.
func TestE2ENames(t *testing.T) {
	for _, tc := range []struct {
		kind   string
		cgroup func(id, uid string) string
		name   func(id, uid string) string
	}{
		{"docker", func(id, _ string) string { return "system.slice/docker-" + id + ".scope" }, func(id, _ string) string { return id[:12] }},
		{"pod", func(id, uid string) string { return "kubepods/burstable/pod" + uid + "/" + id }, func(_, uid string) string { return uid }},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			topo, n := vethPair(t)
			sleeper := testenv.StartInNetns(t, n.Netns.Name, "sleep", "30")
			id, uid := testenv.ContainerID(t), testenv.PodUID(t)
			testenv.InCgroup(t, sleeper.Process.Pid, tc.cgroup(id, uid))
			root, peer := inode(t, n.Root), testenv.NetnsInodeOfPid(t, sleeper.Process.Pid)
			echoes := traceJSON(t, topo, n.Source, n.Target4)
			if len(echoes) != 1 {
				t.Fatalf("%d echoes", len(echoes))
			}
			wantID := id
			if tc.kind == "pod" {
				wantID = uid
			}
			for _, h := range echoes[0].Hops {
				o := h.NetnsOwner
				switch uint64(h.Netns) {
				case root:
					if h.NetnsName != "host" || o == nil || o.Kind != "process" || o.Pid != 1 {
						t.Errorf("hop in this namespace: name %q, owner %+v; want host", h.NetnsName, o)
					}
				case peer:
					if h.NetnsName != tc.name(id, uid) || o == nil || o.Kind != tc.kind || o.ID != wantID || o.Name != tc.name(id, uid) {
						t.Errorf("hop in the %s's namespace: name %q, owner %+v", tc.kind, h.NetnsName, o)
					}
				default:
					t.Errorf("hop in net:[%d], neither this namespace nor the %s's", h.Netns, tc.kind)
				}
			}
			table := runTool(t, nil, "-W", "3s", n.Target4.String())
			want := fmt.Sprintf("%s (%d)  eth0       in   request", tc.name(id, uid), peer)
			if table.code != 0 || !strings.Contains(table.stdout, want) || !strings.Contains(table.stdout, fmt.Sprintf("host (%d)", root)) {
				t.Errorf("table (exit %d) lacks %q or host:\n%s", table.code, want, table.stdout)
			}
		})
	}
}

// TestE2ECheckVerbose lists the namespaces with their veth pairs, each end
// naming the other's namespace.
func TestE2ECheckVerbose(t *testing.T) {
	_, n := vethPair(t)
	sleeper := testenv.StartInNetns(t, n.Netns.Name, "sleep", "30")
	root, peer := inode(t, n.Root), testenv.NetnsInodeOfPid(t, sleeper.Process.Pid)
	res := runTool(t, nil, "--check", "--verbose")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	lines := strings.Split(res.stdout, "\n")
	for _, want := range []string{
		fmt.Sprintf("    veth %s <-> eth0 in %s (%d)", n.HostLink, n.Netns.Name, peer),
		fmt.Sprintf("    veth eth0 <-> %s in host (%d)", n.HostLink, root),
	} {
		if !slices.Contains(lines, want) {
			t.Errorf("--check --verbose lacks %q:\n%s", want, res.stdout)
		}
	}
	namespace := fmt.Sprintf("%s (%d)", n.Netns.Name, peer)
	owner := fmt.Sprintf("netns /run/netns/%s, pid %d (sleep)", n.Netns.Name, sleeper.Process.Pid)
	if !slices.ContainsFunc(lines, func(l string) bool {
		f := strings.Fields(l)
		return strings.HasPrefix(l, "  "+namespace+" ") && strings.Join(f[2:], " ") == owner
	}) {
		t.Errorf("--check --verbose lacks %s with owner %q:\n%s", namespace, owner, res.stdout)
	}
}

// A namespace first seen in a journey is named once, then never looked for
// again.
func TestLearnNamespaceSeenLater(t *testing.T) {
	testenv.RequireRoot(t)
	n, err := listNamespaces()
	if err != nil {
		t.Fatal(err)
	}
	late, ino := testenv.UnshareNet(t)
	j := decode.Journey{Hops: []decode.Record{{Netns: uint32(testenv.NetnsInodeOfPid(t, os.Getpid()))}, {Netns: ino}}}
	snap, err := n.learn(&j, false)
	if err != nil {
		t.Fatal(err)
	}
	pid := late.Process.Pid
	want := decode.Owner{Kind: "process", Name: "sleep[" + strconv.Itoa(pid) + "]", Pid: pid, Comm: "sleep"}
	if snap == nil || len(snap.Namespaces) != 1 || snap.Namespaces[0].Inode != ino || snap.Namespaces[0].Owner != want {
		t.Fatalf("learn = %+v, want net:[%d] owned by %+v", snap, ino, want)
	}
	if snap, err := n.learn(&j, false); snap != nil || err != nil {
		t.Errorf("learn again = %+v, %v; want nothing", snap, err)
	}
}

// TestE2ENetnsLimit: with --netns, nftables tracing runs only where asked
// (and where the echo starts): db's input chain shows without it, not with
// --netns naming web alone.
func TestE2ENetnsLimit(t *testing.T) {
	topo := testenv.Topology(t)
	n := buildSwitched(t, topo)
	testenv.RequireCommands(t, "nft")
	inNetns(t, n.db, "nft", "add table inet tpk; add chain inet tpk in { type filter hook input priority 0; }; add rule inet tpk in icmp type echo-request accept")
	db := inode(t, n.db)
	chainsIn := func(args ...string) []string {
		t.Helper()
		echoes := echoesOf(t, runFrom(t, topo, n.web, n.web.Name, n.target4, append([]string{"--json", "--netfilter", "nftrace"}, args...)...))
		var chains []string
		for _, h := range echoes[0].Hops {
			if h.Netfilter != nil && uint64(h.Netns) == db {
				chains = append(chains, h.Netfilter.Table+"."+h.Netfilter.Chain)
			}
		}
		return chains
	}
	if got := chainsIn(); !slices.Equal(got, []string{"tpk.in"}) {
		t.Errorf("every namespace traced: db's chains %v, want [tpk.in]", got)
	}
	if got := chainsIn("--netns", n.web.Name); len(got) != 0 {
		t.Errorf("--netns %s: db's chains %v, want none", n.web.Name, got)
	}
	if got := chainsIn("--netns", n.db.Name); !slices.Equal(got, []string{"tpk.in"}) {
		t.Errorf("--netns %s: db's chains %v, want [tpk.in]", n.db.Name, got)
	}
}

// TestE2EContainerNotHost runs the tool as PID 1 of a container made by
// unshare (its own network, mount and PID namespaces, a /proc of its own)
// over loopback: PID 1 there is the tool, so its namespace is a process's,
// not the host's.
func TestE2EContainerNotHost(t *testing.T) {
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "unshare", "ip", "readlink")
	nsFile := filepath.Join(t.TempDir(), "netns")
	self := testBinary(t)
	// The namespace's inode is read by readlink before the tool starts, not by the tool.
	cmd := exec.Command("unshare", "--net", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c",
		`ip link set lo up && readlink /proc/self/ns/net > "$1" && exec "$0" --json -W 3s 127.0.0.1`, self, nsFile)
	res := runCmd(t, cmd)
	link, err := os.ReadFile(nsFile)
	if err != nil {
		t.Fatalf("%v (tool exit %d: %s)", err, res.code, res.stderr)
	}
	var ino uint64
	if _, err := fmt.Sscanf(string(link), "net:[%d]", &ino); err != nil {
		t.Fatalf("namespace link %q: %v", link, err)
	}
	echoes := echoesOf(t, res)
	if len(echoes) != 1 || echoes[0].Result != "reply" || len(echoes[0].Hops) == 0 {
		t.Fatalf("echoes: %s", res.stdout)
	}
	comm := filepath.Base(self)[:min(len(filepath.Base(self)), 15)]
	want := comm + "[1]"
	for _, h := range echoes[0].Hops {
		o := h.NetnsOwner
		if uint64(h.Netns) != ino || h.Ifname != "lo" || h.NetnsName != want || o == nil || *o != (jsonOwner{Kind: "process", Name: want, Pid: 1, Comm: comm}) {
			t.Errorf("hop net:[%d] %s named %q, owner %+v; want net:[%d] lo, %s", h.Netns, h.Ifname, h.NetnsName, o, ino, want)
		}
	}
}
