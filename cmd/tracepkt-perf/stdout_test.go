package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStdoutWriteErrors: output that cannot be written is exit 2 with the
// reason on stderr, never exit 0 with the output lost: with stdout closed
// (`>&-`, which the Go runtime turns into /dev/null before main runs) and
// with stdout a pipe whose reader is gone (EPIPE, no SIGPIPE death). A mode
// that writes nothing to stdout (--pcapng) is unaffected, and so is
// `>/dev/null`. No root.
func TestStdoutWriteErrors(t *testing.T) {
	self := testBinary(t)
	out := filepath.Join(t.TempDir(), "out.pcapng")
	modes := [][]string{
		{"--replay", "testdata/bridge-ipv4.tpk"},
		{"--replay", "testdata/bridge-ipv4.tpk", "--json"},
		{"--replay", "testdata/stats-router-ipv4.tpk", "--stats"},
		{"--diff", "testdata/diff-ok-ipv4.tpk", "testdata/diff-drop-ipv4.tpk"},
		{"--version"},
		{"--help"},
	}
	for _, stdout := range []string{"closed", "broken pipe", "/dev/null"} {
		for _, args := range append(modes, []string{"--replay", "testdata/bridge-ipv4.tpk", "--pcapng", out}) {
			cmd := exec.Command(self, args...)
			switch stdout {
			case "closed":
				cmd = exec.Command("sh", append([]string{"-c", `exec "$0" "$@" >&-`, self}, args...)...)
			case "broken pipe":
				r, w, err := os.Pipe()
				if err != nil {
					t.Fatal(err)
				}
				r.Close()
				defer w.Close()
				cmd.Stdout = w
			case "/dev/null":
				null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer null.Close()
				cmd.Stdout = null
			}
			cmd.Env = append(os.Environ(), asToolEnv+"=1")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			cmd.Run()
			code := cmd.ProcessState.ExitCode()
			wantCode, wantErr := 2, map[string]string{"closed": "tracepkt-perf: write stdout: it is closed: bad file descriptor\n",
				"broken pipe": "tracepkt-perf: write /dev/stdout: broken pipe\n"}[stdout]
			switch {
			case len(args) > 2 && args[len(args)-2] == "--pcapng":
				wantCode, wantErr = 0, "wrote 6 packets to "+out+"\n"
			case stdout == "/dev/null":
				wantCode, wantErr = 0, ""
				if args[0] == "--diff" {
					wantCode = 1 // the paths differ
				}
			}
			if code != wantCode || stderr.String() != wantErr {
				t.Errorf("%s, stdout %s: exit %d, stderr %q; want exit %d, stderr %q", strings.Join(args, " "), stdout, code, stderr.String(), wantCode, wantErr)
			}
		}
	}
}
