package main

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
)

// guestRecordingsEnv names the directory of recordings a guest of the kernel
// matrix left (make test-vm sets it for TestReplayGuestRecordings).
const guestRecordingsEnv = "TRACEPKT_GUEST_RECORDINGS"

// TestE2EGuestRecording records, inside a guest of the kernel matrix, runs
// with both netfilter sources (an iptables-legacy ACCEPT seen by kprobes, an
// nftables DROP seen by nftrace) and leaves each recording with the table the
// live run printed for the host, where TestReplayGuestRecordings replays
// them: recordings made on the guest's kernel must replay on another one.
func TestE2EGuestRecording(t *testing.T) {
	dir := os.Getenv(vmtest.GuestFilesEnvVar)
	if dir == "" {
		testenv.Elsewhere(t, "records for the host only in a guest of the kernel matrix (%s is not set): make test-vm runs it", vmtest.GuestFilesEnvVar)
	}
	requireKprobes(t)
	release := testenv.KernelRelease(t)
	out := filepath.Join(dir, "recordings")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	topo, n := routerWithRules(t, "; add rule inet tpfilt forward icmp type echo-request drop; add rule inet tpfilt forward icmpv6 type echo-request drop")
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		legacyRules(t, n.A, target, []string{"-A", "OUTPUT", "-p", "PROTO", "-j", "ACCEPT"})
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		name := filepath.Join(out, release+"-"+strings.ReplaceAll(t.Name(), "/", "-"))
		res := runTool(t, n.Source, "--record", name+".tpk", "-W", "500ms", target.String())
		if res.code != 1 {
			t.Fatalf("exit %d, want 1 (dropped); stderr:\n%s", res.code, res.stderr)
		}
		for _, want := range []string{"filter.OUTPUT  ACCEPT", "tpfilt.forward  DROP"} {
			if !strings.Contains(strings.Join(strings.Fields(res.stdout), "  "), strings.Join(strings.Fields(want), "  ")) {
				t.Errorf("live run shows no %q row:\n%s", want, res.stdout)
			}
		}
		if err := os.WriteFile(name+".table", []byte(res.stdout), 0o644); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReplayGuestRecordings replays on this kernel what TestE2EGuestRecording
// recorded in a guest: each must print exactly the table of its live run.
// make test-vm runs it on the host after each guest.
func TestReplayGuestRecordings(t *testing.T) {
	dir := os.Getenv(guestRecordingsEnv)
	if dir == "" {
		testenv.Elsewhere(t, "%s is not set: make test-vm runs this after a guest recorded", guestRecordingsEnv)
	}
	tpks, err := filepath.Glob(filepath.Join(dir, "*.tpk"))
	if err != nil {
		t.Fatal(err)
	}
	if len(tpks) == 0 {
		t.Fatalf("no recordings in %s: did TestE2EGuestRecording run in the guest?", dir)
	}
	for _, tpk := range tpks {
		t.Run(filepath.Base(tpk), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(tpk, ".tpk") + ".table")
			if err != nil {
				t.Fatal(err)
			}
			res := runTool(t, nil, "--replay", tpk)
			if res.code != 1 || res.stderr != "" {
				t.Fatalf("replay: exit %d (want 1, as the live run), stderr %q", res.code, res.stderr)
			}
			if res.stdout != string(want) {
				t.Errorf("replay of %s:\n%s\nthe live run printed:\n%s", tpk, res.stdout, want)
			}
		})
	}
}

