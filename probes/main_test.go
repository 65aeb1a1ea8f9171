package probes

import (
	"fmt"
	"os"
	"testing"
)

// TestMain lifts RLIMIT_MEMLOCK first, as the tool does, for the tests that
// load programs on kernels that charge BPF memory to it (before 5.11).
func TestMain(m *testing.M) {
	if err := AllowBPFMemory(); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	os.Exit(m.Run())
}
