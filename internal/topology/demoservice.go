package topology

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The demo Service's ports: DemoServiceOpen goes to DemoPodPort, where the
// demo listens in the pod; DemoServiceClosed to DemoPodPort+1, where nothing
// listens; DemoServiceRejected is a Service without endpoints, which the
// node rejects with an ICMP port unreachable, as kube-proxy does.
const (
	DemoServiceOpen     = 80
	DemoServiceClosed   = 81
	DemoServiceRejected = 82
	DemoPodPort         = 8080
)

// DemoServiceNet is the demo's service scene: a Service address on no
// interface, which a node namespace translates to a pod behind it with the
// rules kube-proxy's nftables mode writes.
type DemoServiceNet struct {
	// Node is a namespace on the bridge that forwards and holds the
	// tables "kube-proxy" (ip and ip6); Pod is behind it.
	Node         *Netns
	Node4, Node6 netip.Addr
	Pod          *Netns
	Pod4, Pod6   netip.Addr
	// VIP4 and VIP6 are the Service's addresses: the root namespace
	// routes them via the node, the node toward the pod.
	VIP4, VIP6 netip.Addr
}

// Suffixes of the service scene's namespaces.
const (
	demoNodeSuffix = "-node"
	demoPodSuffix  = "-pod"
)

// DemoService adds to n, built from cfg: the node namespace (.5, ::5 on
// the bridge, veth "<bridge>n") and the pod behind it on the third network
// after cfg's (the first two are DemoFailures'); the Service address is the
// tenth address of the fourth. Every rule lives in the node's own
// namespace and goes with it; links carry cfg's alias, so SweepDemo finds
// them.
func (t *Topology) DemoService(n *DockerBridgeNet, cfg DockerBridgeConfig) (*DemoServiceNet, error) {
	s := &DemoServiceNet{}
	var err error
	if s.Node, err = t.bridgePort(n, cfg, cfg.Netns+demoNodeSuffix, cfg.Bridge+"n", 5, false, &s.Node4, &s.Node6); err != nil {
		return nil, err
	}
	if err := s.Node.Forwarding(true); err != nil {
		return nil, err
	}
	if s.Pod, err = t.Netns(cfg.Netns + demoPodSuffix); err != nil {
		return nil, err
	}
	if err := t.Veth("eth1", s.Node, "eth0", s.Pod); err != nil {
		return nil, err
	}
	for _, fam := range []struct {
		net      netip.Prefix
		node     netip.Addr
		pod, vip *netip.Addr
		table    nftables.TableFamily
	}{{cfg.V4, s.Node4, &s.Pod4, &s.VIP4, nftables.TableFamilyIPv4}, {cfg.V6, s.Node6, &s.Pod6, &s.VIP6, nftables.TableFamilyIPv6}} {
		if !fam.net.IsValid() {
			continue
		}
		podNet := fam.net
		for range 3 {
			if podNet, err = nextNetwork(podNet); err != nil {
				return nil, err
			}
		}
		svcNet, err := nextNetwork(podNet)
		if err != nil {
			return nil, err
		}
		nodeLink, pod, _ := pair(podNet)
		*fam.pod = pod.Addr()
		vip := svcNet.Masked().Addr()
		for range 10 {
			vip = vip.Next()
		}
		*fam.vip = vip
		if err := t.AddAddr("eth1", s.Node, nodeLink); err != nil {
			return nil, err
		}
		if err := t.AddAddr("eth0", s.Pod, pod); err != nil {
			return nil, err
		}
		// The node routes the Service network toward the pod, so that a
		// packet it does not translate stays in the topology.
		if err := t.AddRoute(s.Node, svcNet, pod.Addr()); err != nil {
			return nil, err
		}
		if err := t.AddRoute(n.Root, svcNet, fam.node); err != nil {
			return nil, err
		}
		if err := kubeProxyTable(s.Node, fam.table, vip, pod.Addr(), podNet); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// kubeProxyTable gives ns kube-proxy's nftables-mode table for the demo
// Service at vip (cut to what the demo's three ports need; chain and map
// names as kube-proxy writes them): the service-ips map sends port
// DemoServiceOpen and DemoServiceClosed to their service chains, which mark
// traffic from outside the cluster network podNet for masquerade and pick an
// endpoint (numgen, of one); the endpoint chains DNAT to the pod. The
// no-endpoint-services map rejects DemoServiceRejected in forward and output.
func kubeProxyTable(ns *Netns, family nftables.TableFamily, vip, pod netip.Addr, podNet netip.Prefix) error {
	fd, err := ns.fd()
	if err != nil {
		return err
	}
	c, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		return fmt.Errorf("nftables in %v: %w", ns, err)
	}
	k := kubeProxy{c: c, vip: vip}
	k.table = c.AddTable(&nftables.Table{Family: family, Name: "kube-proxy"})
	chain := func(name string) *nftables.Chain {
		return c.AddChain(&nftables.Chain{Name: name, Table: k.table})
	}
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		policy := nftables.ChainPolicyAccept
		return c.AddChain(&nftables.Chain{Name: name, Table: k.table, Type: typ, Hooknum: hook, Priority: prio, Policy: &policy})
	}
	natPre := base("nat-prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	natOut := base("nat-output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	natPost := base("nat-postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	filterFwd := base("filter-forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityRef(-110))
	filterOut := base("filter-output", nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityRef(-110))
	markMasq := chain("mark-for-masquerade")
	masquerading := chain("masquerading")
	services := chain("services")
	endpointsCheck := chain("service-endpoints-check")
	reject := chain("reject-chain")

	type svc struct {
		name, hash string
		port       uint16
		epPort     uint16
	}
	var svcElems []nftables.SetElement
	for _, sv := range []svc{{"web", "DEMOWEB0", DemoServiceOpen, DemoPodPort}, {"closed", "DEMOCLS0", DemoServiceClosed, DemoPodPort + 1}} {
		svcChain := chain(fmt.Sprintf("service-%s-demo/%s/tcp/http", sv.hash, sv.name))
		epChain := chain(fmt.Sprintf("endpoint-%s-demo/%s/tcp/http__%s/%d", sv.hash, sv.name, pod, sv.epPort))
		svcElems = append(svcElems, nftables.SetElement{Key: k.serviceKey(sv.port), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: svcChain.Name}})
		// ip daddr VIP tcp dport PORT ip saddr != podNet jump mark-for-masquerade
		k.rule(svcChain, slices.Concat(k.daddrIs(vip), k.tcpDport(sv.port), k.saddrNotIn(podNet), k.jump(expr.VerdictJump, markMasq)))
		// numgen random mod 1 vmap { 0 : goto endpoint-... }
		pick := &nftables.Set{Table: k.table, Anonymous: true, Constant: true, IsMap: true, KeyType: nftables.TypeInteger, DataType: nftables.TypeVerdict}
		if err := c.AddSet(pick, []nftables.SetElement{{Key: make([]byte, 4), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: epChain.Name}}}); err != nil {
			return fmt.Errorf("kube-proxy table in %v: %w", ns, err)
		}
		k.rule(svcChain, []expr.Any{
			&expr.Numgen{Register: 1, Modulus: 1, Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetID: pick.ID, SetName: pick.Name},
		})
		// ip saddr POD jump mark-for-masquerade: a pod reaching itself.
		k.rule(epChain, slices.Concat(k.saddrIs(pod), k.jump(expr.VerdictJump, markMasq)))
		// meta l4proto tcp dnat to POD:PORT
		natFamily := uint32(unix.NFPROTO_IPV4)
		if pod.Is6() {
			natFamily = unix.NFPROTO_IPV6
		}
		k.rule(epChain, slices.Concat(k.l4protoTCP(), []expr.Any{
			&expr.Immediate{Register: 1, Data: pod.AsSlice()},
			&expr.Immediate{Register: 2, Data: binaryutil.BigEndian.PutUint16(sv.epPort)},
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: natFamily, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
		}))
	}
	serviceIPs, err := k.vmap("service-ips", svcElems)
	if err != nil {
		return fmt.Errorf("kube-proxy table in %v: %w", ns, err)
	}
	noEndpoints, err := k.vmap("no-endpoint-services", []nftables.SetElement{
		{Key: k.serviceKey(DemoServiceRejected), VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: reject.Name}},
	})
	if err != nil {
		return fmt.Errorf("kube-proxy table in %v: %w", ns, err)
	}

	for _, ch := range []*nftables.Chain{natPre, natOut} {
		k.rule(ch, k.jump(expr.VerdictJump, services))
	}
	k.rule(natPost, k.jump(expr.VerdictJump, masquerading))
	for _, ch := range []*nftables.Chain{filterFwd, filterOut} {
		// ct state new jump service-endpoints-check
		k.rule(ch, slices.Concat([]expr.Any{
			&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		}, k.jump(expr.VerdictJump, endpointsCheck)))
	}
	// mark set mark or 0x4000
	k.rule(markMasq, k.setMark(^masqMark, masqMark))
	// mark and 0x4000 == 0 return; mark set mark xor 0x4000; masquerade fully-random
	k.rule(masquerading, []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(masqMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictReturn},
	})
	k.rule(masquerading, k.setMark(^uint32(0), masqMark))
	k.rule(masquerading, []expr.Any{&expr.Masq{FullyRandom: true}})
	k.rule(services, k.lookupService(serviceIPs))
	k.rule(endpointsCheck, k.lookupService(noEndpoints))
	code := uint8(3) // ICMP port unreachable, what `reject` sends in an ip table
	if vip.Is6() {
		code = 4 // ICMPv6 port unreachable
	}
	k.rule(reject, []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: code}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("kube-proxy table in %v: %w", ns, err)
	}
	return nil
}

