package decode

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"slices"
	"time"
)

// A .tpk recording holds what a live run saw, so that a replay on any machine,
// without root, feeds the same records to the same decoder and renderer.
//
// On-disk format, version 1. Fixed-width integers are little-endian; uvarint is
// encoding/binary's unsigned varint and varint its zigzag signed varint.
//
//	file     = magic version:u16 block*
//	magic    = "\x89TPK\r\n\x1a\n" (the \x89, CR-LF and ^Z catch text-mode transfers)
//	block    = length:u32 crc:u32 payload[length]   1 <= length <= MaxBlockSize
//	           crc is CRC-32C (Castagnoli) of the 4 length bytes, then the payload
//	payload  = frame*
//	frame    = type:uvarint length:uvarint body[length]
//	string   = length:uvarint bytes
//	addr     = 0 (none) | 4 [4]byte | 6 [16]byte    (zones are not kept)
//	prefix   = addr bits:u8 (0xff when the prefix is invalid)
//	list(x)  = count:uvarint x*
//
// Frames (the body layouts are encodeHeader, encodeSnapshot, encodeOutcome and
// appendRecord below):
//
//	1 header    first frame of the first block, exactly once
//	2 snapshot  namespaces and interfaces; each entry is length-prefixed
//	3 records   Records back to back, see appendRecord
//	4 outcome   one echo's outcome, after its records
//
// Compatibility: a reader skips frames of types it does not know and ignores
// bytes past the fields it knows at the end of a header, snapshot entry or
// outcome, so later writers may add frame types (netfilter events) and append
// fields without changing the version. A record has no room for new fields
// (an unknown mask bit is corruption): they take a new version or frame type.
// The version changes only when a reader of the old version would misread the
// file; readers keep reading every older version.
//
// Blocks make the file durable: the writer emits whole blocks, so a crash loses
// at most the block being written, and the reader stops at an incomplete last
// block, reporting its size (Truncated). A tail of zero bytes (a file extended
// but never written, as after a power cut) is reported as truncated too.
// Records are delta-encoded against the previous record of the file and
// interfaces and address pairs are interned file-wide, so blocks decode only in
// order, from the start.
const (
	// FormatVersion is the version this package writes and the newest it reads.
	FormatVersion = 1
	// MaxBlockSize bounds a block's payload; a reader refuses larger ones.
	MaxBlockSize = 4 << 20

	magicLen      = 8
	preambleLen   = magicLen + 2
	blockHdrLen   = 8
	blockSoftSize = 256 << 10 // the writer ends a block past this size

	// maxItems bounds the list entries (strings, pids, namespaces, interfaces,
	// addresses, all together) of one header or snapshot frame. With the block
	// limit it bounds what a hostile file can make a reader allocate.
	maxItems    = 64 << 10
	internLimit = 4096 // interned interfaces and address pairs, each
)

var tpkMagic = [magicLen]byte{0x89, 'T', 'P', 'K', '\r', '\n', 0x1a, '\n'}

