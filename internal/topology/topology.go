package topology

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

var (
	// ErrClosed is returned by operations on a Topology, or a namespace of it, after Close.
	ErrClosed = errors.New("topology closed")
	// ErrNotOwned is returned when an operation names a link or namespace that the Topology
	// did not create: a topology never changes what it does not own.
	ErrNotOwned = errors.New("not created by this topology")
	// ErrNotOwnRoute is returned by CheckOwnRoute when traffic to the destination would not
	// stay on links the Topology created.
	ErrNotOwnRoute = errors.New("not reached through links of this topology")
)

// maxIfNameLen is IFNAMSIZ-1: interface names are at most 15 bytes.
const maxIfNameLen = 15

// Topology owns the namespaces and links it created and removes them on Close.
// Its methods are safe for concurrent use.
type Topology struct {
	mu     sync.Mutex
	closed bool
	root   *Netns      // the caller's namespace, as opened by Root
	netns  []*Netns    // created namespaces, in creation order
	links  []ownedLink // every created link, both ends of a veth
	dels   []ownedLink // links that Close deletes itself: those outside created namespaces
	guards []guardRoute
}

type ownedLink struct {
	ns    *Netns
	index int
	name  string
}

// New returns an empty Topology.
func New() *Topology { return &Topology{} }

// Close removes everything t created: first the links living in namespaces it did not create
// (such as the root end of a veth, or a bridge in the root namespace), then its namespaces,
// newest first. It goes on past failures and returns them all. Calling it again does nothing.
func (t *Topology) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	dels, nss, root, guards := t.dels, t.netns, t.root, t.guards
	t.mu.Unlock()

	var errs []error
	for i := len(dels) - 1; i >= 0; i-- {
		if err := deleteLink(dels[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for i := len(nss) - 1; i >= 0; i-- {
		n := nss[i]
		if err := n.f.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close %v: %w", n, err))
		}
		n.f = nil
		if err := removeNamedNetns(n.Path); err != nil {
			errs = append(errs, fmt.Errorf("remove %v: %w", n, err))
		}
	}
	// Guards go last: they stand in for links until nothing is left to send.
	for _, g := range guards {
		if err := removeGuard(g); err != nil {
			errs = append(errs, err)
		}
	}
	if root != nil {
		root.f.Close()
		root.f = nil
	}
	return errors.Join(errs...)
}

// Root returns the caller's network namespace (see RootNetns), opened once per Topology and
// released by Close. Presets use it.
func (t *Topology) Root() (*Netns, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrClosed
	}
	if t.root == nil {
		root, err := RootNetns()
		if err != nil {
			return nil, err
		}
		t.root = root
	}
	return t.root, nil
}

// deleteLink deletes l unless it is already gone (with its namespace, or as the peer of a
// deleted veth).
func deleteLink(l ownedLink) error {
	h, err := l.ns.handle()
	if err != nil {
		return fmt.Errorf("delete link %s: %w", l.name, err)
	}
	defer h.Close()
	link, err := h.LinkByIndex(l.index)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) || errors.Is(err, unix.ENODEV) {
			return nil
		}
		return fmt.Errorf("delete link %s in %v: %w", l.name, l.ns, err)
	}
	if link.Attrs().Name != l.name {
		return nil // ours is gone and the index was reused
	}
	if err := h.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete link %s in %v: %w", l.name, l.ns, err)
	}
	return nil
}

// Netns creates the named network namespace, like `ip netns add <name>`, and brings its
// loopback up.
func (t *Topology) Netns(name string) (*Netns, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	n, err := createNamedNetns(name)
	if err != nil {
		return nil, err
	}
	n.owner = t
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.netns = append(t.netns, n)
	}
	t.mu.Unlock()
	if closed {
		n.f.Close()
		return nil, errors.Join(ErrClosed, removeNamedNetns(n.Path))
	}

	h, err := n.handle()
	if err != nil {
		return nil, err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		return nil, fmt.Errorf("set lo up in %v: %w", n, err)
	}
	return n, nil
}

func (t *Topology) check(nss ...*Netns) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return ErrClosed
	}
	for _, n := range nss {
		if n == nil {
			return errors.New("nil netns")
		}
	}
	return nil
}

func validLinkName(name string) error {
	if name == "" || len(name) > maxIfNameLen || strings.ContainsAny(name, "/: \t\n\x00") || name == "." || name == ".." {
		return fmt.Errorf("invalid interface name %q (1-%d bytes, no '/', ':' or spaces)", name, maxIfNameLen)
	}
	return nil
}

func (t *Topology) ownsNetns(n *Netns) bool { return n.owner == t }

func (t *Topology) owns(n *Netns, index int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.links {
		if l.ns.Inode == n.Inode && l.index == index {
			return true
		}
	}
	return false
}

