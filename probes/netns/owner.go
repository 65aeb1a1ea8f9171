package netns

import (
	"encoding/json"
	"github.com/tracepkt/tracepkt-perf/decode"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Inodes the kernel fixes for its initial namespaces, PROC_*_INIT_INO in
// <linux/proc_ns.h>; those it allocates start at PROC_DYNAMIC_FIRST,
// 0xF0000000, so no other namespace ever has one of these.
const (
	// initPidInode, the initial PID namespace's, is fixed since 3.8.
	initPidInode = 0xEFFFFFFC
	// initNetInode, init_net's, is fixed only on recent kernels (6.18 has
	// it, 6.1 allocates init_net's inode like any other).
	initNetInode = 0xEFFFFFF9
)

// Places says where the container runtimes keep what names their containers.
// Files that are missing or unreadable only cost the name: the owner then
// goes by its id.
type Places struct {
	Proc string // procfs, for processes' cgroups and command names
	// DockerRoot is dockerd's default data root, which holds
	// containers/<id>/config.v2.json, and DockerConfig its default
	// configuration file; the running daemons' own roots come first (see
	// dockerRoots).
	DockerRoot   string
	DockerConfig string
	// ContainersStorage are containers/storage's container directories
	// (podman, CRI-O): containers.json, and <id>/userdata/config.json.
	ContainersStorage []string
	// ContainerdTasks holds the running tasks' bundles,
	// <containerd namespace>/<id>/config.json.
	ContainerdTasks string
	// KubeletPods holds the kubelet's pod directories, <pod uid>/.
	KubeletPods string
}

// DefaultPlaces are the runtimes' default paths.
var DefaultPlaces = Places{
	Proc:         "/proc",
	DockerRoot:   "/var/lib/docker",
	DockerConfig: "/etc/docker/daemon.json",
	ContainersStorage: []string{
		"/var/lib/containers/storage/overlay-containers",
		"/run/containers/storage/overlay-containers",
	},
	ContainerdTasks: "/run/containerd/io.containerd.runtime.v2.task",
	KubeletPods:     "/var/lib/kubelet/pods",
}

// Namer finds the owners of network namespaces. It reads the runtimes'
// files once per container and keeps what it found, so a namespace first
// seen in the middle of a run costs only its own look-up.
type Namer struct {
	places Places
	host   uint32 // init_net's inode, as hostNetns finds it
	// hostInit says that PID 1 is the machine's init, in init_net.
	hostInit bool
	// storageNames maps a containers/storage id to its first name; read once.
	storageNames map[string]string
	// dockerRoots are Docker's data roots, looked for at the first Docker
	// container rather than at start.
	dockerRoots []string
}

// NewNamer returns a Namer that reads places.
func NewNamer(places Places) *Namer {
	n := &Namer{places: places}
	n.host, n.hostInit = hostNetns(places.Proc)
	return n
}

// hostNetns returns the inode of init_net, the machine's own network
// namespace, and whether PID 1 lives in it. PID 1's network namespace is
// init_net only when PID 1 is the machine's init, in the initial PID
// namespace, whose inode the kernel has fixed since 3.8: inside a container
// with a PID namespace of its own (unshare --pid --mount-proc, docker, a
// pod), PID 1 is the container's init, in the container's network
// namespace. There only init_net's own fixed inode, on the kernels that fix
// it, tells the host's namespace (which a container with a network
// namespace of its own does not see anyway).
func hostNetns(proc string) (uint32, bool) {
	pidns, ok := readNsLink(filepath.Join(proc, "1/ns/pid"), "pid")
	if !ok {
		// Some sandboxes refuse even root a look at PID 1's namespaces;
		// this process's PID namespace is then the one /proc shows.
		pidns, ok = readNsLink(filepath.Join(proc, "self/ns/pid"), "pid")
	}
	if !ok || pidns != initPidInode {
		return initNetInode, false
	}
	if host, ok := readNsLink(filepath.Join(proc, "1/ns/net"), "net"); ok {
		return host, true
	}
	// The machine's init lives in init_net; on kernels that do not fix its
	// inode, nothing is called host.
	return initNetInode, true
}

// Host returns the inode of the initial network namespace.
func (n *Namer) Host() uint32 { return n.host }

// Owner returns the best owner of ns: the host; else the pod or container a
// process in it runs in; else the namespace's bind mount name (a CNI name
// last); else a process living in it. The zero Owner means nothing is known.
func (n *Namer) Owner(ns Netns) decode.Owner {
	if ns.Inode == n.host {
		if !n.hostInit {
			return decode.Owner{Kind: decode.OwnerProcess, Name: decode.HostName}
		}
		return decode.Owner{Kind: decode.OwnerProcess, Name: decode.HostName, Pid: 1, Comm: n.comm(1)}
	}
	if o, ok := n.containerOwner(ns.Pids); ok {
		return o
	}
	var o decode.Owner
	if len(ns.Pids) > 0 {
		o = decode.Owner{Kind: decode.OwnerProcess, Pid: ns.Pids[0], Comm: n.comm(ns.Pids[0])}
		o.Name = o.Comm + "[" + strconv.Itoa(o.Pid) + "]"
	}
	if name, ok := bestName(ns.Names); ok {
		o.Kind, o.ID, o.Name = decode.OwnerNetns, namePath(name), name
	}
	return o
}

// Owners returns the owner of each of nss, by inode.
func (n *Namer) Owners(nss []Netns) map[uint32]decode.Owner {
	owners := make(map[uint32]decode.Owner, len(nss))
	for _, ns := range nss {
		owners[ns.Inode] = n.Owner(ns)
	}
	return owners
}

// bestName prefers a name a person gave (ip netns) to one a CNI plugin made up.
func bestName(names []string) (string, bool) {
	for _, name := range names {
		if !strings.HasPrefix(name, "cni-") {
			return name, true
		}
	}
	if len(names) > 0 {
		return names[0], true
	}
	return "", false
}

// containerOwner looks at the processes' cgroups; a pod wins over a
// container, since a pod's containers share its namespace.
func (n *Namer) containerOwner(pids []int) (decode.Owner, bool) {
	var found decode.Owner
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join(n.places.Proc, strconv.Itoa(pid), "cgroup"))
		if err != nil {
			continue
		}
		c, ok := parseCgroup(string(b))
		if !ok {
			continue
		}
		o := decode.Owner{Pid: pid, Comm: n.comm(pid)}
		switch {
		case c.podUID != "":
			o.Kind, o.ID, o.Name = decode.OwnerPod, c.podUID, n.podName(c)
			return o, true
		case c.runtime == decode.OwnerDocker || c.runtime == decode.OwnerPodman || c.runtime == decode.OwnerContainerd:
			if found.Kind == "" {
				o.Kind, o.ID, o.Name = c.runtime, c.id, n.containerName(c)
				found = o
			}
		}
	}
	return found, found.Kind != ""
}

