package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// fileState is what an output path must keep when the tool does not replace
// it: type, mode, owner, device number, inode, link target and content.
func fileState(t *testing.T, path string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		return err.Error()
	}
	s := fmt.Sprintf("mode %#o uid %d gid %d rdev %d ino %d", st.Mode, st.Uid, st.Gid, st.Rdev, st.Ino)
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, _ := os.Readlink(path)
		s += " -> " + target
	case unix.S_IFREG:
		b, _ := os.ReadFile(path)
		s += fmt.Sprintf(" content %q", b)
	}
	return s
}

// specialFiles makes in dir one of each kind of file the tool must never
// replace, and returns their paths by kind; the character device (the
// numbers of /dev/null, made in dir, the real one never touched) needs root.
func specialFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, []byte("the symlink's target"), 0o644); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	for kind, make := range map[string]func(string) error{
		"a FIFO":          func(p string) error { return unix.Mkfifo(p, 0o644) },
		"a symbolic link": func(p string) error { return os.Symlink(target, p) },
		"a directory":     func(p string) error { return os.Mkdir(p, 0o755) },
		"a character device": func(p string) error {
			if os.Geteuid() != 0 {
				return nil
			}
			return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
		},
		"a socket": func(p string) error {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: p, Net: "unix"})
			if err == nil {
				l.SetUnlinkOnClose(false)
				t.Cleanup(func() { l.Close() })
			}
			return err
		},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(kind, " ", "-"))
		if err := make(p); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(p); err == nil {
			paths[kind] = p
		}
	}
	return paths
}

// TestOutputPathsNeverReplaced: --svg and --pcapng refuse a path that holds
// anything but a regular file, exit 2 in one line, and leave it exactly as
// it was; an existing regular file is replaced with its owner and mode
// kept. Without root, the character device and the other owner are left out.
func TestOutputPathsNeverReplaced(t *testing.T) {
	dir := t.TempDir()
	rec := filepath.Join("testdata", "svg-example-ipv4.tpk")
	for kind, path := range specialFiles(t, dir) {
		for _, flag := range []string{"--svg", "--pcapng"} {
			before := fileState(t, path)
			res := runTool(t, nil, "--replay", rec, flag, path)
			want := fmt.Sprintf("tracepkt-perf: %s: %s is %s, not a regular file: not replacing it\n", strings.TrimPrefix(flag, "--"), path, kind)
			if res.code != 2 || res.stderr != want || res.stdout != "" {
				t.Errorf("%s over %s: exit %d, stdout %q, stderr %q; want exit 2, %q", flag, kind, res.code, res.stdout, res.stderr, want)
			}
			if after := fileState(t, path); after != before {
				t.Errorf("%s over %s: it became %s, was %s", flag, kind, after, before)
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, "target")); err != nil || string(b) != "the symlink's target" {
		t.Errorf("the symlink's target became %q (%v)", b, err)
	}
	uid := os.Geteuid()
	if uid == 0 {
		uid = 65534
	}
	for _, flag := range []string{"--svg", "--pcapng"} {
		path := filepath.Join(dir, "existing"+flag)
		if err := os.WriteFile(path, []byte("yesterday's"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(path, uid, uid); err != nil {
			t.Fatal(err)
		}
		res := runTool(t, nil, "--replay", rec, flag, path)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(path)
		if res.code != 0 || st.Mode != unix.S_IFREG|0o600 || int(st.Uid) != uid || int(st.Gid) != uid || bytes.Equal(b, []byte("yesterday's")) || len(b) == 0 {
			t.Errorf("%s over a 0600 file of uid %d: exit %d (%s), now mode %#o uid %d gid %d, %d bytes", flag, uid, res.code, res.stderr, st.Mode, st.Uid, st.Gid, len(b))
		}
	}
}

// TestOutputOwnerNotKept: a user who cannot give the new file the owner of
// the file at the path (root's, writable by all, here) is refused, exit 2,
// before writing, and the file stays as it was. Needs root, to run the tool as another user.
func TestOutputOwnerNotKept(t *testing.T) {
	testenv.RequireRoot(t) // to run the tool as another user
	dir := openTempDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join("testdata", "svg-example-ipv4.tpk"))
	if err != nil {
		t.Fatal(err)
	}
	rec := filepath.Join(dir, "run.tpk")
	if err := os.WriteFile(rec, data, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, flag := range []string{"--svg", "--pcapng"} {
		path := filepath.Join(dir, "roots"+flag)
		// Writable by all: only its owner stands in the way.
		if err := os.WriteFile(path, []byte("root's"), 0o666); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
		before := fileState(t, path)
		res := runToolAs(t, 65534, dir, "--replay", rec, flag, path)
		want := fmt.Sprintf("tracepkt-perf: %s: %s belongs to uid 0, gid 0, which the new file cannot keep (operation not permitted): not replacing it\n", strings.TrimPrefix(flag, "--"), path)
		if res.code != 2 || res.stderr != want || res.stdout != "" {
			t.Errorf("%s over root's file as uid 65534: exit %d, stdout %q, stderr %q; want exit 2, %q", flag, res.code, res.stdout, res.stderr, want)
		}
		if after := fileState(t, path); after != before {
			t.Errorf("%s: root's file became %s, was %s", flag, after, before)
		}
	}
}
