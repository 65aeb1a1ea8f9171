package netns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/caps"
)

// Netns is a network namespace the tracer can enter.
type Netns struct {
	// Inode is the inode of the namespace's nsfs file, as in /proc/<pid>/ns/net -> net:[Inode].
	Inode uint32
	// Path is a file that open(2) resolves to the namespace: a bind mount or
	// /proc/<pid>/ns/net. Open checks that it still names Inode.
	Path string
	// Names are the namespace's bind mounts: "<name>" under /run/netns (ip netns),
	// "docker/<id>" under /var/run/docker/netns.
	Names []string
	// Pids are the first few processes List found living in it.
	Pids []int
}

// pidsPerNamespace bounds Netns.Pids.
const pidsPerNamespace = 3

func (n Netns) String() string {
	if len(n.Names) > 0 {
		return fmt.Sprintf("netns %s (net:[%d])", strings.Join(n.Names, ","), n.Inode)
	}
	return fmt.Sprintf("netns net:[%d]", n.Inode)
}

// Where named network namespaces are bind-mounted.
var netnsDirs = []struct{ dir, prefix string }{
	{"/run/netns", ""},
	{"/var/run/docker/netns", "docker/"},
}

// List lists the network namespaces the tool can reach, each once: its own first,
// then those bind-mounted under /run/netns and /var/run/docker/netns, then those of
// running processes (/proc/<pid>/ns/net; threads in a namespace of their own are not
// looked at). Processes that cannot be looked at (gone, or not ours without root) are
// skipped.
func List() ([]Netns, error) {
	self, err := At("/proc/self/ns/net")
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(self.Path, &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", self.Path, err)
	}
	nsfsDev := st.Dev

	out := []Netns{self}
	index := map[uint32]int{self.Inode: 0}
	for _, d := range netnsDirs {
		names, err := readDirNames(d.dir)
		if err != nil {
			return nil, err
		}
		sort.Strings(names)
		for _, name := range names {
			p := filepath.Join(d.dir, name)
			// A bind mount shows the nsfs file; a stale entry shows an ordinary empty file.
			if unix.Stat(p, &st) != nil || st.Dev != nsfsDev {
				continue
			}
			ino := uint32(st.Ino)
			if i, ok := index[ino]; ok {
				out[i].Names = append(out[i].Names, d.prefix+name)
				continue
			}
			index[ino] = len(out)
			out = append(out, Netns{Inode: ino, Path: p, Names: []string{d.prefix + name}})
		}
	}

	pids, err := readDirNames("/proc")
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if pid[0] < '0' || pid[0] > '9' {
			continue
		}
		p := "/proc/" + pid + "/ns/net"
		ino, ok := readNsLink(p, "net")
		if !ok {
			continue
		}
		i, ok := index[ino]
		if !ok {
			i = len(out)
			index[ino] = i
			out = append(out, Netns{Inode: ino, Path: p})
		}
		if len(out[i].Pids) < pidsPerNamespace {
			if n, err := strconv.Atoi(pid); err == nil {
				out[i].Pids = append(out[i].Pids, n)
			}
		}
	}
	return out, nil
}

// readDirNames returns the names in dir; none if it does not exist.
func readDirNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list network namespaces: read %s: %w", dir, err)
	}
	return names, nil
}

// readNsLink reads the namespace a /proc/<pid>/ns/<kind> link names; readlink
// gives "<kind>:[<inode>]" without resolving the namespace file.
func readNsLink(path, kind string) (uint32, bool) {
	var link [64]byte
	n, err := unix.Readlink(path, link[:])
	if err != nil {
		return 0, false
	}
	return parseNsLink(string(link[:n]), kind)
}

// namePath is the bind mount a name from Netns.Names stands for.
func namePath(name string) string {
	for i := len(netnsDirs) - 1; i >= 0; i-- {
		d := netnsDirs[i]
		if rest, ok := strings.CutPrefix(name, d.prefix); ok {
			return filepath.Join(d.dir, rest)
		}
	}
	return name
}

// parseNsLink parses the target of a /proc/<pid>/ns/<kind> link, "<kind>:[<inode>]".
func parseNsLink(s, kind string) (uint32, bool) {
	s, ok := strings.CutPrefix(s, kind+":[")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, "]")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// At returns the network namespace that path (a bind mount such as /run/netns/<name>,
