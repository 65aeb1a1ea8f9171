package vmtest

import (
	"fmt"
	"io"
	"io/fs"
)

// CPIOWriter writes a "newc" cpio archive, the format the kernel unpacks as an
// initramfs (Documentation/driver-api/early-userspace/buffer-format.rst).
// Modification times are zero so the same inputs give the same bytes.
type CPIOWriter struct {
	w   io.Writer
	ino uint32
}

// NewCPIOWriter returns a writer that appends entries to w; call Close to end
// the archive.
func NewCPIOWriter(w io.Writer) *CPIOWriter {
	return &CPIOWriter{w: w}
}

// Mode bits of a newc header: the file type in the high bits, as in <linux/stat.h>.
const (
	cpioTypeCharDev = 0o020000
	cpioTypeDir     = 0o040000
	cpioTypeRegular = 0o100000
	cpioTypeSymlink = 0o120000
)

// Dir adds a directory. Parents must be added before their children.
func (c *CPIOWriter) Dir(name string, perm fs.FileMode) error {
	return c.entry(name, cpioTypeDir|uint32(perm.Perm()), 2, nil, 0, 0)
}

// CharDev adds a character device node, such as /dev/console, which the
// kernel opens for init before any devtmpfs is mounted.
func (c *CPIOWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return c.entry(name, cpioTypeCharDev|uint32(perm.Perm()), 1, nil, major, minor)
}

// File adds a regular file holding data.
func (c *CPIOWriter) File(name string, perm fs.FileMode, data []byte) error {
	return c.entry(name, cpioTypeRegular|uint32(perm.Perm()), 1, data, 0, 0)
}

// Symlink adds a symbolic link name pointing at target.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.entry(name, cpioTypeSymlink|0o777, 1, []byte(target), 0, 0)
}

// Close writes the trailer entry that ends the archive; it does not close the
// underlying writer.
func (c *CPIOWriter) Close() error {
	return c.entry("TRAILER!!!", 0, 1, nil, 0, 0)
}

func (c *CPIOWriter) entry(name string, mode, nlink uint32, data []byte, rdevMajor, rdevMinor uint32) error {
	c.ino++
	// The header is "070701" and 13 fields of 8 hex digits; it must match the
	// newc layout in usr/gen_init_cpio.c. The name's size counts its NUL.
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	buf := make([]byte, 0, len(hdr)+len(name)+4+len(data)+3)
	buf = append(buf, hdr...)
	buf = append(buf, name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	if _, err := c.w.Write(buf); err != nil {
		return fmt.Errorf("write cpio entry %s: %w", name, err)
	}
	return nil
}

// pad4 aligns b to 4 bytes, as newc requires after the name and after the data.
func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
