package netns_test

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// TestSnapshot builds a veth pair and checks that the snapshot names its
// namespace and the host's, lists a process living in it, and describes
// both ends, each with the namespace of its peer.
func TestSnapshot(t *testing.T) {
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	n, err := topo.VethPair(topology.UniqueName("ts"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	sleeper := testenv.StartInNetns(t, n.Netns.Name, "sleep", "30")
	nss, err := netns.List()
	if err != nil {
		t.Fatal(err)
	}
	s, err := netns.Snapshot(nss, netns.NewNamer(netns.DefaultPlaces).Owners(nss), true)
	if err != nil {
		t.Fatal(err)
	}
	peerIno := uint32(testenv.NetnsInodeOfPid(t, sleeper.Process.Pid))
	rootIno := uint32(testenv.NetnsInodeOfPid(t, os.Getpid()))
	var sawPeer, sawRoot bool
	for _, ns := range s.Namespaces {
		switch ns.Inode {
		case peerIno:
			sawPeer = true
			if !slices.Equal(ns.Names, []string{n.Netns.Name}) || !slices.Contains(ns.Pids, sleeper.Process.Pid) {
				t.Errorf("peer namespace: names %v pids %v, want %s and pid %d", ns.Names, ns.Pids, n.Netns.Name, sleeper.Process.Pid)
			}
			eth0 := find(t, ns.Interfaces, "eth0")
			if eth0.Kind != "veth" || !slices.Contains(eth0.Addrs, n.Peer4) || !slices.Contains(eth0.Addrs, n.Peer6) || eth0.PeerIfindex == 0 {
				t.Errorf("eth0 = %+v, want a veth with %v and %v and a peer", eth0, n.Peer4, n.Peer6)
			}
			if eth0.PeerNetns != rootIno {
				t.Errorf("eth0's peer is in net:[%d], want net:[%d]", eth0.PeerNetns, rootIno)
			}
			want := decode.Owner{Kind: "netns", ID: "/run/netns/" + n.Netns.Name, Name: n.Netns.Name, Pid: sleeper.Process.Pid, Comm: "sleep"}
			if ns.Owner != want {
				t.Errorf("peer namespace's owner %+v, want %+v", ns.Owner, want)
			}
			if lo := find(t, ns.Interfaces, "lo"); lo.Kind != "loopback" || !slices.Contains(lo.Addrs, netip.MustParsePrefix("127.0.0.1/8")) {
				t.Errorf("lo = %+v", lo)
			}
		case rootIno:
			sawRoot = true
			host := find(t, ns.Interfaces, n.HostLink)
			if host.Kind != "veth" || !slices.Contains(host.Addrs, n.Host4) {
				t.Errorf("%s = %+v", n.HostLink, host)
			}
			if host.PeerNetns != peerIno {
				t.Errorf("%s's peer is in net:[%d], want net:[%d]", n.HostLink, host.PeerNetns, peerIno)
			}
			if ns.Owner.Name != "host" || ns.Owner.Pid != 1 {
				t.Errorf("this namespace's owner %+v, want host", ns.Owner)
			}
		}
	}
	if !sawPeer || !sawRoot {
		t.Errorf("snapshot misses a namespace: peer %v root %v", sawPeer, sawRoot)
	}
}

func find(t *testing.T, ifaces []decode.Interface, name string) decode.Interface {
	t.Helper()
	for _, i := range ifaces {
		if i.Name == name {
			return i
		}
	}
	t.Fatalf("no interface %s in %+v", name, ifaces)
	return decode.Interface{}
}
