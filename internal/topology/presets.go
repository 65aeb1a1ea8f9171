package topology

import (
	"errors"
	"fmt"
	"net/netip"
)

// Presets take an IPv4 and an IPv6 network; a zero netip.Prefix leaves that family out.
// Within a network the "host" or gateway side gets the first address (.1, ::1) and the
// other side the second (.2, ::2), with the network's prefix length.

// VethPairNet is the root namespace joined to one namespace by a veth pair.
type VethPairNet struct {
	Root     *Netns // the caller's namespace (Topology.Root)
	Netns    *Netns // named after the prefix given to VethPair
	HostLink string // veth end in Root: "<prefix>h"
	PeerLink string // veth end in Netns: "eth0"

	Host4, Host6 netip.Prefix // on HostLink
	Peer4, Peer6 netip.Prefix // on PeerLink

	// Ping Target4 and Target6 (PeerLink's addresses) from inside Source (Root).
	Source           *Netns
	Target4, Target6 netip.Addr
}

// VethPair joins the root namespace to a new namespace called prefix over a veth pair:
// "<prefix>h" in the root namespace, "eth0" in the new one.
func (t *Topology) VethPair(prefix string, v4, v6 netip.Prefix) (*VethPairNet, error) {
	host4, peer4, err := pair(v4)
	if err != nil {
		return nil, fmt.Errorf("veth pair %s: %w", prefix, err)
	}
	host6, peer6, err := pair(v6)
	if err != nil {
		return nil, fmt.Errorf("veth pair %s: %w", prefix, err)
	}
	root, err := t.Root()
	if err != nil {
		return nil, err
	}
	n := &VethPairNet{
		Root: root, HostLink: prefix + "h", PeerLink: "eth0",
		Host4: host4, Host6: host6, Peer4: peer4, Peer6: peer6,
		Source: root, Target4: peer4.Addr(), Target6: peer6.Addr(),
	}
	if n.Netns, err = t.Netns(prefix); err != nil {
		return nil, err
	}
	if err := t.Veth(n.HostLink, root, n.PeerLink, n.Netns); err != nil {
		return nil, err
	}
	for _, a := range []struct {
		link string
		ns   *Netns
		p    netip.Prefix
	}{{n.HostLink, root, host4}, {n.HostLink, root, host6}, {n.PeerLink, n.Netns, peer4}, {n.PeerLink, n.Netns, peer6}} {
		if a.p.IsValid() {
			if err := t.AddAddr(a.link, a.ns, a.p); err != nil {
				return nil, err
			}
		}
	}
	return n, nil
}

// DockerBridgeConfig describes a docker-like network: a bridge in the root namespace holding
// the gateway addresses, and a container namespace joined to it by a veth pair.
type DockerBridgeConfig struct {
	Bridge   string       // bridge in the root namespace
	HostVeth string       // veth end in the root namespace, a port of Bridge
	Netns    string       // container namespace; its veth end is "eth0"
	V4, V6   netip.Prefix // networks: the bridge gets .1 / ::1, eth0 .2 / ::2
	Alias    string       // if not empty, the alias (IFLA_IFALIAS) of Bridge and HostVeth
}

// DockerBridgeNet is the network DockerBridge built.
type DockerBridgeNet struct {
	Root          *Netns
	Container     *Netns
	Bridge        string // in Root
	HostVeth      string // in Root, port of Bridge
	ContainerLink string // "eth0" in Container

	Gateway4, Gateway6     netip.Prefix // on Bridge; the container's default routes
	Container4, Container6 netip.Prefix // on ContainerLink

	// Ping Target4 and Target6 (ContainerLink's addresses) from inside Source (Root).
	Source           *Netns
	Target4, Target6 netip.Addr
}

// DockerBridge builds cfg. The bridge is created, and given its alias, first, so that a
// process killed half-way leaves something SweepDemo recognises.
func (t *Topology) DockerBridge(cfg DockerBridgeConfig) (*DockerBridgeNet, error) {
	gw4, c4, err := pair(cfg.V4)
	if err != nil {
		return nil, fmt.Errorf("docker bridge %s: %w", cfg.Bridge, err)
	}
	gw6, c6, err := pair(cfg.V6)
	if err != nil {
		return nil, fmt.Errorf("docker bridge %s: %w", cfg.Bridge, err)
	}
	root, err := t.Root()
	if err != nil {
		return nil, err
	}
	n := &DockerBridgeNet{
		Root: root, Bridge: cfg.Bridge, HostVeth: cfg.HostVeth, ContainerLink: "eth0",
		Gateway4: gw4, Gateway6: gw6, Container4: c4, Container6: c6,
		Source: root, Target4: c4.Addr(), Target6: c6.Addr(),
	}
	if err := t.Bridge(cfg.Bridge, root); err != nil {
		return nil, err
	}
	if cfg.Alias != "" {
		if err := t.SetAlias(cfg.Bridge, root, cfg.Alias); err != nil {
			return nil, err
		}
	}
	if n.Container, err = t.Netns(cfg.Netns); err != nil {
		return nil, err
	}
	if err := t.Veth(cfg.HostVeth, root, n.ContainerLink, n.Container); err != nil {
		return nil, err
	}
	if cfg.Alias != "" {
		if err := t.SetAlias(cfg.HostVeth, root, cfg.Alias); err != nil {
			return nil, err
		}
	}
	if err := t.SetMaster(cfg.HostVeth, root, cfg.Bridge); err != nil {
		return nil, err
	}
	for _, gc := range [][2]netip.Prefix{{gw4, c4}, {gw6, c6}} {
		gw, c := gc[0], gc[1]
		if !gw.IsValid() {
			continue
		}
		if err := t.AddAddr(cfg.Bridge, root, gw); err != nil {
			return nil, err
		}
		if err := t.AddAddr(n.ContainerLink, n.Container, c); err != nil {
			return nil, err
		}
		if err := t.AddRoute(n.Container, defaultRoute(gw), gw.Addr()); err != nil {
			return nil, err
		}
	}
	return n, nil
}