// shortID is how docker and podman show a container id.
func shortID(id string) string { return id[:min(len(id), 12)] }

// containerName finds a container's name in its runtime's files, or gives
// its short id.
func (n *Namer) containerName(c container) string {
	var name string
	switch c.runtime {
	case decode.OwnerDocker:
		name = n.dockerName(c.id)
	case decode.OwnerPodman:
		name = n.storageName(c.id)
	case decode.OwnerContainerd:
		a := n.containerdAnnotations(c.id)
		name = a["nerdctl/name"]
		if name == "" {
			name = a["io.kubernetes.cri.container-name"]
		}
	}
	if name == "" {
		return shortID(c.id)
	}
	return name
}

// podName names a pod "<namespace>/<name>": from its CRI sandbox's
// annotations (containerd or CRI-O) or from the kubelet's pod directory;
// failing both, by its UID.
func (n *Namer) podName(c container) string {
	if c.id != "" {
		for _, a := range []map[string]string{n.containerdAnnotations(c.id), n.storageAnnotations(c.id)} {
			for _, keys := range [][2]string{
				{"io.kubernetes.cri.sandbox-namespace", "io.kubernetes.cri.sandbox-name"},
				{"io.kubernetes.pod.namespace", "io.kubernetes.pod.name"},
			} {
				if a[keys[0]] != "" && a[keys[1]] != "" {
					return a[keys[0]] + "/" + a[keys[1]]
				}
			}
		}
	}
	if name, ok := n.kubeletPodName(c.podUID); ok {
		return name
	}
	return c.podUID
}

