package main

import (
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// recordingsSection runs decode's recording-size test and replay benchmark.
func recordingsSection(_ config, progress io.Writer) (section, error) {
	var out strings.Builder
	for _, argv := range [][]string{
		{"go", "test", "-count=1", "-run", "BytesPerEvent", "-v", "./decode/..."},
		{"go", "test", "-count=1", "-run", "^$", "-bench", ".", "-benchmem", "-cpu", "1", "./decode/..."},
	} {
		fmt.Fprintf(progress, "recordings: %s\n", strings.Join(argv, " "))
		b, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return section{}, fmt.Errorf("%s: %w\n%s", strings.Join(argv, " "), err, b)
		}
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "B/event") || strings.HasPrefix(l, "Benchmark") {
				out.WriteString(strings.TrimSpace(l) + "\n")
			}
		}
	}
	return section{
		title: "Recordings",
		method: `Recording size per event (go test -run BytesPerEvent -v ./decode) and replay throughput on one
core (go test -bench . -benchmem -cpu 1 ./decode), from the repository root.`,
		table: out.String(),
	}, nil
}
