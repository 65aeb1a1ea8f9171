package topology

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	pnetns "github.com/tracepkt/tracepkt-perf/probes/netns"
)

// netnsRunDir is where `ip netns add` bind-mounts named namespaces.
const netnsRunDir = "/run/netns"

// Netns is a network namespace: one this package created (named, under /run/netns) or the
// caller's own (RootNetns).
type Netns struct {
	// Name is the name under /run/netns ("ip netns exec <Name>"); empty for RootNetns.
	Name string
	// Path is the bind mount, /run/netns/<Name>; empty for RootNetns.
	Path string
	// Inode is the inode of the nsfs file, as shown by /proc/<pid>/ns/net ("net:[Inode]")
	// of any process inside.
	Inode uint64

	f     *os.File  // open nsfs file: keeps the namespace alive and is what setns needs
	owner *Topology // nil when not created by a Topology
}

func (n *Netns) String() string {
	if n.Name == "" {
		return fmt.Sprintf("netns net:[%d]", n.Inode)
	}
	return fmt.Sprintf("netns %s (net:[%d])", n.Name, n.Inode)
}

// RootNetns returns the network namespace of the calling thread, which is the whole
// process's unless the caller is inside Do. It is not owned by any Topology; its open file
// is released when it is garbage collected (Topology.Root gives one that Close releases).
func RootNetns() (*Netns, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	return openNetns("/proc/thread-self/ns/net", "", "")
}

func openNetns(procPath, name, path string) (*Netns, error) {
	f, err := os.OpenFile(procPath, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", procPath, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %s: %w", procPath, err)
	}
	return &Netns{Name: name, Path: path, Inode: st.Ino, f: f}, nil
}

// fd returns the namespace file descriptor; callers keep n alive (runtime.KeepAlive) until
// they are done with it.
func (n *Netns) fd() (int, error) {
	if n == nil {
		return -1, errors.New("nil netns")
	}
	if n.f == nil {
		return -1, fmt.Errorf("%v: %w", n, ErrClosed)
	}
	return int(n.f.Fd()), nil
}

// handle returns a netlink handle whose socket lives in n. The caller closes it.
func (n *Netns) handle() (*netlink.Handle, error) {
	fd, err := n.fd()
	if err != nil {
		return nil, err
	}
	h, err := netlink.NewHandleAt(vnetns.NsHandle(fd), unix.NETLINK_ROUTE)
	runtime.KeepAlive(n)
	if err != nil {
		return nil, fmt.Errorf("netlink socket in %v: %w", n, err)
	}
	return h, nil
}

// Do runs fn on a locked OS thread inside n and returns its error. Goroutines that fn starts
// do not run inside n. A panic in fn is re-raised in the caller.
func (n *Netns) Do(fn func() error) error {
	fd, err := n.fd()
	if err != nil {
		return err
	}
	err = pnetns.OnThread(func() error {
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("enter %v: %w", n, err)
		}
		return fn()
	})
	runtime.KeepAlive(n)
	return err
}

// Forwarding turns net.ipv4.ip_forward and net.ipv6.conf.all.forwarding on or off inside n.
// Only namespaces created by a Topology may be changed.
func (n *Netns) Forwarding(on bool) error {
	if n.owner == nil {
		return fmt.Errorf("set forwarding in %v: refusing to change a namespace no topology created", n)
	}
	val := []byte("0\n")
	if on {
		val = []byte("1\n")
	}
	return n.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		for _, p := range []string{"/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"} {
			if err := os.WriteFile(p, val, 0); err != nil {
				return fmt.Errorf("set forwarding in %v: %w", n, err)
			}
		}
		return nil
	})
}

// netnsDirMu serialises preparing /run/netns within this process, so that two goroutines do
// not both bind-mount it onto itself.
var netnsDirMu sync.Mutex

// prepareNetnsDir makes /run/netns a shared mount point, as `ip netns add` does, so that
// namespace mounts made later propagate to mount namespaces created by `ip netns exec`.
func prepareNetnsDir() error {
	netnsDirMu.Lock()
	defer netnsDirMu.Unlock()
	if err := os.MkdirAll(netnsRunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", netnsRunDir, readOnly(err))
	}
	bound := false
	for {
		err := unix.Mount("", netnsRunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EINVAL) || bound {
			return fmt.Errorf("make %s a shared mount: %w", netnsRunDir, err)
		}
		// Not a mount point yet: bind-mount it onto itself first.
		if err := unix.Mount(netnsRunDir, netnsRunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind-mount %s onto itself: %w", netnsRunDir, err)
		}
		bound = true
	}
}

// readOnly says what a read-only /run means for err: a named namespace is
// a file under /run/netns with the namespace mounted on it, as ip netns
// makes them.
func readOnly(err error) error {
	if errors.Is(err, unix.EROFS) {
		return fmt.Errorf("%s is read-only, and named network namespaces are files there: %w", netnsRunDir, err)
	}
	return err
}

func validNetnsName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return fmt.Errorf("invalid netns name %q", name)
	}
	return nil
}

// createNamedNetns does what `ip netns add <name>` does: an empty file under /run/netns with
// a new network namespace bind-mounted on it.
func createNamedNetns(name string) (*Netns, error) {
	if err := validNetnsName(name); err != nil {
		return nil, err
	}
	if err := prepareNetnsDir(); err != nil {
		return nil, err
	}
	path := filepath.Join(netnsRunDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return nil, fmt.Errorf("create netns %s: %w", name, readOnly(err))
	}
	f.Close()

	var ns *Netns
	err = pnetns.OnThread(func() error {
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			return fmt.Errorf("unshare network namespace: %w", err)
		}
		if err := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind-mount netns on %s: %w", path, err)
		}
		ns, err = openNetns("/proc/thread-self/ns/net", name, path)
		return err
	})
	if err != nil {
		_ = removeNamedNetns(path)
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	return ns, nil
}

// removeNamedNetns does what `ip netns del` does. The kernel frees the namespace, and the
// links inside it, once no process or open file refers to it any more.
func removeNamedNetns(path string) error {
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	return nil
}
