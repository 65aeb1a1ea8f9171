package hint

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// Loss is a lost packet and where it was lost.
type Loss struct {
	// Netns names the namespace in hints ("router"); its inode when unnamed.
	Netns    string
	Src, Dst netip.Addr
	// Ifindex is the device the packet was last on in that namespace, In
	// whether it had entered through it (else it was leaving through it).
	Ifindex uint32
	In      bool
	// Reason is the kernel's drop reason name, "" for a loss without a drop
	// or a kernel without reasons (before 5.17).
	Reason string
	// Len is the packet's length where it was lost, as its IP header
	// says, 0 when unknown.
	Len uint32
	// Request says the packet is an echo request (never a TCP probe's SYN,
	// which unanswered's settings do not concern): one that entered a
	// namespace owning its destination and was never answered is
	// explained by why that namespace could not answer.
	Request bool
	// Encap is the outer packet's tunnel, for a packet lost in one (Kind
	// decode.TunnelUnknown: not in a tunnel).
	Encap decode.Encap
}

// Explain enters the namespace of ns on a locked thread and returns one line
// about the state that explains l, or "" when nothing looks wrong.
func Explain(ns *os.File, l Loss) (string, error) {
	var line string
	err := netns.Do([]*os.File{ns}, func(int) error {
		h, err := netlink.NewHandle()
		if err != nil {
			return fmt.Errorf("netlink: %w", err)
		}
		defer h.Close()
		line = explain(state{h: h}, l)
		return nil
	})
	return line, err
}

// state reads the namespace the calling thread is in.
type state struct{ h *netlink.Handle }

func (s state) linkName(ifindex uint32) string {
	if ifindex == 0 {
		return ""
	}
	l, err := s.h.LinkByIndex(int(ifindex))
	if err != nil {
		return fmt.Sprintf("if%d", ifindex)
	}
	return l.Attrs().Name
}

