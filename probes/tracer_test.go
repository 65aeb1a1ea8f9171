package probes

import (
	"errors"
	"os"
	"sync"
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
