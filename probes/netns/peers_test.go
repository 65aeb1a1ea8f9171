package netns

import (
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
)

func TestUnitLinkVethPeers(t *testing.T) {
	veth := func(index, peer uint32) decode.Interface {
		return decode.Interface{Ifindex: index, Kind: "veth", PeerIfindex: peer}
	}
	s := &decode.Snapshot{Namespaces: []decode.Namespace{
		{Inode: 10, Interfaces: []decode.Interface{
			{Ifindex: 1, Kind: "loopback"},
			veth(40, 2),            // to 20's eth0
			veth(2, 2),             // a guest's root: its first veth is 2, like its peer's in 30
			veth(50, 7),            // to 7 in a namespace not in s
			veth(60, 3),            // ambiguous: 40 and 50 both have 3 -> 60
			veth(8, 9), veth(9, 8), // both ends here
		}},
		{Inode: 20, Interfaces: []decode.Interface{veth(2, 40)}},
		{Inode: 30, Interfaces: []decode.Interface{veth(2, 2)}},
		{Inode: 40, Interfaces: []decode.Interface{veth(3, 60)}},
		{Inode: 50, Interfaces: []decode.Interface{veth(3, 60)}},
	}}
	linkVethPeers(s)
	want := map[[2]uint32]uint32{ // (namespace, ifindex) -> peer's namespace
		{10, 1}: 0, {10, 40}: 20, {10, 2}: 30, {10, 50}: 0, {10, 60}: 0, {10, 8}: 10, {10, 9}: 10,
		{20, 2}: 10, {30, 2}: 10, {40, 3}: 0, {50, 3}: 0, // one of them has its peer elsewhere
	}
	for _, ns := range s.Namespaces {
		for _, ifc := range ns.Interfaces {
			if w := want[[2]uint32{ns.Inode, ifc.Ifindex}]; ifc.PeerNetns != w {
				t.Errorf("net:[%d] ifindex %d: peer in net:[%d], want net:[%d]", ns.Inode, ifc.Ifindex, ifc.PeerNetns, w)
			}
		}
	}
}
