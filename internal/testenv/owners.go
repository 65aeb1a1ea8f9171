package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// UnshareNet starts `unshare --net sleep 60`, a process alone in a new
// network namespace that nothing else holds, and returns it once sleep runs
// in there, with the namespace's inode read from /proc/<pid>/ns/net. It is
// killed when tb ends.
func UnshareNet(tb testing.TB) (*exec.Cmd, uint32) {
	tb.Helper()
	RequireRoot(tb)
	RequireCommands(tb, "unshare", "sleep")
	cmd := exec.Command("unshare", "--net", "sleep", "60")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	self := NetnsInodeOfPid(tb, os.Getpid())
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		comm, _ := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/comm")
		if ino := NetnsInodeOfPid(tb, cmd.Process.Pid); ino != self && string(comm) == "sleep\n" {
			return cmd, uint32(ino)
		}
	}
	tb.Fatal("unshare --net did not enter a new namespace")
	return nil, 0
}

// mkdirs creates dir and its missing parents and returns those it created,
// deepest first, for removal.
func mkdirs(dir string) ([]string, error) {
	var created []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		created = append(created, d)
	}
	for _, d := range slices.Backward(created) {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	return created, nil
}

// BindNetns bind-mounts the network namespace of pid at path, as ip netns,
// Docker or a CNI plugin do, creating the directories it needs. The mount,
// the file and the directories it created are removed when tb ends.
func BindNetns(tb testing.TB, pid int, path string) {
	tb.Helper()
	RequireRoot(tb)
	created, err := mkdirs(filepath.Dir(path))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		for _, d := range created {
			if err := os.Remove(d); err != nil {
				tb.Errorf("remove %s: %v", d, err)
			}
		}
	})
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDONLY, 0o444)
	if err != nil {
		tb.Fatal(err)
	}
	f.Close()
	tb.Cleanup(func() {
		if err := os.Remove(path); err != nil {
			tb.Errorf("remove %s: %v", path, err)
		}
	})
	if err := unix.Mount("/proc/"+strconv.Itoa(pid)+"/ns/net", path, "", unix.MS_BIND, ""); err != nil {
		tb.Fatalf("bind mount the namespace of %d at %s: %v", pid, path, err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
			tb.Errorf("unmount %s: %v", path, err)
		}
	})
}

// cgroup2Mount finds where the cgroup v2 hierarchy is mounted; where it is
// not (the test VM mounts no cgroup file system), it mounts it on a
// temporary directory until tb ends.
func cgroup2Mount(tb testing.TB) string {
	tb.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1]
		}
	}
	dir := tb.TempDir()
	if err := unix.Mount("cgroup2", dir, "cgroup2", 0, ""); err != nil {
		Require(tb, fmt.Errorf("no cgroup2 hierarchy is mounted, and mounting one failed: %w", err))
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			tb.Errorf("unmount cgroup2 at %s: %v", dir, err)
		}
	})
	return dir
}

// InCgroup moves pid into the cgroup rel (a path such as
// "system.slice/docker-<id>.scope") of the cgroup v2 hierarchy, creating it,
// so /proc/<pid>/cgroup shows "0::/<rel>" as for a container. When tb ends,
// pid goes back to the root cgroup (if still alive) and the cgroups created
// are removed.
func InCgroup(tb testing.TB, pid int, rel string) {
	tb.Helper()
	RequireRoot(tb)
	root := cgroup2Mount(tb)
	dir := filepath.Join(root, rel)
	created, err := mkdirs(dir)
	if err != nil {
		tb.Fatalf("create cgroup %s: %v", dir, err)
	}
	tb.Cleanup(func() {
		err := os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
		if err != nil && !errors.Is(err, unix.ESRCH) {
			tb.Errorf("move %d back to the root cgroup: %v", pid, err)
		}
		for _, d := range created {
			// A process that just exited may hold its cgroup a little longer.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				err := os.Remove(d)
				if err == nil {
					break
				}
				if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
					tb.Errorf("remove cgroup %s: %v", d, err)
					break
				}
			}
		}
	})
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		tb.Fatalf("move %d into cgroup %s: %v", pid, dir, err)
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil || !strings.Contains(string(b), "0::/"+rel+"\n") {
		tb.Fatalf("after moving %d into %s, /proc/%d/cgroup is %q (%v)", pid, dir, pid, b, err)
	}
}

// ContainerID returns a random 64-hex-digit container id.
func ContainerID(tb testing.TB) string {
	tb.Helper()
	var b [32]byte
	if _, err := unix.Getrandom(b[:], 0); err != nil {
		tb.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}

// PodUID returns a random pod UID (8-4-4-4-12 hex digits).
func PodUID(tb testing.TB) string {
	tb.Helper()
	h := ContainerID(tb)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