// masqMark is kube-proxy's masquerade bit.
const masqMark uint32 = 0x4000

// kubeProxy builds the rules of one kube-proxy table.
type kubeProxy struct {
	c     *nftables.Conn
	table *nftables.Table
	vip   netip.Addr
}

func (k kubeProxy) rule(ch *nftables.Chain, exprs []expr.Any) {
	k.c.AddRule(&nftables.Rule{Table: k.table, Chain: ch, Exprs: exprs})
}

// addrOffsets are where the source and destination addresses are in the
// network header, and their length.
func (k kubeProxy) addrOffsets() (saddr, daddr, size uint32) {
	if k.vip.Is6() {
		return 8, 24, 16
	}
	return 12, 16, 4
}

func (k kubeProxy) cmpEq(data []byte) []expr.Any {
	return []expr.Any{&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data}}
}

func (k kubeProxy) daddrIs(a netip.Addr) []expr.Any {
	_, daddr, size := k.addrOffsets()
	return slices.Concat([]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: size}}, k.cmpEq(a.AsSlice()))
}

func (k kubeProxy) saddrIs(a netip.Addr) []expr.Any {
	saddr, _, size := k.addrOffsets()
	return slices.Concat([]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: size}}, k.cmpEq(a.AsSlice()))
}

// saddrNotIn is "saddr != p", p a network.
func (k kubeProxy) saddrNotIn(p netip.Prefix) []expr.Any {
	saddr, _, size := k.addrOffsets()
	mask := make([]byte, size)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: saddr, Len: size},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func (k kubeProxy) l4protoTCP() []expr.Any {
	return slices.Concat([]expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}}, k.cmpEq([]byte{unix.IPPROTO_TCP}))
}

