package topology

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// DemoFailuresNet is what the demo adds beside its container so that two of
// its echoes fail on purpose, each for a reason the tool explains.
type DemoFailuresNet struct {
	// Firewall is a namespace on the bridge whose own nftables table drops
	// echo requests on input: a rule-level drop.
	Firewall             *Netns
	Firewall4, Firewall6 netip.Addr
	// Router is a namespace on the bridge that forwards but has no route to
	// Far4/Far6, which the root namespace routes through it: the addresses
	// of Far, a namespace behind it.
	Router           *Netns
	Router4, Router6 netip.Addr
	Far              *Netns
	Far4, Far6       netip.Addr
}

// Suffixes of the demo's namespaces beside the container "<bridge>-<pid>".
const (
	demoFirewallSuffix = "-fw"
	demoRouterSuffix   = "-r"
	demoFarSuffix      = "-far"
)

// DemoFailures adds to n, built from cfg: the firewall namespace (.3, ::3
// on the bridge, veth "<bridge>f"), and the router namespace (.4, ::4,
// veth "<bridge>r") with Far behind it on networks next to cfg's, which
// the root namespace routes via the router. Every rule lives in the demo's
// own namespaces; links carry cfg's alias, so SweepDemo finds them.
func (t *Topology) DemoFailures(n *DockerBridgeNet, cfg DockerBridgeConfig) (*DemoFailuresNet, error) {
	f := &DemoFailuresNet{}
	var err error
	if f.Firewall, err = t.bridgePort(n, cfg, cfg.Netns+demoFirewallSuffix, cfg.Bridge+"f", 3, true, &f.Firewall4, &f.Firewall6); err != nil {
		return nil, err
	}
	if err := dropEchoRequests(f.Firewall); err != nil {
		return nil, err
	}
	// No default route: the router knows the bridge's network and its link
	// to Far, nothing else.
	if f.Router, err = t.bridgePort(n, cfg, cfg.Netns+demoRouterSuffix, cfg.Bridge+"r", 4, false, &f.Router4, &f.Router6); err != nil {
		return nil, err
	}
	if err := f.Router.Forwarding(true); err != nil {
		return nil, err
	}
	if f.Far, err = t.Netns(cfg.Netns + demoFarSuffix); err != nil {
		return nil, err
	}
	if err := t.Veth("eth1", f.Router, "eth0", f.Far); err != nil {
		return nil, err
	}
	for _, fam := range []struct {
		net    netip.Prefix
		router netip.Addr
		far    *netip.Addr
	}{{cfg.V4, f.Router4, &f.Far4}, {cfg.V6, f.Router6, &f.Far6}} {
		if !fam.net.IsValid() {
			continue
		}
		// The far network and the router-far link are the two networks
		// after the demo's: the router has an address on the link only.
		farNet, err := nextNetwork(fam.net)
		if err != nil {
			return nil, err
		}
		linkNet, err := nextNetwork(farNet)
		if err != nil {
			return nil, err
		}
		_, far, _ := pair(farNet)
		rLink, farLink, _ := pair(linkNet)
		*fam.far = far.Addr()
		for _, a := range []struct {
			ns   *Netns
			link string
			p    netip.Prefix
		}{{f.Router, "eth1", rLink}, {f.Far, "eth0", far}, {f.Far, "eth0", farLink}} {
			if err := t.AddAddr(a.link, a.ns, a.p); err != nil {
				return nil, err
			}
		}
		if err := t.AddRoute(n.Root, farNet, fam.router); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// bridgePort adds namespace name behind a veth port hostVeth of n's bridge,
// with address host (3 for .3 and ::3) of cfg's networks and, when
// withDefault, default routes via the bridge.
func (t *Topology) bridgePort(n *DockerBridgeNet, cfg DockerBridgeConfig, name, hostVeth string, host int, withDefault bool, a4, a6 *netip.Addr) (*Netns, error) {
	ns, err := t.Netns(name)
	if err != nil {
		return nil, err
	}
	if err := t.Veth(hostVeth, n.Root, "eth0", ns); err != nil {
		return nil, err
	}
	if cfg.Alias != "" {
		if err := t.SetAlias(hostVeth, n.Root, cfg.Alias); err != nil {
			return nil, err
		}
	}
	if err := t.SetMaster(hostVeth, n.Root, cfg.Bridge); err != nil {
		return nil, err
	}
	for _, fam := range []struct {
		net, gw netip.Prefix
		addr    *netip.Addr
	}{{cfg.V4, n.Gateway4, a4}, {cfg.V6, n.Gateway6, a6}} {
		if !fam.net.IsValid() {
			continue
		}
		a := fam.net.Masked().Addr()
		for range host {
			a = a.Next()
		}
		*fam.addr = a
		if err := t.AddAddr("eth0", ns, netip.PrefixFrom(a, fam.net.Bits())); err != nil {
			return nil, err
		}
		if !withDefault {
			continue
		}
		if err := t.AddRoute(ns, defaultRoute(fam.gw), fam.gw.Addr()); err != nil {
			return nil, err
		}
	}
	return ns, nil
}

// nextNetwork is the network of the same size right after p.
func nextNetwork(p netip.Prefix) (netip.Prefix, error) {
	b := p.Masked().Addr().AsSlice()
	bit := p.Bits() - 1 // the last bit of the prefix
	for i := bit; i >= 0; i-- {
		mask := byte(0x80 >> (i % 8))
		b[i/8] ^= mask
		if b[i/8]&mask != 0 {
			a, _ := netip.AddrFromSlice(b)
			return netip.PrefixFrom(a, p.Bits()), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("no network after %v", p)
}

// dropEchoRequests gives ns an nftables table "tpdemo" whose input chain
// drops ICMP and ICMPv6 echo requests; the table goes with the namespace.
func dropEchoRequests(ns *Netns) error {
	fd, err := ns.fd()
	if err != nil {
		return err
	}
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return fmt.Errorf("nftables in %v: %w", ns, err)
	}
	table := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "tpdemo"})
	policy := nftables.ChainPolicyAccept
	chain := c.AddChain(&nftables.Chain{Name: "input", Table: table, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	for _, m := range []struct{ proto, typ byte }{{unix.IPPROTO_ICMP, 8}, {unix.IPPROTO_ICMPV6, 128}} {
		c.AddRule(&nftables.Rule{Table: table, Chain: chain, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.proto}},
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{m.typ}},
			&expr.Verdict{Kind: expr.VerdictDrop},
		}})
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("drop echo requests in %v: %w", ns, err)
	}
	return nil
}
