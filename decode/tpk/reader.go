package tpk

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"slices"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Reader reads a recording written by Writer, item by item, decoding records
// into the caller's Record without allocating.
type Reader struct {
	br        *bufio.Reader
	hdr       Header
	buf       []byte      // payload of the current block
	blk       frameCursor // frames of the current block
	recs      frameCursor // body of the records frame being read
	offset    int64       // file offset of the next block
	blkOffset int64       // file offset of the current block
	version   uint16
	blocks    uint64        // index of the next block, from version 2
	state     decode.Record // base of the next record, see fTime
	lost      decode.Record // the last lost notice
	ifaces    []ifaceKey
	addrs     []addrPair
	snap      decode.Snapshot
	out       EchoOutcome
	truncated int64
	echoRecs  int // records since the last outcome, see MaxRecordsPerEcho
	snapItems int // entries of the snapshots so far, see MaxSnapshotItems
	err       error
	blkHdr    [blockHdrLen]byte // in the Reader, so that reading it does not allocate
}

// NewReader reads and checks the preamble and header of the recording in rd.
func NewReader(rd io.Reader) (*Reader, error) {
	r := &Reader{
		br:  bufio.NewReaderSize(rd, 64<<10),
		buf: make([]byte, 0, 4<<10),
	}
	var pre [preambleLen]byte
	n, err := io.ReadFull(r.br, pre[:])
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return nil, fmt.Errorf("read recording: %w", err)
	}
	if m := min(n, magicLen); !bytes.Equal(pre[:m], tpkMagic[:m]) {
		return nil, fmt.Errorf("%w: it starts with %q", ErrNotTPK, pre[:m])
	}
	if n == 0 {
		return nil, fmt.Errorf("recording is empty: %w", io.ErrUnexpectedEOF)
	}
	if n < preambleLen {
		return nil, fmt.Errorf("recording ends after %d bytes, inside its preamble: %w", n, io.ErrUnexpectedEOF)
	}
	r.version = binary.LittleEndian.Uint16(pre[magicLen:])
	if v := r.version; v < 1 || v > FormatVersion {
		newer := ""
		if v > FormatVersion {
			newer = " (a newer tracepkt-perf wrote it)"
		}
		return nil, fmt.Errorf("%w: version %d%s, this build reads versions 1 to %d", ErrUnsupportedVersion, v, newer, FormatVersion)
	}
	r.offset = preambleLen
	if err := r.readBlock(); err != nil {
		if err == io.EOF {
			return nil, fmt.Errorf("recording ends inside its header block: %w", io.ErrUnexpectedEOF)
		}
		return nil, err
	}
	typ, body, err := r.frame()
	if err != nil {
		return nil, err
	}
	if typ != frameHeader {
		return nil, r.corrupt("first frame has type %d, want a header", typ)
	}
	if err := r.decodeHeader(body, &r.hdr); err != nil {
		return nil, err
	}
	r.state.Time = r.hdr.StartKtime
	return r, nil
}

// Header returns the recording's header.
func (r *Reader) Header() Header { return r.hdr }

// Truncated returns the number of bytes of an incomplete last block that were
// ignored; it is known once Next has returned io.EOF.
func (r *Reader) Truncated() int64 { return r.truncated }

// Next decodes the next item of the recording into rec, snap or out, as Kind
// says; any of them may be nil to drop that kind. It returns io.EOF at the end
// of the recording, including an incomplete last block (see Truncated), and an
// error wrapping ErrCorrupt at a block that fails its checksum or does not
// parse, after every item before it. Errors are final.
//
// Records are decoded without allocating; Snapshots are decoded into new slices.
func (r *Reader) Next(rec *decode.Record, snap *decode.Snapshot, out *EchoOutcome) (Kind, error) {
	for r.err == nil {
		if r.recs.off < len(r.recs.b) {
			d, err := r.decodeRecord()
			if err != nil {
				r.err = err
				break
			}
			if r.echoRecs++; r.echoRecs > MaxRecordsPerEcho {
				r.err = r.corrupt("more than %d records before an echo outcome", MaxRecordsPerEcho)
				break
			}
			if rec != nil {
				*rec = *d
				if rec.IsNetfilter() {
					fromDisk(rec)
				} else {
					rec.FindTunnel()
				}
			}
			return KindRecord, nil
		}
		if r.blk.off >= len(r.blk.b) {
			r.err = r.readBlock()
			continue
		}
		typ, body, err := r.frame()
		if err != nil {
			r.err = err
			break
		}
		switch typ {
		case frameRecords:
			r.recs = frameCursor{b: body}
		case frameSnapshot:
			if snap == nil {
				snap = &r.snap
			}
			if err := r.decodeSnapshot(body, snap); err != nil {
				r.err = err
				break
			}
			if r.snapItems += snapshotItems(snap); r.snapItems > MaxSnapshotItems {
				r.err = r.corrupt("snapshots of more than %d entries in all", MaxSnapshotItems)
				break
			}
			return KindSnapshot, nil
		case frameOutcome:
			if out == nil {
				out = &r.out
			}
			if err := r.decodeOutcome(body, out); err != nil {
				r.err = err
				break
			}
			r.echoRecs = 0
			return KindOutcome, nil
		case frameHeader:
			r.err = r.corrupt("a second header frame")
		}
		// Frames of other types are from a newer writer: skip them.
	}
	return 0, r.err
}

