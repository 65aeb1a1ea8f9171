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
	netfilter nfSources
	notes     []string
}

func newRenderContext(caps []string) *renderContext {
	c := parseCaps(caps)
	return &renderContext{names: map[uint32]string{}, owners: map[uint32]decode.Owner{}, netfilter: c.netfilter, notes: c.notes()}
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
	}
}

// netnsCell shows a namespace as people know it, with its inode: "web-1
// (4026533448)"; the inode alone when it has no name.
func (rc *renderContext) netnsCell(inode uint32) string {
	s := strconv.FormatUint(uint64(inode), 10)
	if name := rc.names[inode]; name != "" {
		return name + " (" + s + ")"
	}
	return s
}
