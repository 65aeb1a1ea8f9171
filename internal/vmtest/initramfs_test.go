package vmtest

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeELF writes a minimal x86-64 executable header, with a PT_INTERP
// program header (as a dynamically linked binary has) when dynamic is set.
func writeELF(tb testing.TB, file string, dynamic bool) {
	tb.Helper()
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Ehsize: 64, Phentsize: 56,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	var progs []elf.Prog64
	if dynamic {
		hdr.Phoff, hdr.Phnum = 64, 1
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP)})
	}
	var buf bytes.Buffer
	binary.Write(&buf, binary.LittleEndian, hdr)
	binary.Write(&buf, binary.LittleEndian, progs)
	if err := os.WriteFile(file, buf.Bytes(), 0o755); err != nil {
		tb.Fatal(err)
	}
}

func TestWriteInitramfs(t *testing.T) {
	dir := t.TempDir()
	busybox := filepath.Join(dir, "busybox")
	writeELF(t, busybox, false)
	mods := filepath.Join(dir, "modules")
	if err := os.MkdirAll(filepath.Join(mods, "kernel/fs"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mods, "kernel/fs/netfs.ko"), []byte("netfs"), 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte("fscache"))
	zw.Close()
	if err := os.WriteFile(filepath.Join(mods, "kernel/fs/fscache.ko.gz"), gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}

	var buf bytes.Buffer
	err := WriteInitramfs(&buf, busybox, mods, []Module{
		{Name: "netfs", Path: "kernel/fs/netfs.ko"},
		{Name: "fscache", Path: "kernel/fs/fscache.ko.gz"},
	})
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]cpioEntry{}
	for _, e := range readCPIO(t, buf.Bytes()) {
		entries[e.name] = e
	}
	for name, want := range map[string]cpioEntry{
		"lib/modules/netfs.ko":   {mode: 0o100644, data: "netfs"},
		"lib/modules/fscache.ko": {mode: 0o100644, data: "fscache"},
		"bin/sh":                 {mode: 0o120777, data: "busybox"},
		"bin/insmod":             {mode: 0o120777, data: "busybox"},
		"dev/console":            {mode: 0o020600, rdevMajor: 5, rdevMinor: 1},
		"host":                   {mode: 0o040755},
	} {
		want.name = name
		if got := entries[name]; got != want {
			t.Errorf("entry %s: got %+v, want %+v", name, got, want)
		}
	}
	if e := entries["init"]; e.mode != 0o100755 || !strings.HasPrefix(e.data, "#!/bin/sh\n") {
		t.Errorf("init: mode %o, starts %.20q", e.mode, e.data)
	}
	if e := entries["bin/busybox"]; e.mode != 0o100755 || len(e.data) == 0 {
		t.Errorf("bin/busybox: mode %o, %d bytes", e.mode, len(e.data))
	}
}

func TestWriteInitramfsRejectsDynamicBusybox(t *testing.T) {
	busybox := filepath.Join(t.TempDir(), "busybox")
	writeELF(t, busybox, true)
	err := WriteInitramfs(&bytes.Buffer{}, busybox, t.TempDir(), nil)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("err = %v, want one about dynamic linking", err)
	}
}
