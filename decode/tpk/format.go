package tpk

import (
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// A .tpk recording holds what a live run saw, so that a replay on any machine,
// without root, feeds the same records to the same decoder and renderer.
//
// On-disk format, version 3. Fixed-width integers are little-endian; uvarint is
// encoding/binary's unsigned varint and varint its zigzag signed varint.
//
//	file     = magic version:u16 block*
//	magic    = "\x89TPK\r\n\x1a\n" (the \x89, CR-LF and ^Z catch text-mode transfers)
//	block    = length:u32 crc:u32 payload[length]   1 <= length <= MaxBlockSize
//	           crc is CRC-32C (Castagnoli) of the 4 length bytes, then the payload
//	payload  = index:uvarint frame*   index counts the file's blocks from 0
//	frame    = type:uvarint length:uvarint body[length]
//	string   = length:uvarint bytes
//	addr     = 0 (none) | 4 [4]byte | 6 [16]byte    (zones are not kept)
//	prefix   = addr bits:u8 (0xff when the prefix is invalid)
//	list(x)  = count:uvarint x*
//
// Frames (the body layouts are at encodeHeader, encodeSnapshot and
// encodeOutcome in frames.go, and at fTime in record.go):
//
//	1 header    first frame of the first block, exactly once
//	2 snapshot  namespaces and interfaces; each entry is length-prefixed
//	3 records   Records back to back, see appendRecord
//	4 outcome   one echo's outcome, after its records
//
// Limits: a reader refuses a file with more than MaxRecordsPerEcho records
// before an outcome, or more than MaxSnapshotItems snapshot entries (see the
// constants), and a record whose mask is 0 (it would cost a byte on disk and
// a whole Record in memory); a writer never writes one.
//
// Compatibility: a reader skips frames of types it does not know and ignores
// bytes past the fields it knows at the end of a header, snapshot entry or
// outcome, so later writers may add frame types (netfilter events) and append
// fields without changing the version. A record has no room for new fields
// (an unknown mask bit is corruption): they take a new version or frame type.
// The version changes only when a reader of the old version would misread the
// file; readers keep reading every older version.
//
// Versions: 1 has no block index (payload = frame*); 2 adds it, because a
// block left out, repeated or moved keeps every checksum valid while the
// records after it decode against the wrong base. A reader refuses a version 2
// file at the first block whose index is not the next one, and reads version 1
// files as before, unchecked.
//
// Version 3 carries TCP probes (--tcp): a version 2 reader would show their
// packets and outcomes as echoes. It adds the record fields fProto and
// fTCPFlags (new mask bits, which version 2 readers refuse), Proto and
// TCPFlags at the end of every netfilter event and of the drop (neither has
// room for appended fields), and, appended where appending is allowed, the
// header's Proto and an outcome's TCP fields (see encodeHeader and
// encodeOutcome). A writer writes version 3 only for a run of TCP probes
// (Header.Proto); a run of echoes is still written as version 2, byte for
// byte, so that older builds keep reading it. A reader refuses anything of a
// TCP probe in a file of an older version: no writer put it there. UDP
// probes and, appended after the TCP fields of an outcome, the source a probe
// was sent from came later in version 3: version 3 readers before them refuse
// a UDP run's protocol and stop before the source.
//
// Blocks make the file durable: the writer emits whole blocks, so a crash loses
// at most the block being written, and the reader stops at an incomplete last
// block, reporting its size (Truncated). A tail of zero bytes (a file extended
// but never written, as after a power cut) is reported as truncated too.
// Records are delta-encoded against the previous record of the file and
// interfaces and address pairs are interned file-wide, so blocks decode only in
// order, from the start.
const (
	// FormatVersion is the newest version this package writes and reads:
	// the version of recordings of TCP probes. Recordings of echoes are
	// written as echoVersion.
	FormatVersion = tcpVersion
	// MaxBlockSize bounds a block's payload; a reader refuses larger ones.
	MaxBlockSize = 4 << 20

	echoVersion = 2 // what recordings of echoes are written as
	tcpVersion  = 3 // the first version with TCP probes

	magicLen      = 8
	preambleLen   = magicLen + 2
	blockHdrLen   = 8
	blockSoftSize = 256 << 10 // the writer ends a block past this size

	// maxItems bounds the list entries (strings, pids, namespaces, interfaces,
	// addresses, all together) of one header or snapshot frame. With the block
	// limit it bounds what a hostile file can make a reader allocate.
	maxItems    = 64 << 10
	internLimit = 4096 // interned interfaces and address pairs, each

	// MaxRecordsPerEcho bounds the records between two outcomes (or before
	// the first), and MaxSnapshotItems the list entries of every snapshot
	// of a file together (see maxItems; a run snapshots again when it
	// learns new namespaces): they bound what a reader holds at once,
	// whatever the file's size. A live echo keeps fewer, counting the rest
	// as lost.
	MaxRecordsPerEcho = 16 << 10
	MaxSnapshotItems  = 1 << 20
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
	// Proto is decode.ProtoTCP or decode.ProtoUDP for a run of TCP or UDP
	// probes, 0 for a run of echoes: it decides the version the Writer
	// writes (see FormatVersion), and only a run of TCP or UDP probes may
	// write their records and outcomes.
	Proto uint8
}

// EchoOutcome follows an echo's records in a recording: what the pinger saw,
// and the netfilter events collected for the echo, as the source delivered
// them (files without them decode with none). decode.NewJourney rebuilds
// the live run's journey from it and the records before it.
type EchoOutcome struct {
	decode.Outcome
	Netfilter []decode.NetfilterEvent
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
