package vmtest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Offsets in the x86 boot protocol's setup header; they must match
// Documentation/arch/x86/boot.rst.
const (
	bzMagicOffset      = 0x202 // "HdrS"
	bzVersionPtrOffset = 0x20e // u16: kernel_version string, minus 0x200
	bzSetupBase        = 0x200
)

// KernelRelease reads the release string ("6.1.0-56-amd64") that `uname -r`
// would print from a bzImage's setup header, the string that names the
// kernel's /lib/modules directory. File names can lie; the header cannot.
func KernelRelease(bzImage string) (string, error) {
	f, err := os.Open(bzImage)
	if err != nil {
		return "", fmt.Errorf("read kernel release: %w", err)
	}
	defer f.Close()
	head := make([]byte, 64<<10)
	n, err := f.ReadAt(head, 0)
	if n == 0 {
		return "", fmt.Errorf("read kernel release from %s: %w", bzImage, err)
	}
	release, err := releaseFromSetupHeader(head[:n])
	if err != nil {
		return "", fmt.Errorf("read kernel release from %s: %w", bzImage, err)
	}
	return release, nil
}

var errNotBzImage = errors.New("not a bzImage (no HdrS setup header)")

func releaseFromSetupHeader(head []byte) (string, error) {
	if len(head) < bzVersionPtrOffset+2 || string(head[bzMagicOffset:bzMagicOffset+4]) != "HdrS" {
		return "", errNotBzImage
	}
	ptr := int(binary.LittleEndian.Uint16(head[bzVersionPtrOffset:]))
	start := bzSetupBase + ptr
	if ptr == 0 || start >= len(head) {
		return "", fmt.Errorf("kernel_version pointer %#x out of range", ptr)
	}
	s := head[start:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	release, _, _ := strings.Cut(string(s), " ")
	if release == "" {
		return "", errors.New("empty kernel_version string")
	}
	return release, nil
}

// NewestKernel returns the dir/vmlinuz-* whose version sorts last, comparing
// digit runs as numbers so that 6.12 is newer than 6.1.0-56.
func NewestKernel(dir string) (string, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "vmlinuz-*"))
	if err != nil {
		return "", fmt.Errorf("find kernels: %w", err)
	}
	if len(paths) == 0 {
		return "", fmt.Errorf("find kernels: no %s/vmlinuz-* (install linux-image-amd64)", dir)
	}
	return slices.MaxFunc(paths, func(a, b string) int {
		return compareVersions(filepath.Base(a), filepath.Base(b))
	}), nil
}

// compareVersions orders strings by runs: digit runs compare as numbers, other
// runs as text.
func compareVersions(a, b string) int {
	for a != "" && b != "" {
		ra, restA := nextRun(a)
		rb, restB := nextRun(b)
		if c := compareRun(ra, rb); c != 0 {
			return c
		}
		a, b = restA, restB
	}
	return len(a) - len(b)
}

func nextRun(s string) (run, rest string) {
	digit := isDigit(s[0])
	i := 1
	for i < len(s) && isDigit(s[i]) == digit {
		i++
	}
	return s[:i], s[i:]
}

func compareRun(a, b string) int {
	if isDigit(a[0]) && isDigit(b[0]) {
		a, b = strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if len(a) != len(b) {
			return len(a) - len(b)
		}
	}
	return strings.Compare(a, b)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// ModulesRoot returns the directory that holds the <release>/ module tree of
// a kernel image: <root>/lib/modules for <root>/boot/vmlinuz-*, the layout of
// an unpacked linux-image package and of the host itself, and the host's
// /lib/modules for a kernel anywhere else.
func ModulesRoot(kernel string) string {
	boot := filepath.Dir(kernel)
	if filepath.Base(boot) != "boot" {
		return "/lib/modules"
	}
	return filepath.Join(filepath.Dir(boot), "lib", "modules")
}