func (r *Reader) corrupt(format string, args ...any) error {
	return fmt.Errorf("block at offset %d: %s: %w", r.blkOffset, fmt.Sprintf(format, args...), ErrCorrupt)
}

// frame returns the next frame of the current block.
func (r *Reader) frame() (typ uint64, body []byte, err error) {
	c := &r.blk
	typ = c.uvarint()
	n := c.uvarint()
	if c.bad || n > uint64(len(c.b)-c.off) {
		return 0, nil, r.corrupt("frame overruns its block")
	}
	body = c.b[c.off : c.off+int(n)]
	c.off += int(n)
	return typ, body, nil
}

// readBlock reads and checks the next block. It returns io.EOF at the end of
// the file, setting truncated for an incomplete block.
func (r *Reader) readBlock() error {
	hdr := r.blkHdr[:]
	r.blkOffset = r.offset
	n, err := io.ReadFull(r.br, hdr)
	switch {
	case err == io.EOF:
		return io.EOF
	case err == io.ErrUnexpectedEOF:
		r.truncated = int64(n)
		return io.EOF
	case err != nil:
		return fmt.Errorf("read recording: %w", err)
	}
	length := binary.LittleEndian.Uint32(hdr[0:])
	sum := binary.LittleEndian.Uint32(hdr[4:])
	if length == 0 {
		if sum == 0 {
			return r.zeroTail()
		}
		return r.corrupt("empty block")
	}
	if length > MaxBlockSize {
		return r.corrupt("block of %d bytes exceeds the limit of %d", length, MaxBlockSize)
	}
	// Grow the buffer only as data arrives: a bogus length at the end of a
	// short file must not allocate MaxBlockSize.
	r.buf = r.buf[:0]
	for len(r.buf) < int(length) {
		chunk := int(length) - len(r.buf)
		if cap(r.buf) < int(length) {
			chunk = min(chunk, 64<<10)
			r.buf = slices.Grow(r.buf, chunk)
		}
		m, err := io.ReadFull(r.br, r.buf[len(r.buf):len(r.buf)+chunk])
		r.buf = r.buf[:len(r.buf)+m]
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			r.truncated = blockHdrLen + int64(len(r.buf))
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("read recording: %w", err)
		}
	}
	if crc32.Update(crc32.Checksum(hdr[:4], castagnoli), castagnoli, r.buf) != sum {
		return r.corrupt("checksum mismatch")
	}
	r.offset += blockHdrLen + int64(length)
	r.blk = frameCursor{b: r.buf}
	r.recs = frameCursor{}
	if r.version >= 2 {
		return r.blockIndex()
	}
	return nil
}

// blockIndex reads the index that starts a block from version 2 on: every
// block's checksum holds when one is left out, repeated or moved, and the
// records after it would decode against the wrong base (see fTime).
func (r *Reader) blockIndex() error {
	want := r.blocks
	got := r.blk.uvarint()
	switch {
	case r.blk.bad:
		return r.corrupt("no block index")
	case got == want:
		r.blocks++
		return nil
	case got < want:
		return r.corrupt("block %d again, after block %d: a block is repeated or out of order", got, want-1)
	case got == want+1:
		return r.corrupt("block %d is missing or out of order: this is block %d", want, got)
	}
	return r.corrupt("blocks %d to %d are missing or out of order: this is block %d", want, got-1, got)
}

// zeroTail consumes the rest of a file whose next block header is all zeros:
// if every byte left is zero, nothing was ever written there and the recording
// merely ends early.
func (r *Reader) zeroTail() error {
	var buf [4096]byte
	n := int64(blockHdrLen)
	for {
		m, err := r.br.Read(buf[:])
		for _, c := range buf[:m] {
			if c != 0 {
				return r.corrupt("a zero block header followed by data")
			}
		}
		n += int64(m)
		if err == io.EOF {
			r.truncated = n
			return io.EOF
		}
		if err != nil {
			return fmt.Errorf("read recording: %w", err)
		}
	}
}

// decodeRecord decodes the next record of the records frame, as described at
