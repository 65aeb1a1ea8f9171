package vmtest

import (
	"bytes"
	"strconv"
	"testing"
)

func TestCPIOWriterBytes(t *testing.T) {
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	if err := c.File("a", 0o644, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	want := "070701" + "00000001" + "000081a4" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000002" + "00000000" + "00000000" + "00000000" + "00000000" + "00000002" + "00000000" +
		"a\x00" + "hi\x00\x00" +
		"070701" + "00000002" + "00000000" + "00000000" + "00000000" + "00000001" + "00000000" +
		"00000000" + "00000000" + "00000000" + "00000000" + "00000000" + "0000000b" + "00000000" +
		"TRAILER!!!\x00" + "\x00\x00\x00"
	if got := buf.String(); got != want {
		t.Errorf("archive:\n got %q\nwant %q", got, want)
	}
}

func TestCPIOWriterRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	for _, err := range []error{
		c.Dir("bin", 0o755),
		c.File("bin/tool", 0o755, []byte("12345")), // 5 bytes: data needs padding
		c.Symlink("bin/sh", "tool"),
		c.CharDev("console", 0o600, 5, 1),
		c.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := readCPIO(t, buf.Bytes())
	want := []cpioEntry{
		{name: "bin", mode: 0o040755},
		{name: "bin/tool", mode: 0o100755, data: "12345"},
		{name: "bin/sh", mode: 0o120777, data: "tool"},
		{name: "console", mode: 0o020600, rdevMajor: 5, rdevMinor: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %+v, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

type cpioEntry struct {
	name                 string
	mode                 uint64
	data                 string
	rdevMajor, rdevMinor uint64
}

// readCPIO parses a newc archive up to its trailer, failing tb on anything
// the kernel's unpacker would reject.
func readCPIO(tb testing.TB, b []byte) []cpioEntry {
	tb.Helper()
	var entries []cpioEntry
	off := 0
	for {
		if off%4 != 0 || off+110 > len(b) || string(b[off:off+6]) != "070701" {
			tb.Fatalf("bad newc header at offset %d", off)
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				tb.Fatalf("header field %d at offset %d: %v", i, off, err)
			}
			return v
		}
		size, nameSize := int(field(6)), int(field(11))
		name := string(b[off+110 : off+110+nameSize-1])
		if b[off+110+nameSize-1] != 0 {
			tb.Fatalf("entry %q: name not NUL-terminated", name)
		}
		dataOff := align4(off + 110 + nameSize)
		e := cpioEntry{name: name, mode: field(1), data: string(b[dataOff : dataOff+size]), rdevMajor: field(9), rdevMinor: field(10)}
		off = align4(dataOff + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				tb.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return entries
		}
		entries = append(entries, e)
	}
}

func align4(n int) int { return (n + 3) &^ 3 }
