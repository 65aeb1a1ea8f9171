package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
)

// namespaces is what a live run knows of the machine's network namespaces:
// listed and named once at start, and again only for a namespace first seen
// during the run, never per event.
type namespaces struct {
	all    []netns.Netns
	namer  *netns.Namer
	owners map[uint32]decode.Owner
	known  map[uint32]bool // named at start, or looked for since
}

func listNamespaces() (*namespaces, error) {
	all, err := netns.List()
	if err != nil {
		return nil, err
	}
	n := &namespaces{all: all, namer: netns.NewNamer(netns.DefaultPlaces), known: map[uint32]bool{}}
	n.owners = n.namer.Owners(all)
	for _, ns := range all {
		n.known[ns.Inode] = true
	}
	return n, nil
}

// find resolves what a flag names: a name, a container, a PID or a path.
func (n *namespaces) find(flag, spec string) (netns.Netns, error) {
	ns, err := netns.Find(spec, n.all, n.owners)
	if err != nil {
		return ns, fmt.Errorf("%s: %w", flag, err)
	}
	return ns, nil
}

// add makes ns, found by path or PID outside the list (a bind mount
// elsewhere), one of the run's namespaces, named and traced like the others.
func (n *namespaces) add(ns netns.Netns) {
	if n.known[ns.Inode] {
		return
	}
	n.known[ns.Inode] = true
	n.all = append(n.all, ns)
	n.owners[ns.Inode] = n.namer.Owner(ns)
}

// traced returns the namespaces --netns names, with from (the namespace
// the echo starts in) when there is one; every namespace when specs is empty.
func (n *namespaces) traced(specs []string, from *netns.Netns) ([]netns.Netns, error) {
	if len(specs) == 0 {
		return n.all, nil
	}
	var out []netns.Netns
	if from != nil {
		out = append(out, *from)
	}
	for _, spec := range specs {
		ns, err := n.find("--netns", spec)
		if err != nil {
			return nil, err
		}
		out = append(out, ns)
	}
	return netns.Dedup(out), nil
}

// learn names the namespaces of j's rows that the run had not seen: it
// lists the namespaces once more and returns a snapshot of those, for the
// renderer and the recording; nil when there are none. A namespace it
// cannot find (gone already) is not looked for again.
func (n *namespaces) learn(j *decode.Journey, interfaces bool) (*decode.Snapshot, error) {
	var fresh []uint32
	for _, r := range j.Rows() {
		var inode uint32
		switch {
		case r.Hop != nil:
			inode = r.Hop.Netns
		case r.NF != nil:
			inode = r.NF.Netns
		case r.Drop != nil:
			inode = r.Drop.Netns
		}
		if inode != 0 && !n.known[inode] {
			n.known[inode] = true
			fresh = append(fresh, inode)
		}
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	if err := n.relist(); err != nil {
		return nil, err
	}
	var found []netns.Netns
	for _, ns := range n.all {
		if slices.Contains(fresh, ns.Inode) {
			found = append(found, ns)
			n.owners[ns.Inode] = n.namer.Owner(ns)
		}
	}
	if len(found) == 0 {
		return nil, nil
	}
	return netns.Snapshot(found, n.owners, interfaces)
}

// get returns the namespace with inode, listing the namespaces again once
// when it is not among them (created after the run started).
func (n *namespaces) get(inode uint32) (netns.Netns, bool) {
	for range 2 {
		if i := slices.IndexFunc(n.all, func(ns netns.Netns) bool { return ns.Inode == inode }); i >= 0 {
			return n.all[i], true
		}
		if n.relist() != nil {
			break
		}
	}
	return netns.Netns{}, false
}

func (n *namespaces) relist() error {
	all, err := netns.List()
	if err != nil {
		return err
	}
	n.all = all
	return nil
}

// prober sends a run's probes and receives their answers: the ICMP pinger,
// or the TCP prober of --tcp, or the UDP prober of --udp.
type prober interface {
	Send(seq uint16) (time.Time, error)
	Receive(deadline time.Time) (ping.Reply, error)
	ID() uint16
	Close() error
}

// sourceOf is the address and port a TCP or UDP prober sends from, which
// its socket holds for the run; none for the pinger, whose raw socket
// leaves the source address to each send's route.
func sourceOf(p prober) netip.AddrPort {
	s, ok := p.(interface {
		Source() netip.Addr
		SourcePort() uint16
	})
	if !ok {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(s.Source().WithZone(""), s.SourcePort())
}

// openProber opens the prober in from's namespace (this one when nil): its
// sockets are created on a locked OS thread that entered it, so it sends,
// routes and receives there, whichever thread uses it, while the rest of
// the program stays where it was. m holds no mark for echoes.
func openProber(target netip.Addr, port uint16, id uint16, m marks, opts ping.Options, from *netns.Netns) (prober, error) {
	open := func() (prober, error) {
		switch {
		case m.tcp != nil:
			return asProber(ping.OpenTCP(target, port, *m.tcp, opts))
		case m.udp != nil:
			return asProber(ping.OpenUDP(target, port, *m.udp, opts))
		}
		opts.Cookie = m.echo
		return asProber(ping.Open(target, id, opts))
	}
	if from == nil {
		return open()
	}
	f, err := from.Open()
	if err != nil {
		return nil, fmt.Errorf("--from-netns: %w", err)
	}
	defer f.Close()
	var p prober
	err = netns.Do([]*os.File{f}, func(int) error {
		p, err = open()
		return err
	})
	if err != nil {
		return nil, err
	}
	return p, nil
}

// asProber returns what an open returned as a prober: nil on error, never
// an interface holding a nil prober that Close would be called on.
func asProber[P prober](p P, err error) (prober, error) {
	if err != nil {
		return nil, err
	}
	return p, nil
}

// specList is a flag that may be given several times, each a comma-separated list.
type specList []string

func (l *specList) String() string { return strings.Join(*l, ",") }

func (l *specList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			return errors.New("empty namespace name")
		}
		*l = append(*l, s)
	}
	return nil
}

