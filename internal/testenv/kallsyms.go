package testenv

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// KernelText reports whether /proc/kallsyms lists name as a text symbol
// (type t or T, built in or in a module). It reads the table on its own, so
// that tests check the tool's symbol resolution against the kernel's.
func KernelText(tb testing.TB, name string) bool {
	tb.Helper()
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "address type name [module]"
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == name && strings.EqualFold(fields[1], "t") {
			return true
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatalf("read /proc/kallsyms: %v", err)
	}
	return false
}

var kernelLocation = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_.$]*)\+0x[0-9a-f]+$`)

// KernelLocation checks that loc names a place in kernel code as
// "function+0xoffset", with a function /proc/kallsyms lists as text.
func KernelLocation(tb testing.TB, loc string) error {
	tb.Helper()
	m := kernelLocation.FindStringSubmatch(loc)
	if m == nil {
		return fmt.Errorf("location %q is not function+0xoffset", loc)
	}
	if !KernelText(tb, m[1]) {
		return fmt.Errorf("location %q: %s is not a text symbol in /proc/kallsyms", loc, m[1])
	}
	return nil
}
