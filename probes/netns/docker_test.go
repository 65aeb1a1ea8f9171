package netns

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// writeUnder writes files, by path relative to root, after replacing ROOT in
// their contents with root.
func writeUnder(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		path := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(content, "ROOT", root)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// cmdline is /proc/<pid>/cmdline for args.
func cmdline(args ...string) string { return strings.Join(args, "\x00") + "\x00" }

func TestUnitDockerRoots(t *testing.T) {
	const daemonJSON = "etc/docker/daemon.json"
	dockerd := func(args ...string) map[string]string {
		return map[string]string{"proc/30/comm": "dockerd\n", "proc/30/cmdline": cmdline(append([]string{"/usr/bin/dockerd"}, args...)...)}
	}
	with := func(a, b map[string]string) map[string]string {
		m := map[string]string{}
		for k, v := range a {
			m[k] = v
		}
		for k, v := range b {
			m[k] = v
		}
		return m
	}
	huge := strings.Repeat("x", maxRuntimeFile)
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  []string // before the default root
	}{
		{"nothing configured", nil, nil},
		{"daemon.json data-root", map[string]string{daemonJSON: `{"data-root": "/srv/docker", "debug": true}`}, []string{"/srv/docker"}},
		{"daemon.json graph", map[string]string{daemonJSON: `{"graph": "/srv/old"}`}, []string{"/srv/old"}},
		{"data-root over graph", map[string]string{daemonJSON: `{"graph": "/srv/old", "data-root": "/srv/docker"}`}, []string{"/srv/docker"}},
		{"garbage daemon.json", map[string]string{daemonJSON: `{data-root: /srv/docker`}, nil},
		{"data-root not a string", map[string]string{daemonJSON: `{"data-root": 7}`}, nil},
		{"huge daemon.json", map[string]string{daemonJSON: `{"data-root": "/srv/docker", "pad": "` + huge + `"}`}, nil},
		{"relative data-root", map[string]string{daemonJSON: `{"data-root": "docker"}`}, nil},
		{"--data-root DIR", dockerd("-H", "fd://", "--data-root", "/srv/cmd"), []string{"/srv/cmd"}},
		{"--data-root=DIR", dockerd("--data-root=/srv/cmd/"), []string{"/srv/cmd"}},
		{"-g DIR", dockerd("-g", "/srv/cmd"), []string{"/srv/cmd"}},
		{"-gDIR", dockerd("-g/srv/cmd"), []string{"/srv/cmd"}},
		{"--graph=DIR", dockerd("--graph=/srv/cmd"), []string{"/srv/cmd"}},
		{"the last flag wins", dockerd("--data-root", "/srv/a", "--data-root=/srv/b"), []string{"/srv/b"}},
		{"command line over daemon.json", with(dockerd("--data-root", "/srv/cmd"), map[string]string{daemonJSON: `{"data-root": "/srv/docker"}`}),
			[]string{"/srv/cmd", "/srv/docker"}},
		{"--config-file", with(dockerd("--config-file", "ROOT/other.json"), map[string]string{
			"other.json": `{"data-root": "/srv/other"}`, daemonJSON: `{"data-root": "/srv/docker"}`}),
			[]string{"/srv/other", "/srv/docker"}},
		{"--data-root over --config-file", with(dockerd("--config-file=ROOT/other.json", "--data-root", "/srv/cmd"), map[string]string{
			"other.json": `{"data-root": "/srv/other"}`}), []string{"/srv/cmd"}},
		{"two daemons", with(dockerd("--data-root", "/srv/a"), map[string]string{
			"proc/31/comm": "dockerd\n", "proc/31/cmdline": cmdline("dockerd", "-g", "/srv/b")}), []string{"/srv/a", "/srv/b"}},
		{"not dockerd", map[string]string{"proc/30/comm": "sleep\n", "proc/30/cmdline": cmdline("sleep", "--data-root", "/srv/cmd")}, nil},
		{"flag without value", dockerd("--data-root"), nil},
		{"flags ended", dockerd("--", "--data-root", "/srv/cmd"), nil},
		{"value past the bound", dockerd(huge, "--data-root", "/srv/cmd"), nil},
		{"garbage command line", map[string]string{"proc/30/comm": "dockerd\n", "proc/30/cmdline": "\x00\x00--data-root\xff\xfe"}, nil},
		{"empty command line", map[string]string{"proc/30/comm": "dockerd\n", "proc/30/cmdline": ""}, nil},
	} {
		places := fakePlaces(t, nil, nil)
		root := filepath.Dir(places.Proc)
		writeUnder(t, root, tc.files)
		want := append(tc.want, places.DockerRoot)
		if got := dockerRoots(places); !slices.Equal(got, want) {
			t.Errorf("%s: dockerRoots = %q, want %q", tc.name, got, want)
		}
	}
}

// TestUnitDockerNameUnderDataRoot: a container is named from the files
// under its daemon's data root, wherever it is; the running daemon's root
// is read before another holding the same id.
func TestUnitDockerNameUnderDataRoot(t *testing.T) {
	places := fakePlaces(t, []fakeProc{
		{"10", "nginx", "0::/system.slice/docker-" + idA + ".scope\n"},
		{"11", "sleep", "0::/docker/" + idB + "\n"},
		{"12", "sleep", "0::/docker/" + idC + "\n"},
	}, nil)
	writeUnder(t, filepath.Dir(places.Proc), map[string]string{
		"etc/docker/daemon.json":                               `{"data-root": "ROOT/srv/docker"}`,
		"srv/docker/containers/" + idA + "/config.v2.json":     `{"Name": "/web-1"}`,
		"proc/30/comm":                                         "dockerd\n",
		"proc/30/cmdline":                                      cmdline("/usr/bin/dockerd", "--data-root", "ROOT/data/docker"),
		"data/docker/containers/" + idB + "/config.v2.json":    `{"Name": "/api-1"}`,
		"var/lib/docker/containers/" + idB + "/config.v2.json": `{"Name": "/api-stale"}`,
		"var/lib/docker/containers/" + idC + "/config.v2.json": `{"Name": "/old-1"}`,
	})
	n := NewNamer(places)
	for _, tc := range []struct {
		name string
		ns   Netns
		want decode.Owner
	}{
		{"daemon.json's root", Netns{Inode: 2, Pids: []int{10}}, decode.Owner{Kind: decode.OwnerDocker, ID: idA, Name: "web-1", Pid: 10, Comm: "nginx"}},
		{"dockerd's root", Netns{Inode: 3, Pids: []int{11}}, decode.Owner{Kind: decode.OwnerDocker, ID: idB, Name: "api-1", Pid: 11, Comm: "sleep"}},
		{"the default root", Netns{Inode: 4, Pids: []int{12}}, decode.Owner{Kind: decode.OwnerDocker, ID: idC, Name: "old-1", Pid: 12, Comm: "sleep"}},
	} {
		if got := n.Owner(tc.ns); got != tc.want {
			t.Errorf("%s: Owner = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
