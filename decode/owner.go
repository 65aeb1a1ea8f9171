package decode

// Owner is who a network namespace belongs to, with the name a person knows
// it by (probes/netns finds it); a Snapshot records it for each namespace.
type Owner struct {
	Kind string // one of the Owner kinds below; "" when nothing is known
	// ID is the container id, the pod UID or, for OwnerNetns, the bind
	// mount's path; empty for a process.
	ID string
	// Name is what the table shows: "host", a container's or pod's name
	// ("web-1", "default/nginx"), an ip netns name, "sleep[1234]".
	Name string
	Pid  int    // a process living in the namespace, 0 if none was seen
	Comm string // its command name
}

// Owner kinds.
const (
	OwnerNetns      = "netns"      // a bind mount: ip netns, CNI, docker's sandbox
	OwnerDocker     = "docker"     // a Docker container
	OwnerContainerd = "containerd" // a containerd container outside Kubernetes (ctr, nerdctl)
	OwnerPodman     = "podman"     // a podman container
	OwnerPod        = "pod"        // a Kubernetes pod
	OwnerProcess    = "process"    // only processes live in it; the host is PID 1's
)

// HostName is the name of the namespace of PID 1.
const HostName = "host"
