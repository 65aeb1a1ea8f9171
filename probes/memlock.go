package probes

import (
	"fmt"

	"github.com/cilium/ebpf/rlimit"
)

// AllowBPFMemory lifts RLIMIT_MEMLOCK where the kernel charges BPF maps and
// programs to it (before 5.11, e.g. Debian 11's 5.10, whose default limit
// refuses the programs); later kernels charge the memory cgroup instead, and
// this does nothing there. Call it before Open.
func AllowBPFMemory() error {
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift RLIMIT_MEMLOCK for BPF (kernel before 5.11): %w", err)
	}
	return nil
}
