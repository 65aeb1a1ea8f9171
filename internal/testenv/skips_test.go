package testenv_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
)

// skipsOutsideRequire are the tests that may skip by themselves, and why:
// none of them skips for a requirement CI is supposed to have.
var skipsOutsideRequire = map[string]string{
	"probes/nftrace/capture_test.go":            "a tool run by hand with -args -capture, not a test",
	"internal/vmtest/guest_test.go":             "runs only inside the test VM, where make test-matrix runs it",
	"cmd/tracepkt-perf/kprobe_e2e_test.go":      "kprobes exist only in the matrix kernels, where their absence fails",
	"cmd/tracepkt-perf/podman_e2e_test.go":      "podman cannot keep its storage on the test VM's read-only root: it runs in the host suite",
	"cmd/tracepkt-perf/tcp_e2e_test.go":         "hostOnly: cases with no kernel behaviour of their own run in the host suite, not again under emulation",
	"cmd/tracepkt-perf/tunnel_e2e_test.go":      "the development kernel has VXLAN but not Geneve, IPIP or GRE: those run in the matrix kernels, where their absence fails",
	"cmd/tracepkt-perf/guest_recording_test.go": "records inside a matrix guest, and replays on the host what a guest recorded: make test-vm runs each where it belongs; the two-guest merge boots its own guests from the host suite",
}

// TestSkipsGoThroughRequire: a test that skips must do it through Require
// (RequireRoot, RequireCommands), so that CI=true turns a missing
// requirement into a failure instead of a test that silently did nothing.
func TestSkipsGoThroughRequire(t *testing.T) {
	root := filepath.Join("..", "..")
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != "." || rel == "internal/testenv" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, "_test.go") || skipsOutsideRequire[rel] != "" {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok && strings.HasPrefix(sel.Sel.Name, "Skip") {
				t.Errorf("%s: %s skips by itself; use testenv.Require so that CI=true fails instead", fset.Position(sel.Pos()), sel.Sel.Name)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
