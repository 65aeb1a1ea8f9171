package testenv_test

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// recordTB notes skips and failures instead of acting on them.
type recordTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordTB) Helper()                   {}
func (r *recordTB) Skipf(f string, a ...any)  { r.skipped = fmt.Sprintf(f, a...) }
func (r *recordTB) Fatalf(f string, a ...any) { r.failed = fmt.Sprintf(f, a...) }

func TestRequire(t *testing.T) {
	missing := errors.New("needs a unicorn")
	for _, c := range []struct {
		ci                string
		err               error
		wantSkip, wantErr bool
	}{
		{"", nil, false, false},
		{"", missing, true, false},
		{"false", missing, true, false},
		{"true", nil, false, false},
		{"true", missing, false, true},
	} {
		t.Setenv("CI", c.ci)
		r := &recordTB{TB: t}
		testenv.Require(r, c.err)
		if (r.skipped != "") != c.wantSkip || (r.failed != "") != c.wantErr {
			t.Errorf("CI=%q err=%v: skipped %q, failed %q", c.ci, c.err, r.skipped, r.failed)
		}
	}
}

func TestNetnsInodeOfPid(t *testing.T) {
	root, err := topology.RootNetns()
	if err != nil {
		t.Fatal(err)
	}
	if got := testenv.NetnsInodeOfPid(t, os.Getpid()); got != root.Inode {
		t.Errorf("NetnsInodeOfPid(self) = %d, RootNetns().Inode = %d", got, root.Inode)
	}
}

func TestPingRefusesForeignTargets(t *testing.T) {
	topo := testenv.Topology(t)
	root, err := topo.Root()
	if err != nil {
		t.Fatal(err)
	}
	for _, dst := range []string{"192.0.2.1", "127.0.0.1"} {
		err := testenv.Ping(t, topo, root, netip.MustParseAddr(dst))
		if !errors.Is(err, topology.ErrNotOwnRoute) {
			t.Errorf("Ping(%s) = %v, want a refusal wrapping ErrNotOwnRoute", dst, err)
		}
	}
}

func TestStartInNetns(t *testing.T) {
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("tp"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := testenv.StartInNetns(t, ns.Name, "sleep", "5")
	if got := testenv.NetnsInodeOfPid(t, cmd.Process.Pid); got != ns.Inode {
		t.Errorf("process started in %s is in net:[%d], want net:[%d]", ns.Name, got, ns.Inode)
	}
}

func TestKernelLocation(t *testing.T) {
	if err := testenv.KernelLocation(t, "schedule+0x1c"); err != nil {
		t.Error(err)
	}
	for _, bad := range []string{"", "schedule", "0xffffffff81a2b3c0", "schedule+28", "tracepkt_no_such_function+0x10"} {
		if testenv.KernelLocation(t, bad) == nil {
			t.Errorf("KernelLocation(%q) = nil, want an error", bad)
		}
	}
}

func TestWantSVGColumns(t *testing.T) {
	hops := []string{"a eth0", "r eth0", "r eth1", "b eth0", "b eth0", "r eth1", "r eth0", "a eth0", "r eth2"}
	want := []string{"a eth0", "r eth0", "r eth1", "r eth2", "b eth0"}
	if got := testenv.WantSVGColumns(hops); !slices.Equal(got, want) {
		t.Errorf("WantSVGColumns = %q, want %q", got, want)
	}
}