// sysctl reads a sysctl of the thread's namespace, "" when it is missing.
func sysctl(path string) string {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(path, ".", "/"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func family(a netip.Addr) (ip string, nl int) {
	if a.Is4() {
		return "ipv4", netlink.FAMILY_V4
	}
	return "ipv6", netlink.FAMILY_V6
}

func explain(s state, l Loss) string {
	iif := ""
	if l.In {
		iif = s.linkName(l.Ifindex)
	}
	r := strings.ToUpper(l.Reason)
	switch {
	case strings.Contains(r, "RPFILTER"):
		if rp, ok := s.reversePath(l, iif); ok {
			return rp.hint()
		}
	case strings.HasPrefix(r, "NEIGH_"):
		if h := s.neighbour(l); h != "" {
			return h
		}
	case strings.Contains(r, "TOO_BIG") || strings.Contains(r, "FRAG"):
		if h := s.mtu(l); h != "" {
			return h
		}
	case r == "" && l.Len > 0:
		// Without a reason, the packet's length against the MTU onward
		// says whether it was too big.
		if dev, mtu := s.routeMTU(l); mtu > 0 && int(l.Len) > mtu {
			return fmt.Sprintf("the packet (%d bytes) does not fit the MTU toward %s: %s has mtu %d", l.Len, l.Dst, dev, mtu)
		}
	}
	// The device it was leaving by, read once for the checks of it.
	out := s.outLink(l)
	// A bridge drops, without a reason, a frame larger than the port it
	// leaves by.
	if h := s.portMTU(l, out); h != "" {
		return h
	}
	// A datagram arriving for a VXLAN or Geneve device needs one that
	// takes its port and VNI.
	if h, ok := s.tunnelIn(l); ok {
		return h
	}
	// A frame leaving through a VXLAN device goes where its FDB says.
	if h, ok := s.vxlan(l, out); ok {
		return h
	}
	// IPv6 frees an unanswered request with no particular reason.
	if (r == "" || r == "NOT_SPECIFIED") && l.Request && iif != "" && s.local(l.Dst) {
		if h := s.unanswered(l); h != "" {
			return h
		}
	}
	// Forwarding, then the route, the link it leaves by and the neighbour.
	if h := s.forwarding(l, iif); h != "" {
		return h
	}
	route, h := s.route(l, iif)
	if route == nil {
		return h
	}
	if d := s.link(route.LinkIndex); d != "" {
		return d
	}
	if d := s.neighbour(l); d != "" {
		return d
	}
	return h
}

// forwarding says forwarding is off when the packet entered through iif and
// is not for this namespace.
func (s state) forwarding(l Loss, iif string) string {
	if iif == "" || s.local(l.Dst) {
		return ""
	}
	ipv, _ := family(l.Dst)
	dev := iif
	if ipv == "ipv6" {
		dev = "all" // IPv6 forwards by the "all" setting
	}
	key := fmt.Sprintf("net.%s.conf.%s.forwarding", ipv, dev)
	if sysctl(key) == "0" {
		return fmt.Sprintf("forwarding is off in %s: %s = 0, so %s arriving on %s is not routed on", l.Netns, key, l.Dst, iif)
	}
	return ""
}

// unanswered says why a namespace that received an echo request for one of
// its addresses sent no reply, as a person would look: its setting for
// answering echoes, then the route back to the source. IPv4 consumes such a request, IPv6 frees it as a drop
// without a reason.
func (s state) unanswered(l Loss) string {
	key := "net.ipv4.icmp_echo_ignore_all"
	if l.Dst.Is6() {
		key = "net.ipv6.icmp.echo_ignore_all"
	}
	if sysctl(key) == "1" {
		return fmt.Sprintf("%s ignores echo requests: %s = 1 in %s", l.Dst, key, l.Netns)
	}
	if !l.Src.IsValid() {
		return ""
	}
	if route, h := s.route(Loss{Netns: l.Netns, Src: l.Dst, Dst: l.Src}, ""); route == nil {
		return fmt.Sprintf("%s cannot answer %s: %s", l.Dst, l.Src, h)
	}
	return ""
}

// local reports whether a is an address of this namespace.
func (s state) local(a netip.Addr) bool {
	_, fam := family(a)
	addrs, err := s.h.AddrList(nil, fam)
	if err != nil {
		return false
	}
	for _, ad := range addrs {
		if ip, ok := netip.AddrFromSlice(ad.IP); ok && ip.Unmap() == a.Unmap() {
			return true
		}
	}
	return false
}

// route looks the packet up as `ip route get DST from SRC iif IIF` does, and
// says the result: "route lookup in router for 10.0.2.9: no route (network
// unreachable)", or the route in ip's words.
func (s state) route(l Loss, iif string) (*netlink.Route, string) {
	opts := &netlink.RouteGetOptions{}
	if iif != "" && l.Src.IsValid() {
		opts.Iif, opts.SrcAddr = iif, net.IP(l.Src.AsSlice())
	}
	routes, err := s.h.RouteGetWithOptions(net.IP(l.Dst.AsSlice()), opts)
	prefix := fmt.Sprintf("route lookup in %s for %s", l.Netns, l.Dst)
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) {
			switch errno {
			case unix.ENETUNREACH:
				return nil, prefix + ": no route (network unreachable)"
			case unix.EHOSTUNREACH:
				return nil, prefix + ": no route (host unreachable)"
			case unix.EINVAL, unix.EXDEV:
				// The source check refused it (EXDEV before 6.13, EINVAL
				// since): the reverse-path filter, when its state says so.
				if rp, ok := s.reversePath(l, iif); ok && rp.refuses() {
					return nil, rp.hint()
				}
				return nil, prefix + ": refused (invalid source or forwarding off)"
			}
			return nil, fmt.Sprintf("%s: %s", prefix, errno.Error())
		}
		return nil, fmt.Sprintf("%s: %v", prefix, err)
	}
	if len(routes) == 0 {
		return nil, prefix + ": no route"
	}
	r := routes[0]
	switch r.Type {
	case unix.RTN_UNREACHABLE:
		return nil, prefix + ": unreachable route"
	case unix.RTN_BLACKHOLE:
		return nil, prefix + ": blackhole route"
	case unix.RTN_PROHIBIT:
		return nil, prefix + ": prohibit route"
	}
	text := l.Dst.String()
	if r.Gw != nil {
		text += " via " + r.Gw.String()
	}
	if dev := s.linkName(uint32(r.LinkIndex)); dev != "" {
		text += " dev " + dev
	}
	if r.Src != nil {
		text += " src " + r.Src.String()
	}
	if r.Type == unix.RTN_LOCAL {
		text = "local " + text
	}
	return &r, prefix + ": " + text
}

// link says what is wrong with the device a route leaves by, if anything.
func (s state) link(ifindex int) string {
	if ifindex == 0 {
		return ""
	}
	l, err := s.h.LinkByIndex(ifindex)
	if err != nil {
		return ""
	}
	a := l.Attrs()
	switch {
	case a.Flags&net.FlagUp == 0:
		return fmt.Sprintf("link %s is down (mtu %d)", a.Name, a.MTU)
	case a.RawFlags&unix.IFF_LOWER_UP == 0:
		return fmt.Sprintf("link %s is up but has no carrier (mtu %d)", a.Name, a.MTU)
	}
	return ""
}

