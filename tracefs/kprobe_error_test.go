package tracefs

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestKprobeAddError: only ENOENT or EINVAL from writing the definition mean
// the function is absent; a refusal such as EPERM (lockdown) or EBUSY, or a
// kprobe_events that cannot be opened, is an error that names the function.
func TestKprobeAddError(t *testing.T) {
	for _, c := range []struct {
		err    error
		absent bool
	}{
		{&writeError{syscall.ENOENT}, true},
		{&writeError{syscall.EINVAL}, true},
		{&writeError{syscall.EPERM}, false},
		{&writeError{syscall.EBUSY}, false},
		{&os.PathError{Op: "open", Path: "kprobe_events", Err: syscall.ENOENT}, false},
	} {
		err := kprobeAddError("ipt_do_table", c.err)
		if errors.Is(err, ErrNoSymbol) != c.absent || !errors.Is(err, c.err) {
			t.Errorf("%v: %v, absent %v", c.err, err, errors.Is(err, ErrNoSymbol))
		}
		if want := "create kprobe on ipt_do_table: "; err.Error()[:len(want)] != want {
			t.Errorf("%v: %q does not name the function", c.err, err)
		}
	}
}

// TestKprobeAddFailure adds a probe through a kprobe_events the kernel
// refuses to write (/dev/full: ENOSPC): an error, not an absent function.
func TestKprobeAddFailure(t *testing.T) {
	dir := t.TempDir()
	if err := os.Symlink("/dev/full", filepath.Join(dir, "kprobe_events")); err != nil {
		t.Fatal(err)
	}
	fs := &FS{Root: dir}
	g, err := fs.NewKprobeGroup()
	if err != nil {
		t.Fatal(err)
	}
	_, err = g.Add("ipt_do_table", "ipt_do_table", false)
	if err == nil || errors.Is(err, ErrNoSymbol) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Add through /dev/full: %v, want ENOSPC and not ErrNoSymbol", err)
	}
}
