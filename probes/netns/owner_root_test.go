package netns_test

import (
	"github.com/tracepkt/tracepkt-perf/decode"
	"os"
	"os/exec"
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

// TestOwnerDockerDataRoot: Docker containers whose daemon keeps its files
// under a data root of its own, given in its configuration file or on a
// dockerd's command line, are named from those files.
func TestOwnerDockerDataRoot(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	write := func(path, content string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	places := netns.DefaultPlaces
	places.DockerConfig = filepath.Join(dir, "etc/docker/daemon.json")
	places.DockerRoot = filepath.Join(dir, "var/lib/docker")
	write(places.DockerConfig, `{"data-root": "`+filepath.Join(dir, "srv/docker")+`"}`)

	// The kernel names a script's process after the script's file: this
	// one is a dockerd, whose command line gives its data root.
	dockerd := filepath.Join(dir, "bin/dockerd")
	write(dockerd, "#!/bin/sh\nread line\n")
	daemon := exec.Command(dockerd, "--data-root", filepath.Join(dir, "data"))
	if _, err := daemon.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		daemon.Process.Kill()
		daemon.Wait()
	})

	fromConfig, fromConfigIno := testenv.UnshareNet(t)
	configID := testenv.ContainerID(t)
	testenv.InCgroup(t, fromConfig.Process.Pid, "system.slice/docker-"+configID+".scope")
	write(filepath.Join(dir, "srv/docker/containers", configID, "config.v2.json"), `{"Name": "/web-1"}`)
	fromCmdline, fromCmdlineIno := testenv.UnshareNet(t)
	cmdlineID := testenv.ContainerID(t)
	testenv.InCgroup(t, fromCmdline.Process.Pid, "system.slice/docker-"+cmdlineID+".scope")
	write(filepath.Join(dir, "data/containers", cmdlineID, "config.v2.json"), `{"Name": "/api-1"}`)

	nss, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	owners := netns.NewNamer(places).Owners(nss)
	for _, tc := range []struct {
		name  string
		inode uint32
		want  decode.Owner
	}{
		{"daemon.json's data root", fromConfigIno, decode.Owner{Kind: "docker", ID: configID, Name: "web-1", Pid: fromConfig.Process.Pid, Comm: "sleep"}},
		{"dockerd's data root", fromCmdlineIno, decode.Owner{Kind: "docker", ID: cmdlineID, Name: "api-1", Pid: fromCmdline.Process.Pid, Comm: "sleep"}},
	} {
		if got := owners[tc.inode]; got != tc.want {
			t.Errorf("%s, net:[%d]: owner %+v, want %+v", tc.name, tc.inode, got, tc.want)
		}
	}
}