// or /proc/<pid>/ns/net) names.
func At(path string) (Netns, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Netns{}, fmt.Errorf("open netns: %w", err)
	}
	defer f.Close()
	ino, err := netnsInode(f)
	if err != nil {
		return Netns{}, err
	}
	n := Netns{Inode: ino, Path: path}
	for _, d := range netnsDirs {
		if filepath.Dir(path) == d.dir {
			n.Names = []string{d.prefix + filepath.Base(path)}
		}
	}
	return n, nil
}

// netnsInode checks that f is a network namespace file and returns its inode.
func netnsInode(f *os.File) (uint32, error) {
	// NS_GET_NSTYPE: _IO(0xb7, 0x3) in <linux/nsfs.h>.
	const nsGetNstype = 0xb703
	typ, err := unix.IoctlRetInt(int(f.Fd()), nsGetNstype)
	if err != nil {
		return 0, fmt.Errorf("%s is not a namespace: %w", f.Name(), err)
	}
	if typ != unix.CLONE_NEWNET {
		return 0, fmt.Errorf("%s is not a network namespace", f.Name())
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	return uint32(st.Ino), nil
}

// ErrGone says that a namespace's path no longer leads to it: its process
// exited, or its bind mount was removed.
var ErrGone = errors.New("network namespace gone")

// Open opens ns.Path and checks that it still names ns; if the path vanished, is no
// longer a namespace or was reused for another one, the error wraps ErrGone.
func (ns Netns) Open() (*os.File, error) {
	f, err := os.OpenFile(ns.Path, os.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("open %v: %w", ns, ErrGone)
	}
	if err != nil {
		return nil, fmt.Errorf("open %v: %w", ns, err)
	}
	ino, err := netnsInode(f)
	if err != nil {
		f.Close()
		// ns was a namespace when it was found, so its path has lost its
		// bind mount since: ip netns del unmounts before it unlinks, and
		// ip netns add creates the file before it mounts over it.
		return nil, fmt.Errorf("open %v: %w: %w", ns, err, ErrGone)
	}
	if ino != ns.Inode {
		f.Close()
		return nil, fmt.Errorf("open %v: %s is now net:[%d]: %w", ns, ns.Path, ino, ErrGone)
	}
	return f, nil
}

// Dedup returns nss without repeated inodes, keeping the first.
func Dedup(nss []Netns) []Netns {
	seen := make(map[uint32]bool, len(nss))
	out := make([]Netns, 0, len(nss))
	for _, ns := range nss {
		if !seen[ns.Inode] {
			seen[ns.Inode] = true
			out = append(out, ns)
		}
	}
	return out
}

// OnThread runs fn on a locked OS thread that fn may move to other network
// namespaces (setns, unshare); the thread goes back to the namespace it
// started in afterwards. It is given back to the runtime only once it is
// back: otherwise the goroutine exits locked and the runtime discards the
// thread (or, for the main thread, parks it for good), so no goroutine ever
// runs in a namespace it did not ask for. Goroutines fn starts do not run on
// its thread. A panic in fn is re-raised in the caller.
func OnThread(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.OpenFile("/proc/thread-self/ns/net", os.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("open current netns: %w", err)}
			return
		}
		defer orig.Close()
		var r result
		func() {
			defer func() {
				if p := recover(); p != nil {
					r.panic = p
				}
			}()
			r.err = fn()
		}()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
		done <- r
	}()
	r := <-done
	if r.panic != nil {
		panic(r.panic)
	}
	return r.err
}

// DoConcurrently is Do with the files split among up to workers locked
// threads, each taking a contiguous share in order: namespaces whose work
// waits on the kernel (a netfilter commit waits for RCU) then wait together.
// fn must be safe to call concurrently for different i. It returns the
// errors of all threads.
func DoConcurrently(files []*os.File, workers int, fn func(i int) error) error {
	workers = max(1, min(workers, len(files)))
	per := (len(files) + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, len(files))
		if lo >= hi {
			break
		}
		wg.Go(func() { errs[w] = Do(files[lo:hi], func(i int) error { return fn(lo + i) }) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Do runs fn(i) for each i, in order, on one locked OS thread that has entered
// the network namespace of files[i]; sockets fn creates live in that namespace,
// and so does any child process it starts. It stops at the first error.
func Do(files []*os.File, fn func(i int) error) error {
	err := OnThread(func() error {
		for i, f := range files {
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				return fmt.Errorf("enter netns %s: %w", f.Name(), caps.Explain(err, caps.EnterNetns))
			}
			if err := fn(i); err != nil {
				return err
			}
		}
		return nil
	})
	runtime.KeepAlive(files)
	return err
}