// outLink is the device the packet was leaving by when it was lost, nil
// for a packet lost as it arrived, or a device gone since.
func (s state) outLink(l Loss) netlink.Link {
	if l.In || l.Ifindex == 0 {
		return nil
	}
	link, err := s.h.LinkByIndex(int(l.Ifindex))
	if err != nil {
		return nil
	}
	return link
}

// vxlan explains a packet lost leaving through out, a VXLAN device (ok), whose
// FDB sends frames to the other nodes: without an entry naming a remote, and
// without a multicast group, the driver has nowhere to send them
// (NO_TX_TARGET, or VXLAN_ENTRY_NOT_FOUND for a destination MAC it lacks).
// The routes of the namespace do not come into it: the device was chosen
// before.
func (s state) vxlan(l Loss, out netlink.Link) (string, bool) {
	vx, ok := out.(*netlink.Vxlan)
	if !ok {
		return "", false
	}
	name := vx.Attrs().Name
	if vx.Group != nil && !vx.Group.IsUnspecified() {
		return "", true // frames without an entry go to the group
	}
	fdb, err := s.h.NeighList(int(l.Ifindex), unix.AF_BRIDGE)
	if err != nil {
		return "", true
	}
	var remotes []net.IP
	for _, n := range fdb {
		if n.IP != nil && !n.IP.IsUnspecified() {
			remotes = append(remotes, n.IP)
		}
	}
	if len(remotes) == 0 {
		return fmt.Sprintf("%s (vxlan vni %d) has no FDB entry with a remote and no group: frames to %s have no node to go to (bridge fdb show dev %s)",
			name, vx.VxlanId, l.Dst, name), true
	}
	// The underlay must reach the remotes.
	for _, ip := range remotes {
		if _, err := s.h.RouteGet(ip); err != nil {
			return fmt.Sprintf("%s (vxlan vni %d) sends to %s, which the underlay has no route to: %v", name, vx.VxlanId, ip, err), true
		}
	}
	return "", false
}

// portMTU explains a packet lost leaving through out, a bridge port whose MTU
// it exceeds: a bridge forwards no frame larger than the port it leaves by,
// and says nothing (NOT_SPECIFIED, in br_dev_queue_push_xmit, or in
// br_nf_dev_queue_xmit with br_netfilter). A tunnel port's MTU is its
// underlay's less the encapsulation, so the senders behind the bridge must
// keep under it: the usual cause is a pod MTU left at 1500 beside a VXLAN
// device of 1450.
func (s state) portMTU(l Loss, out netlink.Link) string {
	if out == nil || l.Len == 0 {
		return ""
	}
	a := out.Attrs()
	if a.MTU == 0 || int(l.Len) <= a.MTU || a.MasterIndex == 0 {
		return ""
	}
	bridge, err := s.h.LinkByIndex(a.MasterIndex)
	if err != nil || bridge.Type() != "bridge" {
		return ""
	}
	return fmt.Sprintf("the packet (%d bytes) does not fit %s (%s, mtu %d), the port of bridge %s it leaves by: a bridge drops frames larger than the port's MTU, so what is sent to %s must fit %d bytes (the senders' interface MTU)",
		l.Len, a.Name, out.Type(), a.MTU, bridge.Attrs().Name, l.Dst, a.MTU)
}

// tunnelIn explains a VXLAN or Geneve datagram lost as it arrived: no
// device of its kind here takes its UDP port, or none of those has its VNI
// (VXLAN_VNI_NOT_FOUND where the kernel names it), or the one that has is
// down. ok is false where a device is there and up: something else lost it.
func (s state) tunnelIn(l Loss) (string, bool) {
	e := l.Encap
	if !l.In || e.Kind != decode.TunnelVXLAN && e.Kind != decode.TunnelGeneve {
		return "", false
	}
	links, err := s.h.LinkList()
	if err != nil {
		return "", false
	}
	var others []string
	for _, link := range links {
		var vni uint32
		var port int
		switch d := link.(type) {
		case *netlink.Vxlan:
			vni, port = uint32(d.VxlanId), d.Port
		case *netlink.Geneve:
			vni, port = d.ID, int(d.Dport)
		default:
			continue
		}
		if link.Type() != e.Kind.String() || port != int(e.Dport) {
			continue
		}
		name := link.Attrs().Name
		switch {
		case vni != e.VNI:
			others = append(others, fmt.Sprintf("%s has vni %d", name, vni))
		case link.Attrs().Flags&net.FlagUp == 0:
			return fmt.Sprintf("%s (%s vni %d), which takes the datagrams from %s, is down", name, e.Kind, vni, e.Src), true
		default:
			return "", false
		}
	}
	if len(others) == 0 {
		return fmt.Sprintf("no %s device in %s takes UDP port %d: the datagram from %s (vni %d) has no device to go to (ip -d link show type %s)",
			e.Kind, l.Netns, e.Dport, e.Src, e.VNI, e.Kind), true
	}
	return fmt.Sprintf("the %s datagram from %s carries vni %d, and no %s device in %s on UDP port %d has it: %s (ip -d link show type %s)",
		e.Kind, e.Src, e.VNI, e.Kind, l.Netns, e.Dport, strings.Join(others, ", "), e.Kind), true
}