// RouterNet is namespace A joined to namespace B through router namespace R.
type RouterNet struct {
	A, R, B *Netns // named "<prefix>-a", "<prefix>-r", "<prefix>-b"
	ALink   string // "eth0" in A, peer of RLinkA
	RLinkA  string // "eth0" in R, facing A
	RLinkB  string // "eth1" in R, facing B
	BLink   string // "eth0" in B, peer of RLinkB

	A4, A6   netip.Prefix // on ALink; A's default routes go via RA4/RA6
	RA4, RA6 netip.Prefix // on RLinkA
	RB4, RB6 netip.Prefix // on RLinkB
	B4, B6   netip.Prefix // on BLink; B's default routes go via RB4/RB6

	// Ping Target4 and Target6 (BLink's addresses) from inside Source (A).
	Source           *Netns
	Target4, Target6 netip.Addr
}

// Router builds A —veth— R —veth— B with forwarding on in R and default routes in A and B
// via R. Each network given is split in two halves: the first for the A side (R gets the
// first address, A the second), the second for the B side (R first, B second).
func (t *Topology) Router(prefix string, v4, v6 netip.Prefix) (*RouterNet, error) {
	n := &RouterNet{ALink: "eth0", RLinkA: "eth0", RLinkB: "eth1", BLink: "eth0"}
	var err error
	for _, f := range []struct {
		net          netip.Prefix
		ra, a, rb, b *netip.Prefix
	}{{v4, &n.RA4, &n.A4, &n.RB4, &n.B4}, {v6, &n.RA6, &n.A6, &n.RB6, &n.B6}} {
		if !f.net.IsValid() {
			continue
		}
		lo, hi, err := halves(f.net)
		if err != nil {
			return nil, fmt.Errorf("router %s: %w", prefix, err)
		}
		if *f.ra, *f.a, err = pair(lo); err != nil {
			return nil, fmt.Errorf("router %s: %w", prefix, err)
		}
		if *f.rb, *f.b, err = pair(hi); err != nil {
			return nil, fmt.Errorf("router %s: %w", prefix, err)
		}
	}
	if n.A, err = t.Netns(prefix + "-a"); err != nil {
		return nil, err
	}
	if n.R, err = t.Netns(prefix + "-r"); err != nil {
		return nil, err
	}
	if n.B, err = t.Netns(prefix + "-b"); err != nil {
		return nil, err
	}
	n.Source, n.Target4, n.Target6 = n.A, n.B4.Addr(), n.B6.Addr()
	if err := n.R.Forwarding(true); err != nil {
		return nil, err
	}
	if err := t.Veth(n.ALink, n.A, n.RLinkA, n.R); err != nil {
		return nil, err
	}
	if err := t.Veth(n.RLinkB, n.R, n.BLink, n.B); err != nil {
		return nil, err
	}
	for _, side := range []struct {
		ns         *Netns
		link, rlnk string
		p, r       netip.Prefix
	}{
		{n.A, n.ALink, n.RLinkA, n.A4, n.RA4}, {n.A, n.ALink, n.RLinkA, n.A6, n.RA6},
		{n.B, n.BLink, n.RLinkB, n.B4, n.RB4}, {n.B, n.BLink, n.RLinkB, n.B6, n.RB6},
	} {
		if !side.p.IsValid() {
			continue
		}
		if err := t.AddAddr(side.rlnk, n.R, side.r); err != nil {
			return nil, err
		}
		if err := t.AddAddr(side.link, side.ns, side.p); err != nil {
			return nil, err
		}
		if err := t.AddRoute(side.ns, defaultRoute(side.p), side.r.Addr()); err != nil {
			return nil, err
		}
	}
	return n, nil
}

func defaultRoute(p netip.Prefix) netip.Prefix {
	if p.Addr().Is4() {
		return netip.PrefixFrom(netip.IPv4Unspecified(), 0)
	}
	return netip.PrefixFrom(netip.IPv6Unspecified(), 0)
}

// pair returns the first and second address of network, with its prefix length; zero
// prefixes for a zero network.
func pair(network netip.Prefix) (first, second netip.Prefix, err error) {
	if !network.IsValid() {
		return netip.Prefix{}, netip.Prefix{}, nil
	}
	if network.Addr().BitLen()-network.Bits() < 2 {
		return netip.Prefix{}, netip.Prefix{}, fmt.Errorf("network %v too small for two hosts", network)
	}
	base := network.Masked().Addr()
	first = netip.PrefixFrom(base.Next(), network.Bits())
	second = netip.PrefixFrom(base.Next().Next(), network.Bits())
	return first, second, nil
}

// halves splits network into its two halves.
func halves(network netip.Prefix) (lo, hi netip.Prefix, err error) {
	bits := network.Bits()
	if network.Addr().BitLen()-bits < 3 {
		return netip.Prefix{}, netip.Prefix{}, errors.New("network " + network.String() + " too small to split")
	}
	b := network.Masked().Addr().AsSlice()
	lo = netip.PrefixFrom(network.Masked().Addr(), bits+1)
	b[bits/8] |= 0x80 >> (bits % 8)
	a, _ := netip.AddrFromSlice(b)
	return lo, netip.PrefixFrom(a, bits+1), nil
}
