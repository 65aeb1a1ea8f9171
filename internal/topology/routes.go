package topology

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// AddRoute adds a route to dst via the gateway via in ns; dst 0.0.0.0/0 or ::/0 makes it a
// default route. via must be on-link through a link t created, so the route goes away with
// that link; a default route is only added in a namespace t created.
func (t *Topology) AddRoute(ns *Netns, dst netip.Prefix, via netip.Addr) error {
	if err := t.check(ns); err != nil {
		return err
	}
	via = via.Unmap()
	if !dst.IsValid() || !via.IsValid() || dst.Addr().Is4() != via.Is4() {
		return fmt.Errorf("add route to %v via %v: invalid or mixed address families", dst, via)
	}
	dst = dst.Masked()
	if dst.Bits() == 0 && !t.ownsNetns(ns) {
		return fmt.Errorf("add default route via %v in %v: refusing to change the default route of a namespace this topology did not create", via, ns)
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("add route to %v: %w", dst, err)
	}
	defer h.Close()
	routes, err := h.RouteGet(via.AsSlice())
	if err != nil || len(routes) == 0 {
		return fmt.Errorf("add route to %v via %v in %v: no route to the gateway (%v): %w", dst, via, ns, err, ErrNotOwned)
	}
	r := routes[0]
	if r.Type != unix.RTN_UNICAST || r.Gw != nil || !t.owns(ns, r.LinkIndex) {
		return fmt.Errorf("add route to %v via %v in %v: gateway is not on-link through a link this topology created: %w", dst, via, ns, ErrNotOwned)
	}
	route := &netlink.Route{LinkIndex: r.LinkIndex, Dst: ipNet(dst), Gw: via.AsSlice()}
	if err := h.RouteAdd(route); err != nil {
		return fmt.Errorf("add route to %v via %v in %v: %w", dst, via, ns, err)
	}
	return nil
}

func ipNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// maxHops bounds how many namespaces CheckOwnRoute follows a route through.
const maxHops = 8

// CheckOwnRoute returns nil only if traffic from ns to dst stays on links t created: dst is
// a local address of one of them, or is routed out of one of them, on-link or via a gateway
// that is itself an address of one of them, in which case the route is followed again from
// the gateway's namespace. Otherwise the error (wrapping ErrNotOwnRoute) says where dst
// would go. Nothing is sent.
func (t *Topology) CheckOwnRoute(ns *Netns, dst netip.Addr) error {
	if err := t.check(ns); err != nil {
		return err
	}
	dst = dst.Unmap()
	if !dst.IsValid() {
		return fmt.Errorf("check route: invalid address")
	}
	reject := func(format string, args ...any) error {
		return fmt.Errorf("route from %v to %v: %s: %w", ns, dst, fmt.Sprintf(format, args...), ErrNotOwnRoute)
	}
	var gateways map[netip.Addr]*Netns
	cur := ns
	for hop := 0; hop < maxHops; hop++ {
		h, err := cur.handle()
		if err != nil {
			return err
		}
		step, err := t.routeHop(h, cur, dst)
		h.Close()
		if err != nil {
			return reject("%v", err)
		}
		if !step.gw.IsValid() {
			return nil
		}
		if gateways == nil {
			if gateways, err = t.ownedAddrs(); err != nil {
				return err
			}
		}
		next, ok := gateways[step.gw]
		if !ok {
			return reject("in %v the gateway %v on %s is not an address of this topology", cur, step.gw, step.link)
		}
		cur = next
	}
	return reject("more than %d namespaces on the way", maxHops)
}

type routeHop struct {
	link string     // output link in the namespace looked at
	gw   netip.Addr // next hop when not on-link
}

// routeHop looks dst up in n and fails unless it is a local address of a link t created or
// leaves through one.
func (t *Topology) routeHop(h *netlink.Handle, n *Netns, dst netip.Addr) (routeHop, error) {
	linkName := func(index int) string {
		if l, err := h.LinkByIndex(index); err == nil {
			return l.Attrs().Name
		}
		return fmt.Sprintf("ifindex %d", index)
	}
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil {
		return routeHop{}, fmt.Errorf("in %v: no route: %v", n, err)
	}
	if len(routes) == 0 {
		return routeHop{}, fmt.Errorf("in %v: no route", n)
	}
	r := routes[0]
	switch r.Type {
	case unix.RTN_LOCAL:
		addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
		if err != nil {
			return routeHop{}, fmt.Errorf("in %v: list addresses: %v", n, err)
		}
		for _, a := range addrs {
			if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == dst {
				if t.owns(n, a.LinkIndex) {
					return routeHop{link: linkName(a.LinkIndex)}, nil
				}
				return routeHop{}, fmt.Errorf("in %v it is a local address of %s, which this topology did not create", n, linkName(a.LinkIndex))
			}
		}
		return routeHop{}, fmt.Errorf("in %v it is local (via %s) but not an address of any link this topology created", n, linkName(r.LinkIndex))
	case unix.RTN_UNICAST:
	default:
		return routeHop{}, fmt.Errorf("in %v the route is of type %d, not unicast", n, r.Type)
	}
	if !t.owns(n, r.LinkIndex) {
		gw := ""
		if r.Gw != nil {
			gw = " via gateway " + r.Gw.String()
		}
		return routeHop{}, fmt.Errorf("in %v it is routed out of %s%s, which this topology did not create", n, linkName(r.LinkIndex), gw)
	}
	if r.Via != nil || len(r.MultiPath) > 0 {
		return routeHop{}, fmt.Errorf("in %v the route out of %s has a next hop this check does not follow", n, linkName(r.LinkIndex))
	}
	hop := routeHop{link: linkName(r.LinkIndex)}
	if r.Gw != nil {
		gw, ok := netip.AddrFromSlice(r.Gw)
		if !ok {
			return routeHop{}, fmt.Errorf("in %v: bad gateway %v", n, r.Gw)
		}
		hop.gw = gw.Unmap()
	}
	return hop, nil
}

// ownedAddrs maps every address on a link t created to the namespace holding it.
func (t *Topology) ownedAddrs() (map[netip.Addr]*Netns, error) {
	t.mu.Lock()
	links := append([]ownedLink(nil), t.links...)
	t.mu.Unlock()
	byNs := map[uint64][]ownedLink{}
	for _, l := range links {
		byNs[l.ns.Inode] = append(byNs[l.ns.Inode], l)
	}
	out := map[netip.Addr]*Netns{}
	for _, ls := range byNs {
		n := ls[0].ns
		h, err := n.handle()
		if err != nil {
			return nil, err
		}
		addrs, err := h.AddrList(nil, netlink.FAMILY_ALL)
		h.Close()
		if err != nil {
			return nil, fmt.Errorf("list addresses in %v: %w", n, err)
		}
		for _, a := range addrs {
			for _, l := range ls {
				if a.LinkIndex == l.index {
					if ip, ok := netip.AddrFromSlice(a.IP); ok {
						out[ip.Unmap()] = n
					}
				}
			}
		}
	}
	return out, nil
}