// record registers links just created. del, if not nil, is deleted at Close.
func (t *Topology) record(del *ownedLink, links ...ownedLink) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.links = append(t.links, links...)
	if del != nil {
		t.dels = append(t.dels, *del)
	}
}

// ownedLinkByName looks name up in ns and fails unless t created it.
func (t *Topology) ownedLinkByName(h *netlink.Handle, n *Netns, name string) (netlink.Link, error) {
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("find link %s in %v: %w", name, n, err)
	}
	if !t.owns(n, l.Attrs().Index) {
		return nil, fmt.Errorf("link %s in %v: %w", name, n, ErrNotOwned)
	}
	return l, nil
}

// Veth creates a veth pair, nameA in nsA and nameB in nsB, and sets both ends up.
func (t *Topology) Veth(nameA string, nsA *Netns, nameB string, nsB *Netns) error {
	if err := t.check(nsA, nsB); err != nil {
		return err
	}
	if err := validLinkName(nameA); err != nil {
		return err
	}
	if err := validLinkName(nameB); err != nil {
		return err
	}
	what := fmt.Sprintf("veth %s (%v) <-> %s (%v)", nameA, nsA, nameB, nsB)
	hA, err := nsA.handle()
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	defer hA.Close()
	hB, err := nsB.handle()
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	defer hB.Close()

	attrs := netlink.NewLinkAttrs()
	attrs.Name = nameA
	veth := &netlink.Veth{LinkAttrs: attrs, PeerName: nameB}
	if nsA.Inode != nsB.Inode {
		fdB, err := nsB.fd()
		if err != nil {
			return fmt.Errorf("create %s: %w", what, err)
		}
		veth.PeerNamespace = netlink.NsFd(fdB)
	}
	err = hA.LinkAdd(veth)
	runtime.KeepAlive(nsB)
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}

	a, errA := hA.LinkByName(nameA)
	b, errB := hB.LinkByName(nameB)
	var links []ownedLink
	if errA == nil {
		links = append(links, ownedLink{nsA, a.Attrs().Index, nameA})
	}
	if errB == nil {
		links = append(links, ownedLink{nsB, b.Attrs().Index, nameB})
	}
	// Deleting one end deletes both; only an end outside our namespaces needs it.
	var del *ownedLink
	for i := range links {
		if !t.ownsNetns(links[i].ns) {
			del = &links[i]
			break
		}
	}
	t.record(del, links...)
	if err := errors.Join(errA, errB); err != nil {
		return fmt.Errorf("find new %s: %w", what, err)
	}

	if err := noDAD(nsA, nameA); err != nil {
		return err
	}
	if err := noDAD(nsB, nameB); err != nil {
		return err
	}
	if err := hA.LinkSetUp(a); err != nil {
		return fmt.Errorf("set %s up in %v: %w", nameA, nsA, err)
	}
	if err := hB.LinkSetUp(b); err != nil {
		return fmt.Errorf("set %s up in %v: %w", nameB, nsB, err)
	}
	return nil
}

// Bridge creates a bridge in ns with STP off and a forward delay of 0, and sets it up.
func (t *Topology) Bridge(name string, ns *Netns) error {
	if err := t.check(ns); err != nil {
		return err
	}
	if err := validLinkName(name); err != nil {
		return err
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("create bridge %s: %w", name, err)
	}
	defer h.Close()
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name
	if err := h.LinkAdd(&netlink.Bridge{LinkAttrs: attrs}); err != nil {
		return fmt.Errorf("create bridge %s in %v: %w", name, ns, err)
	}
	br, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find new bridge %s in %v: %w", name, ns, err)
	}
	l := ownedLink{ns, br.Attrs().Index, name}
	var del *ownedLink
	if !t.ownsNetns(ns) {
		del = &l
	}
	t.record(del, l)

	if err := ns.Do(func() error { return setBridgeNoDelay(l.index) }); err != nil {
		return fmt.Errorf("set STP off and forward delay 0 on bridge %s in %v: %w", name, ns, err)
	}
	if err := noDAD(ns, name); err != nil {
		return err
	}
	if err := h.LinkSetUp(br); err != nil {
		return fmt.Errorf("set bridge %s up in %v: %w", name, ns, err)
	}
	return nil
}

