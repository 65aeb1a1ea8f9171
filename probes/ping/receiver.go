package ping

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// receiver is what the TCP and UDP probers share: one goroutine per socket
// reads it and hands what it parsed to Receive; done, closed by close, ends
// them.
type receiver struct {
	// proto names the prober in errors: "tcp", "udp".
	proto string

	closed  atomic.Bool
	ignored atomic.Uint64

	answers chan answer
	done    chan struct{}
	readers sync.WaitGroup
}

// answer is what a reader hands to Receive: a reply, or the error that
// ended it.
type answer struct {
	reply Reply
	err   error
}

func newReceiver(proto string) *receiver {
	return &receiver{proto: proto, answers: make(chan answer), done: make(chan struct{})}
}

// start starts a reader of conn, which hands Receive what parse accepts of
// each packet.
func (rx *receiver) start(conn syscall.RawConn, parse func(packet) (parsedReply, error)) {
	rx.readers.Add(1)
	go rx.read(conn, parse)
}

// receive waits until deadline (zero: forever) for the next answer.
func (rx *receiver) receive(deadline time.Time) (Reply, error) {
	if rx.closed.Load() {
		return Reply{}, fmt.Errorf("receive %s answer: %w", rx.proto, os.ErrClosed)
	}
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		wait := time.Until(deadline)
		if wait <= 0 {
			return Reply{}, fmt.Errorf("receive %s answer: %w", rx.proto, os.ErrDeadlineExceeded)
		}
		t := time.NewTimer(wait)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case a := <-rx.answers:
		return a.reply, a.err
	case <-rx.done:
		return Reply{}, fmt.Errorf("receive %s answer: %w", rx.proto, os.ErrClosed)
	case <-timeout:
		return Reply{}, fmt.Errorf("receive %s answer: %w", rx.proto, os.ErrDeadlineExceeded)
	}
}

// read reads conn until close, and hands receive what parse accepts. A
// read error other than close's is handed over too, and ends the reader.
func (rx *receiver) read(conn syscall.RawConn, parse func(packet) (parsedReply, error)) {
	defer rx.readers.Done()
	buf, oob := make([]byte, recvBufLen), make([]byte, unix.CmsgSpace(4))
	for {
		pkt, err := recvPacket(conn, buf, oob)
		if err != nil {
			if !rx.closed.Load() {
				rx.hand(answer{err: fmt.Errorf("receive %s answer: %w", rx.proto, err)})
			}
			return
		}
		if pkt.truncated {
			rx.ignored.Add(1)
			continue
		}
		r, err := parse(pkt)
		if err != nil {
			rx.ignored.Add(1)
			continue
		}
		if !rx.hand(answer{reply: pkt.reply(r)}) {
			return
		}
	}
}

// hand gives a to receive; false when the prober was closed first.
func (rx *receiver) hand(a answer) bool {
	select {
	case rx.answers <- a:
		return true
	case <-rx.done:
		return false
	}
}

// close closes the sockets with closeSockets and waits for the readers to
// end. A pending receive returns an error matching os.ErrClosed; so does a
// second close.
func (rx *receiver) close(closeSockets func() error) error {
	if !rx.closed.CompareAndSwap(false, true) {
		return fmt.Errorf("close %s prober: %w", rx.proto, os.ErrClosed)
	}
	close(rx.done)
	err := closeSockets()
	rx.readers.Wait()
	if err != nil {
		return fmt.Errorf("close %s prober: %w", rx.proto, err)
	}
	return nil
}

// closeFiles closes the files that are not nil.
func closeFiles(files ...*os.File) []error {
	var errs []error
	for _, f := range files {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errs
}
