package main

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// vethTarget builds a namespace behind a veth pair and checks that both its
// addresses are reached through it; close removes it.
func vethTarget(prefix string) (n *topology.VethPairNet, closeFn func() error, err error) {
	topo := topology.New()
	defer func() {
		if err != nil {
			err = errors.Join(err, topo.Close())
		}
	}()
	v4, v6 := topology.TestNets()
	if n, err = topo.VethPair(topology.UniqueName(prefix), v4, v6); err != nil {
		return nil, nil, err
	}
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			return nil, nil, fmt.Errorf("refusing to send: %w", err)
		}
	}
	return n, topo.Close, nil
}

// command is one command line measured for time to answer.
type command struct {
	name   string
	marker string
	argv   []string
}

// answerCommands are ping and the tool in each attachment mode, with and
// without the netfilter source, for one target; and this build's probes of
// the echo service's port in each mode.
func answerCommands(cfg config, target netip.Addr) []command {
	cmds := []command{{"ping -c1 " + target.String(), "bytes from", []string{"ping", "-n", "-c1", "-W1", target.String()}}}
	type build struct {
		name, tool, mode string
		ports            []probeMode
	}
	var builds []build
	if cfg.before != "" {
		builds = append(builds, build{"before: tracepkt-perf", cfg.before, "default", nil})
	}
	for _, mode := range cfg.modes {
		builds = append(builds, build{"tracepkt-perf", cfg.tool, mode, portProbes})
	}
	for _, b := range builds {
		mode := b.mode
		name := b.name + " -c1 " + strings.Join(append(attachArgs(mode), target.String()), " ")
		base := slices.Concat([]string{b.tool, "-c1", "-W1"}, attachArgs(mode))
		cmds = append(cmds,
			command{name, echoProbes.marker, slices.Concat(base, []string{target.String()})},
			command{"  same, --netfilter off", echoProbes.marker, slices.Concat(base, []string{"--netfilter", "off", target.String()})})
		for _, p := range b.ports {
			cmds = append(cmds, command{"  same, " + strings.Join(p.args, " "), p.marker, slices.Concat(base, p.args, []string{target.String()})})
		}
	}
	return cmds
}

// measureInterleaved runs every command n times, one of each in turn, so
// that a slow moment of the machine hits them all alike.
func measureInterleaved(n int, cmds []command) ([]durations, []durations, error) {
	answers := make([][]time.Duration, len(cmds))
	exits := make([][]time.Duration, len(cmds))
	for range n {
		for i, c := range cmds {
			r, err := runOnce(c.marker, false, c.argv...)
			if err != nil {
				return nil, nil, err
			}
			answers[i] = append(answers[i], r.answer)
			exits[i] = append(exits[i], r.exit)
		}
	}
	var a, e []durations
	for i := range cmds {
		a, e = append(a, sorted(answers[i])), append(e, sorted(exits[i]))
	}
	return a, e, nil
}

func answerSection(cfg config, progress io.Writer) (section, error) {
	if _, err := exec.LookPath("ping"); err != nil {
		return section{}, fmt.Errorf("the baseline needs ping (iputils-ping): %w", err)
	}
	n, closeFn, err := serviceTarget("tb")
	if err != nil {
		return section{}, err
	}
	defer closeFn()
	rows := [][]string{{"command", "answer", "exit", "exit/ping"}}
	for _, target := range []netip.Addr{n.Target4, n.Target6} {
		cmds := answerCommands(cfg, target)
		fmt.Fprintf(progress, "time to answer: %d commands x %d runs to %s\n", len(cmds), cfg.runs, target)
		answers, exits, err := measureInterleaved(cfg.runs, cmds)
		if err != nil {
			return section{}, err
		}
		for i, c := range cmds {
			rows = append(rows, []string{c.name, answers[i].String(), exits[i].String(),
				fmt.Sprintf("%.1fx", float64(exits[i].median())/float64(exits[0].median()))})
		}
	}
	return section{
		title: "Time to answer and to exit",
		method: fmt.Sprintf(`Each command runs %d times against a namespace behind a veth pair, one run of each
command in turn. answer: exec to the first reply line on stdout; exit: exec to exit.
Median, p90 in brackets. exit/ping compares medians with the bare ping -c1 of the same run.
--attach selects the probe attachment (auto, perf, raw); --netfilter off leaves out the
nftables trace tables. The --tcp %d and --udp %d rows probe the bench's echo service
(RFC 862) on TCP and UDP port %d in the namespace, netfilter source on: answer is exec to
the first "open:" line (the SYN-ACK) or "reply:" line (the datagram echoed back). "before:"
rows, when present, are an earlier build measured in the same run (bench -before), echoes
only.`, cfg.runs, servicePort, servicePort, servicePort),
		table: table(rows),
	}, nil
}
