package main

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// chainTarget builds a line of routers, this namespace - r1 - r2 - ... -
// target, over veth pairs, in one IPv4 /24 split into /30s: a long path, so
// that one echo makes many records on one CPU. It returns the target
// address, route-checked.
func chainTarget(prefix string, routers int) (target netip.Addr, closeFn func() error, err error) {
	topo := topology.New()
	defer func() {
		if err != nil {
			err = errors.Join(err, topo.Close())
		}
	}()
	v4, _ := topology.TestNets()
	if 4*(routers+1) > 256 {
		return netip.Addr{}, nil, fmt.Errorf("%d routers do not fit in a /24 of /30s", routers)
	}
	base := v4.Addr().As4()
	addr := func(link, host int) netip.Prefix {
		a := base
		a[3] = byte(4*link + host)
		return netip.PrefixFrom(netip.AddrFrom4(a), 30)
	}
	root, err := topo.Root()
	if err != nil {
		return netip.Addr{}, nil, err
	}
	prefix = topology.UniqueName(prefix)
	prev, prevLink := root, prefix+"h"
	for i := 0; i <= routers; i++ {
		ns, err := topo.Netns(fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			return netip.Addr{}, nil, err
		}
		if err := topo.Veth(prevLink, prev, "eth0", ns); err != nil {
			return netip.Addr{}, nil, err
		}
		if err := topo.AddAddr(prevLink, prev, addr(i, 1)); err != nil {
			return netip.Addr{}, nil, err
		}
		if err := topo.AddAddr("eth0", ns, addr(i, 2)); err != nil {
			return netip.Addr{}, nil, err
		}
		// Everything goes back towards this namespace, but the target's /30 onwards.
		if err := topo.AddRoute(ns, netip.MustParsePrefix("0.0.0.0/0"), addr(i, 1).Addr()); err != nil {
			return netip.Addr{}, nil, err
		}
		if i < routers {
			if err := topo.AddRoute(prev, addr(routers, 0).Masked(), addr(i, 2).Addr()); err != nil {
				return netip.Addr{}, nil, err
			}
			if err := ns.Forwarding(true); err != nil {
				return netip.Addr{}, nil, err
			}
		}
		prev, prevLink = ns, "eth1"
	}
	target = addr(routers, 2).Addr()
	if err := topo.CheckOwnRoute(root, target); err != nil {
		return netip.Addr{}, nil, fmt.Errorf("refusing to send: %w", err)
	}
	return target, topo.Close, nil
}
