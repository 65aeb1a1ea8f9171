package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// outFile is a file the tool writes for the user: --record, --svg and
// --pcapng. It is written without a name (O_TMPFILE) in the directory of its
// path, and takes the path only once it holds what it is for: a run that
// fails before (a typo in the target, no route) leaves what was at the path
// as it was, and no empty file; a run killed before leaves nothing either.
// It only ever replaces a regular file, and that file's owner and mode
// carry over: a device, a FIFO, a symlink, a directory or a socket at the
// path is refused before anything is traced, and so is a file whose owner
// cannot be kept.
type outFile struct {
	*os.File
	path      string
	tmp       string // a named temporary file, where O_TMPFILE is not supported
	published bool
}

// errNotPublished: the file was closed before it held anything; its path
// was not written.
var errNotPublished = errors.New("not written")

func createOutFile(path string) (*outFile, error) {
	if _, err := existingFile(path); err != nil {
		return nil, err
	}
	dir := filepath.Dir(path)
	var f *outFile
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
	switch {
	case err == nil:
		f = &outFile{File: os.NewFile(uintptr(fd), path), path: path}
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR):
		tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
		if err != nil {
			return nil, err
		}
		f = &outFile{File: tmp, path: path, tmp: tmp.Name()}
	default:
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	// Taking the owner and mode now fails before the run if it cannot be done.
	if err := f.adopt(); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// existingFile returns what is at path when it is a regular file, nil when
// nothing is, and an error for anything else, which the tool never replaces.
func existingFile(path string) (*unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Lstat(path, &st)
	if errors.Is(err, unix.ENOENT) {
		return nil, nil
	}
	if err != nil {
		return nil, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	if kind := fileKind(st.Mode); kind != "" {
		return nil, fmt.Errorf("%s is %s, not a regular file: not replacing it", path, kind)
	}
	return &st, nil
}

// fileKind names a file type other than a regular file.
func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return ""
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symbolic link"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "of an unknown type"
}

// adopt gives the file the owner and mode of the regular file at its path,
// if there is one, or refuses.
func (f *outFile) adopt() error {
	st, err := existingFile(f.path)
	if err != nil || st == nil {
		return err
	}
	var own unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &own); err != nil {
		return &os.PathError{Op: "fstat", Path: f.path, Err: err}
	}
	if own.Uid != st.Uid || own.Gid != st.Gid {
		if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("%s belongs to uid %d, gid %d, which the new file cannot keep (%w): not replacing it", f.path, st.Uid, st.Gid, errors.Unwrap(err))
		}
	}
	// After the chown, which clears the set-id bits.
	if err := f.Chmod(fs.FileMode(st.Mode & 0o777)); err != nil {
		return fmt.Errorf("%s: keep its mode %#o: %w", f.path, st.Mode&0o777, err)
	}
	return nil
}

// publish gives the file its path, replacing the regular file there, whose
// owner and mode it takes; it does something only the first time.
func (f *outFile) publish() error {
	if f.published {
		return nil
	}
	// What is at the path may have changed since the file was created.
	if err := f.adopt(); err != nil {
		return err
	}
	if f.tmp == "" {
		tmp := filepath.Join(filepath.Dir(f.path), "."+filepath.Base(f.path)+"."+strconv.Itoa(os.Getpid())+".tmp")
		proc := "/proc/self/fd/" + strconv.Itoa(int(f.Fd()))
		if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW); err != nil {
			return &os.LinkError{Op: "link", Old: proc, New: tmp, Err: err}
		}
		f.tmp = tmp
	}
	if err := os.Rename(f.tmp, f.path); err != nil {
		os.Remove(f.tmp)
		return err
	}
	f.published, f.tmp = true, ""
	return nil
}

// Close syncs and closes a published file, returning what either says (a
// full disk may only show here); an unpublished one is dropped, and Close
// returns errNotPublished.
func (f *outFile) Close() error {
	if !f.published {
		f.File.Close()
		if f.tmp != "" {
			os.Remove(f.tmp)
		}
		return fmt.Errorf("%s %w", f.path, errNotPublished)
	}
	return errors.Join(f.Sync(), f.File.Close())
}
