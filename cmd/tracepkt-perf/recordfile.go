package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// recordFile is the file --record writes. It is written without a name
// (O_TMPFILE) in the directory of its path, and takes the path only once the
// first echo is in it: a run that fails before (a typo in the target, no
// route) leaves an existing file as it was, and no empty file. A run killed
// before that leaves nothing either.
type recordFile struct {
	*os.File
	path      string
	tmp       string // a named temporary file, where O_TMPFILE is not supported
	published bool
}

// errNothingRecorded: the run ended before its first echo; the path was not written.
var errNothingRecorded = errors.New("no echo completed")

func createRecordFile(path string) (*recordFile, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return nil, &os.PathError{Op: "open", Path: path, Err: unix.EISDIR}
	}
	dir := filepath.Dir(path)
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
	if err == nil {
		return &recordFile{File: os.NewFile(uintptr(fd), path), path: path}, nil
	}
	if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EISDIR) {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return nil, err
	}
	return &recordFile{File: f, path: path, tmp: f.Name()}, nil
}

// publish gives the file its path, replacing what was there; it is called
// after each echo is written and does something only the first time.
func (r *recordFile) publish() error {
	if r.published {
		return nil
	}
	if r.tmp == "" {
		tmp := filepath.Join(filepath.Dir(r.path), "."+filepath.Base(r.path)+"."+strconv.Itoa(os.Getpid())+".tmp")
		proc := "/proc/self/fd/" + strconv.Itoa(int(r.Fd()))
		if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, tmp, unix.AT_SYMLINK_FOLLOW); err != nil {
			return &os.LinkError{Op: "link", Old: proc, New: tmp, Err: err}
		}
		r.tmp = tmp
	}
	if err := os.Rename(r.tmp, r.path); err != nil {
		os.Remove(r.tmp)
		return err
	}
	r.published, r.tmp = true, ""
	return nil
}

// Close syncs and closes a published file, returning what either says
// (a full disk may only show here); an unpublished one is dropped, and
// Close returns errNothingRecorded.
func (r *recordFile) Close() error {
	if !r.published {
		r.File.Close()
		if r.tmp != "" {
			os.Remove(r.tmp)
		}
		return fmt.Errorf("%s not written: %w", r.path, errNothingRecorded)
	}
	return errors.Join(r.Sync(), r.File.Close())
}
