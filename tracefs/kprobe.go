package tracefs

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// ErrNoKprobes is returned when the kernel has no kprobe_events
// (CONFIG_KPROBE_EVENTS is not set).
var ErrNoKprobes = errors.New("kprobes not available (no kprobe_events in tracefs)")

// ErrNoSymbol matches an Add error saying the kernel has no such function to
// probe (ENOENT or EINVAL from kprobe_events): its module is not loaded, or
// it does not exist in this kernel. Any other failure (EPERM under lockdown,
// EBUSY, ...) is an error of its own.
var ErrNoSymbol = errors.New("no such function in this kernel")

// groupPrefix starts the name of every kprobe group we create.
const groupPrefix = "tracepkt_"

// KprobesSupported returns nil when kprobes can be created through tracefs.
func (fs *FS) KprobesSupported() error {
	if _, err := os.Stat(filepath.Join(fs.Root, "kprobe_events")); err != nil {
		return fmt.Errorf("%w: %w", ErrNoKprobes, err)
	}
	return nil
}

// KprobeGroup is a set of kprobes this process created under one unique
// group name, tracepkt_<pid>_<random>; Close removes them all.
type KprobeGroup struct {
	fs     *FS
	Group  string
	events []string
}

// NewKprobeGroup reserves a unique group name; nothing is created yet.
func (fs *FS) NewKprobeGroup() (*KprobeGroup, error) {
	if err := fs.KprobesSupported(); err != nil {
		return nil, err
	}
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("kprobe group name: %w", err)
	}
	return &KprobeGroup{fs: fs, Group: fmt.Sprintf("%s%d_%s", groupPrefix, os.Getpid(), hex.EncodeToString(b[:]))}, nil
}

// KprobeDefinition is the kprobe_events line that creates a probe (ret: a
// kretprobe) named group/event on symbol.
func KprobeDefinition(group, event, symbol string, ret bool) string {
	kind := "p"
	if ret {
		kind = "r"
	}
	return fmt.Sprintf("%s:%s/%s %s", kind, group, event, symbol)
}

// Add creates a kprobe (or kretprobe) named event on symbol and returns its
// perf tracepoint id.
func (g *KprobeGroup) Add(event, symbol string, ret bool) (uint64, error) {
	if err := g.fs.writeKprobeEvents(KprobeDefinition(g.Group, event, symbol, ret)); err != nil {
		return 0, kprobeAddError(symbol, err)
	}
	g.events = append(g.events, event)
	return g.fs.EventID(g.Group, event)
}

// Close removes every probe of the group.
func (g *KprobeGroup) Close() error {
	var errs []error
	for _, ev := range g.events {
		if err := g.fs.writeKprobeEvents("-:" + g.Group + "/" + ev); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove kprobe %s/%s: %w", g.Group, ev, err))
		}
	}
	g.events = nil
	return errors.Join(errs...)
}

// kprobeAddError says why adding a kprobe on symbol failed. Only the write of
// the definition can say the symbol is absent: opening kprobe_events is
// another matter.
func kprobeAddError(symbol string, err error) error {
	var werr *writeError
	if errors.As(err, &werr) && (errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.EINVAL)) {
		return fmt.Errorf("create kprobe on %s: %w (%w)", symbol, ErrNoSymbol, werr)
	}
	return fmt.Errorf("create kprobe on %s: %w", symbol, err)
}

// writeError is the kernel refusing a line written to kprobe_events.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

func (fs *FS) writeKprobeEvents(line string) error {
	f, err := os.OpenFile(filepath.Join(fs.Root, "kprobe_events"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		f.Close()
		return &writeError{err}
	}
	return f.Close()
}

// SweepKprobes removes the probes of tracepkt groups whose process no longer
// exists: what a run killed with SIGKILL left behind.
func (fs *FS) SweepKprobes() error {
	if fs.KprobesSupported() != nil {
		return nil
	}
	f, err := os.Open(filepath.Join(fs.Root, "kprobe_events"))
	if err != nil {
		return fmt.Errorf("read kprobe_events: %w", err)
	}
	var stale []string
	s := bufio.NewScanner(f)
	for s.Scan() {
		if name, ok := staleProbe(s.Text(), pidAlive); ok {
			stale = append(stale, name)
		}
	}
	f.Close()
	var errs []error
	for _, name := range stale {
		if err := fs.writeKprobeEvents("-:" + name); err != nil && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("remove stale kprobe %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// staleProbe parses a kprobe_events line ("p:group/event symbol ...") and
// returns group/event when it belongs to a tracepkt group of a dead process.
func staleProbe(line string, alive func(int) bool) (string, bool) {
	def, _, _ := strings.Cut(line, " ")
	_, name, ok := strings.Cut(def, ":")
	if !ok {
		return "", false
	}
	group, _, ok := strings.Cut(name, "/")
	if !ok || !strings.HasPrefix(group, groupPrefix) {
		return "", false
	}
	pidText, _, ok := strings.Cut(strings.TrimPrefix(group, groupPrefix), "_")
	pid, err := strconv.Atoi(pidText)
	if !ok || err != nil || alive(pid) {
		return "", false
	}
	return name, true
}

func pidAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
