package vmtest

import (
	"bytes"
	"slices"
	"testing"
)

func TestParseStatus(t *testing.T) {
	got, err := parseStatus([]byte("1 0\n2 1\n3 127\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{0, 1, 127}; !slices.Equal(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if got, err := parseStatus(nil); err != nil || len(got) != 0 {
		t.Errorf("empty status file: %v, %v; want none, nil", got, err)
	}
	for _, bad := range []string{"1\n", "2 0\n", "1 0\n1 0\n", "one 0\n", "1 x\n"} {
		if _, err := parseStatus([]byte(bad)); err == nil {
			t.Errorf("parseStatus(%q): no error", bad)
		}
	}
}

func TestCRLFWriter(t *testing.T) {
	var out bytes.Buffer
	w := &crlfWriter{w: &out}
	// Line ends split across writes, a lone '\r' kept, one held back at the end.
	for _, chunk := range []string{"a\r", "\nb\r\n", "50%\r100%\r\n\r", "\r\nend\r"} {
		if n, err := w.Write([]byte(chunk)); n != len(chunk) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", chunk, n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "a\nb\n50%\r100%\n\r\nend\r"; got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestCommandEnv(t *testing.T) {
	env := func(vars map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
	}
	got := CommandEnv(env(map[string]string{"PATH": "/p", "CI": "true", "SECRET": "x"}))
	if want := []string{"TRACEPKT_VM=1", "PATH=/p", "HOME=/run/tmp", "TMPDIR=/run/tmp", "CI=true"}; !slices.Equal(got, want) {
		t.Errorf("env = %v, want %v", got, want)
	}
	got = CommandEnv(env(nil))
	if want := []string{"TRACEPKT_VM=1", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/run/tmp", "TMPDIR=/run/tmp"}; !slices.Equal(got, want) {
		t.Errorf("env = %v, want %v", got, want)
	}
}

func TestQEMUOptEscape(t *testing.T) {
	if got := qemuOptEscape("/tmp/a,b"); got != "/tmp/a,,b" {
		t.Errorf("escaped = %q", got)
	}
}

func TestHiddenInGuest(t *testing.T) {
	for path, want := range map[string]string{
		"/tmp/repo":  "", // the host's /tmp stays visible, read-only
		"/run/x/y":   "/run",
		"/work/main": "",
		"/tmpfoo":    "",
		"/":          "",
	} {
		got, ok := hiddenInGuest(path)
		if got != want || ok != (want != "") {
			t.Errorf("hiddenInGuest(%q) = %q, %v; want %q", path, got, ok, want)
		}
	}
}
