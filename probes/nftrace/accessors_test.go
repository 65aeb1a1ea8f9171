package nftrace

import "github.com/tracepkt/tracepkt-perf/probes/netns"

// What the tests check of a Tracer beyond its events.

// Table returns the name of the helper table.
func (t *Tracer) Table() string { return t.table }

// Netns returns the namespaces the tracer listens in.
func (t *Tracer) Netns() []netns.Netns {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]netns.Netns, len(t.nss))
	for i, st := range t.nss {
		out[i] = st.ns
	}
	return out
}

// Owned reports whether the kernel ties every helper table to the socket that made it
// (NFT_TABLE_F_OWNER, Linux 5.12): then even a SIGKILL leaves no table behind. Otherwise
// only Close, or a later Sweep, removes them.
func (t *Tracer) Owned() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, st := range t.nss {
		if !st.owned {
			return false
		}
	}
	return true
}
