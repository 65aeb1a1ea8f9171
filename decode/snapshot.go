package decode

import "net/netip"

// Snapshot is what the run knew of the machine's namespaces, so a replay shows
// the live run's names and never looks them up where it runs.
type Snapshot struct{ Namespaces []Namespace }

// Namespace is one network namespace of a Snapshot.
type Namespace struct {
	Inode      uint32
	Names      []string // e.g. "tpdemo0-1234" from /run/netns, docker ids from /var/run/docker/netns
	Pids       []int    // a few processes living in it
	Comms      []string // their command names
	Interfaces []Interface
	Owner      Owner // who it belongs to; zero in files written before owners were recorded
}

// Interface is one network device of a Namespace.
type Interface struct {
	Ifindex     uint32
	Name        string
	Kind        string // veth, bridge, loopback, ...
	PeerIfindex uint32 // veth peer, 0 if none or unknown
	PeerNetns   uint32
	Master      string // bridge master name, "" if none
	Addrs       []netip.Prefix
}
