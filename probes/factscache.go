package probes

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// factsCacheVersion changes whenever how kernelFacts are read changes in a
// way factsSchema cannot see: a file of another version is not used.
const factsCacheVersion = 1

// factsCache keeps the kernel facts of a kernel build in dir, in a file
// named after the kernel's build id. A file is only used when it and dir
// belong to this process's user and no one else can write them, and when
// it names the same build id, version and BTF size; anything else (no
// file, another kernel's, corrupt, unreadable) and the facts are read from
// the BTF again. A dir that cannot be written is no error: the facts are
// then not kept.
type factsCache struct {
	dir     string
	buildID string // hex; "" when the kernel has none: nothing is cached
	btfSize int64
}

// factsFile is what a cache file holds.
type factsFile struct {
	Version int
	BuildID string
	BTFSize int64
	// Schema is factsSchema of the build that wrote the file.
	Schema string
	Facts  kernelFacts
}

// factsSchema names what this build's facts are: the types, members and
// raw tracepoints it looks up, and the fields it keeps of them. A file
// written by a build that looked up other members, or kept other fields,
// has another schema and is not used: a member added to Offsets can never
// be read as 0 from an older file.
var factsSchema = sync.OnceValue(func() string {
	names, members := deviceTypeNames()
	var b strings.Builder
	fmt.Fprintf(&b, "%q %q", names, members)
	for _, p := range decode.Probes() {
		_, event := p.Tracepoint()
		fmt.Fprintf(&b, " %s", event)
	}
	describeType(&b, reflect.TypeFor[kernelFacts]())
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:16])
})

// describeType writes t's shape: its kind, and a struct's fields, a map's
// key and element, recursively.
func describeType(b *strings.Builder, t reflect.Type) {
	fmt.Fprintf(b, " %s", t.Kind())
	switch t.Kind() {
	case reflect.Struct:
		b.WriteString("{")
		for f := range t.Fields() {
			fmt.Fprintf(b, " %s", f.Name)
			describeType(b, f.Type)
		}
		b.WriteString("}")
	case reflect.Map:
		describeType(b, t.Key())
		describeType(b, t.Elem())
	case reflect.Slice, reflect.Array, reflect.Pointer:
		describeType(b, t.Elem())
	}
}

// defaultFactsCache is the cache of the running kernel under
// /var/cache/tracepkt-perf.
func defaultFactsCache() factsCache {
	c := factsCache{dir: "/var/cache/tracepkt-perf"}
	if notes, err := os.ReadFile("/sys/kernel/notes"); err == nil {
		c.buildID = gnuBuildID(notes)
	}
	if st, err := os.Stat("/sys/kernel/btf/vmlinux"); err == nil {
		c.btfSize = st.Size()
	}
	return c
}

// gnuBuildID finds the GNU build id note (NT_GNU_BUILD_ID) among ELF notes
// (native byte order), hex-encoded; "" if there is none.
func gnuBuildID(notes []byte) string {
	le := binary.NativeEndian
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(notes) >= 12 {
		nameSz, descSz, typ := uint64(le.Uint32(notes)), uint64(le.Uint32(notes[4:])), le.Uint32(notes[8:])
		nameEnd := 12 + align(nameSz)
		descEnd := nameEnd + align(descSz)
		if descEnd > uint64(len(notes)) || nameEnd+descSz > uint64(len(notes)) {
			return ""
		}
		if typ == 3 && bytes.Equal(notes[12:12+nameSz], []byte("GNU\x00")) && descSz > 0 {
			return hex.EncodeToString(notes[nameEnd : nameEnd+descSz])
		}
		notes = notes[descEnd:]
	}
	return ""
}

func (c factsCache) path() string { return filepath.Join(c.dir, "kernel-"+c.buildID+".json") }

// trusted says whether st is owned by this process's user and writable by
// no one else.
func trusted(st *unix.Stat_t) bool {
	return int(st.Uid) == os.Geteuid() && st.Mode&0o022 == 0
}

// load returns the facts cached for this kernel, if the cache holds them
// and may be trusted.
func (c factsCache) load() (*kernelFacts, bool) {
	var ff factsFile
	if !c.read(c.path(), &ff) {
		return nil, false
	}
	if ff.Version != factsCacheVersion || ff.BuildID != c.buildID || ff.BTFSize != c.btfSize || ff.Schema != factsSchema() || ff.Facts.Raw == nil {
		return nil, false
	}
	return &ff.Facts, true
}

// store keeps facts for this kernel, replacing the file at once; it gives
// up quietly where the directory cannot be made, trusted or written.
func (c factsCache) store(facts *kernelFacts) {
	c.write(c.path(), factsFile{Version: factsCacheVersion, BuildID: c.buildID, BTFSize: c.btfSize, Schema: factsSchema(), Facts: *facts})
}

// read decodes the cache file at path into v, when the kernel has a build
// id, and the directory and the file belong to this process's user and no
// one else can write them; false for anything else (no file, corrupt,
// untrusted), which the caller reads from the BTF again.
func (c factsCache) read(path string, v any) bool {
	if c.buildID == "" {
		return false
	}
	var st unix.Stat_t
	if err := unix.Lstat(c.dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || !trusted(&st) {
		return false
	}
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || !trusted(&st) {
		return false
	}
	dec := json.NewDecoder(f)
	dec.DisallowUnknownFields()
	return dec.Decode(v) == nil && !dec.More()
}

// write keeps v as the cache file at path, replacing it at once; it gives
// up quietly where the directory cannot be made, trusted or written.
func (c factsCache) write(path string, v any) {
	if c.buildID == "" {
		return
	}
	if err := os.Mkdir(c.dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	var st unix.Stat_t
	if err := unix.Lstat(c.dir, &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR || !trusted(&st) {
		return
	}
	data, err := json.Marshal(v)
	if err != nil {
		return
	}
	tmp, err := os.CreateTemp(c.dir, ".kernel-*")
	if err != nil {
		return
	}
	_, werr := tmp.Write(data)
	if err := errors.Join(werr, tmp.Close()); err != nil {
		os.Remove(tmp.Name())
		return
	}
	if os.Rename(tmp.Name(), path) != nil {
		os.Remove(tmp.Name())
	}
}