func (k kubeProxy) tcpDport(port uint16) []expr.Any {
	return slices.Concat(k.l4protoTCP(),
		[]expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}},
		k.cmpEq(binaryutil.BigEndian.PutUint16(port)))
}

func (k kubeProxy) jump(kind expr.VerdictKind, to *nftables.Chain) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: kind, Chain: to.Name}}
}

// setMark is mark set mark & mask ^ xor.
func (k kubeProxy) setMark(mask, xor uint32) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(mask), Xor: binaryutil.NativeEndian.PutUint32(xor)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

// serviceKey is the key "vip . tcp . port" of a daddr . l4proto . dport
// map: each field padded to the 4 bytes of a register.
func (k kubeProxy) serviceKey(port uint16) []byte {
	key := append([]byte(nil), k.vip.AsSlice()...)
	key = append(key, unix.IPPROTO_TCP, 0, 0, 0)
	return append(binary.BigEndian.AppendUint16(key, port), 0, 0)
}

// vmap adds the verdict map name, keyed daddr . l4proto . dport.
func (k kubeProxy) vmap(name string, elems []nftables.SetElement) (*nftables.Set, error) {
	addr := nftables.TypeIPAddr
	if k.vip.Is6() {
		addr = nftables.TypeIP6Addr
	}
	s := &nftables.Set{Table: k.table, Name: name, IsMap: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(addr, nftables.TypeInetProto, nftables.TypeInetService), DataType: nftables.TypeVerdict}
	return s, k.c.AddSet(s, elems)
}

// lookupService is "ip daddr . meta l4proto . th dport vmap @set": the
// fields go to consecutive 4-byte registers from NFT_REG32_00 (register 1's
// first bytes), as nft puts them.
func (k kubeProxy) lookupService(set *nftables.Set) []expr.Any {
	_, daddr, size := k.addrOffsets()
	next := uint32(unix.NFT_REG32_00) + size/4
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: daddr, Len: size},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: next},
		&expr.Payload{DestRegister: next + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Lookup{SourceRegister: 1, IsDestRegSet: true, SetID: set.ID, SetName: set.Name},
	}
}