// nodeScript sets up guest node i (1 or 2) of TestTwoGuestsMerge: eth0 on
// the link between the guests (192.168.77.i), a bridge cni0 (10.244.i.1)
// with two pod namespaces behind it (pod-X1 and pod-X2, 10.244.i.2 and .3),
// a route to the other node's pods over the link, and the inode of each
// namespace, read from /proc, in $TRACEPKT_VM_FILES/netns. Then what is
// particular to the node follows.
func nodeScript(i int, name, then string) string {
	j := 3 - i
	return fmt.Sprintf(`set -eu
files=$%[1]s
hostname node-%[4]s
ip link set lo up
ip link set eth0 up
ip addr add 192.168.77.%[2]d/24 dev eth0
echo 1 >/proc/sys/net/ipv4/ip_forward
ip link add cni0 type bridge
ip addr add 10.244.%[2]d.1/24 dev cni0
ip link set cni0 up
for p in 1 2; do
	ip netns add pod-%[4]s$p
	ip link add veth$p type veth peer name eth0 netns pod-%[4]s$p
	ip link set veth$p master cni0 up
	ip -n pod-%[4]s$p link set lo up
	ip -n pod-%[4]s$p addr add 10.244.%[2]d.$((p+1))/24 dev eth0
	echo "pod-%[4]s$p $(stat -L -c %%i /run/netns/pod-%[4]s$p)" >>$files/netns
done
ip -n pod-%[4]s2 link set eth0 up
ip -n pod-%[4]s2 route add default via 10.244.%[2]d.1
ip route add 10.244.%[3]d.0/24 via 192.168.77.%[3]d dev eth0
echo "host $(stat -L -c %%i /proc/self/ns/net)" >>$files/netns
pod_up() {
	ip -n pod-%[4]s1 link set eth0 up
	ip -n pod-%[4]s1 route add default via 10.244.%[2]d.1
}
tool="env %[5]s=1 $TOOL"
# listen NAME: a listener recording $files/NAME.tpk, its pid in $listener,
# once it listens.
listen() {
	$tool --listen --json -W 1 --record $files/$1.tpk >$files/$1.json 2>$files/$1.err &
	listener=$!
	n=0
	until grep -q "listening for the echoes" $files/$1.err; do
		n=$((n+1)); [ $n -lt 1200 ] || { cat $files/$1.err >&2; exit 1; }; sleep 0.1
	done
}
%[6]s`, vmtest.GuestFilesEnvVar, i, j, name, asToolEnv, then)
}