// Errors the Reader returns; test with errors.Is.
var (
	// ErrNotTPK is returned for a file that does not start with the .tpk magic.
	ErrNotTPK = errors.New("not a tracepkt-perf recording")
	// ErrUnsupportedVersion is returned for a format version this build cannot read.
	ErrUnsupportedVersion = errors.New("unsupported recording version")
	// ErrCorrupt is returned for a block that fails its checksum or does not parse.
	ErrCorrupt = errors.New("corrupt recording")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Frame types; the numbers are part of the format: never reuse one.
const (
	frameHeader   = 1
	frameSnapshot = 2
	frameRecords  = 3
	frameOutcome  = 4
)

// Header describes the run a recording comes from.
type Header struct {
	ToolVersion   string
	KernelRelease string
	Hostname      string
	BootID        string
	StartWall     time.Time // wall clock at start; read back in UTC
	StartKtime    uint64    // CLOCK_MONOTONIC ns at the same instant (the clock records use)
	Args          []string  // command line
	Capabilities  []string  // e.g. "probe:net_dev_queue", "netfilter:nftrace"
}

// Snapshot is what the run knew of the machine's namespaces, so a replay shows
// the live run's names and never looks them up where it runs.
type Snapshot struct{ Namespaces []Namespace }

// Namespace is one network namespace of a Snapshot.
type Namespace struct {
	Inode      uint32
	Names      []string // e.g. "tpdemo0-1234" from /run/netns, docker ids from /var/run/docker/netns
	Pids       []int    // a few processes living in it
	Comms      []string // their command names
	Interfaces []Interface
}

// Interface is one network device of a Namespace.
type Interface struct {
	Ifindex     uint32
	Name        string
	Kind        string // veth, bridge, loopback, ...
	PeerIfindex uint32 // veth peer, 0 if none or unknown
	PeerNetns   uint32
	Master      string // bridge master name, "" if none
	Addrs       []netip.Prefix
}

// EchoOutcome is what the pinger saw of one echo; it follows the echo's records.
type EchoOutcome struct {
	Target  netip.Addr
	EchoID  uint16
	Seq     uint16
	Replied bool
	RTT     time.Duration
	Timeout time.Duration
	// Netfilter are the netfilter events collected for this echo, as the
	// source delivered them (files without them decode with none).
	Netfilter []NetfilterEvent
}

// NewEchoOutcome is the outcome of j, to record after the records j was built
// from; nf are the netfilter events j was built from.
func NewEchoOutcome(j *Journey, nf []NetfilterEvent) EchoOutcome {
	return EchoOutcome{Target: j.Target, EchoID: j.EchoID, Seq: j.Seq, Replied: j.Replied, RTT: j.RTT, Timeout: j.Timeout, Netfilter: nf}
}

// Journey rebuilds the journey of the echo from the records recorded before
// its outcome and its netfilter events: the live run's journey, from the
// same inputs.
func (o *EchoOutcome) Journey(recs []Record) Journey {
	j := NewJourney(o.Target, o.EchoID, o.Seq, recs, o.Netfilter)
	j.Replied, j.RTT, j.Timeout = o.Replied, o.RTT, o.Timeout
	return j
}

// Kind says which item Reader.Next decoded.
type Kind uint8

const (
	KindRecord Kind = iota + 1
	KindSnapshot
	KindOutcome
)

func (k Kind) String() string {
	switch k {
	case KindRecord:
		return "record"
	case KindSnapshot:
		return "snapshot"
	case KindOutcome:
		return "outcome"
	}
	return fmt.Sprintf("kind%d", uint8(k))
}

// Fields of a record: record = mask:uvarint, then the fields whose bit is set,
// in this order. A record lists the fields that differ from its base: the previous record that was not a lost
// notice (the header's StartKtime stands for the first one's time), or for a
// lost notice (fLost) the zero Record. Time and Skb are varint deltas against
// the base, Seq a varint delta as int16; the others are values.
//
//	fTime    varint
//	fIface   ref: uvarint i>0 is interned interface i-1; 0 is a literal
//	         netns:uvarint ifindex:uvarint n:u8 Ifname[:n] (trailing NULs cut),
//	         interned while fewer than internLimit are
//	fProbe   uvarint
//	fAddrs   ref as above to a (Src, Dst) pair; literal addr addr
//	fType    u8 ICMPType
//	fSkb     varint
//	fPacket  CapLen:uvarint, list of runs: gap:uvarint n:uvarint bytes[n];
//	         Packet[:CapLen] is the base's with the runs written over it, each
//	         starting gap bytes after the previous one's end; bytes past CapLen are 0
//	fLen     uvarint
//	fCPU     uvarint
//	fFamily  u8
//	fEchoID  u16 big-endian
//	fSeq     varint
//	fLost    uvarint, not 0
const (
	fTime = 1 << iota
	fIface
	fProbe
	fAddrs
	fType
	fSkb
	fPacket
	fLen
	fCPU
	fFamily
	fEchoID
	fSeq
	fLost
	fAll = 1<<iota - 1
)

type ifaceKey struct {
	netns, ifindex uint32
	name           [16]byte
}

type addrPair struct{ src, dst netip.Addr }

// Writer writes a recording. Records and outcomes go to the current block,
// which Flush writes out in one Write call; the caller flushes after each
// echo so that a crash loses at most the echo in progress.
type Writer struct {
	w        io.Writer
	blk      []byte // preamble (first block only), block header room, frames
	blkStart int    // offset of the block header in blk
	recs     []byte // body of the records frame being built
	tmp      []byte
	prev     Record // base of the next record, see fTime
	ifaces   map[ifaceKey]uint64
	addrs    map[addrPair]uint64
	err      error
}

// NewWriter writes the file's preamble and h to w, at once.
func NewWriter(w io.Writer, h Header) (*Writer, error) {
	wr := &Writer{
		w:      w,
		ifaces: make(map[ifaceKey]uint64),
		addrs:  make(map[addrPair]uint64),
	}
	if n := len(h.Args) + len(h.Capabilities); n > maxItems {
		return nil, fmt.Errorf("write recording header: %d arguments and capabilities exceed %d", n, maxItems)
	}
	wr.prev.Time = h.StartKtime
	wr.blk = append(wr.blk, tpkMagic[:]...)
	wr.blk = binary.LittleEndian.AppendUint16(wr.blk, FormatVersion)
	wr.blkStart = len(wr.blk)
	wr.blk = append(wr.blk, make([]byte, blockHdrLen)...)
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
func (w *Writer) WriteSnapshot(s *Snapshot) error {
	if w.err != nil {
		return w.err
	}
	if n := snapshotItems(s); n > maxItems {
		return fmt.Errorf("write snapshot: %d entries exceed %d", n, maxItems)
	}
	w.tmp = encodeSnapshot(w.tmp[:0], s)
	return w.writeFrame(frameSnapshot, w.tmp)
}

// snapshotItems counts the list entries of s, see maxItems.
func snapshotItems(s *Snapshot) int {
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
	w.tmp = encodeOutcome(w.tmp[:0], o)
	return w.writeFrame(frameOutcome, w.tmp)
}

// WriteRecord adds r to the current block. A block that grows past a few
// hundred KiB is written out without waiting for Flush.
func (w *Writer) WriteRecord(r *Record) error {
	if w.err != nil {
		return w.err
	}
	if r.CapLen > PacketBytes {
		return fmt.Errorf("write record: captured length %d exceeds %d", r.CapLen, PacketBytes)
	}
	w.recs = w.appendRecord(w.recs, r)
	if len(w.blk)+len(w.recs) > blockSoftSize {
		return w.Flush()
	}
	return nil
}

// WriteEcho writes one echo's records and outcome as one block and flushes it.
func (w *Writer) WriteEcho(recs []Record, o *EchoOutcome) error {
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
	payload := len(w.blk) - w.blkStart - blockHdrLen
	if payload == 0 {
		return nil
	}
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
	w.blk = append(w.blk[:0], make([]byte, blockHdrLen)...)
	return nil
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

var zeroRecord Record

// appendRecord encodes r as described at fTime.
func (w *Writer) appendRecord(b []byte, r *Record) []byte {
	base := &w.prev
	var mask uint64
	if r.Lost != 0 {
		base, mask = &zeroRecord, fLost
	}
	src, dst := unzoned(r.Src), unzoned(r.Dst)
	if r.Time != base.Time {
		mask |= fTime
	}
	if r.Netns != base.Netns || r.Ifindex != base.Ifindex || r.Ifname != base.Ifname {
		mask |= fIface
	}
	if r.Probe != base.Probe {
		mask |= fProbe
	}
	if src != base.Src || dst != base.Dst {
		mask |= fAddrs
	}
	if r.ICMPType != base.ICMPType {
		mask |= fType
	}
	if r.Skb != base.Skb {
		mask |= fSkb
	}
	n := int(r.CapLen)
	if r.CapLen != base.CapLen || !bytes.Equal(r.Packet[:n], base.Packet[:n]) {
		mask |= fPacket
	}
	if r.Len != base.Len {
		mask |= fLen
	}
	if r.CPU != base.CPU {
		mask |= fCPU
	}
	if r.Family != base.Family {
		mask |= fFamily
	}
	if r.EchoID != base.EchoID {
		mask |= fEchoID
	}
	if r.Seq != base.Seq {
		mask |= fSeq
	}

	b = binary.AppendUvarint(b, mask)
	if mask&fTime != 0 {
		b = binary.AppendVarint(b, int64(r.Time-base.Time))
	}
	if mask&fIface != 0 {
		k := ifaceKey{r.Netns, r.Ifindex, r.Ifname}
		if i, ok := w.ifaces[k]; ok {
			b = binary.AppendUvarint(b, i+1)
		} else {
			b = append(b, 0)
			b = binary.AppendUvarint(b, uint64(r.Netns))
			b = binary.AppendUvarint(b, uint64(r.Ifindex))
			name := bytes.TrimRight(r.Ifname[:], "\x00")
			b = append(b, byte(len(name)))
			b = append(b, name...)
			if len(w.ifaces) < internLimit {
				w.ifaces[k] = uint64(len(w.ifaces))
			}
		}
	}
	if mask&fProbe != 0 {
		b = binary.AppendUvarint(b, uint64(r.Probe))
	}
	if mask&fAddrs != 0 {
		k := addrPair{src, dst}
		if i, ok := w.addrs[k]; ok {
			b = binary.AppendUvarint(b, i+1)
		} else {
			b = append(b, 0)
			b = appendAddr(b, src)
			b = appendAddr(b, dst)
			if len(w.addrs) < internLimit {
				w.addrs[k] = uint64(len(w.addrs))
			}
		}
	}
	if mask&fType != 0 {
		b = append(b, r.ICMPType)
	}
	if mask&fSkb != 0 {
		b = binary.AppendVarint(b, int64(r.Skb-base.Skb))
	}
	if mask&fPacket != 0 {
		b = binary.AppendUvarint(b, uint64(r.CapLen))
		b = appendPacketRuns(b, r.Packet[:n], base.Packet[:n])
	}
	if mask&fLen != 0 {
		b = binary.AppendUvarint(b, uint64(r.Len))
	}
	if mask&fCPU != 0 {
		b = binary.AppendUvarint(b, uint64(r.CPU))
	}
	if mask&fFamily != 0 {
		b = append(b, r.Family)
	}
	if mask&fEchoID != 0 {
		b = binary.BigEndian.AppendUint16(b, r.EchoID)
	}
	if mask&fSeq != 0 {
		b = binary.AppendVarint(b, int64(int16(r.Seq-base.Seq)))
	}
	if mask&fLost != 0 {
		b = binary.AppendUvarint(b, r.Lost)
		return b
	}
	w.prev = *r
	w.prev.Src, w.prev.Dst = src, dst
	clear(w.prev.Packet[n:])
	return b
}

// appendPacketRuns writes the runs of cur that differ from base. Runs closer
// than 3 bytes are merged: the bytes between cost less than a run header.
func appendPacketRuns(b []byte, cur, base []byte) []byte {
	var runs [PacketBytes/2 + 1][2]uint8
	nruns := 0
	for i := 0; i < len(cur); {
		if cur[i] == base[i] {
			i++
			continue
		}
		last := i
		for j := i + 1; j < len(cur) && j <= last+3; j++ {
			if cur[j] != base[j] {
				last = j
			}
		}
		runs[nruns] = [2]uint8{uint8(i), uint8(last + 1)}
		nruns++
		i = last + 1
	}
	b = binary.AppendUvarint(b, uint64(nruns))
	pos := 0
	for _, r := range runs[:nruns] {
		b = binary.AppendUvarint(b, uint64(int(r[0])-pos))
		b = binary.AppendUvarint(b, uint64(r[1]-r[0]))
		b = append(b, cur[r[0]:r[1]]...)
		pos = int(r[1])
	}
	return b
}

func unzoned(a netip.Addr) netip.Addr {
	if a.Zone() != "" {
		return a.WithZone("")
	}
	return a
}

func appendAddr(b []byte, a netip.Addr) []byte {
	switch {
	case a.Is4():
		a4 := a.As4()
		return append(append(b, 4), a4[:]...)
	case a.Is6():
		a16 := a.As16()
		return append(append(b, 6), a16[:]...)
	}
	return append(b, 0)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(b, uint64(len(ss)))
	for _, s := range ss {
		b = appendString(b, s)
	}
	return b
}

// appendEntry appends a length-prefixed entry built by f, so that readers can
// skip fields appended to it later.
func appendEntry(b []byte, tmp *[]byte, f func([]byte) []byte) []byte {
	*tmp = f((*tmp)[:0])
	b = binary.AppendUvarint(b, uint64(len(*tmp)))
	return append(b, *tmp...)
}

// encodeHeader: ToolVersion KernelRelease Hostname BootID:string
// StartWall:(seconds:varint nanoseconds:uvarint) StartKtime:uvarint
// Args Capabilities:list(string).
func encodeHeader(b []byte, h *Header) []byte {
	b = appendString(b, h.ToolVersion)
	b = appendString(b, h.KernelRelease)
	b = appendString(b, h.Hostname)
	b = appendString(b, h.BootID)
	b = binary.AppendVarint(b, h.StartWall.Unix())
	b = binary.AppendUvarint(b, uint64(h.StartWall.Nanosecond()))
	b = binary.AppendUvarint(b, h.StartKtime)
	b = appendStrings(b, h.Args)
	return appendStrings(b, h.Capabilities)
}

// encodeSnapshot: list(length:uvarint namespace), namespace = Inode:uvarint
// Names:list(string) Pids:list(varint) Comms:list(string)
// Interfaces:list(length:uvarint interface), interface = Ifindex:uvarint
// Name Kind:string PeerIfindex PeerNetns:uvarint Master:string Addrs:list(prefix).
func encodeSnapshot(b []byte, s *Snapshot) []byte {
	var nsBuf, ifBuf []byte
	b = binary.AppendUvarint(b, uint64(len(s.Namespaces)))
	for i := range s.Namespaces {
		ns := &s.Namespaces[i]
		b = appendEntry(b, &nsBuf, func(b []byte) []byte {
			b = binary.AppendUvarint(b, uint64(ns.Inode))
			b = appendStrings(b, ns.Names)
			b = binary.AppendUvarint(b, uint64(len(ns.Pids)))
			for _, p := range ns.Pids {
				b = binary.AppendVarint(b, int64(p))
			}
			b = appendStrings(b, ns.Comms)
			b = binary.AppendUvarint(b, uint64(len(ns.Interfaces)))
			for j := range ns.Interfaces {
				ifc := &ns.Interfaces[j]
				b = appendEntry(b, &ifBuf, func(b []byte) []byte {
					b = binary.AppendUvarint(b, uint64(ifc.Ifindex))
					b = appendString(b, ifc.Name)
					b = appendString(b, ifc.Kind)
					b = binary.AppendUvarint(b, uint64(ifc.PeerIfindex))
					b = binary.AppendUvarint(b, uint64(ifc.PeerNetns))
					b = appendString(b, ifc.Master)
					b = binary.AppendUvarint(b, uint64(len(ifc.Addrs)))
					for _, p := range ifc.Addrs {
						b = appendAddr(b, p.Addr())
						b = append(b, byte(p.Bits())) // -1 (invalid) becomes 0xff
					}
					return b
				})
			}
			return b
		})
	}
	return b
}

// encodeOutcome: Target:addr EchoID Seq:uvarint Replied:u8 RTT Timeout:varint ns.
func encodeOutcome(b []byte, o *EchoOutcome) []byte {
	b = appendAddr(b, unzoned(o.Target))
	b = binary.AppendUvarint(b, uint64(o.EchoID))
	b = binary.AppendUvarint(b, uint64(o.Seq))
	replied := byte(0)
	if o.Replied {
		replied = 1
	}
	b = append(b, replied)
	b = binary.AppendVarint(b, int64(o.RTT))
	b = binary.AppendVarint(b, int64(o.Timeout))
	// Appended fields, only when there are events: older readers stop
	// before them, and files without them stay as version 1 first wrote them.
	if len(o.Netfilter) == 0 {
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(o.Netfilter)))
	for i := range o.Netfilter {
		b = appendNetfilter(b, &o.Netfilter[i])
	}
	return b
}

func appendNetfilter(b []byte, e *NetfilterEvent) []byte {
	b = binary.AppendUvarint(b, e.Time)
	b = binary.AppendUvarint(b, uint64(e.Netns))
	for _, s := range []string{e.Family, e.Table, e.Chain, e.Verdict, e.Target, e.Rule, e.Source} {
		b = appendString(b, s)
	}
	b = append(b, byte(e.Hook), byte(e.Type), e.ICMPType)
	b = binary.AppendUvarint(b, e.RuleHandle)
	b = binary.AppendUvarint(b, uint64(e.Iif))
	b = binary.AppendUvarint(b, uint64(e.Oif))
	b = binary.AppendUvarint(b, uint64(e.TraceID))
	b = binary.AppendUvarint(b, uint64(e.EchoID))
	b = binary.AppendUvarint(b, uint64(e.Seq))
	b = appendAddr(b, unzoned(e.Src))
	return appendAddr(b, unzoned(e.Dst))
}

// decodeNetfilterList decodes the netfilter events appended to an outcome
// frame. Its own cursor keeps the outcome's on the stack when there are none.
func decodeNetfilterList(b []byte) ([]NetfilterEvent, bool) {
	c := frameCursor{b: b}
	budget := maxItems
	nf := readList(&c, &budget, 20, (*frameCursor).netfilter)
	return nf, !c.bad
}

func (c *frameCursor) netfilter() NetfilterEvent {
	var e NetfilterEvent
	e.Time = c.uvarint()
	e.Netns = c.uvarint32()
	for _, s := range []*string{&e.Family, &e.Table, &e.Chain, &e.Verdict, &e.Target, &e.Rule, &e.Source} {
		*s = c.string()
	}
	e.Hook, e.Type, e.ICMPType = Hook(c.byte()), TraceType(c.byte()), c.byte()
	e.RuleHandle = c.uvarint()
	e.Iif, e.Oif, e.TraceID = c.uvarint32(), c.uvarint32(), c.uvarint32()
	e.EchoID, e.Seq = c.uvarint16(), c.uvarint16()
	e.Src, e.Dst = c.addr(), c.addr()
	return e
}

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
	state     Record      // base of the next record, see fTime
	lost      Record      // the last lost notice
	ifaces    []ifaceKey
	addrs     []addrPair
	snap      Snapshot
	out       EchoOutcome
	truncated int64
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
	if v := binary.LittleEndian.Uint16(pre[magicLen:]); v != FormatVersion {
		newer := ""
		if v > FormatVersion {
			newer = " (a newer tracepkt-perf wrote it)"
		}
		return nil, fmt.Errorf("%w: version %d%s, this build reads version %d", ErrUnsupportedVersion, v, newer, FormatVersion)
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
	c := frameCursor{b: body}
	h := &r.hdr
	h.ToolVersion = c.string()
	h.KernelRelease = c.string()
	h.Hostname = c.string()
	h.BootID = c.string()
	sec := c.varint()
	nsec := c.uvarint()
	if nsec >= 1e9 {
		c.bad = true
	}
	h.StartWall = time.Unix(sec, int64(nsec)).UTC()
	h.StartKtime = c.uvarint()
	budget := maxItems
	h.Args = readList(&c, &budget, 1, (*frameCursor).string)
	h.Capabilities = readList(&c, &budget, 1, (*frameCursor).string)
	if c.bad {
		return nil, r.corrupt("bad header frame")
	}
	r.state.Time = h.StartKtime
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
func (r *Reader) Next(rec *Record, snap *Snapshot, out *EchoOutcome) (Kind, error) {
	for r.err == nil {
		if r.recs.off < len(r.recs.b) {
			d, err := r.decodeRecord()
			if err != nil {
				r.err = err
				break
			}
			if rec != nil {
				*rec = *d
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
			return KindSnapshot, nil
		case frameOutcome:
			if out == nil {
				out = &r.out
			}
			if err := r.decodeOutcome(body, out); err != nil {
				r.err = err
				break
			}
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
	return nil
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
// fTime, and returns it.
func (r *Reader) decodeRecord() (*Record, error) {
	c := r.recs
	mask := c.uvarint()
	if mask&^fAll != 0 {
		return nil, r.corrupt("record with unknown fields %#x", mask&^fAll)
	}
	d := &r.state
	if mask&fLost != 0 {
		r.lost = Record{}
		d = &r.lost
	}
	if mask&fTime != 0 {
		d.Time += uint64(c.varint())
	}
	if mask&fIface != 0 {
		if i := c.uvarint(); i == 0 {
			d.Netns = c.uvarint32()
			d.Ifindex = c.uvarint32()
			n := int(c.byte())
			if n > len(d.Ifname) {
				c.bad, n = true, 0
			}
			name := c.next(n)
			copy(d.Ifname[:], name)
			clear(d.Ifname[len(name):])
			if len(r.ifaces) < internLimit {
				r.ifaces = append(r.ifaces, ifaceKey{d.Netns, d.Ifindex, d.Ifname})
			}
		} else if i <= uint64(len(r.ifaces)) {
			k := &r.ifaces[i-1]
			d.Netns, d.Ifindex, d.Ifname = k.netns, k.ifindex, k.name
		} else {
			c.bad = true
		}
	}
	if mask&fProbe != 0 {
		d.Probe = Probe(c.uvarint16())
	}
	if mask&fAddrs != 0 {
		if i := c.uvarint(); i == 0 {
			d.Src = c.addr()
			d.Dst = c.addr()
			if len(r.addrs) < internLimit {
				r.addrs = append(r.addrs, addrPair{d.Src, d.Dst})
			}
		} else if i <= uint64(len(r.addrs)) {
			p := &r.addrs[i-1]
			d.Src, d.Dst = p.src, p.dst
		} else {
			c.bad = true
		}
	}
	if mask&fType != 0 {
		d.ICMPType = c.byte()
	}
	if mask&fSkb != 0 {
		d.Skb += uint64(c.varint())
	}
	if mask&fPacket != 0 {
		r.decodePacket(&c, d)
	}
	if mask&fLen != 0 {
		d.Len = c.uvarint32()
	}
	if mask&fCPU != 0 {
		d.CPU = c.uvarint32()
	}
	if mask&fFamily != 0 {
		d.Family = c.byte()
	}
	if mask&fEchoID != 0 {
		d.EchoID = uint16(c.byte())<<8 | uint16(c.byte())
	}
	if mask&fSeq != 0 {
		v := c.varint()
		if v < -1<<15 || v >= 1<<15 {
			c.bad = true
		}
		d.Seq += uint16(v)
	}
	if mask&fLost != 0 {
		if d.Lost = c.uvarint(); d.Lost == 0 {
			c.bad = true
		}
	}
	if c.bad {
		return nil, r.corrupt("bad record")
	}
	r.recs = c
	return d, nil
}

func (r *Reader) decodePacket(c *frameCursor, d *Record) {
	capLen := c.uvarint()
	nruns := c.uvarint()
	if capLen > PacketBytes || nruns > PacketBytes {
		c.bad = true
		return
	}
	pos := uint64(0)
	for range nruns {
		gap, n := c.uvarint(), c.uvarint()
		if gap > PacketBytes || n > PacketBytes || pos+gap+n > capLen {
			c.bad = true
			return
		}
		pos += gap
		copy(d.Packet[pos:], c.next(int(n)))
		pos += n
	}
	d.CapLen = uint16(capLen)
	clear(d.Packet[capLen:])
}

func (r *Reader) decodeOutcome(body []byte, o *EchoOutcome) error {
	c := frameCursor{b: body}
	o.Target = c.addr()
	o.EchoID = c.uvarint16()
	o.Seq = c.uvarint16()
	o.Replied = c.byte() != 0
	o.RTT = time.Duration(c.varint())
	o.Timeout = time.Duration(c.varint())
	o.Netfilter = nil
	if !c.bad && c.off < len(c.b) {
		var ok bool
		if o.Netfilter, ok = decodeNetfilterList(c.b[c.off:]); !ok {
			return r.corrupt("bad netfilter events in outcome frame")
		}
	}
	if c.bad {
		return r.corrupt("bad outcome frame")
	}
	return nil
}

func (r *Reader) decodeSnapshot(body []byte, s *Snapshot) error {
	c := frameCursor{b: body}
	budget := maxItems
	// The minimum sizes are those of entries with empty lists and strings.
	s.Namespaces = readList(&c, &budget, 6, func(c *frameCursor) Namespace {
		e := c.entry()
		var ns Namespace
		ns.Inode = e.uvarint32()
		ns.Names = readList(&e, &budget, 1, (*frameCursor).string)
		ns.Pids = readList(&e, &budget, 1, func(e *frameCursor) int { return int(e.varint()) })
		ns.Comms = readList(&e, &budget, 1, (*frameCursor).string)
		ns.Interfaces = readList(&e, &budget, 8, func(e *frameCursor) Interface {
			f := e.entry()
			var ifc Interface
			ifc.Ifindex = f.uvarint32()
			ifc.Name = f.string()
			ifc.Kind = f.string()
			ifc.PeerIfindex = f.uvarint32()
			ifc.PeerNetns = f.uvarint32()
			ifc.Master = f.string()
			ifc.Addrs = readList(&f, &budget, 2, (*frameCursor).prefix)
			e.bad = e.bad || f.bad
			return ifc
		})
		c.bad = c.bad || e.bad
		return ns
	})
	if c.bad {
		*s = Snapshot{}
		return r.corrupt("bad snapshot frame")
	}
	return nil
}

// list decodes a list of entries that take at least minSize bytes each: a
// count the bytes left cannot hold, or past what is left of budget, is refused
// before anything is allocated for it.
func readList[T any](c *frameCursor, budget *int, minSize int, entry func(*frameCursor) T) []T {
	n := c.uvarint()
	if n > uint64((len(c.b)-c.off)/minSize) || n > uint64(*budget) {
		c.bad = true
		return nil
	}
	if n == 0 {
		return nil
	}
	*budget -= int(n)
	s := make([]T, 0, n)
	for range n {
		v := entry(c)
		if c.bad {
			return nil
		}
		s = append(s, v)
	}
	return s
}

// frameCursor reads a frame's fields. Reading past the end, or a malformed
// value, sets bad and yields zero values; callers check bad once they are done.
type frameCursor struct {
	b   []byte
	off int
	bad bool
}

func (c *frameCursor) uvarint() uint64 {
	if c.off < len(c.b) && c.b[c.off] < 0x80 {
		v := c.b[c.off]
		c.off++
		return uint64(v)
	}
	return c.uvarintSlow()
}

func (c *frameCursor) uvarintSlow() uint64 {
	v, n := binary.Uvarint(c.b[min(c.off, len(c.b)):])
	if n <= 0 {
		c.bad = true
		c.off = len(c.b)
		return 0
	}
	c.off += n
	return v
}

func (c *frameCursor) uvarint32() uint32 {
	v := c.uvarint()
	if v > 1<<32-1 {
		c.bad = true
	}
	return uint32(v)
}

func (c *frameCursor) uvarint16() uint16 {
	v := c.uvarint()
	if v > 1<<16-1 {
		c.bad = true
	}
	return uint16(v)
}

func (c *frameCursor) varint() int64 {
	u := c.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

func (c *frameCursor) byte() byte {
	if c.off >= len(c.b) {
		c.bad = true
		return 0
	}
	v := c.b[c.off]
	c.off++
	return v
}

// next returns the next n bytes, or nil if there are fewer.
func (c *frameCursor) next(n int) []byte {
	if n < 0 || n > len(c.b)-c.off {
		c.bad = true
		c.off = len(c.b)
		return nil
	}
	s := c.b[c.off : c.off+n]
	c.off += n
	return s
}

// string reads a string; its bytes are in the frame, so it is as long as
// the frame allows and no longer.
func (c *frameCursor) string() string {
	n := c.uvarint()
	if n > uint64(len(c.b)-c.off) {
		c.bad = true
		c.off = len(c.b)
		return ""
	}
	return string(c.next(int(n)))
}

// entry returns a frameCursor over the next length-prefixed entry; the fields a
// newer writer appended to it are skipped with it.
func (c *frameCursor) entry() frameCursor {
	n := c.uvarint()
	if n > uint64(len(c.b)-c.off) {
		c.bad = true
		return frameCursor{bad: true}
	}
	return frameCursor{b: c.next(int(n))}
}

func (c *frameCursor) prefix() netip.Prefix {
	a := c.addr()
	bits := c.byte()
	if !a.IsValid() {
		return netip.Prefix{}
	}
	p := netip.PrefixFrom(a, int(bits))
	if !p.IsValid() {
		c.bad = true
	}
	return p
}

func (c *frameCursor) addr() netip.Addr {
	switch c.byte() {
	case 0:
		return netip.Addr{}
	case 4:
		if b := c.next(4); b != nil {
			return netip.AddrFrom4([4]byte(b))
		}
	case 6:
		if b := c.next(16); b != nil {
			return netip.AddrFrom16([16]byte(b))
		}
	default:
		c.bad = true
	}
	return netip.Addr{}
}
