package tpk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Writer writes a recording. Records and outcomes go to the current block,
// which Flush writes out in one Write call; the caller flushes after each
// echo so that a crash loses at most the echo in progress.
type Writer struct {
	w         io.Writer
	version   uint16 // echoVersion, or for a run of TCP probes tcpVersion
	blk       []byte // preamble (first block only), block header room, index, frames
	blkStart  int    // offset of the block header in blk
	frames    int    // offset of the block's first frame in blk, after its index
	blocks    uint64 // index of the block being built
	recs      []byte // body of the records frame being built
	tmp       []byte
	prev      decode.Record // base of the next record, see fTime
	nf        decode.Record // a netfilter record in its written form
	ifaces    map[ifaceKey]uint64
	addrs     map[addrPair]uint64
	echoRecs  int // records since the last outcome
	snapItems int // entries of the snapshots so far, see MaxSnapshotItems
	err       error
}

// NewWriter writes the file's preamble and h to w, at once. A run of TCP
// or UDP probes (h.Proto decode.ProtoTCP, decode.ProtoUDP) is written as FormatVersion, a run of
// echoes as version 2, which older builds read too.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	wr := &Writer{
		w:       w,
		version: echoVersion,
		ifaces:  make(map[ifaceKey]uint64),
		addrs:   make(map[addrPair]uint64),
	}
	switch h.Proto {
	case 0:
	case decode.ProtoTCP, decode.ProtoUDP:
		wr.version = tcpVersion
	default:
		return nil, fmt.Errorf("write recording header: probes of protocol %d", h.Proto)
	}
	if n := len(h.Args) + len(h.Capabilities); n > maxItems {
		return nil, fmt.Errorf("write recording header: %d arguments and capabilities exceed %d", n, maxItems)
	}
	wr.prev.Time = h.StartKtime
	wr.blk = append(wr.blk, tpkMagic[:]...)
	wr.blk = binary.LittleEndian.AppendUint16(wr.blk, wr.version)
	wr.blkStart = len(wr.blk)
	wr.startBlock()
	wr.tmp = encodeHeader(wr.tmp[:0], &h)
	wr.blk = appendFrame(wr.blk, frameHeader, wr.tmp)
	if len(wr.blk)-wr.blkStart-blockHdrLen > MaxBlockSize {
		return nil, fmt.Errorf("write recording header: %d bytes exceed the block limit", len(wr.tmp))
	}
	if err := wr.Flush(); err != nil {
		return nil, err
	}
	return wr, nil
}

// WriteSnapshot adds s to the current block; flush to have it on disk before
// the first echo completes.
func (w *Writer) WriteSnapshot(s *decode.Snapshot) error {
	if w.err != nil {
		return w.err
	}
	n := snapshotItems(s)
	if n > maxItems {
		return fmt.Errorf("write snapshot: %d entries exceed %d", n, maxItems)
	}
	if w.snapItems += n; w.snapItems > MaxSnapshotItems {
		return fmt.Errorf("write snapshot: a recording holds at most %d snapshot entries", MaxSnapshotItems)
	}
	w.tmp = encodeSnapshot(w.tmp[:0], s)
	return w.writeFrame(frameSnapshot, w.tmp)
}

// snapshotItems counts the list entries of s, see maxItems.
func snapshotItems(s *decode.Snapshot) int {
	n := len(s.Namespaces)
	for i := range s.Namespaces {
		ns := &s.Namespaces[i]
		n += len(ns.Names) + len(ns.Pids) + len(ns.Comms) + len(ns.Interfaces)
		for j := range ns.Interfaces {
			n += len(ns.Interfaces[j].Addrs)
		}
	}
	return n
}

// WriteOutcome adds o to the current block, after the records written so far.
func (w *Writer) WriteOutcome(o *EchoOutcome) error {
	if w.err != nil {
		return w.err
	}
	if err := w.checkOutcome(o); err != nil {
		return fmt.Errorf("write outcome: %w", err)
	}
	w.tmp = encodeOutcome(w.tmp[:0], o, w.version)
	w.echoRecs = 0
	return w.writeFrame(frameOutcome, w.tmp)
}

