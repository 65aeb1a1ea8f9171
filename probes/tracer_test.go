package probes

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// TestTracerCloseConcurrent closes a Tracer from several goroutines at once
// while a read is pending, as a signal and a deferred close do: under -race
// this is where a close read state another close was tearing down.
func TestTracerCloseConcurrent(t *testing.T) {
	testenv.RequireRoot(t)
	fs, err := tracefs.Open()
	if err != nil {
		testenv.Require(t, err)
	}
	defer fs.Close()
	offsets, err := KernelOffsets()
	if err != nil {
		testenv.Require(t, err)
	}
	for range 3 {
		tr, err := Open(fs, offsets, Config{EchoID: 0xfffe})
		if err != nil {
			t.Fatal(err)
		}
		read := make(chan error, 1)
		go func() {
			var r decode.Record
			read <- tr.ReadInto(&r)
		}()
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				if i%2 == 0 {
					tr.Close()
				} else {
					tr.Reader.Close()
				}
			})
		}
		wg.Wait()
		if err := <-read; !errors.Is(err, os.ErrClosed) {
			t.Errorf("pending ReadInto returned %v, want os.ErrClosed", err)
		}
		if err := tr.Close(); err != nil {
			t.Errorf("Close after Close: %v", err)
		}
	}
}

// TestNetfilterKprobeRefused: a kprobe the kernel refuses to add (here a
// kprobe_events that fails every write) is an error naming the function,
// or with NetfilterOptional a note naming it; never a silent absence.
func TestNetfilterKprobeRefused(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := os.Symlink("/dev/full", filepath.Join(dir, "kprobe_events")); err != nil {
		t.Fatal(err)
	}
	fs := &tracefs.FS{Root: dir}
	offsets, err := KernelOffsets()
	if err != nil {
		testenv.Require(t, err)
	}
	cfg := Config{EchoID: 0xfffd, Probes: []decode.Probe{}, Netfilter: []decode.Probe{decode.ProbeIptDoTable}}
	if tr, err := Open(fs, offsets, cfg); err == nil || !strings.Contains(err.Error(), "ipt_do_table") || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Open: %v, want an error naming ipt_do_table", err)
		if tr != nil {
			tr.Close()
		}
	}
	cfg.NetfilterOptional = true
	tr, err := Open(fs, offsets, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if notes := tr.Notes(); len(notes) != 1 || !strings.Contains(notes[0], "no kprobe on ipt_do_table") || !strings.Contains(notes[0], "no space left") {
		t.Errorf("notes %q", notes)
	}
}
