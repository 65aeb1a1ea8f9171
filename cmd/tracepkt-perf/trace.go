package main

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/internal/phases"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/probes/netns"
	"github.com/tracepkt/tracepkt-perf/probes/nftrace"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
	"github.com/tracepkt/tracepkt-perf/tracefs"
	"golang.org/x/sys/unix"
)

// nftraceQuiet is how long the netfilter source waits for more trace
// messages after the last one when an echo ended without its reply. A reply
// needs no wait: the kernel queues each hook's trace message on the trace
// sockets before the packet moves on, so every message of the request's and
// the reply's hooks was queued before the reply reached the pinger.
const nftraceQuiet = 2 * time.Millisecond

// errorSettle is how long an ICMP error leaves the sources to catch up
// before they are drained: the router that sent it frees the packet after.
const errorSettle = 10 * time.Millisecond

// session is what a live run opens once: the kernel facts, the netfilter
// source, the snapshot of namespaces, the recording and the output.
type session struct {
	fs *tracefs.FS
	// offsets come from the kernel's BTF, parsed in the background while
	// the rest of the run starts: the largest part of the time to answer.
	offsets   func() (probes.Offsets, error)
	netfilter netfilterPlan
	ns        *namespaces
	traced    []netns.Netns // where netfilter is traced: --netns, or every namespace
	from      *netns.Netns  // where the echo starts (--from-netns); nil: here
	rec       *tpk.Writer
	rc        *renderContext
	recFile   *outFile
	w         journeyWriter
	// reasons are the names of skb:kfree_skb's drop reasons on this kernel,
	// from its format; none before 5.17.
	reasons map[uint64]string
	// results are the results of the echoes traced, in order.
	results []string
}

// openSession prepares a live run. rec, when not nil, receives the
// recording; the snapshot is taken now, so a demo must have built its
// topology before.
func openSession(o options, rec *outFile, newWriter func(*renderContext) journeyWriter) (_ *session, err error) {
	span := phases.Begin("open session")
	defer span.End()
	offsets := sync.OnceValues(func() (probes.Offsets, error) {
		defer phases.Begin("kernel types").End()
		return probes.KernelOffsets()
	})
	go offsets()
	fs, err := tracefs.Open()
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			fs.Close()
		}
	}()
	if err := probes.AllowBPFMemory(); err != nil {
		return nil, err
	}
	s := &session{fs: fs, offsets: offsets}
	group, event := decode.ProbeKfreeSkb.Tracepoint()
	if s.reasons, err = fs.Symbols(group, event, "reason"); err != nil {
		return nil, err
	}
	if s.netfilter, err = netfilterSource(o.netfilter, fs, runtime.GOARCH, nftrace.Supported); err != nil {
		return nil, err
	}
	if o.listen && s.netfilter.sources&nfNftrace != 0 {
		// A listener's netfilter rows come from kprobes only: nftables
		// tracing keeps one run's echoes by its id.
		s.netfilter.sources &^= nfNftrace
		if s.netfilter.sources == 0 {
			s.netfilter.sources = nfOff
		}
	}
	s.netfilter.resolveKprobes()
	if len(s.netfilter.kprobes) > 0 {
		// Probes a run killed with SIGKILL left behind.
		if err := fs.SweepKprobes(); err != nil {
			return nil, err
		}
	}
	if s.ns, err = listNamespaces(); err != nil {
		return nil, err
	}
	if o.fromNetns != "" {
		from, err := s.ns.find("--from-netns", o.fromNetns)
		if err != nil {
			return nil, err
		}
		s.ns.add(from)
		s.from = &from
	}
	if s.traced, err = s.ns.traced(o.netns, s.from); err != nil {
		return nil, err
	}
	// The table needs the namespaces' names; a recording keeps their interfaces too.
	snap, err := netns.Snapshot(s.ns.all, s.ns.owners, rec != nil)
	if err != nil {
		return nil, err
	}
	hdr := newHeader(s.netfilter, fs, o.proto, o.listen)
	s.rc = newRenderContext(hdr.Capabilities)
	s.rc.setSnapshot(snap)
	if rec == nil {
		// The snapshot has no interfaces: name those netfilter rows need
		// when they need them.
		s.rc.lookupIf = s.interfaceName
	}
	s.w = newWriter(s.rc)
	if rec != nil {
		s.recFile = rec
		if s.rec, err = tpk.NewWriter(rec, hdr); err != nil {
			return nil, fmt.Errorf("record: %w", err)
		}
		if err := s.rec.WriteSnapshot(snap); err != nil {
			return nil, fmt.Errorf("record: %w", err)
		}
		if err := s.rec.Flush(); err != nil {
			return nil, fmt.Errorf("record: %w", err)
		}
	}
	return s, nil
}

