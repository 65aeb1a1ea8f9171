package probes

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/elastic/go-perf"
	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/caps"
)

// Reader reads the records of the per-CPU BPF-output rings the programs
// write to, like a cilium/ebpf perf.Reader: ReadInto reuses the caller's
// record, SetDeadline bounds it, Close unblocks it, and lost samples are
// records of their own.
type Reader struct {
	mu       sync.Mutex // held by ReadInto, so Close waits for it
	closeMu  sync.Mutex // held by Close: wakefd changes under it only
	closed   bool
	events   *ebpf.Map // the rings by CPU, where the programs write
	rings    []*perf.Event
	epfd     int
	wakefd   int
	deadline time.Time
	next     int
	raw      perf.RawRecord
	expired  context.Context
	lost     uint64
}

// newReader opens a ring of pages pages on each online CPU.
func newReader(pages int, online []int) (*Reader, error) {
	expired, cancel := context.WithDeadline(context.Background(), time.Unix(0, 0))
	cancel()
	r := &Reader{epfd: -1, wakefd: -1, expired: expired}
	if err := r.openRings(pages, online); err != nil {
		r.teardown()
		return nil, err
	}
	return r, nil
}

// openRings opens one BPF-output perf event per online CPU, maps its ring and
// stores it in the events map under its CPU number.
func (r *Reader) openRings(pages int, online []int) error {
	possible, err := cpuList("possible")
	if err != nil {
		return err
	}
	r.events, err = ebpf.NewMap(&ebpf.MapSpec{
		Name:       "tracepkt_events",
		Type:       ebpf.PerfEventArray,
		KeySize:    4,
		ValueSize:  4,
		MaxEntries: uint32(possible[len(possible)-1] + 1),
	})
	if err != nil {
		return fmt.Errorf("create perf event array: %w", caps.Explain(err, caps.CreateMap))
	}
	if r.epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	if r.wakefd, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("eventfd: %w", err)
	}
	if err := r.poll(r.wakefd); err != nil {
		return err
	}
	for _, cpu := range online {
		attr := &perf.Attr{
			Label:        "tracepkt-output",
			Type:         perf.SoftwareEvent,
			Config:       uint64(perf.BPFOutput),
			Sample:       1,
			Wakeup:       1,
			SampleFormat: perf.SampleFormat{Raw: true},
		}
		ev, err := perf.Open(attr, perf.AllThreads, cpu, nil)
		if err != nil {
			return fmt.Errorf("open bpf-output event on cpu %d: %w", cpu, caps.Explain(err, caps.OpenPerfEvent))
		}
		r.rings = append(r.rings, ev)
		if err := ev.MapRingNumPages(pages); err != nil {
			return fmt.Errorf("map ring of cpu %d: %w", cpu, err)
		}
		fd, err := ev.FD()
		if err != nil {
			return err
		}
		if err := r.events.Put(uint32(cpu), uint32(fd)); err != nil {
			return fmt.Errorf("store ring of cpu %d: %w", cpu, err)
		}
		if err := r.poll(fd); err != nil {
			return err
		}
	}
	return nil
}

func (r *Reader) poll(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	if err := unix.EpollCtl(r.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	return nil
}

// SetDeadline bounds the next ReadInto calls; the zero time means none, a
// time in the past makes ReadInto return only what is already in the rings.
func (r *Reader) SetDeadline(d time.Time) {
	r.mu.Lock()
	r.deadline = d
	r.mu.Unlock()
}

// Lost is the number of records the kernel dropped because a ring was full.
func (r *Reader) Lost() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost
}

// ReadInto reads the next record into rec, reusing rec's storage. A record
// with Lost set reports dropped records. It returns an error wrapping
// os.ErrDeadlineExceeded at the deadline and os.ErrClosed after Close.
func (r *Reader) ReadInto(rec *decode.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var events [4]unix.EpollEvent
	for {
		if r.closed {
			return os.ErrClosed
		}
		for i := range r.rings {
			idx := (r.next + i) % len(r.rings)
			if !r.rings[idx].HasRecord() {
				continue
			}
			r.next = idx + 1
			if err := r.rings[idx].ReadRawRecord(r.expired, &r.raw); err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					continue
				}
				return fmt.Errorf("read ring: %w", err)
			}
			ok, err := r.decodeRaw(rec)
			if ok || err != nil {
				return err
			}
		}
		timeout := -1
		if !r.deadline.IsZero() {
			left := time.Until(r.deadline)
			if left <= 0 {
				return os.ErrDeadlineExceeded
			}
			timeout = int((left + time.Millisecond - 1) / time.Millisecond)
		}
		// Close may tear down the rings while the lock is released: epfd is
		// read before, and a wait cut short by Close says closed.
		epfd := r.epfd
		r.mu.Unlock()
		_, err := unix.EpollWait(epfd, events[:], timeout)
		r.mu.Lock()
		if r.closed {
			return os.ErrClosed
		}
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("epoll_wait: %w", err)
		}
	}
}

// decodeRaw turns the raw perf record in r.raw into rec; false means the
// record was of a kind we skip.
func (r *Reader) decodeRaw(rec *decode.Record) (bool, error) {
	switch r.raw.Header.Type {
	case perf.RecordTypeSample:
		// Must match PERF_SAMPLE_RAW: u32 size, then size bytes.
		if len(r.raw.Data) < 4 {
			return false, fmt.Errorf("%w: raw sample of %d bytes", decode.ErrShortRecord, len(r.raw.Data))
		}
		size := int(binary.NativeEndian.Uint32(r.raw.Data))
		if size > len(r.raw.Data)-4 {
			return false, fmt.Errorf("%w: raw size %d exceeds sample", decode.ErrShortRecord, size)
		}
		return true, rec.Decode(r.raw.Data[4 : 4+size])
	case perf.RecordTypeLost:
		// Must match PERF_RECORD_LOST: u64 id, u64 lost.
		if len(r.raw.Data) < 16 {
			return false, fmt.Errorf("%w: lost record of %d bytes", decode.ErrShortRecord, len(r.raw.Data))
		}
		*rec = decode.Record{Lost: binary.NativeEndian.Uint64(r.raw.Data[8:])}
		r.lost += rec.Lost
		return true, nil
	}
	return false, nil
}

// Close releases every ring; a pending ReadInto returns os.ErrClosed. It is
// safe to call more than once, from several goroutines at once.
func (r *Reader) Close() error {
	r.closeMu.Lock()
	defer r.closeMu.Unlock()
	if r.wakefd >= 0 {
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		unix.Write(r.wakefd, one[:])
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	return r.teardown()
}

// teardown releases the rings; the programs writing to them may still be
// attached: they keep the perf events alive through the map.
func (r *Reader) teardown() error {
	var errs []error
	for _, ev := range r.rings {
		errs = append(errs, ev.Close())
	}
	if r.events != nil {
		errs = append(errs, r.events.Close())
	}
	for _, fd := range []int{r.epfd, r.wakefd} {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
		}
	}
	r.rings, r.events = nil, nil
	r.epfd, r.wakefd = -1, -1
	return errors.Join(errs...)
}

// CheckRings opens and releases the rings a run reads, one page on the first
// online CPU: nil when this process may open them.
func CheckRings() error {
	online, err := cpuList("online")
	if err != nil {
		return err
	}
	r, err := newReader(1, online[:1])
	if err != nil {
		return err
	}
	return r.Close()
}
