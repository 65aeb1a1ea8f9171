package tracefs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/caps"
)

// DefaultMount is where tracefs is mounted when no mount exists yet.
const DefaultMount = "/sys/kernel/tracing"

// ErrNoEvent is returned when the running kernel lacks a trace event.
var ErrNoEvent = errors.New("trace event not available")

// FS is a mounted tracefs.
type FS struct {
	Root string
	// Private is set when no tracefs was mounted: Open mounted one that only
	// this process sees, held by dir, gone when the process ends.
	Private bool
	dir     *os.File
}

// Open finds the tracefs mount through /proc/thread-self/mounts. When there is none
// it mounts one in a mount namespace of its own, so the machine's mounts stay
// as they were, before and after the run, even a run killed with SIGKILL.
// `ip netns exec` mounts a fresh sysfs that hides the host's tracefs, so a
// tool run under it needs this too.
func Open() (*FS, error) {
	// The mounts of this thread, not of the process's first thread: a
	// private mount made by an earlier Open lives in the namespace of the
	// thread that made it, which Go keeps parked when it is the first one,
	// and /proc/self shows that thread's mounts.
	f, err := os.Open("/proc/thread-self/mounts")
	if err != nil {
		return nil, fmt.Errorf("find tracefs: %w", err)
	}
	defer f.Close()
	if root, ok := findMount(f); ok {
		return &FS{Root: root}, nil
	}
	dir, err := mountPrivate()
	if err != nil {
		return nil, fmt.Errorf("mount tracefs: %w", err)
	}
	return &FS{Root: "/proc/self/fd/" + strconv.Itoa(int(dir.Fd())), Private: true, dir: dir}, nil
}

// Close releases a tracefs that Open mounted; the mount goes with it.
func (fs *FS) Close() error {
	if fs.dir == nil {
		return nil
	}
	return fs.dir.Close()
}

// mountPrivate mounts tracefs on a thread that first moves to a new mount
// namespace (with no propagation back), opens the mount point, and ends with
// its thread: the open directory is the only way to the mount, and the
// mount is released when it is closed or the process exits.
func mountPrivate() (*os.File, error) {
	type result struct {
		dir *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		// Never unlocked: the thread, the only one in the new mount
		// namespace, exits with this goroutine.
		runtime.LockOSThread()
		dir, err := func() (*os.File, error) {
			if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
				return nil, fmt.Errorf("new mount namespace: %w", caps.Explain(err, caps.MountTracefs))
			}
			if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
				return nil, fmt.Errorf("make mounts private: %w", caps.Explain(err, caps.MountTracefs))
			}
			if err := unix.Mount("nodev", DefaultMount, "tracefs", 0, ""); err != nil {
				return nil, fmt.Errorf("at %s: %w", DefaultMount, caps.Explain(err, caps.MountTracefs))
			}
			return os.OpenFile(DefaultMount, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		}()
		done <- result{dir, err}
	}()
	r := <-done
	return r.dir, r.err
}

// findMount returns the first tracefs mount point listed in a mounts table.
func findMount(r io.Reader) (string, bool) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		f := strings.Fields(s.Text())
		if len(f) >= 3 && f[2] == "tracefs" {
			return unescapeMount(f[1]), true
		}
	}
	return "", false
}

// unescapeMount undoes the octal escapes (\040 for a space) of a mounts table.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func (fs *FS) eventDir(group, event string) string {
	return filepath.Join(fs.Root, "events", group, event)
}

// EventID returns the perf tracepoint id of group:event.
func (fs *FS) EventID(group, event string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(fs.eventDir(group, event), "id"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("%s:%s: %w", group, event, ErrNoEvent)
	}
	if err != nil {
		return 0, fmt.Errorf("read id of %s:%s: %w", group, event, caps.Explain(err, caps.ReadTracefs))
	}
	id, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse id of %s:%s: %w", group, event, err)
	}
	return id, nil
}

// Field is one field of a trace event's raw record.
type Field struct {
	Name   string
	Offset int
	Size   int
}

// Format returns the fields of group:event's raw record, from its format file.
func (fs *FS) Format(group, event string) ([]Field, error) {
	f, err := fs.openFormat(group, event)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fields, err := parseFormat(f)
	if err != nil {
		return nil, fmt.Errorf("parse format of %s:%s: %w", group, event, err)
	}
	return fields, nil
}

// openFormat opens group:event's format file.
func (fs *FS) openFormat(group, event string) (*os.File, error) {
	f, err := os.Open(filepath.Join(fs.eventDir(group, event), "format"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s:%s: %w", group, event, ErrNoEvent)
	}
	if err != nil {
		return nil, fmt.Errorf("read format of %s:%s: %w", group, event, caps.Explain(err, caps.ReadTracefs))
	}
	return f, nil
}

// FieldOffset returns the offset of one field in group:event's raw record.
func (fs *FS) FieldOffset(group, event, field string) (int, error) {
	fields, err := fs.Format(group, event)
	if err != nil {
		return 0, err
	}
	for _, f := range fields {
		if f.Name == field {
			return f.Offset, nil
		}
	}
	return 0, fmt.Errorf("%s:%s has no field %q", group, event, field)
}

// parseFormat reads lines like
//
//	field:void * skbaddr;	offset:8;	size:8;	signed:0;
func parseFormat(r io.Reader) ([]Field, error) {
	var fields []Field
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := strings.TrimSpace(s.Text())
		if !strings.HasPrefix(line, "field:") {
			continue
		}
		var fd Field
		for _, part := range strings.Split(line, ";") {
			k, v, ok := strings.Cut(strings.TrimSpace(part), ":")
			if !ok {
				continue
			}
			var err error
			switch k {
			case "field":
				decl := strings.Fields(v)
				if len(decl) == 0 {
					return nil, fmt.Errorf("empty field declaration in %q", line)
				}
				name := decl[len(decl)-1]
				if i := strings.IndexByte(name, '['); i >= 0 {
					name = name[:i]
				}
				fd.Name = strings.TrimLeft(name, "*")
			case "offset":
				fd.Offset, err = strconv.Atoi(v)
			case "size":
				fd.Size, err = strconv.Atoi(v)
			}
			if err != nil {
				return nil, fmt.Errorf("bad %s in %q: %w", k, line, err)
			}
		}
		fields = append(fields, fd)
	}
	return fields, s.Err()
}
