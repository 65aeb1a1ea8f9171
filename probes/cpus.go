package probes

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// parseCPUList parses a kernel CPU list such as "0-3,5".
func parseCPUList(s string) ([]int, error) {
	var cpus []int
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bad cpu list %q", s)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return nil, fmt.Errorf("bad cpu list %q", s)
			}
		}
		for c := first; c <= last; c++ {
			cpus = append(cpus, c)
		}
	}
	if len(cpus) == 0 {
		return nil, fmt.Errorf("empty cpu list %q", s)
	}
	return cpus, nil
}

// cpuList reads /sys/devices/system/cpu/<which> ("online" or "possible").
func cpuList(which string) ([]int, error) {
	b, err := os.ReadFile("/sys/devices/system/cpu/" + which)
	if err != nil {
		return nil, fmt.Errorf("read %s cpus: %w", which, err)
	}
	return parseCPUList(string(b))
}
