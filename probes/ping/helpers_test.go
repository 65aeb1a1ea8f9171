package ping

import (
	"net/netip"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// openPinger opens a pinger for target and closes it when tb ends.
func openPinger(tb testing.TB, target netip.Addr, id uint16) *Pinger {
	tb.Helper()
	p, err := Open(target, id, Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// randomIDs returns n distinct random echo ids.
func randomIDs(tb testing.TB, n int) []uint16 {
	tb.Helper()
	seen := map[uint16]bool{}
	var ids []uint16
	for len(ids) < n {
		id, err := RandomID()
		if err != nil {
			tb.Fatal(err)
		}
		if !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// onDedicatedThread runs fn on an OS thread of its own after setup has
// changed that thread (namespace, capabilities). The thread is never handed
// back to the scheduler: the goroutine exits still locked, so the runtime
// terminates the thread with it.
func onDedicatedThread(setup func() error, fn func() error) (setupErr, fnErr error) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if setupErr = setup(); setupErr != nil {
			return
		}
		fnErr = fn()
	}()
	<-done
	return setupErr, fnErr
}

// inNewNetns runs fn in a fresh network namespace, whose only interface, lo,
// is down: nothing fn sends can leave it.
func inNewNetns(tb testing.TB, fn func() error) error {
	tb.Helper()
	setupErr, err := onDedicatedThread(func() error { return unix.Unshare(unix.CLONE_NEWNET) }, fn)
	if setupErr != nil {
		tb.Fatalf("unshare network namespace: %v", setupErr)
	}
	return err
}

// withoutCapability runs fn on a thread whose effective capabilities lack c.
func withoutCapability(tb testing.TB, c int, fn func() error) error {
	tb.Helper()
	setupErr, err := onDedicatedThread(func() error {
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[c/32].Effective &^= 1 << (c % 32)
		return unix.Capset(&hdr, &data[0])
	}, fn)
	if setupErr != nil {
		tb.Fatalf("drop capability %d: %v", c, setupErr)
	}
	return err
}

// expectIgnored fails tb unless p ignored want packets.
func expectIgnored(tb testing.TB, p interface{ Ignored() uint64 }, want uint64) {
	tb.Helper()
	if got := p.Ignored(); got != want {
		tb.Errorf("Ignored() = %d, want %d", got, want)
	}
}
