package main

import (
	"archive/tar"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
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
		t.Skip("the test VM shares the host root read-only: podman cannot keep its storage there; this test runs in the host suite")
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