// kubeletPodName reads a pod's name from the hosts file the kubelet writes
// for it (its last line maps the pod's address to its hostname, the pod's
// name unless the spec set another) and its namespace from the service
// account volume.
func (n *Namer) kubeletPodName(uid string) (string, bool) {
	dir := filepath.Join(n.places.KubeletPods, uid)
	hosts, err := os.ReadFile(filepath.Join(dir, "etc-hosts"))
	if err != nil {
		return "", false
	}
	var name string
	for line := range strings.Lines(string(hosts)) {
		if f := strings.Fields(line); len(f) >= 2 && !strings.HasPrefix(f[0], "#") {
			name = f[1]
		}
	}
	if name == "" {
		return "", false
	}
	nsFiles, _ := filepath.Glob(filepath.Join(dir, "volumes", "kubernetes.io~projected", "*", "namespace"))
	for _, f := range nsFiles {
		if b, err := os.ReadFile(f); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			return strings.TrimSpace(string(b)) + "/" + name, true
		}
	}
	return name, true
}

// containerdAnnotations reads the OCI annotations of a running containerd
// task, in whichever containerd namespace it runs; nil if not found.
func (n *Namer) containerdAnnotations(id string) map[string]string {
	paths, _ := filepath.Glob(filepath.Join(n.places.ContainerdTasks, "*", id, "config.json"))
	for _, p := range paths {
		if a, ok := ociAnnotations(p); ok {
			return a
		}
	}
	return nil
}

// storageAnnotations reads the OCI annotations containers/storage keeps for
// a CRI-O or podman container; nil if not found.
func (n *Namer) storageAnnotations(id string) map[string]string {
	for _, dir := range n.places.ContainersStorage {
		if a, ok := ociAnnotations(filepath.Join(dir, id, "userdata", "config.json")); ok {
			return a
		}
	}
	return nil
}

// storageName is a podman container's first name, from containers/storage's
// containers.json.
func (n *Namer) storageName(id string) string {
	if n.storageNames == nil {
		n.storageNames = map[string]string{}
		for _, dir := range n.places.ContainersStorage {
			var list []struct {
				ID    string   `json:"id"`
				Names []string `json:"names"`
			}
			if !readJSON(filepath.Join(dir, "containers.json"), &list) {
				continue
			}
			for _, c := range list {
				if len(c.Names) > 0 {
					n.storageNames[c.ID] = c.Names[0]
				}
			}
		}
	}
	return n.storageNames[id]
}

func ociAnnotations(path string) (map[string]string, bool) {
	var spec struct{ Annotations map[string]string }
	if !readJSON(path, &spec) {
		return nil, false
	}
	return spec.Annotations, true
}

// maxRuntimeFile bounds what is read of a runtime's file: they are a few KB.
const maxRuntimeFile = 4 << 20

// readJSON decodes the JSON file at path into v; false if it is missing,
// too large or not what v expects.
func readJSON(path string, v any) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() > maxRuntimeFile {
		return false
	}
	return json.NewDecoder(f).Decode(v) == nil
}

func (n *Namer) comm(pid int) string {
	b, _ := os.ReadFile(filepath.Join(n.places.Proc, strconv.Itoa(pid), "comm"))
	return strings.TrimSpace(string(b))
}
