package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Snapshot records what a run can see of the machine: the network
// namespaces nss (from List) with their names and owners (from
// Namer.Owners), the processes List saw in them and, with interfaces, their
// interfaces and where each veth's peer lives, so a replay shows the live
// run's names anywhere. Namespaces that vanish while it looks are left out.
func Snapshot(nss []Netns, owners map[uint32]decode.Owner, interfaces bool) (*decode.Snapshot, error) {
	s := &decode.Snapshot{}
	for _, ns := range nss {
		n := decode.Namespace{Inode: ns.Inode, Names: ns.Names, Owner: owners[ns.Inode]}
		for _, pid := range ns.Pids {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm")
			n.Pids = append(n.Pids, pid)
			n.Comms = append(n.Comms, strings.TrimSpace(string(comm)))
		}
		if interfaces {
			ifaces, err := interfacesOf(ns)
			if errors.Is(err, ErrGone) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("snapshot of %v: %w", ns, err)
			}
			n.Interfaces = ifaces
		}
		s.Namespaces = append(s.Namespaces, n)
	}
	linkVethPeers(s)
	return s, nil
}

// linkVethPeers fills PeerNetns of each veth whose peer s holds: the one
// namespace with a veth numbered PeerIfindex whose own peer is that veth.
// Interface numbers are per namespace, so two pairs numbered alike leave
// both unknown rather than guessed; so does a peer in a namespace s does not
// hold.
func linkVethPeers(s *decode.Snapshot) {
	type end struct {
		ifindex, peer uint32
	}
	where := map[end][]uint32{} // veth ends by (ifindex, peer ifindex): their namespaces
	for _, ns := range s.Namespaces {
		for _, ifc := range ns.Interfaces {
			if ifc.Kind == "veth" && ifc.PeerIfindex != 0 {
				k := end{ifc.Ifindex, ifc.PeerIfindex}
				where[k] = append(where[k], ns.Inode)
			}
		}
	}
	for i := range s.Namespaces {
		for j := range s.Namespaces[i].Interfaces {
			ifc := &s.Namespaces[i].Interfaces[j]
			if ifc.Kind != "veth" || ifc.PeerIfindex == 0 {
				continue
			}
			self := s.Namespaces[i].Inode
			peers, mine := where[end{ifc.PeerIfindex, ifc.Ifindex}], where[end{ifc.Ifindex, ifc.PeerIfindex}]
			if ifc.Ifindex == ifc.PeerIfindex {
				// Both ends have the same number (a fresh namespace's first
				// veth, 2 after lo, paired with another's): one list holds
				// both, and the peer is the other namespace in it.
				if len(mine) == 2 && slices.Contains(mine, self) {
					ifc.PeerNetns = mine[0]
					if mine[0] == self {
						ifc.PeerNetns = mine[1]
					}
				}
				continue
			}
			if len(peers) == 1 && len(mine) == 1 {
				ifc.PeerNetns = peers[0]
			}
		}
	}
}

// InterfaceName returns the name of interface ifindex in ns.
func InterfaceName(ns Netns, ifindex uint32) (string, error) {
	f, err := ns.Open()
	if err != nil {
		return "", err
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(f.Fd()))
	if err != nil {
		return "", fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByIndex(int(ifindex))
	if err != nil {
		return "", fmt.Errorf("interface %d in %v: %w", ifindex, ns, err)
	}
	return l.Attrs().Name, nil
}

func interfacesOf(ns Netns) ([]decode.Interface, error) {
	f, err := ns.Open()
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h, err := netlink.NewHandleAt(vnetns.NsHandle(f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	var out []decode.Interface
	for _, l := range links {
		a := l.Attrs()
		iface := decode.Interface{Ifindex: uint32(a.Index), Name: a.Name, Kind: l.Type(), Master: names[a.MasterIndex]}
		if iface.Kind == "device" && a.Flags&net.FlagLoopback != 0 {
			iface.Kind = "loopback"
		}
		if _, ok := l.(*netlink.Veth); ok {
			iface.PeerIfindex = uint32(a.ParentIndex)
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("list addresses of %s: %w", a.Name, err)
		}
		for _, ad := range addrs {
			if ip, ok := netip.AddrFromSlice(ad.IP); ok {
				ones, _ := ad.Mask.Size()
				iface.Addrs = append(iface.Addrs, netip.PrefixFrom(ip.Unmap(), ones))
			}
		}
		out = append(out, iface)
	}
	return out, nil
}
