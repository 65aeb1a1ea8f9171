package main

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// refuseNonUnicast refuses, before anything is sent, a target that is not
// one host: an echo to a multicast or broadcast address would be answered
// by many hosts, or leave the machine for a whole network; an IPv6
// link-local address without a zone is on every link, and would leave by
// whichever interface the routes list first.
func refuseNonUnicast(a netip.Addr) error {
	switch {
	case a.Is6() && a.IsLinkLocalUnicast() && a.Zone() == "":
		// The message says what to give: no usage hint under it.
		return fmt.Errorf("%s is link-local: say which interface it is on, as in %s%%eth0", a, a)
	case a.IsMulticast():
		return usageError{fmt.Sprintf("%s is a multicast address: tracepkt-perf traces an echo to one host", a)}
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return usageError{fmt.Sprintf("%s is the broadcast address: tracepkt-perf traces an echo to one host", a)}
	case a.IsUnspecified():
		return usageError{fmt.Sprintf("%s is the unspecified address, not a host", a)}
	}
	// A subnet's broadcast address is only known from the routes: the
	// kernel's answer for it has type broadcast.
	routes, err := netlink.RouteGet(a.AsSlice())
	if err == nil && len(routes) > 0 && routes[0].Type == unix.RTN_BROADCAST {
		return usageError{fmt.Sprintf("%s is a broadcast address here: tracepkt-perf traces an echo to one host", a)}
	}
	return nil
}