// setBridgeNoDelay sets IFLA_BR_STP_STATE and IFLA_BR_FORWARD_DELAY to 0 on the bridge with
// the given index in the calling thread's namespace; vishvananda/netlink has no field for
// them.
func setBridgeNoDelay(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_NEWLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	info := nl.NewRtAttr(unix.IFLA_LINKINFO, nil)
	info.AddRtAttr(nl.IFLA_INFO_KIND, nl.NonZeroTerminated("bridge"))
	data := info.AddRtAttr(nl.IFLA_INFO_DATA, nil)
	data.AddRtAttr(nl.IFLA_BR_STP_STATE, nl.Uint32Attr(0))
	data.AddRtAttr(nl.IFLA_BR_FORWARD_DELAY, nl.Uint32Attr(0))
	req.AddData(info)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// noDAD turns duplicate address detection off on link in ns before it is set up, so that its
// IPv6 link-local address is usable at once too: while it is tentative, a router's first
// neighbour solicitation goes unanswered for a second. The namespace-wide
// net.ipv6.conf.all.accept_dad still applies; it is 0 by default.
func noDAD(ns *Netns, link string) error {
	return ns.Do(func() error {
		// /proc/sys/net shows the namespace of the thread that opens it.
		err := os.WriteFile("/proc/sys/net/ipv6/conf/"+link+"/accept_dad", []byte("0\n"), 0)
		if err != nil && !errors.Is(err, os.ErrNotExist) { // no IPv6: nothing to do
			return fmt.Errorf("turn DAD off on %s in %v: %w", link, ns, err)
		}
		return nil
	})
}

// SetMaster enslaves link to bridge, both in ns and both created by t.
func (t *Topology) SetMaster(link string, ns *Netns, bridge string) error {
	if err := t.check(ns); err != nil {
		return err
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("set master of %s: %w", link, err)
	}
	defer h.Close()
	l, err := t.ownedLinkByName(h, ns, link)
	if err != nil {
		return fmt.Errorf("set master of %s: %w", link, err)
	}
	br, err := t.ownedLinkByName(h, ns, bridge)
	if err != nil {
		return fmt.Errorf("set master of %s: %w", link, err)
	}
	if br.Type() != "bridge" {
		return fmt.Errorf("set master of %s: %s in %v is a %s, not a bridge", link, bridge, ns, br.Type())
	}
	if err := h.LinkSetMasterByIndex(l, br.Attrs().Index); err != nil {
		return fmt.Errorf("set master of %s in %v to %s: %w", link, ns, bridge, err)
	}
	return nil
}

// SetAlias sets the alias (IFLA_IFALIAS, `ip link set ... alias`) of a link t created.
func (t *Topology) SetAlias(link string, ns *Netns, alias string) error {
	if err := t.check(ns); err != nil {
		return err
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("set alias of %s: %w", link, err)
	}
	defer h.Close()
	l, err := t.ownedLinkByName(h, ns, link)
	if err != nil {
		return fmt.Errorf("set alias of %s: %w", link, err)
	}
	if err := h.LinkSetAlias(l, alias); err != nil {
		return fmt.Errorf("set alias of %s in %v: %w", link, ns, err)
	}
	return nil
}

// AddAddr adds prefix (address and prefix length, like 10.0.0.1/24) to a link t created.
// IPv6 addresses skip duplicate address detection so that they are usable at once.
func (t *Topology) AddAddr(link string, ns *Netns, prefix netip.Prefix) error {
	if err := t.check(ns); err != nil {
		return err
	}
	if !prefix.IsValid() {
		return fmt.Errorf("add address to %s: invalid prefix %v", link, prefix)
	}
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("add %v to %s: %w", prefix, link, err)
	}
	defer h.Close()
	l, err := t.ownedLinkByName(h, ns, link)
	if err != nil {
		return fmt.Errorf("add %v to %s: %w", prefix, link, err)
	}
	addr := &netlink.Addr{IPNet: ipNet(prefix)}
	if prefix.Addr().Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	if err := h.AddrAdd(l, addr); err != nil {
		return fmt.Errorf("add %v to %s in %v: %w", prefix, link, ns, err)
	}
	return nil
}

// Link creates link, a device of any kind netlink knows (a tunnel: netlink.Vxlan, Geneve,
// Iptun, Gretun), in ns and sets it up. It is t's like the links of the other methods: routes
// may leave through it, and it is removed at Close. An error of a kind this kernel does not
// have wraps unix.EOPNOTSUPP.
func (t *Topology) Link(ns *Netns, link netlink.Link) error {
	if err := t.check(ns); err != nil {
		return err
	}
	name := link.Attrs().Name
	if err := validLinkName(name); err != nil {
		return err
	}
	what := fmt.Sprintf("%s %s", link.Type(), name)
	h, err := ns.handle()
	if err != nil {
		return fmt.Errorf("create %s: %w", what, err)
	}
	defer h.Close()
	if err := h.LinkAdd(link); err != nil {
		return fmt.Errorf("create %s in %v: %w", what, ns, err)
	}
	l, err := h.LinkByName(name)
	if err != nil {
		return fmt.Errorf("find new %s in %v: %w", what, ns, err)
	}
	owned := ownedLink{ns, l.Attrs().Index, name}
	var del *ownedLink
	if !t.ownsNetns(ns) {
		del = &owned
	}
	t.record(del, owned)
	if err := noDAD(ns, name); err != nil {
		return err
	}
	if err := h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up in %v: %w", what, ns, err)
	}
	return nil
}
