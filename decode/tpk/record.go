package tpk

import (
	"bytes"
	"encoding/binary"
	"net/netip"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// Fields of a record: record = mask:uvarint (never 0), then the fields whose
// bit is set, in this order. A record lists the fields that differ from its base: the previous record that was not a lost
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
//	         (a netfilter record's packet is its decode.NFInfo, see toDisk)
//	fLen     uvarint
//	fCPU     uvarint
//	fFamily  u8
//	fEchoID  u16 big-endian
//	fSeq     varint
//	fLost    uvarint, not 0
//	fProto     u8, 0 or decode.ProtoTCP  from version 3 on
//	fTCPFlags  u8                        from version 3 on
//
// A record's Tunnel is not written: the packet bytes and the (inner)
// addresses say it again (decode.Record.FindTunnel), so recordings of
// tunnels keep the format and every version's readers.
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
	fProto
	fTCPFlags
	fAll = 1<<iota - 1
	// fAllV2 are the fields of versions 1 and 2.
	fAllV2 = fProto - 1
)

// fieldsOf returns the record fields a file of version v may have.
func fieldsOf(v uint16) uint64 {
	if v >= tcpVersion {
		return fAll
	}
	return fAllV2
}

// validProto reports whether p is a probe protocol the format knows: 0 for
// an echo's packets, decode.ProtoTCP for a TCP probe's.
func validProto(p uint8) bool { return p == 0 || p == decode.ProtoTCP || p == decode.ProtoUDP }

type ifaceKey struct {
	netns, ifindex uint32
	name           [16]byte
}

type addrPair struct{ src, dst netip.Addr }

var zeroRecord decode.Record

// A netfilter record is written as a device record whose packet bytes are
// its decode.NFInfo (NFInfoBytes of them, as laid out at decode.OffNFInfo):
// the form version 1 files have always had. toDisk and fromDisk convert.

func toDisk(r *decode.Record) {
	r.NF.Put(r.Packet[:])
	clear(r.Packet[decode.NFInfoBytes:])
	r.CapLen = decode.NFInfoBytes
	r.NF = decode.NFInfo{}
}

func fromDisk(r *decode.Record) {
	r.NF.Decode(r.Packet[:])
	clear(r.Packet[:])
	r.CapLen = 0
}

// appendRecord encodes r as described at fTime: the fields that differ from
// its base, then the base moves on to r.
func (w *Writer) appendRecord(b []byte, r *decode.Record) []byte {
	if r.IsNetfilter() {
		w.nf = *r
		r = &w.nf
		toDisk(r)
	}
	base := &w.prev
	if r.Lost != 0 {
		base = &zeroRecord
	}
	src, dst := unzoned(r.Src), unzoned(r.Dst)
	mask := diffMask(r, base, src, dst)
	if mask == 0 {
		mask = fTime // a record equal to its base: never an empty record
	}
	b = w.encodeRecord(b, mask, r, base, src, dst)
	if mask&fLost != 0 {
		return b
	}
	w.prev = *r
	w.prev.Src, w.prev.Dst = src, dst
	clear(w.prev.Packet[r.CapLen:])
	return b
}

// diffMask returns the fields of r (with addresses src and dst) that differ
// from base; a lost notice always has fLost.
func diffMask(r, base *decode.Record, src, dst netip.Addr) uint64 {
	var mask uint64
	if r.Lost != 0 {
		mask = fLost
	}
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
	if r.Proto != base.Proto {
		mask |= fProto
	}
	if r.TCPFlags != base.TCPFlags {
		mask |= fTCPFlags
	}
	return mask
}

// encodeRecord appends the fields of mask, against base; interfaces and
// address pairs are interned as they are first written.
func (w *Writer) encodeRecord(b []byte, mask uint64, r, base *decode.Record, src, dst netip.Addr) []byte {
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
		n := int(r.CapLen)
		b = binary.AppendUvarint(b, uint64(n))
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
	}
	if mask&fProto != 0 {
		b = append(b, r.Proto)
	}
	if mask&fTCPFlags != 0 {
		b = append(b, r.TCPFlags)
	}
	return b
}

// appendPacketRuns writes the runs of cur that differ from base. Runs closer
// than 3 bytes are merged: the bytes between cost less than a run header.
func appendPacketRuns(b []byte, cur, base []byte) []byte {
	var runs [decode.PacketBytes/2 + 1][2]uint8
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

func (r *Reader) decodeRecord() (*decode.Record, error) {
	c := r.recs
	mask := c.uvarint()
	if mask == 0 {
		return nil, r.corrupt("empty record")
	}
	if unknown := mask &^ fieldsOf(r.version); unknown != 0 {
		return nil, r.corrupt("record with unknown fields %#x", unknown)
	}
	d := &r.state
	if mask&fLost != 0 {
		r.lost = decode.Record{}
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
		d.Probe = decode.Probe(c.uvarint16())
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
	if mask&fProto != 0 {
		if d.Proto = c.byte(); !validProto(d.Proto) {
			c.bad = true
		}
	}
	if mask&fTCPFlags != 0 {
		d.TCPFlags = c.byte()
	}
	if c.bad {
		return nil, r.corrupt("bad record")
	}
	r.recs = c
	return d, nil
}

func (r *Reader) decodePacket(c *frameCursor, d *decode.Record) {
	capLen := c.uvarint()
	nruns := c.uvarint()
	if capLen > decode.PacketBytes || nruns > decode.PacketBytes {
		c.bad = true
		return
	}
	pos := uint64(0)
	for range nruns {
		gap, n := c.uvarint(), c.uvarint()
		if gap > decode.PacketBytes || n > decode.PacketBytes || pos+gap+n > capLen {
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
