package topology

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// guardMetric puts a guard route behind the routes of the links themselves
// (metric 0 for IPv4, 256 for IPv6), so it only decides once they are gone.
const guardMetric = 4000

type guardRoute struct {
	ns  *Netns
	dst netip.Prefix
}

// Guard installs an unreachable route for p in ns, with a high metric, until
// Close. A test that removes a link while something may still send to p
// installs it first: traffic to p then fails with "unreachable" instead of
// following the default route out of the machine.
func (t *Topology) Guard(ns *Netns, p netip.Prefix) error {
	if err := t.check(ns); err != nil {
		return err
	}
	p = p.Masked()
	if !p.IsValid() || p.Bits() == 0 {
		return fmt.Errorf("guard %v: want a network, not the default route", p)
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("guard %v: %w", p, err)
	}
	defer h.Close()
	if err := h.RouteAdd(guardOf(p)); err != nil {
		return fmt.Errorf("guard %v in %v: add unreachable route: %w", p, ns, err)
	}
	t.mu.Lock()
	t.guards = append(t.guards, guardRoute{ns, p})
	t.mu.Unlock()
	return nil
}

func guardOf(p netip.Prefix) *netlink.Route {
	family := netlink.FAMILY_V4
	if p.Addr().Is6() {
		family = netlink.FAMILY_V6
	}
	return &netlink.Route{Dst: ipNet(p), Type: unix.RTN_UNREACHABLE, Priority: guardMetric, Family: family}
}

// removeGuard deletes a guard route, unless its namespace took it along.
func removeGuard(g guardRoute) error {
	h, err := g.ns.handle()
	if err != nil {
		return nil // the namespace is gone, and the route with it
	}
	defer h.Close()
	if err := h.RouteDel(guardOf(g.dst)); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("remove guard route %v in %v: %w", g.dst, g.ns, err)
	}
	return nil
}

// DeleteLink deletes a link t created, while t is in use: a fault to trace.
// It refuses unless a Guard is in place, so that nothing sent afterwards
// can leave the machine through another route.
func (t *Topology) DeleteLink(ns *Netns, name string) error {
	if err := t.check(ns); err != nil {
		return err
	}
	t.mu.Lock()
	guarded := len(t.guards) > 0
	t.mu.Unlock()
	if !guarded {
		return fmt.Errorf("delete link %s in %v: install a Guard for the test's networks first", name, ns)
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("delete link %s: %w", name, err)
	}
	defer h.Close()
	link, err := t.ownedLinkByName(h, ns, name)
	if err != nil {
		return err
	}
	if err := h.LinkDel(link); err != nil {
		return fmt.Errorf("delete link %s in %v: %w", name, ns, err)
	}
	return nil
}
