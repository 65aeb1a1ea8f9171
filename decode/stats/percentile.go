package stats

import (
	"slices"
	"strconv"
	"strings"
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

var durationUnits = []struct {
	unit   time.Duration
	suffix string
}{{time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "µs"}}

// FormatDuration keeps three significant digits, which is what a reader
// compares: "850ns", "3.1µs", "123µs", "1.5ms".
func FormatDuration(d time.Duration) string {
	for _, u := range durationUnits {
		if d < u.unit {
			continue
		}
		v := float64(d) / float64(u.unit)
		prec := 2
		if v >= 100 {
			prec = 0
		} else if v >= 10 {
			prec = 1
		}
		s := strconv.FormatFloat(v, 'f', prec, 64)
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s + u.suffix
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}
