package netns

import (
	"github.com/tracepkt/tracepkt-perf/decode"
	"strings"
)

// container is what a process's cgroup path says about the container it
// runs in: the runtime and its container id, and the Kubernetes pod's UID
// when the container belongs to one.
type container struct {
	runtime string // decode.OwnerDocker, decode.OwnerContainerd, decode.OwnerPodman, or "crio"
	id      string
	podUID  string
}

// runtimeCrio is a CRI-O container; outside a pod it has no kind of its own.
const runtimeCrio = "crio"

// Unit prefixes the systemd cgroup driver gives a container's scope:
// <prefix><id>.scope.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"docker-", decode.OwnerDocker},
	{"libpod-", decode.OwnerPodman},
	{"cri-containerd-", decode.OwnerContainerd},
	{"nerdctl-", decode.OwnerContainerd},
	{"crio-", runtimeCrio},
}

// parseCgroup reads the contents of /proc/<pid>/cgroup ("hierarchy:controllers:path"
// lines, one per hierarchy) and finds the container the process runs in from the
// path's shape, for both cgroup drivers:
//
//	docker      /docker/<id>                     /system.slice/docker-<id>.scope
//	podman      /libpod_parent/libpod-<id>       /machine.slice/libpod-<id>.scope
//	containerd  /<namespace>/<id>                /system.slice/nerdctl-<id>.scope
//	pod         /kubepods/burstable/pod<uid>/<id>
//	            /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/cri-containerd-<id>.scope
//
// Podman's conmon (libpod-conmon-<id>.scope) is not in the container. ok is
// false for a process in no container.
func parseCgroup(content string) (c container, ok bool) {
	for line := range strings.Lines(content) {
		_, path, found := strings.Cut(strings.TrimSpace(line), ":")
		if !found {
			continue
		}
		if _, path, found = strings.Cut(path, ":"); !found {
			continue
		}
		if c, ok = containerOfPath(path); ok {
			return c, true
		}
	}
	return container{}, false
}

func containerOfPath(path string) (container, bool) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var c container
	for i, seg := range segs {
		if uid, ok := podUID(seg); ok {
			c.podUID = uid
			continue
		}
		if id, rt, ok := scopeID(seg); ok {
			c.id, c.runtime = id, rt
			continue
		}
		if !isContainerID(seg) || i == 0 {
			continue
		}
		c.id = seg
		switch parent := segs[i-1]; {
		case parent == "docker":
			c.runtime = decode.OwnerDocker
		case strings.HasPrefix(parent, "libpod"):
			c.runtime = decode.OwnerPodman
		case c.podUID != "":
			// Under a pod, the cgroupfs driver names no runtime.
			c.runtime = ""
		default:
			// ctr and nerdctl with the cgroupfs driver: /<containerd namespace>/<id>.
			c.runtime = decode.OwnerContainerd
		}
	}
	if c.id == "" && c.podUID == "" {
		return container{}, false
	}
	return c, true
}

// scopeID recognises a systemd scope (or, for podman's cgroupfs driver, a
// plain cgroup) named after a container: "docker-<id>.scope", "libpod-<id>".
func scopeID(seg string) (id, runtime string, ok bool) {
	if strings.HasPrefix(seg, "libpod-conmon-") {
		return "", "", false
	}
	for _, p := range scopePrefixes {
		rest, found := strings.CutPrefix(seg, p.prefix)
		if !found {
			continue
		}
		rest = strings.TrimSuffix(rest, ".scope")
		if isContainerID(rest) {
			return rest, p.runtime, true
		}
	}
	return "", "", false
}

// podUID recognises a pod's cgroup: "pod<uid>" (cgroupfs) or
// "kubepods-<qos>-pod<uid with _ for ->.slice" (systemd).
func podUID(seg string) (string, bool) {
	if s, ok := strings.CutSuffix(seg, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if !strings.HasPrefix(s, "kubepods") || i < 0 {
			return "", false
		}
		seg = strings.ReplaceAll(s[i+1:], "_", "-")
	}
	uid, ok := strings.CutPrefix(seg, "pod")
	if !ok || !isUUID(uid) {
		return "", false
	}
	return uid, true
}

// isContainerID: 64 lowercase hex digits, as docker, containerd, podman and CRI-O use.
func isContainerID(s string) bool {
	return len(s) == 64 && strings.Trim(s, "0123456789abcdef") == ""
}

// isUUID: 8-4-4-4-12 hex digits, a pod UID.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdef", r) {
				return false
			}
		}
	}
	return true
}
