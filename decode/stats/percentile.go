package stats

import (
	"slices"
	"time"
)

// Percentiles summarise a set of durations.
type Percentiles struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// percentiles uses the nearest-rank definition: the p-th percentile is the
// smallest value that at least p% of the values do not exceed. It sorts d.
func percentiles(d []time.Duration) Percentiles {
	if len(d) == 0 {
		return Percentiles{}
	}
	slices.Sort(d)
	rank := func(p int) time.Duration {
		// ceil(p/100 * n), 1-based.
		i := (p*len(d) + 99) / 100
		return d[max(i, 1)-1]
	}
	return Percentiles{N: len(d), P50: rank(50), P90: rank(90), P99: rank(99), Max: d[len(d)-1]}
}