// interfaceName names interface ifindex of the namespace of inode, if
// the tool can reach it.
func (s *session) interfaceName(inode, ifindex uint32) string {
	for _, ns := range s.ns.all {
		if ns.Inode == inode {
			name, _ := netns.InterfaceName(ns, ifindex)
			return name
		}
	}
	return ""
}

// Close releases what openSession opened.
func (s *session) Close() error { return s.fs.Close() }

// trace sends o.count echoes to target and writes each journey as it completes.
func (s *session) trace(ctx context.Context, target netip.Addr, o options) (err error) {
	src, err := s.openSources(target, o)
	if err != nil {
		return err
	}
	defer func() {
		defer phases.Begin("teardown").End()
		err = errors.Join(err, src.close())
	}()
	// A signal closes the pinger: a pending Receive returns at once, and
	// the outstanding echo is shown with what the sources saw of it.
	interrupted := context.AfterFunc(ctx, func() { src.pinger.Close() })
	defer interrupted()

	// Like ping, a signal ends the run early; any echo without a reply,
	// the interrupted one included, makes the exit status 1.
	var recs []decode.Record
	unanswered, sent := 0, 0
	notes := src.tracer.Notes() // said under the first echo
	err = pace(ctx, o.count, o.interval, realClock{}, func(seq uint16) error {
		j, events, err := echo(ctx, src.pinger, src.tracer, src.nf, target, o.proto, o.port, seq, o.timeout, &recs)
		switch {
		case errors.Is(err, errNotSent):
			return err
		case errors.Is(err, ping.ErrNoRoute) && sent == 0:
			return fmt.Errorf("no route to %s", target)
		case errors.Is(err, ping.ErrNoRoute):
			return fmt.Errorf("no route to %s any more (seq %d): the route went away during the run", target, seq)
		case err != nil:
			return err
		}
		sent++
		j.Notes, notes = append(notes, j.Notes...), nil
		if err := s.learn(&j); err != nil {
			return err
		}
		if !j.Replied {
			unanswered++
			if err := s.explain(&j); err != nil {
				return err
			}
		}
		if err := s.output(&j, recs, events); err != nil {
			return err
		}
		s.results = append(s.results, j.Result())
		return nil
	})
	if err != nil {
		return err
	}
	if unanswered > 0 {
		return errUnanswered
	}
	return nil
}

