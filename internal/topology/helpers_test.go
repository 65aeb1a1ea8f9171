package topology_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// This file checks topologies with tools independent of the package: ip(8) in JSON, ping(8),
// stat(2) on /proc, /proc/self/mountinfo.

// ipLink is the part of `ip -d -j link show` these tests look at.
type ipLink struct {
	Ifname   string   `json:"ifname"`
	Flags    []string `json:"flags"`
	Master   string   `json:"master"`
	Ifalias  string   `json:"ifalias"`
	Linkinfo struct {
		InfoKind string `json:"info_kind"`
		InfoData struct {
			StpState     *int `json:"stp_state"`
			ForwardDelay *int `json:"forward_delay"`
		} `json:"info_data"`
	} `json:"linkinfo"`
	AddrInfo []struct {
		Local     string `json:"local"`
		Prefixlen int    `json:"prefixlen"`
		Nodad     bool   `json:"nodad"`
	} `json:"addr_info"`
}

func ipCmd(netns string, args ...string) *exec.Cmd {
	if netns != "" {
		args = append([]string{"-n", netns}, args...)
	}
	return exec.Command("ip", args...)
}

// lookupLink returns dev in netns ("" for this process's), or false if there is none.
func lookupLink(t *testing.T, netns, dev string) (ipLink, bool) {
	t.Helper()
	testenv.RequireCommands(t, "ip")
	cmd := ipCmd(netns, "-d", "-j", "addr", "show", "dev", dev)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		if strings.Contains(stderr.String(), "does not exist") || strings.Contains(stderr.String(), "No such file") {
			return ipLink{}, false
		}
		t.Fatalf("%v: %v: %s", cmd.Args, err, stderr.String())
	}
	var links []ipLink
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("%v: parse %q: %v", cmd.Args, out, err)
	}
	return links[0], true
}

// wantLink checks that dev exists in netns, is up, of the given kind, with the given master
// ("" for none), and holds every address in addrs (zero prefixes ignored).
func wantLink(t *testing.T, netns, dev, kind, master string, addrs ...netip.Prefix) ipLink {
	t.Helper()
	l, ok := lookupLink(t, netns, dev)
	if !ok {
		t.Fatalf("link %s not found in netns %q", dev, netns)
	}
	if l.Linkinfo.InfoKind != kind {
		t.Errorf("link %s in netns %q: kind %q, want %q", dev, netns, l.Linkinfo.InfoKind, kind)
	}
	if l.Master != master {
		t.Errorf("link %s in netns %q: master %q, want %q", dev, netns, l.Master, master)
	}
	up := false
	for _, f := range l.Flags {
		up = up || f == "UP"
	}
	if !up {
		t.Errorf("link %s in netns %q is not up: flags %v", dev, netns, l.Flags)
	}
	for _, want := range addrs {
		if !want.IsValid() {
			continue
		}
		found := false
		for _, a := range l.AddrInfo {
			if a.Local == want.Addr().String() && a.Prefixlen == want.Bits() {
				found = true
				if want.Addr().Is6() && !a.Nodad {
					t.Errorf("link %s in netns %q: %v without nodad", dev, netns, want)
				}
			}
		}
		if !found {
			t.Errorf("link %s in netns %q: address %v missing; have %+v", dev, netns, want, l.AddrInfo)
		}
	}
	return l
}

// wantNetnsInode checks n.Inode against a process started with `ip netns exec`.
func wantNetnsInode(t *testing.T, n *topology.Netns) {
	t.Helper()
	cmd := testenv.StartInNetns(t, n.Name, "sleep", "5")
	got := testenv.NetnsInodeOfPid(t, cmd.Process.Pid)
	_ = cmd.Process.Kill()
	if got != n.Inode {
		t.Errorf("netns %s: inode %d, but a process started by `ip netns exec` is in %d", n.Name, n.Inode, got)
	}
}

// wantDefaultRoute checks `ip route show default` in netns for each gateway.
func wantDefaultRoute(t *testing.T, netns string, gws ...netip.Prefix) {
	t.Helper()
	for _, gw := range gws {
		if !gw.IsValid() {
			continue
		}
		family := "-4"
		if gw.Addr().Is6() {
			family = "-6"
		}
		cmd := ipCmd(netns, family, "-j", "route", "show", "default")
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %v", cmd.Args, err)
		}
		var routes []struct {
			Gateway string `json:"gateway"`
			Dev     string `json:"dev"`
		}
		if err := json.Unmarshal(out, &routes); err != nil {
			t.Fatalf("%v: parse %q: %v", cmd.Args, out, err)
		}
		if len(routes) != 1 || routes[0].Gateway != gw.Addr().String() || routes[0].Dev != "eth0" {
			t.Errorf("netns %s: default routes %+v, want one via %v dev eth0", netns, routes, gw.Addr())
		}
	}
}

