package vmtest

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// fakeBzImage returns the start of a bzImage whose setup header names version.
func fakeBzImage(version string) []byte {
	b := make([]byte, 0x400)
	copy(b[bzMagicOffset:], "HdrS")
	binary.LittleEndian.PutUint16(b[bzVersionPtrOffset:], 0x100)
	copy(b[bzSetupBase+0x100:], version+"\x00")
	return b
}

func TestKernelRelease(t *testing.T) {
	file := filepath.Join(t.TempDir(), "vmlinuz-lies")
	img := fakeBzImage("6.1.0-56-amd64 (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2")
	if err := os.WriteFile(file, img, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := KernelRelease(file)
	if err != nil {
		t.Fatal(err)
	}
	if got != "6.1.0-56-amd64" {
		t.Errorf("release = %q, want 6.1.0-56-amd64", got)
	}
}

func TestReleaseFromSetupHeaderErrors(t *testing.T) {
	if _, err := releaseFromSetupHeader(make([]byte, 0x400)); !errors.Is(err, errNotBzImage) {
		t.Errorf("no magic: err = %v, want errNotBzImage", err)
	}
	img := fakeBzImage("x")
	binary.LittleEndian.PutUint16(img[bzVersionPtrOffset:], 0x7000)
	if _, err := releaseFromSetupHeader(img); err == nil {
		t.Error("no error for a version pointer past the end")
	}
	if _, err := releaseFromSetupHeader(fakeBzImage("")); err == nil {
		t.Error("no error for an empty version string")
	}
}

func TestNewestKernel(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"vmlinuz-6.1.0-9-amd64", "vmlinuz-6.12.117+deb12-amd64", "vmlinuz-6.1.0-56-amd64", "config-9.9"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := NewestKernel(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "vmlinuz-6.12.117+deb12-amd64"); got != want {
		t.Errorf("newest = %s, want %s", got, want)
	}
	if _, err := NewestKernel(t.TempDir()); err == nil {
		t.Error("no error for a directory without kernels")
	}
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int // sign
	}{
		{"6.1.0-56-amd64", "6.1.0-9-amd64", 1},
		{"6.12.1-amd64", "6.1.0-56-amd64", 1},
		{"6.1.0-56-amd64", "6.1.0-56-amd64", 0},
		{"6.1", "6.1.0", -1},
		{"6.01", "6.1", 0},
		{"6.1-amd64", "6.1-cloud", -1},
	} {
		got := compareVersions(tc.a, tc.b)
		if sign(got) != tc.want {
			t.Errorf("compareVersions(%q, %q) = %d, want sign %d", tc.a, tc.b, got, tc.want)
		}
	}
}

func sign(n int) int {
	switch {
	case n < 0:
		return -1
	case n > 0:
		return 1
	}
	return 0
}

func TestModulesRoot(t *testing.T) {
	for kernel, want := range map[string]string{
		"/boot/vmlinuz-6.1.0-57-amd64":                         "/lib/modules",
		"/var/cache/k/bullseye/boot/vmlinuz-5.10.0-46-amd64":   "/var/cache/k/bullseye/lib/modules",
		"/home/me/bzImage":                                     "/lib/modules",
		"/var/cache/k/bullseye/boot/../boot/vmlinuz-5.10.0-46": "/var/cache/k/bullseye/lib/modules",
	} {
		if got := ModulesRoot(kernel); got != want {
			t.Errorf("ModulesRoot(%s) = %s, want %s", kernel, got, want)
		}
	}
}