// learn names the namespaces j crossed that the run had not seen yet, and
// records their snapshot.
func (s *session) learn(j *decode.Journey) error {
	snap, err := s.ns.learn(j, s.rec != nil)
	if err != nil || snap == nil {
		return err
	}
	s.rc.setSnapshot(snap)
	if s.rec != nil {
		if err := s.rec.WriteSnapshot(snap); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	return nil
}

// output records the echo of journey j, from records recs and netfilter
// events events, when the run is recorded, and writes j.
func (s *session) output(j *decode.Journey, recs []decode.Record, events []decode.NetfilterEvent) error {
	if s.rec != nil {
		out := tpk.EchoOutcome{Outcome: j.Outcome, Netfilter: events}
		if err := s.rec.WriteEcho(recs, &out); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		if err := s.recFile.publish(); err != nil {
			return fmt.Errorf("record: %w", err)
		}
	}
	return s.w.Journey(j)
}

// sources are what a run traces with: the probes, the nftables trace source
// when the plan has it, and the pinger, all for one random echo id.
type sources struct {
	tracer *probes.Tracer
	nf     *nftrace.Tracer
	pinger prober
}

// openSources opens the sources of a run to target, as o asks; on error,
// nothing stays open.
func (s *session) openSources(target netip.Addr, o options) (_ *sources, err error) {
	id, err := ping.RandomID()
	if err != nil {
		return nil, err
	}
	m, err := newMarks(id, o)
	if err != nil {
		return nil, err
	}
	src := &sources{}
	defer func() {
		if err != nil {
			err = errors.Join(err, src.close())
		}
	}()
	// The nftables tables go in while the kernel's BTF may still be parsed.
	if s.netfilter.sources&nfNftrace != 0 {
		span := phases.Begin("nftables install")
		src.nf, err = nftrace.Open(s.traced, nftrace.Match{EchoID: id, EchoCookie: m.echoCookie(), TCP: m.tcp, UDP: m.udp})
		span.End()
		if err != nil {
			return nil, fmt.Errorf("netfilter: %w", err)
		}
	}
	span := phases.Begin("wait for kernel types")
	offsets, err := s.offsets()
	span.End()
	if err != nil {
		return nil, err
	}
	// auto's kprobes that cannot be added are a note.
	cfg := probes.Config{EchoID: id, EchoCookie: m.echoCookie(), TCP: m.tcp, UDP: m.udp, Netfilter: s.netfilter.kprobes, NetfilterOptional: s.netfilter.auto,
		RingPages: o.ringPages, Attach: o.attach}
	span = phases.Begin("probes open")
	src.tracer, err = probes.Open(s.fs, offsets, cfg)
	span.End()
	if err != nil {
		return nil, err
	}
	if from := o.ping.Source; from.IsValid() && from.Is4() != target.Is4() {
		return nil, usageError{fmt.Sprintf("-I %s is not of the family of %s", from, target)}
	}
	span = phases.Begin("prober open")
	src.pinger, err = openProber(target, o.port, id, m, o.ping, s.from)
	span.End()
	if err != nil {
		if errors.Is(err, ping.ErrNoRoute) {
			// A TCP prober needs its source address to open.
			return nil, fmt.Errorf("no route to %s", target)
		}
		return nil, err
	}
	// A UDP reply carries no mark: nftables traces it by the port the
	// prober holds, known now.
	if u, ok := src.pinger.(*ping.UDPProber); ok && src.nf != nil {
		if err := src.nf.TraceReplies(u.SourcePort()); err != nil {
			return nil, fmt.Errorf("netfilter: %w", err)
		}
	}
	return src, nil
}

// marks are what mark a run's probes: a TCP run's or a UDP run's, both nil
// for an echo run's, marked by its id and echo, the pinger's payload cookie.
type marks struct {
	tcp  *decode.TCPMark
	udp  *decode.UDPMark
	echo [8]byte
}

// echoCookie is what the traces test of the pinger's cookie: its first 4
// bytes.
func (m marks) echoCookie() uint32 { return binary.BigEndian.Uint32(m.echo[:4]) }

// newMarks draws the cookie of a run of id: the pinger's payload cookie,
// never 0 where the traces test it, or a TCP or UDP run's.
func newMarks(id uint16, o options) (marks, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return marks{}, fmt.Errorf("read random cookie: %w", err)
	}
	if o.proto == 0 {
		// 2 random bytes, the run's echo id, and the magic a listener
		// keeps echoes by (probes.ListenClauses).
		b[0] |= 0x80
		binary.BigEndian.PutUint16(b[2:], id)
		binary.BigEndian.PutUint32(b[4:], decode.ListenMagic)
		return marks{echo: b}, nil
	}
	cookie := binary.BigEndian.Uint32(b[:])
	if o.proto == decode.ProtoUDP {
		m, err := decode.NewUDPMark(id, cookie, o.port, o.payload)
		if err != nil {
			return marks{}, usageError{"--payload: " + err.Error()}
		}
		return marks{udp: &m}, nil
	}
	// Probes are numbered from 1, as ping numbers its echoes.
	m := decode.NewTCPMark(id, cookie, o.count+1)
	return marks{tcp: &m}, nil
}

// close closes every source. Both tracers wait for RCU grace periods as
// they close: together, the waits overlap.
func (src *sources) close() error {
	if src.pinger != nil {
		src.pinger.Close()
	}
	var nfErr error
	closed := make(chan struct{})
	go func() {
		if src.nf != nil {
			nfErr = src.nf.Close()
		}
		close(closed)
	}()
	var err error
	if src.tracer != nil {
		err = src.tracer.Close()
	}
	<-closed
	return errors.Join(err, nfErr)
}

// errNotSent: a signal came before the echo was sent; there is nothing to show.
var errNotSent = errors.New("interrupted before the echo was sent")

