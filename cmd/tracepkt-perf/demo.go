package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// runDemo builds a docker-like topology (bridge tpdemo0 in this namespace, a
// container namespace behind a veth pair) and, beside the container, a
// namespace whose own nftables table drops echo requests and a router with no
// route to the target behind it; it traces an echo to each, for IPv4 and
// IPv6. Then its service scene: a node namespace on the bridge translates a
// Service address, with kube-proxy's nftables rules, to a pod behind it where
// the demo listens; it probes the Service with TCP at an open port, a closed
// one and one without endpoints, which the node rejects. It removes
// everything on every way out. The container and the open port answer, the
// others fail on purpose: the demo exits 0 when every probe came out as
// meant, 1 otherwise. A demo killed with SIGKILL leaves its links behind; the
// next demo sweeps them.
//
// A recording holds echoes or TCP probes, not both: a recorded demo leaves
// its service scene out, and says so.
func runDemo(ctx context.Context, o options, rec *outFile, newWriter func(*renderContext) journeyWriter, stderr io.Writer) (err error) {
	if err := topology.SweepDemo(topology.DemoBridge); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	topo := topology.New()
	defer func() {
		if cerr := topo.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("demo: remove topology: %w", cerr))
		}
	}()
	cfg := topology.Demo()
	n, err := topo.DockerBridge(cfg)
	if err != nil {
		// Another demo may have started between the sweep and now: say so.
		// The bridge may be this demo's own, built before what failed.
		var inUse *topology.DemoInUseError
		if serr := topology.SweepDemo(topology.DemoBridge); errors.As(serr, &inUse) && inUse.Pid != os.Getpid() {
			return fmt.Errorf("demo: %w", serr)
		}
		return fmt.Errorf("demo: build topology: %w", err)
	}
	f, err := topo.DemoFailures(n, cfg)
	if err != nil {
		return fmt.Errorf("demo: build topology: %w", err)
	}
	withService := rec == nil
	var svc *topology.DemoServiceNet
	if withService {
		if svc, err = topo.DemoService(n, cfg); err != nil {
			return fmt.Errorf("demo: build topology: %w", err)
		}
		// The pod's server: a socket the demo holds in the pod's namespace.
		var ln net.Listener
		if err := svc.Pod.Do(func() (err error) {
			ln, err = net.Listen("tcp", fmt.Sprintf(":%d", topology.DemoPodPort))
			return err
		}); err != nil {
			return fmt.Errorf("demo: listen in %v: %w", svc.Pod, err)
		}
		defer ln.Close()
	}
	// A probe is an echo, or with port a TCP probe.
	type probe struct {
		target netip.Addr
		port   uint16
		want   string // the result the demo means it to have
		via    netip.Addr
	}
	var probes []probe
	for _, fam := range []struct {
		skip                          bool
		container, firewall, far, rtr netip.Addr
	}{{o.only6, n.Target4, f.Firewall4, f.Far4, f.Router4}, {o.only4, n.Target6, f.Firewall6, f.Far6, f.Router6}} {
		if !fam.skip {
			probes = append(probes, probe{fam.container, 0, "reply", fam.container}, probe{fam.firewall, 0, "dropped", fam.firewall},
				probe{fam.far, 0, "unreachable", fam.rtr})
		}
	}
	if withService {
		for _, fam := range []struct {
			skip      bool
			vip, node netip.Addr
		}{{o.only6, svc.VIP4, svc.Node4}, {o.only4, svc.VIP6, svc.Node6}} {
			if !fam.skip {
				probes = append(probes, probe{fam.vip, topology.DemoServiceOpen, "open", fam.node},
					probe{fam.vip, topology.DemoServiceClosed, "closed", fam.node},
					probe{fam.vip, topology.DemoServiceRejected, "unreachable", fam.node})
			}
		}
	}
	// Never send anything that would leave through a link we did not create:
	// the far targets are routed to the router, whose only routes are ours,
	// and the Service address to the node, which routes it to the pod.
	for _, p := range probes {
		if err := topo.CheckOwnRoute(n.Source, p.via); err != nil {
			return fmt.Errorf("demo: refusing to send: %w", err)
		}
	}
	fmt.Fprintf(stderr, "demo: bridge %s (%s) in this namespace, veth %s to namespace %s (inode %d); "+
		"%s drops echo requests in namespace %s; %s is behind router %s, which has no route to it; removed on exit\n",
		n.Bridge, n.Gateway4, n.HostVeth, n.Container.Name, n.Container.Inode, f.Firewall4, f.Firewall.Name, f.Far4, f.Router.Name)
	if withService {
		fmt.Fprintf(stderr, "demo: Service %s: node %s (%s) translates it with kube-proxy's nftables rules to pod %s (%s): "+
			"port %d to %d, where the demo listens (open); %d to %d, where nothing does (closed); %d has no endpoints, rejected (unreachable)\n",
			svc.VIP4, svc.Node.Name, svc.Node4, svc.Pod.Name, svc.Pod4, topology.DemoServiceOpen, topology.DemoPodPort,
			topology.DemoServiceClosed, topology.DemoPodPort+1, topology.DemoServiceRejected)
	} else {
		fmt.Fprintf(stderr, "demo: the service scene's TCP probes are left out of a recording, which holds echoes or TCP probes, not both\n")
	}
	s, err := openSession(o, rec, newWriter)
	if err != nil {
		return err
	}
	defer s.Close()
	var unexpected error
	done := 0
	for _, p := range probes {
		s.results = s.results[:0]
		po := o
		po.port = p.port
		if p.port != 0 {
			po.proto = decode.ProtoTCP
		}
		err := s.trace(ctx, p.target, po)
		if err != nil && !errors.Is(err, errUnanswered) && !errors.Is(err, errInterruptedStartup) {
			return err
		}
		for _, r := range s.results {
			if r == "interrupted" {
				continue // its row says so
			}
			done++
			if r != p.want {
				what := "the echo to " + p.target.String()
				if p.port != 0 {
					what = "the TCP probe to " + netip.AddrPortFrom(p.target, p.port).String()
				}
				fmt.Fprintf(stderr, "demo: %s came out %s, the demo meant %s\n", what, r, p.want)
				unexpected = errUnanswered
			}
		}
		if ctx.Err() != nil {
			// A demo cut short did not show what it meant to.
			return interruptedError{fmt.Sprintf("during the demo, after %s of its %d", plural(done, "probe", "probes"), len(probes)*o.count)}
		}
	}
	return unexpected
}
