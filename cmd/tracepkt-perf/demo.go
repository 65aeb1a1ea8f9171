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
// container namespace behind a veth pair), traces one IPv4 and one IPv6 echo
// into it and removes it on every way out. A demo killed with SIGKILL leaves
// its links behind; the next demo sweeps them.
func runDemo(ctx context.Context, o options, recFile *os.File, newWriter func(*renderContext) journeyWriter, stderr io.Writer) (err error) {
	if err := topology.SweepDemo(topology.DemoBridge); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	topo := topology.New()
	defer func() {
		if cerr := topo.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("demo: remove topology: %w", cerr))
		}
	}()
	n, err := topo.DockerBridge(topology.Demo())
	if err != nil {
		// Another demo may have started between the sweep and now: say so.
		if serr := topology.SweepDemo(topology.DemoBridge); errors.Is(serr, topology.ErrDemoInUse) {
			return fmt.Errorf("demo: %w", serr)
		}
		return fmt.Errorf("demo: build topology: %w", err)
	}
	targets := []netip.Addr{n.Target4, n.Target6}
	if o.only4 {
		targets = targets[:1]
	} else if o.only6 {
		targets = targets[1:]
	}
	// Never send anything that would leave through a link we did not create.
	for _, target := range targets {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			return fmt.Errorf("demo: refusing to send: %w", err)
		}
	}
	fmt.Fprintf(stderr, "demo: bridge %s (%s) in this namespace, veth %s to namespace %s (inode %d); removed on exit\n",
		n.Bridge, n.Gateway4, n.HostVeth, n.Container.Name, n.Container.Inode)
	s, err := openSession(o, recFile, newWriter)
	if err != nil {
		return err
	}
	var unanswered error
	for _, target := range targets {
		err := s.trace(ctx, target, o)
		if errors.Is(err, errUnanswered) {
			unanswered = err
			continue
		}
		if err != nil {
			return err
		}
	}
	return unanswered
}
