package probes

import (
	"fmt"

	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// AllowBPFMemory lifts RLIMIT_MEMLOCK where the kernel charges BPF maps and
// programs to it (before 5.11, e.g. Debian 11's 5.10, whose default limit
// refuses the programs). Later kernels charge the memory cgroup instead and
// it does nothing there: rlimit.RemoveMemlock would otherwise take a map
// refused for want of CAP_BPF for an old kernel, and fail to lift a limit
// that does not matter. Call it before Open.
func AllowBPFMemory() error {
	if _, major, minor, err := kernelVersion(); err == nil && (major > 5 || major == 5 && minor >= 11) {
		return nil
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return fmt.Errorf("lift RLIMIT_MEMLOCK for BPF (kernel before 5.11): %w", err)
	}
	return nil
}

// kernelVersion returns the running kernel's release and its version.
func kernelVersion() (release string, major, minor int, err error) {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return "", 0, 0, fmt.Errorf("uname: %w", err)
	}
	release = unix.ByteSliceToString(uts.Release[:])
	major, minor, err = parseRelease(release)
	return release, major, minor, err
}
