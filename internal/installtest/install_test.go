package installtest

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// TestMakeInstall installs into a DESTDIR with a PREFIX: a static binary
// that runs, its man page and its bash completion; make uninstall removes
// them.
func TestMakeInstall(t *testing.T) {
	testenv.RequireCommands(t, "make", "go", "install")
	dest := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("make", append([]string{"-C", filepath.Join("..", "..")}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %v: %v\n%s", args, err, out)
		}
	}
	run("install", "DESTDIR="+dest, "PREFIX=/opt/tp")
	bin := filepath.Join(dest, "opt/tp/bin/tracepkt-perf")
	for _, f := range []string{bin, "opt/tp/share/man/man8/tracepkt-perf.8", "opt/tp/share/bash-completion/completions/tracepkt-perf"} {
		if !filepath.IsAbs(f) {
			f = filepath.Join(dest, f)
		}
		if _, err := os.Stat(f); err != nil {
			t.Errorf("not installed: %v", err)
		}
	}
	e, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range e.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the installed binary is dynamically linked (%v)", p.Type)
		}
	}
	e.Close()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || !strings.HasPrefix(string(out), "tracepkt-perf ") {
		t.Errorf("installed --version: %q, %v", out, err)
	}
	run("uninstall", "DESTDIR="+dest, "PREFIX=/opt/tp")
	if _, err := os.Stat(bin); err == nil {
		t.Error("make uninstall left the binary")
	}
}
