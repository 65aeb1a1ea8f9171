package main

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// stdoutOf is where the tool's output goes: os.Stdout, or, when the tool
// was started with its stdout closed, a writer that fails as a closed
// descriptor does, so that output lost is an error (exit 2) in every mode
// that writes any, and only in those (--pcapng writes none).
func stdoutOf() io.Writer {
	if startedClosed(1) {
		return closedStdout{}
	}
	return os.Stdout
}

// closedStdout is a stdout the tool was started without.
type closedStdout struct{}

func (closedStdout) Write([]byte) (int, error) {
	return 0, fmt.Errorf("write stdout: it is closed: %w", unix.EBADF)
}

// startedClosed reports whether standard descriptor fd was closed when the
// tool started. The Go runtime opens /dev/null read-write on a closed
// standard descriptor before main runs, so writes would vanish without an
// error. A shell's >/dev/null opens it write-only, and a daemon that hands
// its children /dev/null read-write shares that one open file across
// descriptors 0, 1 and 2: neither is taken for closed.
func startedClosed(fd int) bool {
	var st, null unix.Stat_t
	if unix.Fstat(fd, &st) != nil || unix.Stat("/dev/null", &null) != nil ||
		st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != null.Rdev {
		return false
	}
	if fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0); err != nil || fl&unix.O_ACCMODE != unix.O_RDWR {
		return false
	}
	for other := range 3 {
		if other != fd && !differentFiles(fd, other) {
			return false
		}
	}
	return true
}

// differentFiles reports whether descriptors a and b of this process are
// known to be different open files (kcmp KCMP_FILE); where the kernel cannot
// say, they may be the same.
func differentFiles(a, b int) bool {
	const kcmpFile = 0 // KCMP_FILE in <linux/kcmp.h>
	pid := uintptr(os.Getpid())
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, pid, pid, kcmpFile, uintptr(a), uintptr(b), 0)
	return errno == 0 && r != 0
}
