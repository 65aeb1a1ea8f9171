package netns_test

import (
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

func TestNamespaces(t *testing.T) {
	testenv.RequireRoot(t)
	topo := testenv.Topology(t)
	named, err := topo.Netns(topology.UniqueName("nn"))
	if err != nil {
		t.Fatal(err)
	}
	// A namespace only a process holds.
	cmd, unnamed := testenv.UnshareNet(t)

	start := time.Now()
	nss, err := netns.List()
	elapsed := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("netns.List() found %d namespaces in %v", len(nss), elapsed)

	self := uint32(testenv.NetnsInodeOfPid(t, os.Getpid()))
	if len(nss) == 0 || nss[0].Inode != self {
		t.Fatalf("first namespace %v, want this process's, net:[%d]", nss, self)
	}
	seen := map[uint32]bool{}
	for _, n := range nss {
		if seen[n.Inode] {
			t.Errorf("net:[%d] listed twice", n.Inode)
		}
		seen[n.Inode] = true
		// Every path leads to its namespace.
		got, err := netns.At(n.Path)
		if err != nil {
			t.Errorf("%v: %v", n, err)
		} else if got.Inode != n.Inode {
			t.Errorf("%v: %s is net:[%d]", n, n.Path, got.Inode)
		}
	}
	i := slices.IndexFunc(nss, func(n netns.Netns) bool { return n.Inode == uint32(named.Inode) })
	if i < 0 || nss[i].Path != named.Path || !slices.Contains(nss[i].Names, named.Name) {
		t.Errorf("named namespace %v: got %v", named, nss[max(i, 0)])
	}
	i = slices.IndexFunc(nss, func(n netns.Netns) bool { return n.Inode == unnamed })
	if i < 0 {
		t.Fatalf("namespace of unshare (pid %d, net:[%d]) not listed", cmd.Process.Pid, unnamed)
	}
	if want := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/ns/net"; nss[i].Path != want || len(nss[i].Names) != 0 {
		t.Errorf("namespace of unshare: %+v, want path %s and no names", nss[i], want)
	}
}

func TestAt(t *testing.T) {
	n, err := netns.At("/proc/self/ns/net")
	if err != nil {
		testenv.Require(t, err) // an unprivileged sandbox may refuse the ioctl
	}
	if want := uint32(testenv.NetnsInodeOfPid(t, os.Getpid())); n.Inode != want {
		t.Errorf("netns.At(/proc/self/ns/net).Inode = %d, want %d", n.Inode, want)
	}
	if _, err := netns.At("/proc/self/ns/mnt"); err == nil {
		t.Error("NetnsAt accepted a mount namespace")
	}
	if _, err := netns.At("/proc/self/status"); err == nil {
		t.Error("NetnsAt accepted a regular file")
	}
}

func BenchmarkNamespaces(b *testing.B) {
	for b.Loop() {
		if _, err := netns.List(); err != nil {
			b.Fatal(err)
		}
	}
}