// printNamespaces lists, for --check --verbose, every namespace the tool
// can reach as it names them, with its veth pairs.
func printNamespaces(w io.Writer) error {
	n, err := listNamespaces()
	if err != nil {
		return err
	}
	snap, err := netns.Snapshot(n.all, n.owners, true)
	if err != nil {
		return err
	}
	rc := newRenderContext(nil)
	rc.setSnapshot(snap)
	ifName := map[[2]uint32]string{}
	for _, ns := range snap.Namespaces {
		for _, ifc := range ns.Interfaces {
			ifName[[2]uint32{ns.Inode, ifc.Ifindex}] = ifc.Name
		}
	}
	width := 0
	for _, ns := range snap.Namespaces {
		width = max(width, len(rc.netnsCell(ns.Inode)))
	}
	fmt.Fprintf(w, "\nnetwork namespaces (%d):\n", len(snap.Namespaces))
	for _, ns := range snap.Namespaces {
		fmt.Fprintf(w, "  %-*s  %s\n", width, rc.netnsCell(ns.Inode), ownerText(ns.Owner))
		for _, ifc := range ns.Interfaces {
			if ifc.Kind != "veth" {
				continue
			}
			line := "    veth " + ifc.Name
			if ifc.Master != "" {
				line += " (port of " + ifc.Master + ")"
			}
			switch peer := ifName[[2]uint32{ifc.PeerNetns, ifc.PeerIfindex}]; {
			case ifc.PeerNetns != 0 && peer != "":
				line += " <-> " + peer + " in " + rc.netnsCell(ifc.PeerNetns)
			case ifc.PeerIfindex != 0:
				line += " <-> ifindex " + strconv.FormatUint(uint64(ifc.PeerIfindex), 10) + " in a namespace the tool cannot see"
			}
			fmt.Fprintln(w, line)
		}
	}
	return nil
}

// ownerText says what --check --verbose knows of a namespace's owner.
func ownerText(o decode.Owner) string {
	if o.Kind == "" {
		return "(no name: no bind mount, no process)"
	}
	s := o.Kind
	if o.ID != "" && o.ID != o.Name {
		s += " " + o.ID
	}
	if o.Pid != 0 {
		s += fmt.Sprintf(", pid %d (%s)", o.Pid, o.Comm)
	}
	return s
}
