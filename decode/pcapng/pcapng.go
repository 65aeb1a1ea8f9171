package pcapng

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// pcapng block types, option codes and the link type, from the pcapng
// specification (draft-ietf-opsawg-pcapng) and the tcpdump.org link-type list.
// Blocks are written little-endian, which the byte-order magic announces.
const (
	pcapngSHB       = 0x0a0d0d0a
	pcapngIDB       = 0x00000001
	pcapngEPB       = 0x00000006
	pcapngByteOrder = 0x1a2b3c4d

	linktypeRaw = 101 // LINKTYPE_RAW: the packet starts at the IPv4 or IPv6 header

	optEndOfOpt   = 0
	optComment    = 1
	optShbOS      = 3
	optShbUserApp = 4
	optIfName     = 2
	optIfDesc     = 3
	optIfTsresol  = 9
	optEpbFlags   = 2

	epbFlagInbound  = 1 // epb_flags bits 0-1: the packet's direction
	epbFlagOutbound = 2
)

// Writer exports hop records as a pcapng file for Wireshark: one
// interface per (network namespace, ifindex) seen, one packet per hop.
type Writer struct {
	// Netns, when set, names namespace n in interface descriptions and
	// packet comments, instead of "netns n" and the snapshot's names (a
	// merge numbers the namespaces of its machines itself).
	Netns func(n uint32) string

	w         *bufio.Writer
	wallBase  int64 // StartWall - StartKtime, in ns since the epoch
	netns     map[uint32]*decode.Namespace
	ifaces    map[ifaceID]uint32
	buf, opts []byte
	err       error
}

type ifaceID struct{ netns, ifindex uint32 }

// NewWriter writes a pcapng section header describing the run of h
// (which may be nil: timestamps are then the records' CLOCK_MONOTONIC times)
// to w. Interfaces are described with the names of s, if not nil.
func NewWriter(w io.Writer, h *tpk.Header, s *decode.Snapshot) (*Writer, error) {
	p := &Writer{
		w:      bufio.NewWriterSize(w, 64<<10),
		ifaces: make(map[ifaceID]uint32),
	}
	p.SetSnapshot(s)
	b := binary.LittleEndian.AppendUint32(nil, pcapngByteOrder)
	b = binary.LittleEndian.AppendUint16(b, 1) // major version
	b = binary.LittleEndian.AppendUint16(b, 0) // minor version
	b = binary.LittleEndian.AppendUint64(b, ^uint64(0))
	var o []byte
	if h != nil {
		if !h.StartWall.IsZero() {
			p.wallBase = h.StartWall.UnixNano() - int64(h.StartKtime)
		}
		o = appendOption(o, optShbUserApp, "tracepkt-perf "+h.ToolVersion)
		if h.KernelRelease != "" {
			o = appendOption(o, optShbOS, "Linux "+h.KernelRelease)
		}
		c := "recorded on " + h.Hostname
		if h.BootID != "" {
			c += " (boot " + h.BootID + ")"
		}
		if !h.StartWall.IsZero() {
			c += " at " + h.StartWall.UTC().Format(time.RFC3339Nano)
		}
		if len(h.Args) > 0 {
			c += ": " + strings.Join(h.Args, " ")
		}
		o = appendOption(o, optComment, c)
	}
	p.writeBlock(pcapngSHB, b, o)
	return p, p.err
}

// SetSnapshot makes s describe the interfaces first seen from now on.
func (p *Writer) SetSnapshot(s *decode.Snapshot) {
	p.netns = make(map[uint32]*decode.Namespace)
	if s == nil {
		return
	}
	for i := range s.Namespaces {
		p.netns[s.Namespaces[i].Inode] = &s.Namespaces[i]
	}
}