// wantPings pings each target from src, after CheckOwnRoute has accepted it.
func wantPings(t *testing.T, topo *topology.Topology, src *topology.Netns, targets ...netip.Addr) {
	t.Helper()
	for _, dst := range targets {
		if err := topo.CheckOwnRoute(src, dst); err != nil {
			t.Errorf("CheckOwnRoute(%v, %v): %v", src, dst, err)
			continue
		}
		if err := testenv.Ping(t, topo, src, dst); err != nil {
			t.Errorf("ping %v from %v: %v", dst, src, err)
		}
	}
}

// wantNotOwn checks that CheckOwnRoute rejects addresses outside the topology (only a route
// lookup: nothing is sent to them).
func wantNotOwn(t *testing.T, topo *topology.Topology, src *topology.Netns) {
	t.Helper()
	for _, s := range []string{"192.0.2.1", "127.0.0.1", "::1", "2001:db8::1"} {
		dst := netip.MustParseAddr(s)
		err := topo.CheckOwnRoute(src, dst)
		if !errors.Is(err, topology.ErrNotOwnRoute) {
			t.Errorf("CheckOwnRoute(%v, %v) = %v, want ErrNotOwnRoute", src, dst, err)
		}
	}
}

// wantGone checks that no link of rootLinks is left in this process's namespace and that
// each namespace is unmounted and unnamed.
func wantGone(t *testing.T, rootLinks []string, nss ...*topology.Netns) {
	t.Helper()
	for _, dev := range rootLinks {
		if _, ok := lookupLink(t, "", dev); ok {
			t.Errorf("link %s still exists after Close", dev)
		}
	}
	mountinfo, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatalf("ip netns list: %v", err)
	}
	for _, n := range nss {
		if _, err := os.Stat(n.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close (stat: %v)", n.Path, err)
		}
		if strings.Contains(string(mountinfo), " "+n.Path+" ") {
			t.Errorf("%s still mounted after Close", n.Path)
		}
		for _, line := range strings.Split(string(list), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == n.Name {
				t.Errorf("ip netns list still shows %s after Close", n.Name)
			}
		}
	}
}

// wantNotHeld checks that this process holds no file on the namespaces. Only
// a test running alone may call it: a namespace freed by Close can give its
// inode to one that a parallel test creates.
func wantNotHeld(t *testing.T, nss ...*topology.Netns) {
	t.Helper()
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, n := range nss {
		nsLink := fmt.Sprintf("net:[%d]", n.Inode)
		for _, fd := range fds {
			if target, _ := os.Readlink(fd); target == nsLink {
				t.Errorf("this process still holds %s open as %s after Close", nsLink, fd)
			}
		}
	}
}

// demoHelperEnv makes the test binary run a demo instead of the tests: see TestMain.
const demoHelperEnv = "TOPOLOGY_TEST_DEMO_HELPER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(demoHelperEnv); spec != "" {
		os.Exit(runDemoHelper(spec))
	}
	os.Exit(m.Run())
}

// runDemoHelper builds a demo network from "bridge,v4,v6", prints "ready <netns>" and keeps it
// until stdin closes (or the process is killed, which is the point).
func runDemoHelper(spec string) int {
	f := strings.Split(spec, ",")
	if len(f) != 3 {
		fmt.Fprintf(os.Stderr, "bad %s=%q\n", demoHelperEnv, spec)
		return 2
	}
	topo := topology.New()
	n, err := topo.DockerBridge(topology.DemoConfig(f[0], netip.MustParsePrefix(f[1]), netip.MustParsePrefix(f[2])))
	if err != nil {
		fmt.Fprintln(os.Stderr, err, topo.Close())
		return 1
	}
	fmt.Printf("ready %s\n", n.Container.Name)
	_, _ = io.Copy(io.Discard, os.Stdin)
	if err := topo.Close(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startDemoHelper runs runDemoHelper in a child process and waits for it to be ready.
func startDemoHelper(t *testing.T, bridge string, v4, v6 netip.Prefix) (*exec.Cmd, string) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), demoHelperEnv+"="+bridge+","+v4.String()+","+v6.String())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	netns, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
	if err != nil || !ok {
		t.Fatalf("demo helper: read %q: %v", line, err)
	}
	if want := bridge + "-" + strconv.Itoa(cmd.Process.Pid); netns != want {
		t.Errorf("demo netns %q, want %q", netns, want)
	}
	return cmd, netns
}
