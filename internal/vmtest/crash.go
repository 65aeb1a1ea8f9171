package vmtest

import (
	"bytes"
	"regexp"
	"strings"
)

// crashWatch reads the guest's console as it passes and keeps what says why
// a guest died: the test that was running and, if the kernel oopsed, its first
// report (what went wrong, where, and the calls that led there). A dead
// guest's console output can run to hundreds of lines, and the end of a CI
// log shows only the last ones; the runner's error repeats this summary.
type crashWatch struct {
	partial []byte // a line not yet ended
	test    string // the last "=== RUN" test name
	what    string // the oops headline, such as "BUG: kernel NULL pointer dereference, address: 0000000000000000"
	task    string // the task it happened in, as "Comm: swapper/1" names it
	rip     string // where in the kernel, "RIP: 0010:..."
	trace   []string
	inTrace bool
	done    bool // the first report is complete: later ones are its consequences
}

// Frames of the call trace kept: the innermost say where it happened.
const crashFrames = 8

var (
	consoleStamp = regexp.MustCompile(`^\[\s*\d+\.\d+\]\s?`)
	oopsHeadline = regexp.MustCompile(`^(BUG: .*|kernel BUG at .*|general protection fault.*|Oops: .*|Kernel panic - not syncing: .*)`)
	traceFrame   = regexp.MustCompile(`^([A-Za-z_.][\w.]*\+0x[0-9a-f]+)/0x[0-9a-f]+( \[\w+\])?`)
	oopsTask     = regexp.MustCompile(`^CPU: \d+ PID: \d+ Comm: (\S+)`)
	// Frames of the reporting itself, not of what went wrong.
	reportFrame = regexp.MustCompile(`^(dump_stack\w*|panic)\+`)
)

func (c *crashWatch) Write(p []byte) (int, error) {
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.line(string(c.partial[:i]))
		c.partial = c.partial[i+1:]
	}
	if len(c.partial) > 4096 { // no line of a test or an oops is this long
		c.partial = c.partial[:0]
	}
	return len(p), nil
}

func (c *crashWatch) line(l string) {
	l = strings.TrimRight(l, "\r")
	if name, ok := strings.CutPrefix(l, "=== RUN"); ok {
		c.test = strings.TrimSpace(name)
		return
	}
	if c.done {
		return
	}
	l = consoleStamp.ReplaceAllString(l, "")
	if c.what == "" {
		if oopsHeadline.MatchString(l) {
			c.what = l
		}
		return
	}
	switch {
	case c.task == "" && oopsTask.MatchString(l):
		c.task = oopsTask.FindStringSubmatch(l)[1]
	case c.rip == "" && strings.HasPrefix(l, "RIP: 0010:"): // kernel code; 0033 is a user task's
		c.rip = l
	case strings.HasPrefix(l, "Call Trace:"):
		c.inTrace = true
	case c.inTrace:
		frame := strings.TrimSpace(l)
		switch {
		case strings.HasPrefix(frame, "<"), strings.HasPrefix(frame, "? "):
			// <IRQ>, <TASK> and guessed frames say nothing certain.
		case traceFrame.MatchString(frame):
			m := traceFrame.FindStringSubmatch(frame)
			if len(c.trace) < crashFrames && !reportFrame.MatchString(frame) {
				c.trace = append(c.trace, m[1]+m[2])
			}
		default:
			c.inTrace, c.done = false, true
		}
	}
}

// String is the summary: empty when there is nothing to say.
func (c *crashWatch) String() string {
	var parts []string
	if c.what != "" {
		s := "the kernel said " + strings.TrimSpace(c.what)
		if c.task != "" {
			s += ", in " + c.task
		}
		if c.rip != "" {
			s += ", " + c.rip
		}
		if len(c.trace) > 0 {
			s += ", called from " + strings.Join(c.trace, " < ")
		}
		parts = append(parts, s)
	}
	if c.test != "" {
		parts = append(parts, "the last test started was "+c.test)
	}
	return strings.Join(parts, "; ")
}