// mtu names the MTU of the device toward the destination.
func (s state) mtu(l Loss) string {
	dev, mtu := s.routeMTU(l)
	if mtu == 0 {
		return ""
	}
	return fmt.Sprintf("the packet does not fit the MTU toward %s: %s has mtu %d", l.Dst, dev, mtu)
}

// routeMTU is the device toward the destination and the MTU packets take
// on it (the route's, else the device's); 0 without a route.
func (s state) routeMTU(l Loss) (string, int) {
	route, _ := s.route(l, "")
	if route == nil {
		return "", 0
	}
	lk, err := s.h.LinkByIndex(route.LinkIndex)
	if err != nil {
		return "", 0
	}
	if route.MTU != 0 {
		return lk.Attrs().Name, route.MTU
	}
	return lk.Attrs().Name, lk.Attrs().MTU
}

// neighbour says the state of the next hop's neighbour entry when it is not
// reachable: "10.0.1.2 did not answer ARP on east (neighbour FAILED)".
func (s state) neighbour(l Loss) string {
	route, _ := s.route(l, "")
	if route == nil {
		return ""
	}
	next := l.Dst
	if route.Gw != nil {
		if gw, ok := netip.AddrFromSlice(route.Gw); ok {
			next = gw.Unmap()
		}
	}
	_, fam := family(next)
	neighs, err := s.h.NeighList(route.LinkIndex, fam)
	if err != nil {
		return ""
	}
	dev := s.linkName(uint32(route.LinkIndex))
	proto := "ARP"
	if next.Is6() {
		proto = "neighbour solicitation"
	}
	for _, n := range neighs {
		ip, ok := netip.AddrFromSlice(n.IP)
		if !ok || ip.Unmap() != next {
			continue
		}
		switch {
		case n.State&netlink.NUD_FAILED != 0:
			return fmt.Sprintf("%s did not answer %s on %s (neighbour FAILED)", next, proto, dev)
		case n.State&netlink.NUD_INCOMPLETE != 0:
			return fmt.Sprintf("%s has not answered %s on %s yet (neighbour INCOMPLETE)", next, proto, dev)
		}
		return ""
	}
	return ""
}

// reversePath is the reverse-path filter's view of a packet that came in
// by iif: its settings there and the device the route back to the source
// leaves by ("" without a route back).
type reversePath struct {
	src      netip.Addr
	iif, key string
	val, all string
	back     string
}

// reversePath reads the filter's settings and the route back, once; false
// for a packet that did not come in by a device or is not IPv4.
func (s state) reversePath(l Loss, iif string) (reversePath, bool) {
	if iif == "" || !l.Src.Is4() {
		return reversePath{}, false
	}
	rp := reversePath{src: l.Src, iif: iif, key: fmt.Sprintf("net.ipv4.conf.%s.rp_filter", iif)}
	rp.val, rp.all = sysctl(rp.key), sysctl("net.ipv4.conf.all.rp_filter")
	if routes, err := s.h.RouteGet(net.IP(l.Src.AsSlice())); err == nil && len(routes) > 0 {
		rp.back = s.linkName(uint32(routes[0].LinkIndex))
	}
	return rp, true
}

// refuses reports whether the filter refuses the source: in strict mode (1)
// when the route back leaves by another device, in loose mode (2) when there
// is no route back. The higher of the device's and "all"'s settings applies.
func (rp reversePath) refuses() bool {
	switch max(rp.val, rp.all) {
	case "1":
		return rp.back != rp.iif
	case "2":
		return rp.back == ""
	}
	return false
}

// hint says the reverse-path filter refused the packet: the route back to
// its source does not leave through the device it came in by.
func (rp reversePath) hint() string {
	back := "no route"
	if rp.back != "" {
		back = "through " + rp.back
	}
	return fmt.Sprintf("reverse-path filter: %s = %s (all: %s), and the route back to %s leaves %s, not %s", rp.key, rp.val, rp.all, rp.src, back, rp.iif)
}
