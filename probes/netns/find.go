package netns

import (
	"errors"
	"fmt"
	"github.com/tracepkt/tracepkt-perf/decode"
	"os"
	"slices"
	"strconv"
	"strings"
)

// ErrNotFound says that what Find was given names no network namespace.
var ErrNotFound = errors.New("no such network namespace")

// Find resolves what a user calls a namespace: a path to a namespace file
// (starting with / or ., or any other that names nothing else), a PID, or a name: an ip netns or docker netns name
// from nss, an owner's name or id ("host", "web-1", a pod's "namespace/name"
// or its name alone), or a unique prefix of a container id. owners are those
// of nss, by inode. A namespace found by path or PID that nss does not hold
// is returned as At finds it.
func Find(spec string, nss []Netns, owners map[uint32]decode.Owner) (Netns, error) {
	if spec == "" {
		return Netns{}, fmt.Errorf("%w: empty name", ErrNotFound)
	}
	if strings.HasPrefix(spec, "/") || strings.HasPrefix(spec, ".") {
		return at(spec, nss)
	}
	// A number is a PID when there is such a process; else it may be the
	// short id of a container (12 hex digits are all decimal ones about
	// once in 280).
	pid, err := strconv.Atoi(spec)
	isPid := err == nil && pid > 0
	if _, err := os.Stat("/proc/" + spec); isPid && err == nil {
		return at("/proc/"+spec+"/ns/net", nss)
	}
	var found []int
	add := func(i int) {
		if !slices.Contains(found, i) {
			found = append(found, i)
		}
	}
	// Exact names first; a prefix of a container id only when nothing is called spec.
	for i, ns := range nss {
		o := owners[ns.Inode]
		_, podName, _ := strings.Cut(o.Name, "/")
		if slices.Contains(ns.Names, spec) || o.Name == spec || o.ID == spec || o.Kind == decode.OwnerPod && podName == spec {
			add(i)
		}
	}
	if len(found) == 0 {
		for i, ns := range nss {
			if o := owners[ns.Inode]; isContainerID(o.ID) && strings.HasPrefix(o.ID, spec) {
				add(i)
			}
		}
	}
	switch len(found) {
	case 0:
		if strings.Contains(spec, "/") {
			return at(spec, nss) // a relative path
		}
		if isPid {
			return Netns{}, fmt.Errorf("%w: no process %d, and no container or pod called %q", ErrNotFound, pid, spec)
		}
		return Netns{}, fmt.Errorf("%w called %q: not an ip netns name, a container or pod, a PID or a path", ErrNotFound, spec)
	case 1:
		return nss[found[0]], nil
	}
	var which []string
	for _, i := range found {
		which = append(which, nss[i].String())
	}
	return Netns{}, fmt.Errorf("%q names %d network namespaces (%s): give a longer name, a PID or a path", spec, len(found), strings.Join(which, ", "))
}

// at opens the namespace at path and returns nss's entry for it, which has
// its names, when there is one.
func at(path string, nss []Netns) (Netns, error) {
	n, err := At(path)
	if err != nil {
		return Netns{}, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if i := slices.IndexFunc(nss, func(ns Netns) bool { return ns.Inode == n.Inode }); i >= 0 {
		return nss[i], nil
	}
	return n, nil
}
