package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// scaleRuns is how many -c1 runs each namespace count gets.
const scaleRuns = 7

func scaleSection(cfg config, progress io.Writer) (section, error) {
	n, closeFn, err := vethTarget("ts")
	if err != nil {
		return section{}, err
	}
	defer closeFn()
	target := n.Target4.String()
	rows := [][]string{{"namespaces", "answer", "exit", "answer, --netfilter off", "exit, --netfilter off"}}
	if cfg.before != "" {
		rows[0] = append(rows[0], "before: answer", "before: exit")
	}
	for _, count := range cfg.scale {
		fmt.Fprintf(progress, "scale: %d namespaces\n", count)
		row, err := scalePoint(cfg, count, target)
		if err != nil {
			return section{}, err
		}
		rows = append(rows, row)
	}
	return section{
		title: "Scale: namespaces",
		method: fmt.Sprintf(`The bench adds N empty named namespaces (loopback up, in /run/netns, as on a node full of
pods) next to the veth pair's, then times tracepkt-perf -c1 to the veth namespace, %d runs
each, median and p90 in brackets, with the netfilter source on (nftables trace tables in
every namespace) and off. Default attachment. "before:" columns, when present, are an earlier
build, netfilter source on, measured in the same run (bench -before), one run of each build in turn.`, scaleRuns),
		table: table(rows),
	}, nil
}

func scalePoint(cfg config, count int, target string) (row []string, err error) {
	topo := topology.New()
	defer func() { err = errors.Join(err, topo.Close()) }()
	prefix := topology.UniqueName("tn")
	for i := range count {
		if _, err := topo.Netns(fmt.Sprintf("%s-%d", prefix, i)); err != nil {
			return nil, err
		}
	}
	cmds := []command{
		{"on", "reply from", []string{cfg.tool, "-c1", "-W1", target}},
		{"off", "reply from", []string{cfg.tool, "-c1", "-W1", "--netfilter", "off", target}},
	}
	if cfg.before != "" {
		cmds = append(cmds, command{"before", "reply from", []string{cfg.before, "-c1", "-W1", target}})
	}
	answers, exits, err := measureInterleaved(scaleRuns, cmds)
	if err != nil {
		return nil, err
	}
	row = []string{fmt.Sprint(count)}
	for i := range cmds {
		row = append(row, answers[i].String(), exits[i].String())
	}
	return row, nil
}
