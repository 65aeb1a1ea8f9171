// Package topology builds throwaway network namespaces, veth pairs, bridges, addresses and
// routes over netlink, removes all of it on Close, and checks that a target is reached only
// through links it created before anything is sent there.
package topology
