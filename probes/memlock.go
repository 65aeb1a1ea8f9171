package probes

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// AllowBPFMemory lifts RLIMIT_MEMLOCK where the kernel charges BPF maps and
// programs to it (before 5.11, e.g. Debian 11's 5.10, whose default limit
// refuses the programs). Later kernels charge the memory cgroup instead and
// it does nothing there. Lifted by hand: cilium/ebpf's rlimit package tests
// the kernel with a BPF map and three prlimit calls in its package init, at
// every start of the tool, --version included. Call it before Open.
func AllowBPFMemory() error {
	if _, major, minor, err := kernelVersion(); err == nil && (major > 5 || major == 5 && minor >= 11) {
		return nil
	}
	unlimited := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unlimited); err != nil {
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