// WriteRecord adds r to the current block. A block that grows past a few
// hundred KiB is written out without waiting for Flush.
func (w *Writer) WriteRecord(r *decode.Record) error {
	if w.err != nil {
		return w.err
	}
	if r.CapLen > decode.PacketBytes {
		return fmt.Errorf("write record: captured length %d exceeds %d", r.CapLen, decode.PacketBytes)
	}
	if err := w.checkTCP(r.Proto, r.TCPFlags); err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if w.echoRecs++; w.echoRecs > MaxRecordsPerEcho {
		return fmt.Errorf("write record: more than %d records before an echo outcome", MaxRecordsPerEcho)
	}
	w.recs = w.appendRecord(w.recs, r)
	if len(w.blk)+len(w.recs) > blockSoftSize {
		return w.Flush()
	}
	return nil
}

// ErrTCPInEchoRun is returned for a TCP probe's record or outcome given to
// the Writer of a run of echoes (Header.Proto 0): its version has no room
// for them.
var ErrTCPInEchoRun = errors.New("a TCP probe's packet or outcome in a recording of echoes (Header.Proto is 0)")

// checkTCP checks a protocol and TCP flags against what the recording's
// version can hold.
func (w *Writer) checkTCP(proto, flags uint8) error {
	switch {
	case !validProto(proto):
		return fmt.Errorf("protocol %d", proto)
	case w.version < tcpVersion && (proto != 0 || flags != 0):
		return ErrTCPInEchoRun
	}
	return nil
}

// checkOutcome checks the TCP fields of o, its netfilter events and drop.
func (w *Writer) checkOutcome(o *EchoOutcome) error {
	if err := w.checkTCP(o.Proto, o.TCPFlags); err != nil {
		return err
	}
	if w.version < tcpVersion && (o.Port != 0 || o.From.IsValid() || o.Source.IsValid()) {
		return ErrTCPInEchoRun
	}
	for i := range o.Netfilter {
		if err := w.checkTCP(o.Netfilter[i].Proto, o.Netfilter[i].TCPFlags); err != nil {
			return err
		}
	}
	if d := o.Drop; d != nil {
		return w.checkTCP(d.Proto, d.TCPFlags)
	}
	return nil
}

// WriteEcho writes one echo's records and outcome as one block and flushes it.
func (w *Writer) WriteEcho(recs []decode.Record, o *EchoOutcome) error {
	for i := range recs {
		if err := w.WriteRecord(&recs[i]); err != nil {
			return err
		}
	}
	if err := w.WriteOutcome(o); err != nil {
		return err
	}
	return w.Flush()
}

// Flush ends the current block and writes it to the underlying writer. It
// writes nothing when the block is empty.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	w.endRecords()
	if len(w.blk) == w.frames {
		return nil
	}
	payload := len(w.blk) - w.blkStart - blockHdrLen
	hdr := w.blk[w.blkStart : w.blkStart+blockHdrLen]
	binary.LittleEndian.PutUint32(hdr[0:], uint32(payload))
	sum := crc32.Update(crc32.Checksum(hdr[:4], castagnoli), castagnoli, w.blk[w.blkStart+blockHdrLen:])
	binary.LittleEndian.PutUint32(hdr[4:], sum)
	if _, err := w.w.Write(w.blk); err != nil {
		// The interning state now counts what never reached the file.
		w.err = fmt.Errorf("write recording: %w", err)
		return w.err
	}
	w.blkStart = 0
	w.blk = w.blk[:0]
	w.blocks++
	w.startBlock()
	return nil
}

// startBlock leaves room for the header of the next block and writes its
// index, so that a reader notices a block that is missing or repeated.
func (w *Writer) startBlock() {
	w.blk = append(w.blk, make([]byte, blockHdrLen)...)
	w.blk = binary.AppendUvarint(w.blk, w.blocks)
	w.frames = len(w.blk)
}

func (w *Writer) writeFrame(typ uint64, body []byte) error {
	w.endRecords()
	size := binary.MaxVarintLen64*2 + len(body)
	if size > MaxBlockSize {
		return fmt.Errorf("write recording: a frame of %d bytes exceeds the block limit", len(body))
	}
	if len(w.blk)-w.blkStart-blockHdrLen+size > MaxBlockSize {
		if err := w.Flush(); err != nil {
			return err
		}
	}
	w.blk = appendFrame(w.blk, typ, body)
	if len(w.blk) > blockSoftSize {
		return w.Flush()
	}
	return nil
}

func (w *Writer) endRecords() {
	if len(w.recs) > 0 {
		w.blk = appendFrame(w.blk, frameRecords, w.recs)
		w.recs = w.recs[:0]
	}
}

func appendFrame(b []byte, typ uint64, body []byte) []byte {
	b = binary.AppendUvarint(b, typ)
	b = binary.AppendUvarint(b, uint64(len(body)))
	return append(b, body...)
}
