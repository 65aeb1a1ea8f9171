package nftrace

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/ping"

	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// childEnv makes the test binary a tracer child instead of running tests:
// "<echo id>;<owner 0|1>;<path>:<inode>,...".
const childEnv = "NFTRACE_TEST_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(childEnv); spec != "" {
		os.Exit(tracerChild(spec))
	}
	os.Exit(m.Run())
}

// tracerChild opens a tracer as spec says, prints "ready <table>", and closes it on SIGINT
// or SIGTERM, as the CLI does.
func tracerChild(spec string) int {
	parts := strings.Split(spec, ";")
	id, _ := strconv.ParseUint(parts[0], 10, 16)
	ownerFlag = parts[1] == "1"
	var nss []netns.Netns
	for _, s := range strings.Split(parts[2], ",") {
		path, ino, _ := strings.Cut(s, ":")
		n, _ := strconv.ParseUint(ino, 10, 32)
		nss = append(nss, netns.Netns{Inode: uint32(n), Path: path})
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	t, err := Open(nss, Match{EchoID: uint16(id)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	fmt.Printf("ready %s\n", t.Table())
	<-sig
	if err := t.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 3
	}
	return 0
}

// startChild starts a tracer child in nss and returns it with its table's name once the
// table is installed. It is killed when tb ends.
func startChild(tb testing.TB, nss []netns.Netns, owner bool) (*exec.Cmd, string) {
	tb.Helper()
	var spec []string
	for _, n := range nss {
		spec = append(spec, fmt.Sprintf("%s:%d", n.Path, n.Inode))
	}
	o := "0"
	if owner {
		o = "1"
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d;%s;%s", childEnv, 0x4242, o, strings.Join(spec, ",")))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	table, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		tb.Fatalf("child: %q, %v; stderr: %s", line, err, stderr.String())
	}
	return cmd, table
}

// tablesIn lists the tables of the named namespace as nft does: "<family> <name>" lines.
func tablesIn(tb testing.TB, netns string) string {
	tb.Helper()
	return run(tb, netns, "", "nft", "list", "tables")
}

// TestChildExits checks that the tables of a tracer process are gone when it ends: on
// SIGINT (Close), and on SIGKILL (the kernel deletes owned tables with their socket);
// without the owner flag (not asked for, or a kernel before 5.12, which refuses it and
// gets tables without) SIGKILL leaves the tables, and Sweep removes them, but not the
// table of a live tracer.
func TestChildExits(t *testing.T) {
	requireNftables(t)
	ownerKernel := testenv.KernelAtLeast(t, 5, 12)
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	r, err := topo.Router(topology.UniqueName("nk"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	run(t, r.R.Name, routerRules, "nft", "-f", "-")
	run(t, r.A.Name, "", "iptables", "-A", "OUTPUT", "-p", "icmp", "-j", "ACCEPT")
	names := []string{r.A.Name, r.R.Name, r.B.Name}
	nss := netnsList(r.A, r.R, r.B)
	before := rulesets(t, names...)

	for _, tc := range []struct {
		name  string
		owner bool
		sig   os.Signal
		left  bool // the table stays until the next Open without the owner flag
	}{
		{"SIGINT", true, os.Interrupt, false},
		{"SIGKILL owner", true, os.Kill, false},
		{"SIGINT no owner", false, os.Interrupt, false},
		{"SIGKILL no owner", false, os.Kill, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.owner && !ownerKernel && tc.sig == os.Kill {
				tc.left = true // the tracer fell back to a table without owner
			}
			cmd, table := startChild(t, nss, tc.owner)
			for _, n := range names {
				if !strings.Contains(tablesIn(t, n), "table inet "+table+"\n") {
					t.Fatalf("table %s not in %s while the child runs:\n%s", table, n, tablesIn(t, n))
				}
			}
			if err := cmd.Process.Signal(tc.sig); err != nil {
				t.Fatal(err)
			}
			err := cmd.Wait()
			if tc.sig == os.Interrupt && err != nil {
				t.Errorf("child on SIGINT: %v", err)
			}
			if tc.left {
				for _, n := range names {
					if !strings.Contains(tablesIn(t, n), "table inet "+table+"\n") {
						t.Errorf("table %s not left in %s after SIGKILL", table, n)
					}
				}
				// The next Open on a kernel without the owner flag sweeps the
				// killed run's table, and keeps a live tracer's, though not owned.
				ownerFlag = false
				live := openTracer(t, nss, 0x4343)
				next := openTracer(t, nss, 0x4344)
				ownerFlag = true
				if live.Owned() || next.Owned() {
					t.Error("Owned() = true without the owner flag")
				}
				for _, n := range names {
					if tables := tablesIn(t, n); strings.Contains(tables, table) || !strings.Contains(tables, live.Table()) {
						t.Errorf("after the next Open, %s has:\n%s\nwant %s gone and %s kept", n, tables, table, live.Table())
					}
				}
				if err := errors.Join(next.Close(), live.Close()); err != nil {
					t.Error(err)
				}
			}
			checkRulesetsUnchanged(t, before)
		})
	}
}

// TestTwoTracers runs two tracers with different echo ids in the same namespaces at once:
// each sees its own echo only.
func TestTwoTracers(t *testing.T) {
	topo, r := routerSetup(t)
	before := rulesets(t, r.A.Name, r.R.Name, r.B.Name)
	ids := map[uint16]bool{}
	for len(ids) < 2 {
		id, err := ping.RandomID()
		if err != nil {
			t.Fatal(err)
		}
		ids[id] = true
	}
	var tracers []*Tracer
	var echoIDs []uint16
	for id := range ids {
		tracers = append(tracers, openTracer(t, netnsList(r.A, r.R, r.B), id))
		echoIDs = append(echoIDs, id)
	}
	for seq, id := range echoIDs {
		if err := echo(t, topo, r.A, r.Target4, id, uint16(seq+1)); err != nil {
			t.Fatal(err)
		}
		if err := echo(t, topo, r.A, r.Target6, id, uint16(seq+1)); err != nil {
			t.Fatal(err)
		}
	}
	for i, tr := range tracers {
		events, err := tr.Drain(5 * time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		// Per echo: 3 events in A, 6 in R, 1 in B for IPv4; 1, 2, 1 for IPv6.
		if len(events) != 14 {
			t.Errorf("tracer %d (echo id %d): %d events, want 14:\n%s", i, echoIDs[i], len(events), rowsString(rows(events)))
		}
		for _, e := range events {
			if e.EchoID != echoIDs[i] || e.Seq != uint16(i+1) || strings.HasPrefix(e.Table, tablePrefix) {
				t.Errorf("tracer %d (echo id %d) got %+v", i, echoIDs[i], e)
			}
		}
	}
	for _, tr := range tracers {
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
	}
	checkRulesetsUnchanged(t, before)
}

// TestHelperTable checks the table as the kernel holds it, listed by nft.
func TestHelperTable(t *testing.T) {
	requireNftables(t)
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("nh"))
	if err != nil {
		t.Fatal(err)
	}
	before := rulesets(t, ns.Name)
	tr := openTracer(t, netnsList(ns), 0x4242)
	owned := testenv.KernelAtLeast(t, 5, 12)
	if tr.Owned() != owned {
		t.Errorf("Owned() = %v on Linux %s, want %v (the owner flag came in 5.12)", tr.Owned(), testenv.KernelRelease(t), owned)
	}
	got := run(t, ns.Name, "", "nft", "list", "table", "inet", tr.Table())
	// Without the owner flag, nft shows neither the flag nor the owner's name.
	head := fmt.Sprintf("table inet %s {\n", tr.Table())
	if owned {
		head = fmt.Sprintf("table inet %s { # progname %s\n\tflags owner\n\n", tr.Table(), progname())
	}
	want := head + `	chain prerouting {
		type filter hook prerouting priority -2147483648; policy accept;
		icmp id 16962 meta nftrace set 1
		icmpv6 parameter-problem 1111621632/16 meta nftrace set 1
	}

	chain output {
		type filter hook output priority -2147483648; policy accept;
		icmp id 16962 meta nftrace set 1
		icmpv6 parameter-problem 1111621632/16 meta nftrace set 1
	}
}
`
	if got != want {
		t.Errorf("nft list table:\n%s\nwant:\n%s", got, want)
	}
	// nft shows the ICMPv6 rule through its parameter-problem template, which covers the
	// same bytes 4-7 of the header: the pointer 0x42420000 masked to its first 16 bits.
	if got := fmt.Sprint(0x4242 << 16); got != "1111621632" {
		t.Errorf("listing arithmetic: %s", got)
	}
	// Owned: nobody else can delete it.
	if owned {
		if out, err := exec.Command("ip", "netns", "exec", ns.Name, "nft", "delete", "table", "inet", tr.Table()).CombinedOutput(); err == nil {
			t.Errorf("nft delete table succeeded on an owned table: %s", out)
		}
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	checkRulesetsUnchanged(t, before)
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := tr.Drain(time.Millisecond); !errors.Is(err, ErrClosed) {
		t.Errorf("Drain after Close: %v, want ErrClosed", err)
	}
}

// progname is the process name nft shows for a table's owner: the kernel's comm, at most 15
// bytes.
func progname() string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return filepath.Base(os.Args[0])
	}
	return strings.TrimSpace(string(b))
}

// TestCloseInterruptsDrain: Close ends a Drain that is waiting.
func TestCloseInterruptsDrain(t *testing.T) {
	requireNftables(t)
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("nd"))
	if err != nil {
		t.Fatal(err)
	}
	tr := openTracer(t, netnsList(ns), 0x4242)
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		_, err := tr.Drain(10 * time.Second) // capped at maxDrain
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("Drain interrupted by Close: %v, want ErrClosed", err)
	}
	if d := time.Since(start); d >= maxDrain {
		t.Errorf("Drain returned after %v: Close did not interrupt it", d)
	}
}

// TestOpenSkipsVanishedNamespaces: a path that is gone, now names another namespace, or
// is no longer a namespace (a bind mount removed by ip netns del) is skipped.
func TestOpenSkipsVanishedNamespaces(t *testing.T) {
	requireNftables(t)
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("nv"))
	if err != nil {
		t.Fatal(err)
	}
	before := rulesets(t, ns.Name)
	good := netnsOf(ns)
	gone := netns.Netns{Inode: 12345, Path: "/proc/999999999/ns/net"}
	reused := netns.Netns{Inode: good.Inode + 1, Path: good.Path}
	unmounted := netns.Netns{Inode: 1, Path: filepath.Join(t.TempDir(), "unmounted")}
	if err := os.WriteFile(unmounted.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tr := openTracer(t, []netns.Netns{gone, good, reused, unmounted, good}, 0x4242)
	if got := tr.Netns(); len(got) != 1 || got[0].Inode != good.Inode {
		t.Errorf("Netns() = %v, want only %v", got, good)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	checkRulesetsUnchanged(t, before)
}
