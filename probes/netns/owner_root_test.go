package netns_test

import (
	"github.com/tracepkt/tracepkt-perf/decode"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// Every kind of namespace the machine can name, built for real: each gets
// the owner a person would recognise, found by List and Namer as the tool
// does.
func TestOwners(t *testing.T) {
	topo := testenv.Topology(t)
	named, err := topo.Netns(topology.UniqueName("nn"))
	if err != nil {
		t.Fatal(err)
	}
	plain, plainIno := testenv.UnshareNet(t)
	bound, boundIno := testenv.UnshareNet(t)
	sandbox := topology.UniqueName("sbx")
	testenv.BindNetns(t, bound.Process.Pid, "/var/run/docker/netns/"+sandbox)
	docker, dockerIno := testenv.UnshareNet(t)
	dockerID := testenv.ContainerID(t)
	testenv.InCgroup(t, docker.Process.Pid, "system.slice/docker-"+dockerID+".scope")
	pod, podIno := testenv.UnshareNet(t)
	podUID, podCtr := testenv.PodUID(t), testenv.ContainerID(t)
	testenv.InCgroup(t, pod.Process.Pid, "kubepods/besteffort/pod"+podUID+"/"+podCtr)

	nss, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	owners := netns.NewNamer(netns.DefaultPlaces).Owners(nss)
	comm := func(pid int) string {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
		return strings.TrimSpace(string(b))
	}
	for _, tc := range []struct {
		name  string
		inode uint32
		want  decode.Owner
	}{
		// Tests run in the host's namespace.
		{"host", uint32(testenv.NetnsInodeOfPid(t, os.Getpid())), decode.Owner{Kind: "process", Name: "host", Pid: 1, Comm: comm(1)}},
		{"ip netns", uint32(named.Inode), decode.Owner{Kind: "netns", ID: "/run/netns/" + named.Name, Name: named.Name}},
		{"held by a process", plainIno, decode.Owner{Kind: "process", Name: "sleep[" + strconv.Itoa(plain.Process.Pid) + "]",
			Pid: plain.Process.Pid, Comm: "sleep"}},
		{"docker sandbox", boundIno, decode.Owner{Kind: "netns", ID: "/var/run/docker/netns/" + sandbox, Name: "docker/" + sandbox,
			Pid: bound.Process.Pid, Comm: "sleep"}},
		// No config.v2.json for it here: the short id, as docker ps shows it.
		{"docker container", dockerIno, decode.Owner{Kind: "docker", ID: dockerID, Name: dockerID[:12], Pid: docker.Process.Pid, Comm: "sleep"}},
		{"kubernetes pod", podIno, decode.Owner{Kind: "pod", ID: podUID, Name: podUID, Pid: pod.Process.Pid, Comm: "sleep"}},
	} {
		if got := owners[tc.inode]; got != tc.want {
			t.Errorf("%s, net:[%d]: owner %+v, want %+v", tc.name, tc.inode, got, tc.want)
		}
	}

	// --from-netns finds them by name, id, PID and path.
	for spec, want := range map[string]uint32{
		"host": uint32(testenv.NetnsInodeOfPid(t, os.Getpid())), named.Name: uint32(named.Inode), "docker/" + sandbox: boundIno,
		dockerID[:12]: dockerIno, podUID: podIno, strconv.Itoa(plain.Process.Pid): plainIno,
		filepath.Join("/proc", strconv.Itoa(pod.Process.Pid), "ns/net"): podIno, "/var/run/docker/netns/" + sandbox: boundIno,
	} {
		got, err := netns.Find(spec, nss, owners)
		if err != nil || got.Inode != want {
			t.Errorf("Find(%q) = %v, %v; want net:[%d]", spec, got, err, want)
		}
	}
}
