package phases

import (
	"strings"
	"testing"
	"time"
)

// What Write writes, Parse reads back: each phase once, in the order they
// started, its times together, other lines of stderr skipped.
func TestWriteParse(t *testing.T) {
	enabled, origin = true, time.Now().Add(-time.Second)
	t.Cleanup(func() { enabled, origin, spans = false, initTime, nil })
	a := Begin("load")
	b := Begin("nftables install")
	time.Sleep(2 * time.Millisecond)
	b.End()
	a.End()
	again := Begin("load")
	time.Sleep(time.Millisecond)
	again.End()
	Begin("never ended")
	var out strings.Builder
	out.WriteString("tracepkt-perf: a note\n")
	Write(&out)
	got, err := Parse(out.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Name != "exec to package init" || got[1].Name != "load" || got[2].Name != "nftables install" {
		t.Fatalf("phases %+v from\n%s", got, out.String())
	}
	load, nft := got[1], got[2]
	if load.N != 2 || nft.N != 1 {
		t.Errorf("load %d times, nftables install %d, want 2 and 1", load.N, nft.N)
	}
	if load.Start < time.Second || load.End < load.Start+3*time.Millisecond || load.Total < 3*time.Millisecond || load.Total > load.End-load.Start {
		t.Errorf("load %+v: want from 1 s on, at least 3 ms in all, within its span", load)
	}
	if nft.Start < load.Start || nft.End > load.End || nft.Total < 2*time.Millisecond {
		t.Errorf("nftables install %+v within load %+v", nft, load)
	}
	if _, err := Parse(linePrefix + "load\t1.0\t2.0\n"); err == nil {
		t.Error("a line of 3 fields: no error")
	}
	if _, err := Parse(linePrefix + "load\t1.0\tx\t1.0\t1\n"); err == nil {
		t.Error("a bad time: no error")
	}
}

// Without the environment variable, nothing is timed or written.
func TestDisabled(t *testing.T) {
	s := Begin("load")
	s.End()
	var out strings.Builder
	Write(&out)
	if out.Len() != 0 || len(spans) != 0 {
		t.Errorf("disabled: wrote %q, kept %d spans", out.String(), len(spans))
	}
}
