package main

import (
	"archive/tar"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
	pnetns "github.com/tracepkt/tracepkt-perf/probes/netns"
)

// podmanContainer runs a real podman container with no network of its own
// but loopback: an image imported from a busybox-static rootfs (no registry
// is needed), `sleep 60` in it. Container and image are removed when t ends.
// It returns the container's name, id and the pid of its sleep.
func podmanContainer(t *testing.T) (name, id string, pid int) {
	t.Helper()
	tag := podmanImage(t)
	name = topology.UniqueName("tpk-web-")
	id = podmanRun(t, name, "--network", "none", tag, "/bin/sleep", "60")
	return name, id, podmanPid(t, name)
}

// podmanImage skips t (fails it in CI) where podman cannot run, and imports
// an image from a busybox-static rootfs (no registry is needed), removed
// when t ends. It returns the image's tag.
func podmanImage(t *testing.T) string {
	t.Helper()
	testenv.RequireRoot(t)
	if os.Getenv(vmtest.GuestEnvVar) == "1" {
		testenv.Elsewhere(t, "the test VM shares the host root read-only: podman cannot keep its storage there; this test runs in the host suite")
	}
	testenv.RequireCommands(t, "podman", "runc", "busybox")
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	image := filepath.Join(t.TempDir(), "rootfs.tar")
	writeRootfs(t, image, busybox)
	tag := "localhost/" + topology.UniqueName("tpk-img-") + ":test"
	podman(t, "import", "--quiet", image, tag)
	t.Cleanup(func() { _ = exec.Command("podman", "rmi", "--force", tag).Run() })
	return tag
}

// podman runs podman with args and returns what it printed, trimmed.
func podman(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("podman", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// podmanRun starts a container called name (`podman run --detach`, then
// args: options, image and command), removed when t ends, and returns its id.
func podmanRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	// This machine's root lacks CAP_SYS_RESOURCE, so no rlimit may be raised:
	// keep the open-files limit we have, and podman's own process limit
	// (it lowers its own to 32768 at start). runc, since crun refuses a
	// cgroup v1/v2 hybrid with a controller on v2.
	var nofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &nofile); err != nil {
		t.Fatal(err)
	}
	nproc := uint64(32768)
	var cur unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NPROC, &cur); err == nil && cur.Max < nproc {
		nproc = cur.Max
	}
	t.Cleanup(func() { _ = exec.Command("podman", "rm", "--force", "--time", "0", name).Run() })
	return podman(t, append([]string{"run", "--detach", "--runtime", "runc", "--name", name,
		"--ulimit", fmt.Sprintf("nofile=%d:%d", nofile.Max, nofile.Max), "--ulimit", fmt.Sprintf("nproc=%d:%d", nproc, nproc)},
		args...)...)
}

// podmanPid is the pid of a running container's first process.
func podmanPid(t *testing.T, name string) int {
	t.Helper()
	pid, err := strconv.Atoi(podman(t, "inspect", "--format", "{{.State.Pid}}", name))
	if err != nil || pid <= 0 {
		t.Fatalf("podman inspect %s: pid %d, %v", name, pid, err)
	}
	return pid
}

// writeRootfs writes a tar of a root file system holding busybox as
// /bin/busybox and /bin/sleep.
func writeRootfs(t *testing.T, path, busybox string) {
	t.Helper()
	bin, err := os.ReadFile(busybox)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, h := range []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
		{Name: "bin/sleep", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(bin); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestE2EPodman traces an echo to loopback from inside a real podman
// container, named by its name and by a prefix of its id: every row is in
// the container's namespace, named after it, with podman's id and the
// container's process as owner.
func TestE2EPodman(t *testing.T) {
	name, id, pid := podmanContainer(t)
	ino := testenv.NetnsInodeOfPid(t, pid)
	for _, spec := range []string{name, id[:12]} {
		// Loopback inside the container: nothing leaves it.
		res := runTool(t, nil, "--json", "-W", "3s", "--from-netns", spec, "127.0.0.1")
		echoes := echoesOf(t, res)
		if len(echoes) != 1 || echoes[0].Result != "reply" || len(echoes[0].Hops) == 0 {
			t.Fatalf("--from-netns %s: %s", spec, res.stdout)
		}
		for _, h := range echoes[0].Hops {
			o := h.NetnsOwner
			if uint64(h.Netns) != ino || h.Ifname != "lo" || h.NetnsName != name || o == nil ||
				*o != (jsonOwner{Kind: "podman", ID: id, Name: name, Pid: pid, Comm: "sleep"}) {
				t.Errorf("--from-netns %s: hop net:[%d] %s named %q, owner %+v; want net:[%d] lo, %s, podman %s pid %d",
					spec, h.Netns, h.Ifname, h.NetnsName, o, ino, name, id, pid)
			}
		}
	}
	table := runTool(t, nil, "-W", "3s", "--from-netns", name, "127.0.0.1")
	if want := fmt.Sprintf("%s (%d)  lo ", name, ino); table.code != 0 || !strings.Contains(table.stdout, want) {
		t.Errorf("table (exit %d) lacks %q:\n%s%s", table.code, want, table.stdout, table.stderr)
	}
}

// podmanFirewall restores, when t ends, what netavark leaves in the
// machine's namespace after its last container: the iptables tables it
// made (absent before the test) and IPv4 forwarding (off before the test).
func podmanFirewall(t *testing.T) {
	t.Helper()
	testenv.RequireCommands(t, "nft")
	tables := func() string {
		out, err := exec.Command("nft", "list", "tables").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list tables: %v\n%s", err, out)
		}
		return string(out)
	}
	before := tables()
	forward, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, line := range strings.Split(tables(), "\n") {
			if line == "" || strings.Contains(before, line+"\n") {
				continue
			}
			args := append([]string{"delete"}, strings.Fields(line)...)
			if out, err := exec.Command("nft", args...).CombinedOutput(); err != nil {
				t.Errorf("nft %s: %v\n%s", strings.Join(args, " "), err, out)
			}
		}
		if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", forward, 0); err != nil {
			t.Error(err)
		}
	})
}

