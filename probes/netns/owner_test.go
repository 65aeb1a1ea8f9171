package netns

import (
	"github.com/tracepkt/tracepkt-perf/decode"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const (
	idA   = "3f4e8a1c2b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f"
	idB   = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	idC   = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	idD   = "aaaabbbbccccddddeeeeffff00001111aaaabbbbccccddddeeeeffff00001111"
	podID = "6b1f5c2e-9d3a-4e8b-a7c6-5d4e3f2a1b0c"
)

func TestUnitParseCgroup(t *testing.T) {
	podSlice := "kubepods-burstable-pod" + strings.ReplaceAll(podID, "-", "_") + ".slice"
	for _, tc := range []struct {
		name, content string
		want          container
		ok            bool
	}{
		{"host", "0::/\n", container{}, false},
		{"user session", "0::/user.slice/user-0.slice/session-3.scope\n", container{}, false},
		{"docker cgroupfs", "0::/docker/" + idA + "\n", container{runtime: decode.OwnerDocker, id: idA}, true},
		{"docker systemd", "0::/system.slice/docker-" + idA + ".scope\n", container{runtime: decode.OwnerDocker, id: idA}, true},
		{"docker cgroup v1 hybrid", "12:pids:/docker/" + idA + "\n1:name=systemd:/docker/" + idA + "\n0::/\n",
			container{runtime: decode.OwnerDocker, id: idA}, true},
		{"podman systemd", "0::/machine.slice/libpod-" + idA + ".scope/container\n", container{runtime: decode.OwnerPodman, id: idA}, true},
		{"podman cgroupfs", "0::/libpod_parent/libpod-" + idA + "\n", container{runtime: decode.OwnerPodman, id: idA}, true},
		{"podman conmon", "0::/machine.slice/libpod-conmon-" + idA + ".scope\n", container{}, false},
		{"containerd cgroupfs", "0::/default/" + idA + "\n", container{runtime: decode.OwnerContainerd, id: idA}, true},
		{"nerdctl systemd", "0::/system.slice/nerdctl-" + idA + ".scope\n", container{runtime: decode.OwnerContainerd, id: idA}, true},
		{"pod cgroupfs", "0::/kubepods/burstable/pod" + podID + "/" + idA + "\n", container{id: idA, podUID: podID}, true},
		{"pod systemd containerd", "0::/kubepods.slice/kubepods-burstable.slice/" + podSlice + "/cri-containerd-" + idA + ".scope\n",
			container{runtime: decode.OwnerContainerd, id: idA, podUID: podID}, true},
		{"pod systemd crio", "0::/kubepods.slice/" + podSlice + "/crio-" + idA + ".scope\n",
			container{runtime: runtimeCrio, id: idA, podUID: podID}, true},
		{"not an id", "0::/docker/abc\n", container{}, false},
		{"garbage", "no colons here\n::\n", container{}, false},
	} {
		got, ok := parseCgroup(tc.content)
		if got != tc.want || ok != tc.ok {
			t.Errorf("%s: parseCgroup = %+v, %v; want %+v, %v", tc.name, got, ok, tc.want, tc.ok)
		}
	}
}

// fakeMachine lays out a /proc and the runtimes' files under a temporary
// directory: PID 1 in net:[1], each process of procs with its cgroup.
type fakeProc struct {
	pid    string
	comm   string
	cgroup string
}

func fakePlaces(t *testing.T, procs []fakeProc, files map[string]string) Places {
	t.Helper()
	root := t.TempDir()
	p := Places{
		Proc:              filepath.Join(root, "proc"),
		DockerRoot:        filepath.Join(root, "var/lib/docker"),
		DockerConfig:      filepath.Join(root, "etc/docker/daemon.json"),
		ContainersStorage: []string{filepath.Join(root, "storage")},
		ContainerdTasks:   filepath.Join(root, "tasks"),
		KubeletPods:       filepath.Join(root, "pods"),
	}
	write := func(path, content string) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(p.Proc, "1", "ns"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("net:[1]", filepath.Join(p.Proc, "1", "ns", "net")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("pid:[4026531836]", filepath.Join(p.Proc, "1", "ns", "pid")); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(p.Proc, "1", "comm"), "init\n")
	for _, pr := range procs {
		write(filepath.Join(p.Proc, pr.pid, "comm"), pr.comm+"\n")
		write(filepath.Join(p.Proc, pr.pid, "cgroup"), pr.cgroup)
	}
	for name, content := range files {
		write(filepath.Join(root, name), content)
	}
	return p
}

func TestUnitOwner(t *testing.T) {
	podSlice := "kubepods-besteffort-pod" + strings.ReplaceAll(podID, "-", "_") + ".slice"
	places := fakePlaces(t, []fakeProc{
		{"10", "nginx", "0::/system.slice/docker-" + idA + ".scope\n"},
		{"11", "sleep", "0::/docker/" + idB + "\n"},
		{"12", "busybox", "0::/machine.slice/libpod-" + idA + ".scope/container\n"},
		{"13", "redis", "0::/default/" + idA + "\n"},
		{"14", "pause", "0::/kubepods.slice/" + podSlice + "/cri-containerd-" + idD + ".scope\n"},
		{"15", "pause", "0::/kubepods/pod" + podID + "/" + idB + "\n"},
		{"16", "pause", "0::/kubepods.slice/" + podSlice + "/crio-" + idC + ".scope\n"},
		{"17", "sleep", "0::/user.slice\n"},
		{"18", "conmon", "0::/machine.slice/libpod-conmon-" + idA + ".scope\n"},
	}, map[string]string{
		"var/lib/docker/containers/" + idA + "/config.v2.json":                           `{"ID":"` + idA + `","Name":"/web-1","Config":{}}`,
		"storage/containers.json":                                                        `[{"id":"` + idA + `","names":["db-1"],"image":"x"}]`,
		"tasks/default/" + idA + "/config.json":                                          `{"ociVersion":"1.1.0","annotations":{"nerdctl/name":"cache-1"}}`,
		"tasks/k8s.io/" + idD + "/config.json":                                           `{"annotations":{"io.kubernetes.cri.sandbox-name":"nginx-7d4","io.kubernetes.cri.sandbox-namespace":"shop"}}`,
		"pods/" + podID + "/etc-hosts":                                                   "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.244.0.7\tapi-5f6\n",
		"pods/" + podID + "/volumes/kubernetes.io~projected/kube-api-access-x/namespace": "billing",
		"storage/" + idC + "/userdata/config.json":                                       `{"annotations":{"io.kubernetes.pod.name":"front","io.kubernetes.pod.namespace":"web"}}`,
	})
	for _, tc := range []struct {
		name string
		ns   Netns
		want decode.Owner
	}{
		{"host", Netns{Inode: 1, Pids: []int{1}}, decode.Owner{Kind: decode.OwnerProcess, Name: "host", Pid: 1, Comm: "init"}},
		{"docker named", Netns{Inode: 2, Pids: []int{10}, Names: []string{"docker/f00"}},
			decode.Owner{Kind: decode.OwnerDocker, ID: idA, Name: "web-1", Pid: 10, Comm: "nginx"}},
		{"docker without config", Netns{Inode: 3, Pids: []int{11}}, decode.Owner{Kind: decode.OwnerDocker, ID: idB, Name: idB[:12], Pid: 11, Comm: "sleep"}},
		{"podman", Netns{Inode: 4, Pids: []int{18, 12}}, decode.Owner{Kind: decode.OwnerPodman, ID: idA, Name: "db-1", Pid: 12, Comm: "busybox"}},
		{"containerd", Netns{Inode: 5, Pids: []int{13}}, decode.Owner{Kind: decode.OwnerContainerd, ID: idA, Name: "cache-1", Pid: 13, Comm: "redis"}},
		{"pod from CRI annotations", Netns{Inode: 6, Pids: []int{17, 14}, Names: []string{"cni-1234"}},
			decode.Owner{Kind: decode.OwnerPod, ID: podID, Name: "shop/nginx-7d4", Pid: 14, Comm: "pause"}},
		{"pod from kubelet dir", Netns{Inode: 7, Pids: []int{15}}, decode.Owner{Kind: decode.OwnerPod, ID: podID, Name: "billing/api-5f6", Pid: 15, Comm: "pause"}},
		{"pod from CRI-O annotations", Netns{Inode: 8, Pids: []int{16}}, decode.Owner{Kind: decode.OwnerPod, ID: podID, Name: "web/front", Pid: 16, Comm: "pause"}},
		{"ip netns over cni", Netns{Inode: 9, Pids: []int{17}, Names: []string{"cni-99", "blue"}},
			decode.Owner{Kind: decode.OwnerNetns, ID: "/run/netns/blue", Name: "blue", Pid: 17, Comm: "sleep"}},
		{"cni", Netns{Inode: 10, Names: []string{"cni-99"}}, decode.Owner{Kind: decode.OwnerNetns, ID: "/run/netns/cni-99", Name: "cni-99"}},
		{"docker netns", Netns{Inode: 11, Names: []string{"docker/f00"}}, decode.Owner{Kind: decode.OwnerNetns, ID: "/var/run/docker/netns/f00", Name: "docker/f00"}},
		{"process", Netns{Inode: 12, Pids: []int{17}}, decode.Owner{Kind: decode.OwnerProcess, Name: "sleep[17]", Pid: 17, Comm: "sleep"}},
		{"nothing known", Netns{Inode: 13}, decode.Owner{}},
	} {
		n := NewNamer(places)
		if got := n.Owner(tc.ns); got != tc.want {
			t.Errorf("%s: Owner = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// TestUnitHostInContainer: where PID 1 is a container's init, in a PID
// namespace of its own, its network namespace is not the host's; init_net
// still is, known by the inode recent kernels fix for it.
func TestUnitHostInContainer(t *testing.T) {
	places := fakePlaces(t, nil, nil)
	pidns := filepath.Join(places.Proc, "1", "ns", "pid")
	if err := os.Remove(pidns); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("pid:[4026532300]", pidns); err != nil {
		t.Fatal(err)
	}
	n := NewNamer(places)
	if got := n.Owner(Netns{Inode: 1, Pids: []int{1}}); got.Name == decode.HostName {
		t.Errorf("a container's init's namespace: Owner = %+v, want not the host", got)
	}
	if got, want := n.Owner(Netns{Inode: initNetInode}), (decode.Owner{Kind: decode.OwnerProcess, Name: decode.HostName}); got != want {
		t.Errorf("init_net: Owner = %+v, want %+v (PID 1 is not in it)", got, want)
	}
}

func TestUnitFindByName(t *testing.T) {
	nss := []Netns{
		{Inode: 1, Path: "/proc/1/ns/net"},
		{Inode: 2, Path: "/run/netns/blue", Names: []string{"blue"}},
		{Inode: 3, Path: "/proc/10/ns/net"},
		{Inode: 4, Path: "/proc/11/ns/net"},
		{Inode: 5, Path: "/proc/12/ns/net"},
		{Inode: 6, Path: "/var/run/docker/netns/f00", Names: []string{"docker/f00"}},
		{Inode: 7, Path: "/proc/13/ns/net"},
	}
	owners := map[uint32]decode.Owner{
		1: {Kind: decode.OwnerProcess, Name: "host", Pid: 1},
		2: {Kind: decode.OwnerNetns, ID: "/run/netns/blue", Name: "blue"},
		3: {Kind: decode.OwnerDocker, ID: idA, Name: "web-1"},
		4: {Kind: decode.OwnerPod, ID: podID, Name: "shop/nginx"},
		5: {Kind: decode.OwnerPodman, ID: "3f4e" + idB[4:], Name: "db-1"},
		// A short id of decimal digits alone, which no process has.
		7: {Kind: decode.OwnerDocker, ID: "929092132470" + idB[12:], Name: "cache-1"},
		6: {Kind: decode.OwnerNetns, ID: "/var/run/docker/netns/f00", Name: "docker/f00"},
	}
	for spec, want := range map[string]uint32{
		"host": 1, "blue": 2, "web-1": 3, idA: 3, idA[:12]: 3, "shop/nginx": 4, "nginx": 4, podID: 4, "db-1": 5, "docker/f00": 6,
		"929092132470": 7,
	} {
		got, err := Find(spec, nss, owners)
		if err != nil || got.Inode != want {
			t.Errorf("Find(%q) = %v, %v; want net:[%d]", spec, got, err, want)
		}
	}
	if _, err := Find("3f4e", nss, owners); err == nil || !strings.Contains(err.Error(), "names 2 network namespaces") {
		t.Errorf("Find of an ambiguous prefix: %v", err)
	}
	for _, spec := range []string{"nosuch", "", "no/such", "/nonexistent/netns", "4194305"} {
		if _, err := Find(spec, nss, owners); err == nil {
			t.Errorf("Find(%q) found something", spec)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("Find(%q): error of several lines: %q", spec, err)
		}
	}
}
