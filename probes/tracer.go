package probes

import (
	"errors"
	"sync"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/tracefs"
)

// Config selects what a Tracer attaches.
type Config struct {
	EchoID uint16
	// EchoCookie, when not 0, also keeps an echo whose id a NAT rewrote by
	// its payload's first 4 bytes (big-endian), the pinger's cookie.
	EchoCookie uint32
	// TCP, when set, makes this the trace of a TCP run marked by it (its
	// EchoID is the one records carry; Config.EchoID is then unused); nil
	// is the trace of an echo run.
	TCP *decode.TCPMark
	// UDP, when set, makes this the trace of a UDP run marked by it, as TCP
	// does (set one of them at most): Open then creates the trace's tuple
	// map (TupleMap).
	UDP *decode.UDPMark
	// Listen makes this a listener's trace (ListenClauses): the echoes of
	// any run, or of the run of echo id EchoID when it is not 0.
	Listen bool
	// Probes to attach; nil means decode.Probes().
	Probes []decode.Probe
	// Attach says how device probes may be attached; "" means AttachAuto.
	Attach AttachMode
	// RingPages is the data size of each per-CPU ring in pages (a power of two).
	RingPages int
	// Netfilter are the netfilter probes (kprobes) to attach; those whose
	// function is not in the kernel are left out: its module is not loaded,
	// so there are no such rules to see.
	Netfilter []decode.Probe
	// NetfilterOptional makes a kprobe that cannot be added for another
	// reason (lockdown, EBUSY) a note (Tracer.Notes) instead of an error:
	// auto's kprobes add to what nftables tracing shows, and must not stop
	// a run that can go on without them.
	NetfilterOptional bool
}

// Clauses say which packets are ours in the trace cfg asks for: a TCP or
// UDP run's packets and the errors about them, or an echo run's.
func (cfg Config) Clauses() []Clause {
	switch {
	case cfg.Listen:
		return ListenClauses(cfg.EchoID)
	case cfg.TCP != nil:
		return TCPClauses(*cfg.TCP)
	case cfg.UDP != nil:
		return UDPClauses(*cfg.UDP)
	}
	return OursClauses(cfg.EchoID, cfg.EchoCookie)
}

// Tracer is one trace: the Reader of the rings and the Attachments that
// write to them. Read it as its Reader; Close releases both.
type Tracer struct {
	*Reader
	attachments *Attachments
	closeOnce   sync.Once
}

// Open attaches the probes for one echo id, or one TCP or UDP run
// (Config.TCP, Config.UDP). On error, nothing stays attached.
func Open(fs *tracefs.FS, offsets Offsets, cfg Config) (*Tracer, error) {
	if cfg.Probes == nil {
		cfg.Probes = decode.Probes()
	}
	if cfg.Attach == "" {
		cfg.Attach = AttachAuto
	}
	if cfg.RingPages == 0 {
		cfg.RingPages = 8
	}
	online, err := cpuList("online")
	if err != nil {
		return nil, err
	}
	r, err := newReader(cfg.RingPages, online)
	if err != nil {
		return nil, err
	}
	a, err := attach(fs, offsets, cfg, r.events, online[0])
	if err != nil {
		r.Close()
		return nil, err
	}
	return &Tracer{Reader: r, attachments: a}, nil
}

// Paths says how each device probe was attached.
func (t *Tracer) Paths() []ProbeAttachment { return t.attachments.Paths() }

// Notes says what the Tracer could not attach, and why (see
// Config.NetfilterOptional).
func (t *Tracer) Notes() []string { return t.attachments.notes }

// Close releases the rings, which unblocks a pending ReadInto, and detaches
// every program. Calls after the first return nil.
func (t *Tracer) Close() error {
	var err error
	t.closeOnce.Do(func() { err = errors.Join(t.Reader.Close(), t.attachments.Close()) })
	return err
}