// listening waits until a TCP socket listens on port in pid's namespace,
// as /proc/<pid>/net/tcp and tcp6 show it (busybox httpd listens on ::).
func listening(t *testing.T, pid, port int) {
	t.Helper()
	local := fmt.Sprintf(":%04X ", port)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var tcp []byte
		for _, file := range []string{"tcp", "tcp6"} {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/net/" + file)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			tcp = append(tcp, b...)
		}
		for _, line := range strings.Split(string(tcp), "\n") {
			f := strings.Fields(line)
			if len(f) > 3 && strings.HasSuffix(f[1]+" ", local) && f[3] == "0A" {
				return
			}
		}
	}
	t.Fatalf("nothing listens on port %d in the namespace of pid %d", port, pid)
}

// podmanPort is a port a podman container publishes, and how the tool
// probes it: a TCP SYN answered SYN-ACK, or a DNS query (given as the
// payload: the port probed is not 53) answered by a DNS responder.
type podmanPort struct {
	host, ctr              uint16
	proto, result, request string
	payload                []string
}

// TestE2EPublishedPortPodman probes a real podman container's published
// ports (`podman run -p 8080:80 -p 5353:53/udp` of busybox httpd,
// netavark's rules in the machine's namespace) at loopback, which netavark
// translates too, and from a client namespace at a test-owned address of
// the machine's namespace: answered, translated to the container by
// netavark's DNAT rule (the handle `nft -a list` gives it), and the
// container's namespace named as podman names it. Busybox has no UDP
// server: the DNS responder's socket is the test's, opened inside the
// container's network namespace. IPv4 only: podman's default network has
// no IPv6.
func TestE2EPublishedPortPodman(t *testing.T) {
	tag := podmanImage(t)
	podmanFirewall(t)
	topo, vp := vethPair(t)
	name := topology.UniqueName("tpk-pub-")
	id := podmanRun(t, name, "--publish", "8080:80", "--publish", "5353:53/udp", tag, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/bin")
	pid := podmanPid(t, name)
	listening(t, pid, 80)
	serveDNS(t, func(fn func() error) error { return inNetnsOfPid(pid, fn) }, 53)
	ctr, err := netip.ParseAddr(podman(t, "inspect", "--format", "{{.NetworkSettings.IPAddress}}", name))
	if err != nil {
		t.Fatalf("podman inspect %s: address: %v", name, err)
	}
	gw, err := netip.ParseAddr(podman(t, "inspect", "--format", "{{.NetworkSettings.Gateway}}", name))
	if err != nil {
		t.Fatalf("podman inspect %s: gateway: %v", name, err)
	}
	k, root := testenv.NetnsInodeOfPid(t, pid), inode(t, vp.Root)
	owner := jsonOwner{Kind: "podman", ID: id, Name: name, Pid: pid, Comm: "busybox"}
	check := func(t *testing.T, res toolResult, target netip.Addr, p podmanPort) (nat []*jsonNAT) {
		t.Helper()
		if res.code != 0 {
			t.Fatalf("exit %d\n%s%s", res.code, res.stderr, res.stdout)
		}
		e := decodeEchoes(t, res.stdout)[0]
		if e.Result != p.result || e.Protocol != p.proto || e.AnswerFrom != target.String() {
			t.Errorf("result %q protocol %q answer from %q, want %s %s from %s", e.Result, e.Protocol, e.AnswerFrom, p.proto, p.result, target)
		}
		to := netip.AddrPortFrom(ctr, p.ctr).String()
		var inContainer bool
		for _, h := range e.Hops {
			nat = append(nat, h.NAT...)
			if uint64(h.Netns) != k {
				continue
			}
			inContainer = inContainer || (h.Type == p.request && h.Dir == "in" && h.Dst == to)
			if o := h.NetnsOwner; h.NetnsName != name || o == nil || *o != owner {
				t.Errorf("hop in the container's namespace %d named %q, owner %+v; want %s, %+v", k, h.NetnsName, o, name, owner)
			}
		}
		if !inContainer {
			t.Errorf("the %s was not seen entering the container's namespace %d:\n%s", p.request, k, strings.Join(rows(e), "\n"))
		}
		if len(nat) == 0 || nat[0].Kind != "DNAT" || nat[0].Before != netip.AddrPortFrom(target, p.host).String() ||
			nat[0].After != to || uint64(nat[0].Netns) != root ||
			nat[0].Table != "nat" || !strings.HasPrefix(nat[0].Chain, "NETAVARK-DN-") || !strings.Contains(nat[0].Rule, "dnat to "+to) {
			t.Fatalf("translations %s, want first the DNAT %s:%d -> %s in %d by netavark's NETAVARK-DN- chain", natText(nat), target, p.host, to, root)
		}
		out, err := exec.Command("nft", "-a", "list", "chain", "ip", "nat", nat[0].Chain).CombinedOutput()
		if err != nil {
			t.Fatalf("nft list chain ip nat %s: %v\n%s", nat[0].Chain, err, out)
		}
		if handle := ruleHandle(t, string(out), "dnat to "+to); !strings.Contains(res.stdout, fmt.Sprintf(`"rule_handle":%d,`, handle)) {
			t.Errorf("no row of netavark's DNAT rule %d (%s)", handle, out)
		}
		return nat
	}
	for _, p := range []podmanPort{
		{host: 8080, ctr: 80, proto: "tcp", result: "open", request: "syn"},
		{host: 5353, ctr: 53, proto: "udp", result: "reply", request: "request", payload: []string{"--payload", dnsQueryHex}},
	} {
		args := func(target netip.Addr) []string {
			return append(append([]string{"--json", "-W", "2s", "--" + p.proto, fmt.Sprint(p.host)}, p.payload...), target.String())
		}
		t.Run(p.proto, func(t *testing.T) {
			t.Run("loopback", func(t *testing.T) {
				if p.proto == "udp" {
					// The reply, back through the bridge with the masquerade
					// undone (br_netfilter) and the DNAT not yet, has a
					// tuple no request hop had: the tool keeps neither its
					// row there nor the masquerade.
					t.Skip("a UDP reply to loopback through netavark's masquerade is not followed past the container's veth")
				}
				// Loopback never leaves the machine; netavark translates it in
				// OUTPUT (route_localnet on its bridge) and masquerades it.
				target := netip.MustParseAddr("127.0.0.1")
				nat := check(t, runTool(t, nil, args(target)...), target, p)
				if len(nat) < 2 || nat[1].Kind != "SNAT" || !strings.HasPrefix(nat[1].Before, "127.0.0.1:") ||
					!strings.HasPrefix(nat[1].After, gw.String()+":") || uint64(nat[1].Netns) != root ||
					nat[1].Chain != "NETAVARK-HOSTPORT-MASQ" || !strings.Contains(nat[1].Rule, "masquerade") {
					t.Errorf("translations %s, want second netavark's masquerade of loopback to %s in %d", natText(nat), gw, root)
				}
			})
			t.Run("from a client", func(t *testing.T) {
				// The client is vp.Netns, the address probed the root side of its
				// link (on-link for both), both the test's own.
				target := vp.Host4.Addr()
				if err := topo.CheckOwnRoute(vp.Netns, target); err != nil {
					t.Fatalf("not probing: %v", err)
				}
				check(t, runTool(t, vp.Netns, args(target)...), target, p)
			})
		})
	}
}

// inNetnsOfPid runs fn on a thread inside the network namespace of pid.
func inNetnsOfPid(pid int, fn func() error) error {
	return pnetns.OnThread(func() error {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter the network namespace of pid %d: %w", pid, err)
		}
		return fn()
	})
}

func natText(nat []*jsonNAT) string {
	var b strings.Builder
	for _, x := range nat {
		fmt.Fprintf(&b, "\n  %+v", *x)
	}
	return b.String()
}