// WriteRecord writes the packet of hop record r, preceded by the description
// of its interface the first time it is seen; notes (the netfilter verdicts
// on it) join its comment. Lost-sample notices and netfilter records have
// no packet and are skipped.
func (p *Writer) WriteRecord(r *decode.Record, notes ...string) error {
	if p.err != nil || r.Lost != 0 || r.IsNetfilter() {
		return p.err
	}
	if r.CapLen > decode.PacketBytes {
		return fmt.Errorf("pcapng: captured length %d exceeds %d", r.CapLen, decode.PacketBytes)
	}
	id, ok := p.ifaces[ifaceID{r.Netns, r.Ifindex}]
	if !ok {
		id = uint32(len(p.ifaces))
		p.ifaces[ifaceID{r.Netns, r.Ifindex}] = id
		p.writeInterface(r)
	}
	pkt := r.Packet[:r.CapLen]
	ts := uint64(p.wallBase + int64(r.Time))
	b := binary.LittleEndian.AppendUint32(p.buf[:0], id)
	b = binary.LittleEndian.AppendUint32(b, uint32(ts>>32))
	b = binary.LittleEndian.AppendUint32(b, uint32(ts))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(pkt)))
	b = binary.LittleEndian.AppendUint32(b, ipLength(pkt))
	b = append(b, pkt...)
	b = append(b, make([]byte, pad4(len(pkt)))...)
	p.buf = b

	dir, flags := r.Probe.Direction(), uint32(epbFlagOutbound)
	if dir == decode.In {
		flags = epbFlagInbound
	}
	// What the packet is: an echo's "request" or "reply", a TCP probe's
	// "syn", "syn-ack" or "rst", or the result an ICMP error quoting either
	// gives ("unreachable").
	netns := "netns " + strconv.FormatUint(uint64(r.Netns), 10)
	if p.Netns != nil {
		netns = p.Netns(r.Netns)
	}
	comment := fmt.Sprintf("%s %s %s (%s) %s", r.PacketType(), dir, r.IfName(), r.Probe, netns)
	for _, n := range notes {
		comment += "; " + n
	}
	o := appendOption(p.opts[:0], optComment, comment)
	o = appendOptionBytes(o, optEpbFlags, binary.LittleEndian.AppendUint32(nil, flags))
	p.opts = o
	p.writeBlock(pcapngEPB, b, o)
	return p.err
}

// Close writes out what is buffered; it does not close the underlying writer.
func (p *Writer) Close() error {
	if p.err != nil {
		return p.err
	}
	if err := p.w.Flush(); err != nil {
		p.err = fmt.Errorf("write pcapng: %w", err)
	}
	return p.err
}

// writeInterface describes the interface of r: its name when the probe fired
// and its namespace, with the snapshot's names for it.
func (p *Writer) writeInterface(r *decode.Record) {
	name := r.IfName()
	desc := "netns " + strconv.FormatUint(uint64(r.Netns), 10)
	ns := p.netns[r.Netns]
	switch {
	case p.Netns != nil:
		desc = p.Netns(r.Netns)
	case ns != nil && ns.Owner.Name != "":
		desc += " (" + ns.Owner.Name + ")"
	case ns != nil && len(ns.Names) > 0:
		desc += " (" + strings.Join(ns.Names, ", ") + ")"
	}
	if ns != nil && name == "" {
		for _, ifc := range ns.Interfaces {
			if ifc.Ifindex == r.Ifindex {
				name = ifc.Name
			}
		}
	}
	if name == "" {
		name = "if" + strconv.FormatUint(uint64(r.Ifindex), 10)
	}
	b := binary.LittleEndian.AppendUint16(nil, linktypeRaw)
	b = binary.LittleEndian.AppendUint16(b, 0) // reserved
	b = binary.LittleEndian.AppendUint32(b, decode.PacketBytes)
	o := appendOption(nil, optIfName, name)
	o = appendOption(o, optIfDesc, desc)
	o = appendOptionBytes(o, optIfTsresol, []byte{9}) // 10^-9 s: nanoseconds
	p.writeBlock(pcapngIDB, b, o)
}

// writeBlock writes a block: type, total length, body, options (each already
// padded to 32 bits), end of options, total length.
func (p *Writer) writeBlock(typ uint32, body, opts []byte) {
	if p.err != nil {
		return
	}
	total := 12 + len(body) + len(opts) + 4
	var hdr [8]byte
	binary.LittleEndian.PutUint32(hdr[0:], typ)
	binary.LittleEndian.PutUint32(hdr[4:], uint32(total))
	var end [8]byte // opt_endofopt, then the total length again
	binary.LittleEndian.PutUint16(end[0:], optEndOfOpt)
	binary.LittleEndian.PutUint32(end[4:], uint32(total))
	_, err1 := p.w.Write(hdr[:])
	_, err2 := p.w.Write(body)
	_, err3 := p.w.Write(opts)
	_, err4 := p.w.Write(end[:])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		p.err = fmt.Errorf("write pcapng: %w", err)
	}
}

func appendOption(b []byte, code uint16, s string) []byte {
	return appendOptionBytes(b, code, []byte(s))
}

// appendOptionBytes appends an option, cutting a value too long for its
// 16-bit length.
func appendOptionBytes(b []byte, code uint16, v []byte) []byte {
	v = v[:min(len(v), 0xfff0)]
	b = binary.LittleEndian.AppendUint16(b, code)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	b = append(b, v...)
	return append(b, make([]byte, pad4(len(v)))...)
}

