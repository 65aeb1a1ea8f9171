package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/phases"
)

// profileRuns runs the tool's -c1 to target n times asking for its start-up
// profile, and returns each phase's medians over the runs (start, end, time
// taken), in the order the phases first start, with the median answer and
// exit as the last two rows.
func profileRuns(tool string, target netip.Addr, n int) ([][]string, error) {
	argv := []string{tool, "-c1", "-W1", target.String()}
	starts, ends, totals := map[string][]time.Duration{}, map[string][]time.Duration{}, map[string][]time.Duration{}
	var order []string
	var answers, exits []time.Duration
	for range n {
		r, err := runProfiled(echoProbes.marker, false, true, argv...)
		if err != nil {
			return nil, err
		}
		if len(r.profile) == 0 {
			return nil, fmt.Errorf("%s wrote no start-up profile (a build without %s?)", tool, phases.EnvVar)
		}
		for _, p := range r.profile {
			if _, ok := starts[p.Name]; !ok {
				order = append(order, p.Name)
			}
			starts[p.Name] = append(starts[p.Name], p.Start)
			ends[p.Name] = append(ends[p.Name], p.End)
			totals[p.Name] = append(totals[p.Name], p.Total)
		}
		answers, exits = append(answers, r.answer), append(exits, r.exit)
	}
	// The phases in the order they start in a typical run.
	slices.SortStableFunc(order, func(a, b string) int {
		return cmp.Compare(sorted(starts[a]).median(), sorted(starts[b]).median())
	})
	var rows [][]string
	for _, name := range order {
		rows = append(rows, []string{name, ms(sorted(starts[name]).median()), ms(sorted(ends[name]).median()),
			ms(sorted(totals[name]).median())})
	}
	return append(rows,
		[]string{"answer (first reply line)", "", ms(sorted(answers).median()), ""},
		[]string{"exit", "", ms(sorted(exits).median()), ""}), nil
}

// profileHeader heads a profile table.
var profileHeader = []string{"phase", "from", "to", "took"}

// profileMethod says how a profile table is measured.
const profileMethod = `TRACEPKT_PERF_PROFILE set to the time just before exec makes the tool write, at exit, when
each phase of its run started and ended (from exec) and how long its times took together
(phases on several goroutines overlap: "took" may add up to more than the wall time).
Medians over the runs of tracepkt-perf -c1 (netfilter source on), per phase; "exec to package
init" is the process start before any of the tool's code runs.`

func profileSection(cfg config, progress io.Writer) (section, error) {
	n, closeFn, err := vethTarget("tp")
	if err != nil {
		return section{}, err
	}
	defer closeFn()
	fmt.Fprintf(progress, "start-up profile: %d runs to %s\n", cfg.runs, n.Target4)
	rows, err := profileRuns(cfg.tool, n.Target4, cfg.runs)
	if err != nil {
		return section{}, err
	}
	return section{
		title:  "Start-up profile",
		method: fmt.Sprintf("%d runs against a namespace behind a veth pair.\n%s", cfg.runs, profileMethod),
		table:  table(append([][]string{profileHeader}, rows...)),
	}, nil
}
