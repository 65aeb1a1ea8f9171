package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Snapshot records what a run can see of the machine: the network
// namespaces nss (from List) with their names, the processes List saw
// in them and, with interfaces, their interfaces, so a replay shows the live
// run's names anywhere. Namespaces that vanish while it looks are left out.
func Snapshot(nss []Netns, interfaces bool) (*decode.Snapshot, error) {
	s := &decode.Snapshot{}
	for _, ns := range nss {
		n := decode.Namespace{Inode: ns.Inode, Names: ns.Names}
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
	return s, nil
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
