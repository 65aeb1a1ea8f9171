package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// runDemo builds a docker-like topology (bridge tpdemo0 in this namespace, a
// container namespace behind a veth pair) and, beside the container, a
// namespace whose own nftables table drops echo requests and a router with no
// route to the target behind it; it traces an echo to each, for IPv4 and
// IPv6, and removes everything on every way out. The container answers, the
// other two fail on purpose: the demo exits 0 when every echo came out as
// meant, 1 otherwise. A demo killed with SIGKILL leaves its links behind; the
// next demo sweeps them.
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
	type echo struct {
		target netip.Addr
		want   string // the result the demo means it to have
		via    netip.Addr
	}
	var echoes []echo
	for _, fam := range []struct {
		skip                          bool
		container, firewall, far, rtr netip.Addr
	}{{o.only6, n.Target4, f.Firewall4, f.Far4, f.Router4}, {o.only4, n.Target6, f.Firewall6, f.Far6, f.Router6}} {
		if !fam.skip {
			echoes = append(echoes, echo{fam.container, "reply", fam.container}, echo{fam.firewall, "dropped", fam.firewall},
				echo{fam.far, "unreachable", fam.rtr})
		}
	}
	// Never send anything that would leave through a link we did not create:
	// the far targets are routed to the router, whose only routes are ours.
	for _, e := range echoes {
		if err := topo.CheckOwnRoute(n.Source, e.via); err != nil {
			return fmt.Errorf("demo: refusing to send: %w", err)
		}
	}
	fmt.Fprintf(stderr, "demo: bridge %s (%s) in this namespace, veth %s to namespace %s (inode %d); "+
		"%s drops echo requests in namespace %s; %s is behind router %s, which has no route to it; removed on exit\n",
		n.Bridge, n.Gateway4, n.HostVeth, n.Container.Name, n.Container.Inode, f.Firewall4, f.Firewall.Name, f.Far4, f.Router.Name)
	s, err := openSession(o, rec, newWriter)
	if err != nil {
		return err
	}
	defer s.Close()
	var unexpected error
	done := 0
	for _, e := range echoes {
		s.results = s.results[:0]
		err := s.trace(ctx, e.target, o)
		if err != nil && !errors.Is(err, errUnanswered) && !errors.Is(err, errInterruptedStartup) {
			return err
		}
		for _, r := range s.results {
			if r == "interrupted" {
				continue // its row says so
			}
			done++
			if r != e.want {
				fmt.Fprintf(stderr, "demo: the echo to %s came out %s, the demo meant %s\n", e.target, r, e.want)
				unexpected = errUnanswered
			}
		}
		if ctx.Err() != nil {
			// A demo cut short did not show what it meant to.
			return interruptedError{fmt.Sprintf("during the demo, after %s of its %d", plural(done, "echo", "echoes"), len(echoes)*o.count)}
		}
	}
	return unexpected
}
