package caps

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Cap is a capability number, as in <linux/capability.h>.
type Cap uint

// The capabilities the tool's operations need.
const (
	DacOverride   Cap = unix.CAP_DAC_OVERRIDE
	DacReadSearch Cap = unix.CAP_DAC_READ_SEARCH
	NetAdmin      Cap = unix.CAP_NET_ADMIN
	NetRaw        Cap = unix.CAP_NET_RAW
	SysAdmin      Cap = unix.CAP_SYS_ADMIN
	Perfmon       Cap = unix.CAP_PERFMON
	BPF           Cap = unix.CAP_BPF
)

var names = map[Cap]string{
	DacOverride: "CAP_DAC_OVERRIDE", DacReadSearch: "CAP_DAC_READ_SEARCH", NetAdmin: "CAP_NET_ADMIN",
	NetRaw: "CAP_NET_RAW", SysAdmin: "CAP_SYS_ADMIN", Perfmon: "CAP_PERFMON", BPF: "CAP_BPF",
}

func (c Cap) String() string {
	if n, ok := names[c]; ok {
		return n
	}
	return fmt.Sprintf("capability %d", uint(c))
}

// Need is what one operation needs: every capability of any one of its
// sets, the first being the narrowest.
type Need [][]Cap

// What each privileged operation of a run needs on kernels from 5.8 (where
// CAP_BPF and CAP_PERFMON split from CAP_SYS_ADMIN).
var (
	// unshare(CLONE_NEWNS) and mount, for a private tracefs.
	MountTracefs = Need{{SysAdmin}}
	// tracefs files are root's and not world-readable.
	ReadTracefs = Need{{DacReadSearch}, {DacOverride}}
	// BPF maps, with unprivileged BPF off.
	CreateMap = Need{{BPF}, {SysAdmin}}
	// Tracing programs that read kernel memory.
	LoadBPF = Need{{BPF, Perfmon}, {SysAdmin}}
	// perf_event_open of tracepoints and BPF-output rings, whatever
	// kernel.perf_event_paranoid says.
	OpenPerfEvent = Need{{Perfmon}, {SysAdmin}}
	// The raw sockets a probe is sent and answered on (ICMP echo, TCP SYN).
	RawSocket = Need{{NetRaw}}
	// Joining NFNLGRP_NFTRACE and adding the tracing tables.
	TraceNetfilter = Need{{NetAdmin}}
	// setns into another network namespace.
	EnterNetns = Need{{SysAdmin}}
)

func (n Need) String() string {
	alts := make([]string, len(n))
	for i, set := range n {
		s := make([]string, len(set))
		for j, c := range set {
			s[j] = c.String()
		}
		alts[i] = strings.Join(s, " and ")
	}
	if len(alts) == 1 {
		return alts[0]
	}
	return alts[0] + " (or " + strings.Join(alts[1:], " or ") + ")"
}

// Set is a capability bit set.
type Set uint64

// Has reports whether c is in s.
func (s Set) Has(c Cap) bool { return s&(1<<c) != 0 }

// Effective returns the calling thread's effective capabilities, which are
// every thread's here: the tool never changes its own.
func Effective() (Set, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return Set(data[0].Effective) | Set(data[1].Effective)<<32, nil
}

// Missing returns the capabilities of n's first set that s lacks, or nil
// when s holds all of any one of n's sets.
func (n Need) Missing(s Set) []Cap {
	var first []Cap
	for i, set := range n {
		var lack []Cap
		for _, c := range set {
			if !s.Has(c) {
				lack = append(lack, c)
			}
		}
		if len(lack) == 0 {
			return nil
		}
		if i == 0 {
			first = lack
		}
	}
	return first
}

// Error is a privileged operation refused for want of capabilities.
type Error struct {
	Err     error
	Need    Need
	Missing []Cap
}

func (e *Error) Error() string {
	return fmt.Sprintf("%v: missing %s: needs %s", e.Err, Names(e.Missing), e.Need)
}

func (e *Error) Unwrap() error { return e.Err }

// Names joins the names of cs with ", ".
func Names(cs []Cap) string {
	s := make([]string, len(cs))
	for i, c := range cs {
		s[i] = c.String()
	}
	return strings.Join(s, ", ")
}

// Explain turns err, from an operation that needs n, into an *Error when the
// kernel refused it (EPERM, EACCES) and this process lacks what n names;
// any other error, or a refusal with n held (lockdown, a security module),
// is returned as it was.
func Explain(err error, n Need) error {
	if err == nil || !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EACCES) {
		return err
	}
	s, cerr := Effective()
	if cerr != nil {
		return err
	}
	if lack := n.Missing(s); lack != nil {
		return &Error{Err: err, Need: n, Missing: lack}
	}
	return err
}

// MissingOf returns the capabilities that errs say are missing, each once,
// in capability order.
func MissingOf(errs ...error) []Cap {
	var lack Set
	for _, err := range errs {
		var ce *Error
		if errors.As(err, &ce) {
			for _, c := range ce.Missing {
				lack |= 1 << c
			}
		}
	}
	var out []Cap
	for c := Cap(0); c < 64; c++ {
		if lack.Has(c) {
			out = append(out, c)
		}
	}
	return out
}
