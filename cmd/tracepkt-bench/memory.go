package main

import (
	"fmt"
	"io"
	"slices"
)

func memorySection(cfg config, progress io.Writer) (section, error) {
	n, closeFn, err := vethTarget("tm")
	if err != nil {
		return section{}, err
	}
	defer closeFn()
	target := n.Target4.String()
	rows := [][]string{{"command", "peak RSS", "exit"}}
	for _, mode := range cfg.modes {
		for _, args := range [][]string{{"-c1"}, {"-c", "10000", "-i", "0"}} {
			argv := slices.Concat([]string{cfg.tool}, attachArgs(mode), args, []string{target})
			fmt.Fprintf(progress, "memory: %v\n", argv[1:])
			r, err := runOnce("reply from", false, argv...)
			if err != nil {
				return section{}, err
			}
			rows = append(rows, []string{fmt.Sprintf("tracepkt-perf %v", argv[1:]),
				fmt.Sprintf("%.1f MiB", float64(r.maxRSS)/(1<<20)), ms(r.exit)})
		}
	}
	return section{
		title: "Memory",
		method: `Peak resident set size (getrusage ru_maxrss of the exited process) of one -c1 run and one
run of 10,000 back-to-back echoes (-c 10000 -i 0), netfilter source on (default), through a veth
pair, table output read and discarded.`,
		table: table(rows),
	}, nil
}
