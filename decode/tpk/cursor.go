package tpk

import (
	"encoding/binary"
	"net/netip"
)

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