func pad4(n int) int { return -n & 3 }

// ipLength is the length of the IP packet that starts pkt, as its header
// says, or len(pkt) when the header is cut short or says less.
func ipLength(pkt []byte) uint32 {
	n := len(pkt)
	switch {
	case n >= 4 && pkt[0]>>4 == 4:
		n = max(n, int(binary.BigEndian.Uint16(pkt[2:])))
	case n >= 6 && pkt[0]>>4 == 6:
		n = max(n, 40+int(binary.BigEndian.Uint16(pkt[4:])))
	}
	return uint32(n)
}

// Export writes the hop records of the recording read by r to w as
// pcapng, describing interfaces with the recording's latest snapshot, and
// returns the number of packets written. Only hops are packets: each
// netfilter verdict of an echo goes into the comment of the packet it
// belongs to (see verdictHops).
func Export(w io.Writer, r *tpk.Reader) (int, error) {
	h := r.Header()
	p, err := NewWriter(w, &h, nil)
	if err != nil {
		return 0, err
	}
	var (
		rec  decode.Record
		recs []decode.Record // one echo's, bounded by tpk.MaxRecordsPerEcho
		snap decode.Snapshot
		out  tpk.EchoOutcome
		n    int
	)
	for {
		kind, err := r.Next(&rec, &snap, &out)
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, errors.Join(err, p.Close())
		}
		switch kind {
		case tpk.KindSnapshot:
			s := snap // the next snapshot is decoded into new slices
			p.SetSnapshot(&s)
		case tpk.KindRecord:
			recs = append(recs, rec)
		case tpk.KindOutcome:
			j := decode.NewJourney(out.Outcome, recs, out.Netfilter)
			k, err := p.WriteJourney(&j)
			n += k
			if err != nil {
				return n, err
			}
			recs = recs[:0]
		}
	}
	// Records of an echo whose outcome was cut off.
	for i := range recs {
		if r := &recs[i]; r.Lost == 0 && !r.IsNetfilter() {
			if err := p.WriteRecord(r); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, p.Close()
}

// WriteJourney writes the packet of each hop of j, its netfilter verdicts
// in the packet's comment (see verdictHops), and returns how many it wrote.
func (p *Writer) WriteJourney(j *decode.Journey) (int, error) {
	notes := verdictHops(j)
	for i := range j.Hops {
		if err := p.WriteRecord(&j.Hops[i], notes[i]...); err != nil {
			return i, err
		}
	}
	return len(j.Hops), nil
}

// verdictHops gives each hop of j the netfilter verdicts that belong to its
// packet, in the order of j.Rows: a verdict at an output hook goes with the
// next hop in its namespace (the packet about to leave), any other with the
// previous one (the packet that came in); failing that, the nearest hop.
func verdictHops(j *decode.Journey) [][]string {
	notes := make([][]string, len(j.Hops))
	rows := j.Rows()
	hopIndex := make(map[*decode.Record]int, len(j.Hops))
	for i := range j.Hops {
		hopIndex[&j.Hops[i]] = i
	}
	for i, row := range rows {
		e := row.NF
		if e == nil {
			continue
		}
		forward := e.Hook == decode.HookOutput || e.Hook == decode.HookPostrouting
		hop := -1
		for _, sameNetns := range []bool{true, false} {
			for _, dir := range []bool{forward, !forward} {
				hop = nearestHop(rows, i, dir, func(h *decode.Record) bool { return !sameNetns || h.Netns == e.Netns })
				if hop >= 0 {
					break
				}
			}
			if hop >= 0 {
				break
			}
		}
		if hop < 0 {
			continue // no hop at all: no packet to carry it
		}
		n := fmt.Sprintf("netfilter %s.%s %s", e.Table, e.Chain, e.Verdict)
		if e.RuleHandle != 0 {
			n += fmt.Sprintf(" (rule %d", e.RuleHandle)
			if e.Rule != "" {
				n += ": " + e.Rule
			}
			n += ")"
		}
		k := hopIndex[rows[hop].Hop]
		notes[k] = append(notes[k], n)
	}
	return notes
}

// nearestHop returns the index in rows of the first hop row after (forward)
// or before rows[i] that ok accepts, or -1.
func nearestHop(rows []decode.Row, i int, forward bool, ok func(*decode.Record) bool) int {
	step := -1
	if forward {
		step = 1
	}
	for k := i + step; k >= 0 && k < len(rows); k += step {
		if h := rows[k].Hop; h != nil && ok(h) {
			return k
		}
	}
	return -1
}
