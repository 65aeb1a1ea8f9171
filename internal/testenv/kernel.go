package testenv

import (
	"fmt"
	"testing"

	"golang.org/x/sys/unix"
)

// KernelRelease is the running kernel's release, as uname -r prints it.
func KernelRelease(tb testing.TB) string {
	tb.Helper()
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		tb.Fatalf("uname: %v", err)
	}
	return unix.ByteSliceToString(uts.Release[:])
}

// KernelAtLeast reports whether the running kernel is major.minor or newer,
// read from uname on its own, so that tests check what the tool detects
// against the kernel's version rather than against the tool's own probe.
func KernelAtLeast(tb testing.TB, major, minor int) bool {
	tb.Helper()
	release := KernelRelease(tb)
	var maj, min int
	if _, err := fmt.Sscanf(release, "%d.%d", &maj, &min); err != nil {
		tb.Fatalf("kernel release %q: %v", release, err)
	}
	return maj > major || maj == major && min >= minor
}
