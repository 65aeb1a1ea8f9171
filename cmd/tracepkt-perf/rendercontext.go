package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// renderContext is what rendering needs beyond a journey: the names of
// namespaces and the notes of the run, from a live run or a recording alike.
type renderContext struct {
	names     map[uint32]string
	netfilter string
	notes     []string
}

func newRenderContext(caps []string) *renderContext {
	rc := &renderContext{names: map[uint32]string{}}
	noKprobes := false
	var legacy string
	for _, c := range caps {
		switch {
		case strings.HasPrefix(c, capNetfilter):
			rc.netfilter = strings.TrimPrefix(c, capNetfilter)
		case c == capNoKprobes:
			noKprobes = true
		case strings.HasPrefix(c, capLegacyTables):
			legacy = strings.TrimPrefix(c, capLegacyTables)
		}
	}
	if legacy != "" && !strings.Contains(rc.netfilter, "kprobe") && rc.netfilter != "off" {
		why := "nftables tracing cannot see them"
		if noKprobes {
			why += ", and this kernel has no kprobes"
		}
		rc.notes = append(rc.notes, fmt.Sprintf("netfilter: iptables-legacy rules (tables %s) are not shown: %s", legacy, why))
	}
	if rc.netfilter == "kprobe" {
		rc.notes = append(rc.notes, "netfilter: kprobes show each table's or chain's verdict; --netfilter nftrace (or auto) shows the nftables rule that decided")
	}
	return rc
}

func (rc *renderContext) setSnapshot(s *decode.Snapshot) {
	for _, ns := range s.Namespaces {
		if len(ns.Names) > 0 {
			rc.names[ns.Inode] = ns.Names[0]
		}
	}
}

// netnsCell is the NETWORK NS column: the inode, and the name when known.
func (rc *renderContext) netnsCell(inode uint32) string {
	s := strconv.FormatUint(uint64(inode), 10)
	if name := rc.names[inode]; name != "" {
		s += " (" + name + ")"
	}
	return s
}
