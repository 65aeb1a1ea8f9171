package main

import (
	"strconv"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// renderContext is what rendering needs beyond a journey: the names and
// owners of namespaces and the notes of the run, from a live run or a
// recording alike.
type renderContext struct {
	names     map[uint32]string
	owners    map[uint32]decode.Owner
	ifnames   map[ifaceKey]string // from the snapshot, or looked up
	netfilter nfSources
	notes     []string
	// lookupIf names an interface in the running system; live runs that
	// do not record set it (a recording's snapshot holds the interfaces).
	lookupIf func(netns, ifindex uint32) string
	// listen: the journeys are a listener's fragments (--listen).
	listen bool
	// hosts name the machine of each namespace of a merge (--merge),
	// whose numbers for another machine's namespaces are its own: inodes
	// has the namespace's inode on its machine.
	hosts  map[uint32]string
	inodes map[uint32]uint32
}

type ifaceKey struct{ netns, ifindex uint32 }

func newRenderContext(caps []string) *renderContext {
	c := parseCaps(caps)
	return &renderContext{names: map[uint32]string{}, owners: map[uint32]decode.Owner{}, ifnames: map[ifaceKey]string{},
		netfilter: c.netfilter, notes: c.notes(), listen: c.listen}
}

// setSnapshot learns the names in s: each namespace's owner's or, in
// recordings made before owners were recorded, its first bind mount name.
func (rc *renderContext) setSnapshot(s *decode.Snapshot) {
	for _, ns := range s.Namespaces {
		if ns.Owner.Kind != "" {
			rc.owners[ns.Inode] = ns.Owner
		}
		switch {
		case ns.Owner.Name != "":
			rc.names[ns.Inode] = ns.Owner.Name
		case len(ns.Names) > 0:
			rc.names[ns.Inode] = ns.Names[0]
		}
		for _, ifc := range ns.Interfaces {
			rc.ifnames[ifaceKey{ns.Inode, ifc.Ifindex}] = ifc.Name
		}
	}
}

// ifName names the interface of a netfilter row: after a hop that crossed
// it, else from the snapshot (or the running system), else by its index.
func (rc *renderContext) ifName(j *decode.Journey, netns, ifindex uint32) string {
	if ifindex == 0 {
		return ""
	}
	for i := range j.Hops {
		if h := &j.Hops[i]; h.Netns == netns && h.Ifindex == ifindex {
			return h.IfName()
		}
	}
	k := ifaceKey{netns, ifindex}
	name, ok := rc.ifnames[k]
	if !ok && rc.lookupIf != nil {
		name = rc.lookupIf(netns, ifindex)
		rc.ifnames[k] = name
	}
	if name != "" {
		return name
	}
	return "if" + strconv.FormatUint(uint64(ifindex), 10)
}

// netnsCell shows a namespace as people know it, with its inode: "web-1
// (4026533448)"; the inode alone when it has no name.
func (rc *renderContext) netnsCell(inode uint32) string {
	s := strconv.FormatUint(uint64(rc.inode(inode)), 10)
	if name := rc.names[inode]; name != "" {
		s = name + " (" + s + ")"
	}
	if host := rc.hosts[inode]; host != "" {
		return host + ": " + s
	}
	return s
}

// setHost says that namespace n of a merge is namespace inode of machine
// host.
func (rc *renderContext) setHost(n, inode uint32, host string) {
	if rc.hosts == nil {
		rc.hosts, rc.inodes = map[uint32]string{}, map[uint32]uint32{}
	}
	rc.hosts[n], rc.inodes[n] = host, inode
}

// inode is namespace n's inode on its machine: n itself but in a merge.
func (rc *renderContext) inode(n uint32) uint32 {
	if i, ok := rc.inodes[n]; ok {
		return i
	}
	return n
}