// TestTwoGuestsMerge boots two guests of the newest kernel in /boot, joined
// by one virtual link and nothing else, each a node with pods behind a
// bridge. Node b listens (--listen --record) and brings its pod up only once
// it listens; node a traces an echo from its pod to b's (--record), then asks
// b's wall clock over the link, the way NTP does, and that ends b's
// listener. On the host, --merge of the two recordings must give the one
// journey: every hop on both nodes in order, each named by its node, in the
// namespaces each guest's /proc names; the prober's rows and the listener's
// as each recorded them; and a clock offset within the bounds the exchange
// of wall clocks gives, widened by the uncertainty the merge states. A
// second echo, to node-b's other pod, whose firewall drops it: node-a sees
// no reply, and the merge takes node-b's drop, in that pod, on node-b. A
// third, which node-a's own firewall drops: the merge is node-a's alone,
// and says node-b saw none of it. A fourth, to a network node-a routes to
// node-b and node-b has no route for: node-b's drop and its ICMP error.
// Then, with node-a listening too (from its start), two runs from node-a's
// pod and one from node-b's at once: each run's merge with both listeners
// has every echo's rows on both nodes, its own alone.
func TestTwoGuestsMerge(t *testing.T) {
	if os.Getenv(vmtest.GuestEnvVar) == "1" {
		testenv.Elsewhere(t, "boots guests of its own: it runs in the host suite")
	}
	testenv.RequireRoot(t)
	testenv.RequireCommands(t, "qemu-system-x86_64", "busybox")
	kernel, err := vmtest.NewestKernel("/boot")
	testenv.Require(t, err)
	var ports [2]int
	for k := range ports {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[k] = c.LocalAddr().(*net.UDPAddr).Port
		c.Close()
	}
	scripts := map[string]string{
		"a": nodeScript(1, "a", `listen la
pod_up
n=0
until ip netns exec pod-a1 ping -c1 -W1 10.244.2.2 >/dev/null 2>&1; do
	n=$((n+1)); [ $n -lt 300 ] || { echo "node b's pod never answered" >&2; exit 1; }
done
ip -n pod-a1 route get 10.244.2.2 | grep -q "via 10.244.1.1 dev eth0"
ip netns exec pod-a1 $tool --json -c1 -W 3 --record $files/a.tpk 10.244.2.2 >$files/a.json
rc=0
ip netns exec pod-a1 $tool --json -c1 -W 2 --record $files/drop.tpk 10.244.2.3 >$files/drop.json || rc=$?
echo $rc >$files/drop.code
nft -f - <<EOF
table inet tpdropa {
	chain forward {
		type filter hook forward priority 0
		ip daddr 10.244.2.4 drop
	}
}
EOF
rc=0
ip netns exec pod-a1 $tool --json -c1 -W 2 --record $files/near.tpk 10.244.2.4 >$files/near.json || rc=$?
echo $rc >$files/near.code
ip route add 10.244.3.0/24 via 192.168.77.2 dev eth0
rc=0
ip netns exec pod-a1 $tool --json -c1 -W 2 --record $files/noroute.tpk 10.244.3.2 >$files/noroute.json || rc=$?
echo $rc >$files/noroute.code
# Two runs from here and one from node-b, at once: node-b starts its own
# when told to, and says when it ended.
n=0
until busybox nc 192.168.77.2 7779 </dev/null; do
	n=$((n+1)); [ $n -lt 1200 ] || { echo "node b never waited for the go" >&2; exit 1; }; sleep 0.1
done
timeout 240 busybox nc -l -p 7780 >/dev/null &
zdone=$!
ip netns exec pod-a1 $tool --json -c 4 -i 0.3 -W 3 --record $files/x.tpk 10.244.2.2 >$files/x.json &
x=$!
ip netns exec pod-a1 $tool --json -c 4 -i 0.3 -W 3 --record $files/y.tpk 10.244.2.2 >$files/y.json &
y=$!
wait $x
wait $y
wait $zdone || { echo "node b never said its run ended" >&2; exit 1; }
# node-b listens for the question once it told its run ended: until then,
# it refuses the connection.
n=0
while :; do
	t1=$(date +%s%N)
	if t2=$(busybox nc 192.168.77.2 7778 </dev/null) && [ -n "$t2" ]; then break; fi
	n=$((n+1)); [ $n -lt 1200 ] || { echo "node b never told its wall clock" >&2; exit 1; }; sleep 0.1
done
t3=$(date +%s%N)
echo "$t1 $t2 $t3" >$files/clock
kill -INT $listener
wait $listener
`),
		"b": nodeScript(2, "b", `ip netns exec pod-b2 nft -f - <<EOF
table inet tpdrop {
	chain input {
		type filter hook input priority 0
		icmp type echo-request drop
	}
}
EOF
grep -w ip_error /proc/kallsyms >$files/kallsyms || true
listen b
pod_up
timeout 240 busybox nc -l -p 7779 >/dev/null
ip netns exec pod-b1 $tool --json -c 4 -i 0.3 -W 3 --record $files/z.tpk 10.244.1.2 >$files/z.json
n=0
until busybox nc 192.168.77.1 7780 </dev/null; do
	n=$((n+1)); [ $n -lt 1200 ] || { echo "node a never waited for the end of node b's run" >&2; exit 1; }; sleep 0.1
done
timeout 240 busybox nc -l -p 7778 -e /usr/bin/date +%s%N
kill -INT $listener
wait $listener
`),
	}
	type guest struct {
		files           string
		console, stderr bytes.Buffer // qemu's two, each written on a goroutine of its own
		err             error
	}
	guests := map[string]*guest{"a": {files: t.TempDir()}, "b": {files: t.TempDir()}}
	workdir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for k, name := range []string{"a", "b"} {
		g := guests[name]
		cfg := vmtest.Config{
			Kernel:      kernel,
			ModulesRoot: vmtest.ModulesRoot(kernel),
			Busybox:     "/bin/busybox",
			Mem:         "1024",
			Timeout:     5 * time.Minute, // a hang fails here, with both consoles, before the package times out
			Workdir:     workdir,
			Commands:    [][]string{{"sh", "-c", scripts[name]}},
			Env:         append(vmtest.CommandEnv(os.LookupEnv), "TOOL="+testBinary(t)),
			Files:       g.files,
			Link:        &vmtest.Link{Local: ports[k], Remote: ports[1-k], MAC: fmt.Sprintf("52:54:00:77:00:0%d", k+1)},
			Stdout:      &g.console,
			Stderr:      &g.stderr,
		}
		wg.Go(func() {
			res, err := vmtest.Run(t.Context(), cfg)
			if err == nil && (len(res.Statuses) != 1 || res.Statuses[0] != 0) {
				err = fmt.Errorf("node %s: exit statuses %v", name, res.Statuses)
			}
			g.err = err
		})
	}
	wg.Wait()
	for name, g := range guests {
		if g.err != nil {
			t.Fatalf("node %s: %v\n%s%s", name, g.err, g.console.String(), g.stderr.String())
		}
	}
	netns := func(name string) map[string]uint64 {
		b, err := os.ReadFile(filepath.Join(guests[name].files, "netns"))
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]uint64{}
		for line := range strings.Lines(string(b)) {
			var ns string
			var ino uint64
			if _, err := fmt.Sscanf(line, "%s %d", &ns, &ino); err != nil {
				t.Fatalf("node %s: netns line %q: %v", name, line, err)
			}
			m[ns] = ino
		}
		return m
	}
	a, b := netns("a"), netns("b")
	read := func(name, file string) string {
		data, err := os.ReadFile(filepath.Join(guests[name].files, file))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	hostRow := func(host string, ino uint64, ifname, dir, typ string) string {
		return host + " " + row(ino, ifname, dir, typ)
	}
	wantA := []string{
		hostRow("node-a", a["pod-a1"], "eth0", "out", "request"), hostRow("node-a", a["host"], "veth1", "in", "request"),
		hostRow("node-a", a["host"], "cni0", "in", "request"), hostRow("node-a", a["host"], "eth0", "out", "request"),
	}
	wantB := []string{
		hostRow("node-b", b["host"], "eth0", "in", "request"), hostRow("node-b", b["host"], "cni0", "out", "request"),
		hostRow("node-b", b["host"], "veth1", "out", "request"), hostRow("node-b", b["pod-b1"], "eth0", "in", "request"),
		hostRow("node-b", b["pod-b1"], "eth0", "out", "reply"), hostRow("node-b", b["host"], "veth1", "in", "reply"),
		hostRow("node-b", b["host"], "cni0", "in", "reply"), hostRow("node-b", b["host"], "eth0", "out", "reply"),
	}
	wantA2 := []string{
		hostRow("node-a", a["host"], "eth0", "in", "reply"), hostRow("node-a", a["host"], "cni0", "out", "reply"),
		hostRow("node-a", a["host"], "veth1", "out", "reply"), hostRow("node-a", a["pod-a1"], "eth0", "in", "reply"),
	}
	hostRows := func(e jsonEcho, host string) []string {
		var out []string
		for _, h := range e.Hops {
			if h.Probe == "net_dev_queue" || h.Probe == "netif_receive_skb" {
				if h.Host != "" {
					host = h.Host
				}
				out = append(out, hostRow(host, uint64(h.Netns), h.Ifname, h.Dir, h.Type))
			}
		}
		return out
	}
	check := func(what string, got, want []string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s rows:\n%s\nwant:\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	probe := decodeEchoes(t, read("a", "a.json"))
	dropped := decodeEchoes(t, read("a", "drop.json"))
	frags := decodeEchoes(t, read("b", "b.json"))
	// node-b's listener keeps one fragment of the first, second and fourth
	// runs (the third never reaches it), and 4 of each of the three runs
	// at once, its own node's among them.
	if len(probe) != 1 || len(dropped) != 1 || len(frags) != 15 || frags[0].EchoID != probe[0].EchoID || frags[1].EchoID != dropped[0].EchoID {
		t.Fatalf("node a: %d and %d echoes, node b: %d fragments, want 1, 1 and 15, the first runs' in order:\n%s", len(probe), len(dropped), len(frags), read("b", "b.json"))
	}
	check("node a's own", hostRows(probe[0], "node-a"), slices.Concat(wantA, wantA2))
	check("node b's listener", hostRows(frags[0], "node-b"), wantB)

	aTpk, bTpk := filepath.Join(guests["a"].files, "a.tpk"), filepath.Join(guests["b"].files, "b.tpk")
	merged := runTool(t, nil, "--merge", aTpk, bTpk, "--json")
	journeys := decodeEchoes(t, merged.stdout)
	if merged.code != 0 || len(journeys) != 1 {
		t.Fatalf("--merge: exit %d, %s, %d journeys:\n%s", merged.code, merged.stderr, len(journeys), merged.stdout)
	}
	check("merged", hostRows(journeys[0], "?"), slices.Concat(wantA, wantB, wantA2))
	if journeys[0].Result != "reply" {
		t.Errorf("merged result %q, want reply", journeys[0].Result)
	}

	// pod-b2's firewall drops the second run's request: node-a saw no
	// reply, node-b saw the drop, and the merged journey says where.
	if code := strings.TrimSpace(read("a", "drop.code")); code != "1" || dropped[0].Result != "timeout" {
		t.Errorf("node a, the dropped echo: exit %s, result %q, want 1 and timeout", code, dropped[0].Result)
	}
	merged = runTool(t, nil, "--merge", filepath.Join(guests["a"].files, "drop.tpk"), bTpk, "--json")
	journeys = decodeEchoes(t, merged.stdout)
	if merged.code != 1 || len(journeys) != 1 {
		t.Fatalf("--merge of the dropped echo: exit %d, %s, %d journeys:\n%s", merged.code, merged.stderr, len(journeys), merged.stdout)
	}
	check("merged, dropped", hostRows(journeys[0], "?"), append(slices.Clone(wantA),
		hostRow("node-b", b["host"], "eth0", "in", "request"), hostRow("node-b", b["host"], "cni0", "out", "request"),
		hostRow("node-b", b["host"], "veth2", "out", "request"), hostRow("node-b", b["pod-b2"], "eth0", "in", "request")))
	if d := journeys[0].Drop; journeys[0].Result != "dropped" || d == nil || d.Reason != "NETFILTER_DROP" || d.Host != "node-b" || uint64(d.Netns) != b["pod-b2"] || d.Ifname != "eth0" {
		t.Errorf("merged, dropped: result %q, drop %+v, want NETFILTER_DROP on node-b in %d after eth0", journeys[0].Result, d, b["pod-b2"])
	}

	// node-a's own firewall drops the third run's request on its way to
	// node-b: the merge is node-a's journey and drop, and says node-b,
	// listening all along, saw none of it.
	near := decodeEchoes(t, read("a", "near.json"))
	if code := strings.TrimSpace(read("a", "near.code")); code != "1" || len(near) != 1 || near[0].Result != "dropped" {
		t.Fatalf("node a, the echo dropped there: exit %s, %d echoes, want 1 and one dropped:\n%s", code, len(near), read("a", "near.json"))
	}
	nearTpk := filepath.Join(guests["a"].files, "near.tpk")
	merged = runTool(t, nil, "--merge", nearTpk, bTpk, "--json")
	journeys = decodeEchoes(t, merged.stdout)
	if merged.code != 1 || len(journeys) != 1 {
		t.Fatalf("--merge of the echo dropped on node-a: exit %d, %s, %d journeys:\n%s", merged.code, merged.stderr, len(journeys), merged.stdout)
	}
	check("merged, dropped on node-a", hostRows(journeys[0], "?"), wantA[:3])
	if d := journeys[0].Drop; journeys[0].Result != "dropped" || d == nil || d.Reason != "NETFILTER_DROP" || d.Host != "node-a" || uint64(d.Netns) != a["host"] || d.Ifname != "cni0" {
		t.Errorf("merged, dropped on node-a: result %q, drop %+v, want NETFILTER_DROP on node-a in %d after cni0", journeys[0].Result, d, a["host"])
	}
	if text := runTool(t, nil, "--merge", nearTpk, bTpk).stdout; !strings.Contains(text, "node-b saw none of these echoes: "+bTpk+" listened there from before the run began") {
		t.Errorf("--merge of the echo dropped on node-a does not say node-b saw none of it:\n%s", text)
	}

	// node-a routes 10.244.3.0/24 to node-b, which has no route for it:
	// node-b answers network unreachable and frees the request, and the
	// merge says so, on node-b.
	merged = runTool(t, nil, "--merge", filepath.Join(guests["a"].files, "noroute.tpk"), bTpk, "--json")
	journeys = decodeEchoes(t, merged.stdout)
	if code := strings.TrimSpace(read("a", "noroute.code")); code != "1" || merged.code != 1 || len(journeys) != 1 {
		t.Fatalf("the echo node-b has no route for: exit %s on node-a, --merge exit %d, %s, %d journeys:\n%s", code, merged.code, merged.stderr, len(journeys), merged.stdout)
	}
	unreach := func(host string, ino uint64, ifname, dir string) string {
		return hostRow(host, ino, ifname, dir, "unreachable")
	}
	check("merged, no route on node-b", hostRows(journeys[0], "?"), slices.Concat(wantA, []string{
		hostRow("node-b", b["host"], "eth0", "in", "request"), unreach("node-b", b["host"], "eth0", "out"),
		unreach("node-a", a["host"], "eth0", "in"), unreach("node-a", a["host"], "cni0", "out"),
		unreach("node-a", a["host"], "veth1", "out"), unreach("node-a", a["pod-a1"], "eth0", "in"),
	}))
	j := journeys[0]
	fn, _, _ := strings.Cut(func() string {
		if j.Drop != nil {
			return j.Drop.Location
		}
		return ""
	}(), "+")
	switch {
	case j.Result != "unreachable" || j.ICMPError == nil || j.ICMPError.From != "192.168.77.2" || j.ICMPError.Type != 3 || j.ICMPError.Code != 0:
		t.Errorf("no route on node-b: result %q, icmp_error %+v, want unreachable, type 3 code 0 from 192.168.77.2", j.Result, j.ICMPError)
	case j.Drop == nil || j.Drop.Reason != "IP_INNOROUTES" || j.Drop.Host != "node-b" || uint64(j.Drop.Netns) != b["host"] || j.Drop.Ifname != "eth0":
		t.Errorf("no route on node-b: drop %+v, want IP_INNOROUTES on node-b in %d after eth0", j.Drop, b["host"])
	case fn != "ip_error" || !slices.Contains(strings.Fields(read("b", "kallsyms")), fn):
		t.Errorf("no route on node-b: the drop's location %q, want ip_error+OFF, a function of node-b's kernel (its /proc/kallsyms: %q)", j.Drop.Location, read("b", "kallsyms"))
	}

	// Two runs from node-a's pod and one from node-b's, at once, with a
	// listener on each node: the merge of each run with both listeners
	// has, for each of its echoes, the rows of that echo alone.
	runs := map[string][]jsonEcho{"x": decodeEchoes(t, read("a", "x.json")), "y": decodeEchoes(t, read("a", "y.json")), "z": decodeEchoes(t, read("b", "z.json"))}
	ids := map[uint16]string{}
	for name, echoes := range runs {
		if len(echoes) != 4 {
			t.Fatalf("run %s: %d echoes, want 4", name, len(echoes))
		}
		ids[echoes[0].EchoID] = name
	}
	if len(ids) != 3 {
		t.Fatalf("the three runs drew the echo ids %v: two alike, which no merge tells apart", ids)
	}
	wantZ := []string{
		hostRow("node-b", b["pod-b1"], "eth0", "out", "request"), hostRow("node-b", b["host"], "veth1", "in", "request"),
		hostRow("node-b", b["host"], "cni0", "in", "request"), hostRow("node-b", b["host"], "eth0", "out", "request"),
		hostRow("node-a", a["host"], "eth0", "in", "request"), hostRow("node-a", a["host"], "cni0", "out", "request"),
		hostRow("node-a", a["host"], "veth1", "out", "request"), hostRow("node-a", a["pod-a1"], "eth0", "in", "request"),
		hostRow("node-a", a["pod-a1"], "eth0", "out", "reply"), hostRow("node-a", a["host"], "veth1", "in", "reply"),
		hostRow("node-a", a["host"], "cni0", "in", "reply"), hostRow("node-a", a["host"], "eth0", "out", "reply"),
		hostRow("node-b", b["host"], "eth0", "in", "reply"), hostRow("node-b", b["host"], "cni0", "out", "reply"),
		hostRow("node-b", b["host"], "veth1", "out", "reply"), hostRow("node-b", b["pod-b1"], "eth0", "in", "reply"),
	}
	laTpk := filepath.Join(guests["a"].files, "la.tpk")
	for _, run := range []struct {
		name, node string
		want       []string
	}{{"x", "a", slices.Concat(wantA, wantB, wantA2)}, {"y", "a", slices.Concat(wantA, wantB, wantA2)}, {"z", "b", wantZ}} {
		merged := runTool(t, nil, "--merge", filepath.Join(guests[run.node].files, run.name+".tpk"), laTpk, bTpk, "--json")
		journeys := decodeEchoes(t, merged.stdout)
		if merged.code != 0 || len(journeys) != 4 {
			t.Errorf("--merge of run %s with both listeners: exit %d, %s, %d journeys, want 4 replies:\n%s", run.name, merged.code, merged.stderr, len(journeys), merged.stdout)
			continue
		}
		for _, j := range journeys {
			if ids[j.EchoID] != run.name || j.Result != "reply" {
				t.Errorf("--merge of run %s: echo id %d (run %q), result %q", run.name, j.EchoID, ids[j.EchoID], j.Result)
			}
			check(fmt.Sprintf("run %s, seq %d, merged", run.name, j.Seq), hostRows(j, "?"), run.want)
		}
	}

	// The wall clocks: b answered a's question between a's t1 and t3, so
	// b's clock less a's lies in [t2-t3, t2-t1].
	var t1, t2, t3 int64
	if _, err := fmt.Sscanf(read("a", "clock"), "%d %d %d", &t1, &t2, &t3); err != nil {
		t.Fatal(err)
	}
	text := runTool(t, nil, "--merge", aTpk, bTpk).stdout
	m := regexp.MustCompile(`clock: node-b's wall clock is (\S+) (ahead of|behind) node-a's, ±(\S+) \(from the crossings of seq 1\)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no two-way clock line:\n%s", text)
	}
	est, err1 := time.ParseDuration(m[1])
	unc, err2 := time.ParseDuration(m[3])
	if err1 != nil || err2 != nil {
		t.Fatalf("clock line %q: %v %v", m[0], err1, err2)
	}
	if m[2] == "behind" {
		est = -est
	}
	// Three significant digits in print.
	slack := unc + est.Abs()/100 + time.Microsecond
	if lo, hi := time.Duration(t2-t3), time.Duration(t2-t1); est < lo-slack || est > hi+slack {
		t.Errorf("merge says b's clock is %v from a's (±%v); the exchange of wall clocks bounds it to [%v, %v]", est, unc, lo, hi)
	}
	t.Logf("merge: b's clock %v from a's, ±%v; exchange: [%v, %v]", est, unc, time.Duration(t2-t3), time.Duration(t2-t1))
}
