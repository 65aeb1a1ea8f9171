// Package netns finds the network namespaces the tool can reach, names them
// after their owners (host, container, pod, ip netns name, process), runs code
// inside them, and describes them (interfaces, veth peers) for a run's snapshot.
package netns