// echo sends one request, waits for its reply or the timeout, then collects
// what the sources hold: every probe fired before the reply reached our
// socket, and every trace message was sent before the packet moved on.
func echo(ctx context.Context, p prober, t *probes.Tracer, nf *nftrace.Tracer, target netip.Addr, proto uint8, port, seq uint16, timeout time.Duration, recs *[]decode.Record) (decode.Journey, []decode.NetfilterEvent, error) {
	if ctx.Err() != nil {
		return decode.Journey{}, nil, errNotSent
	}
	// What the sources hold is kept even when one of them fails: the
	// failure becomes a note under the echo, never the loss of its rows.
	var notes []string
	span := phases.Begin("send to answer")
	sent, err := p.Send(seq)
	var tooBig *ping.TooBigError
	if errors.As(err, &tooBig) {
		// Refused here: an earlier "too big" taught the kernel the path MTU.
		o := decode.Outcome{Target: target, EchoID: p.ID(), Seq: seq, Timeout: timeout}
		o.Error = &decode.ICMPError{Family: 4, Type: 3, Code: 4, MTU: uint32(tooBig.MTU)}
		if target.Is6() {
			o.Error.Family, o.Error.Type, o.Error.Code = 6, 2, 0
		}
		return decode.NewJourney(o, nil, nil), nil, nil
	}
	refused := errors.Is(err, unix.EPERM)
	switch {
	case refused:
		// A netfilter rule dropped the request on its way out: the
		// sources saw it, and no reply can come.
		sent = time.Now()
		notes = append(notes, fmt.Sprintf("the kernel refused to send the request: %v", unix.EPERM))
	case err != nil && ctx.Err() != nil:
		return decode.Journey{}, nil, errNotSent
	case err != nil:
		return decode.Journey{}, nil, err
	}
	deadline := sent.Add(timeout)
	var reply ping.Reply
	replied, answered, interrupted := false, false, false
	for !answered && !refused {
		reply, err = p.Receive(deadline)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil && ctx.Err() != nil {
			interrupted = true
			break
		}
		if err != nil {
			return decode.Journey{}, nil, err
		}
		// A late reply or error about an earlier echo is skipped; an error
		// about this one ends the wait as a reply does.
		answered = reply.Seq == seq
		// An RST answers a TCP probe without opening: "closed".
		replied = answered && reply.Error == nil && reply.TCPFlags&decode.TCPRst == 0
	}
	waited := time.Since(sent)
	span.End()
	defer phases.Begin("drain sources").End()

	if answered && !replied {
		// The kernel frees the request right after it sends the error, and
		// the error can reach us first: let the free reach its ring.
		time.Sleep(errorSettle)
	}
	*recs = (*recs)[:0]
	t.SetDeadline(time.Now())
	var r decode.Record
	var over uint64 // records past what a recording keeps of one echo
	for {
		err := t.ReadInto(&r)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			notes = append(notes, fmt.Sprintf("rings: %v: device rows may be missing", err))
			break
		}
		if len(*recs) == tpk.MaxRecordsPerEcho-1 {
			over += max(r.Lost, 1)
			continue
		}
		*recs = append(*recs, r)
	}
	if over > 0 {
		*recs = append(*recs, decode.Record{Lost: over})
	}
	var events []decode.NetfilterEvent
	var nfLost uint64
	if nf != nil {
		lost := nf.Lost()
		quiet := nftraceQuiet
		if answered && reply.Error == nil {
			quiet = 0
		}
		if events, err = nf.Drain(quiet); err != nil {
			notes = append(notes, fmt.Sprintf("netfilter: %v: netfilter rows may be missing their hook or rule", err))
		}
		nfLost = nf.Lost() - lost
	}
	o := decode.Outcome{Target: target, EchoID: p.ID(), Seq: seq, Replied: replied, Timeout: timeout, Interrupted: interrupted,
		NetfilterLost: nfLost, Notes: notes}
	if port != 0 {
		o.Proto, o.Port, o.Source = proto, port, sourceOf(p)
		if answered && reply.Error == nil {
			o.TCPFlags, o.From, o.RTT = reply.TCPFlags, reply.From.WithZone(""), reply.Received.Sub(sent)
		}
	}
	switch {
	case interrupted:
		o.Timeout = waited
	case refused:
		o.Timeout = 0 // not waited for
	}
	if replied {
		o.RTT = reply.Received.Sub(sent)
	}
	if e := reply.Error; answered && e != nil {
		family := uint8(4)
		if target.Is6() {
			family = 6
		}
		o.Error = &decode.ICMPError{Family: family, Type: e.Type, Code: e.Code, From: reply.From.WithZone(""), MTU: e.MTU}
	}
	return decode.NewJourney(o, *recs, events), events, nil
}
