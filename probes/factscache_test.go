package probes

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// kernelFactsForTest reads the running kernel's facts from its BTF.
func kernelFactsForTest(t *testing.T) *kernelFacts {
	t.Helper()
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	testenv.Require(t, err)
	types, err := loadKernelTypes(deviceTypeNames())
	if err != nil {
		t.Fatal(err)
	}
	f, err := factsOf(types)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// testFactsCache is a cache in a new directory of this user's, 0700.
func testFactsCache(t *testing.T, buildID string) factsCache {
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return factsCache{dir: dir, buildID: buildID, btfSize: 5000000}
}

// A cold cache misses; what is stored is loaded back the same (a warm run
// builds its programs from the facts a cold one read).
func TestFactsCacheColdWarm(t *testing.T) {
	facts := kernelFactsForTest(t)
	c := testFactsCache(t, "0123abcd")
	if _, ok := c.load(); ok {
		t.Fatal("cold cache: hit")
	}
	c.store(facts)
	st, err := os.Stat(c.path())
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("cache file mode %v, want 0600", st.Mode().Perm())
	}
	got, ok := c.load()
	if !ok {
		t.Fatal("warm cache: miss")
	}
	if got.Offsets != facts.Offsets {
		t.Errorf("warm offsets %+v, cold %+v", got.Offsets, facts.Offsets)
	}
	if !reflect.DeepEqual(got, facts) {
		t.Errorf("warm facts %+v, cold %+v", got, facts)
	}
	if kf, err := KernelOffsets(); err != nil || kf != facts.Offsets {
		t.Errorf("KernelOffsets: %+v, %v; want %+v", kf, err, facts.Offsets)
	}
}

// What is cached for one kernel build, BTF size or cache version is not used
// for another, even under its name; a kernel without a build id caches
// nothing.
func TestFactsCacheOtherKernel(t *testing.T) {
	facts := kernelFactsForTest(t)
	c := testFactsCache(t, "0123abcd")
	c.store(facts)
	other := c
	other.buildID = "4567ef01"
	if _, ok := other.load(); ok {
		t.Error("another build id: hit")
	}
	if err := os.Rename(c.path(), other.path()); err != nil {
		t.Fatal(err)
	}
	if _, ok := other.load(); ok {
		t.Error("another build id's file under this one's name: hit")
	}
	c.store(facts)
	resized := c
	resized.btfSize++
	if _, ok := resized.load(); ok {
		t.Error("another BTF size: hit")
	}
	none := c
	none.buildID = ""
	none.store(facts)
	if _, ok := none.load(); ok {
		t.Error("no build id: hit")
	}
	if _, err := os.Stat(none.path()); !os.IsNotExist(err) {
		t.Errorf("no build id: %s stored (%v)", none.path(), err)
	}
}

// A corrupt or truncated file is not used, and the next store replaces it.
func TestFactsCacheCorrupt(t *testing.T) {
	facts := kernelFactsForTest(t)
	c := testFactsCache(t, "0123abcd")
	c.store(facts)
	data, err := os.ReadFile(c.path())
	if err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string][]byte{
		"truncated": data[:len(data)/2],
		"garbage":   []byte("\x00\x01not json"),
		"empty":     nil,
		"trailing":  append(append([]byte{}, data...), "{}"...),
		"no facts":  []byte(`{"Version":1,"BuildID":"0123abcd","BTFSize":5000000}`),
		// Written by a build that looked up other members, or kept other fields.
		"other schema": bytes.Replace(data, []byte(factsSchema()), []byte(strings.Repeat("0", len(factsSchema()))), 1),
	} {
		if err := os.WriteFile(c.path(), bad, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.load(); ok {
			t.Errorf("%s: hit", name)
		}
	}
	c.store(facts)
	if got, ok := c.load(); !ok || got.Offsets != facts.Offsets {
		t.Errorf("after a store over a corrupt file: %+v, %v", got, ok)
	}
}

// The schema tells apart facts of other shapes: a field added to Offsets,
// or one of another type, makes another schema.
func TestFactsSchema(t *testing.T) {
	shape := func(t reflect.Type) string {
		var b strings.Builder
		describeType(&b, t)
		return b.String()
	}
	type offsets struct{ A, B uint32 }
	type more struct{ A, B, C uint32 }
	type wider struct {
		A uint32
		B uint64
	}
	type facts struct {
		O   offsets
		Raw map[string]DropFields
	}
	base := shape(reflect.TypeFor[offsets]())
	for _, other := range []reflect.Type{reflect.TypeFor[more](), reflect.TypeFor[wider](), reflect.TypeFor[facts]()} {
		if got := shape(other); got == base {
			t.Errorf("%v and offsets: one shape %q", other, got)
		}
	}
	if got, want := shape(reflect.TypeFor[facts]()), " struct{ O struct{ A uint32 B uint32} Raw map string struct{ Location int16 Reason int16}}"; got != want {
		t.Errorf("shape %q, want %q", got, want)
	}
	if len(factsSchema()) != 32 {
		t.Errorf("schema %q: want 32 hex digits", factsSchema())
	}
}

// A directory that cannot be created or written is no error: nothing is
// kept, and the next load misses.
func TestFactsCacheNotWritable(t *testing.T) {
	facts := kernelFactsForTest(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	under := factsCache{dir: filepath.Join(file, "cache"), buildID: "0123abcd"}
	under.store(facts)
	if _, ok := under.load(); ok {
		t.Error("cache under a file: hit")
	}
	missing := factsCache{dir: filepath.Join(t.TempDir(), "a", "b"), buildID: "0123abcd"}
	missing.store(facts)
	if _, ok := missing.load(); ok {
		t.Error("cache in a directory that cannot be made: hit")
	}
	if os.Geteuid() != 0 {
		c := testFactsCache(t, "0123abcd")
		if err := os.Chmod(c.dir, 0o500); err != nil {
			t.Fatal(err)
		}
		c.store(facts)
		if _, ok := c.load(); ok {
			t.Error("read-only directory: hit")
		}
	}
}

// A file or directory another user owns or could write, or a link, is
// never used nor written through.
func TestFactsCacheUntrusted(t *testing.T) {
	facts := kernelFactsForTest(t)
	for name, spoil := range map[string]func(c factsCache) error{
		"group-writable file": func(c factsCache) error { return os.Chmod(c.path(), 0o620) },
		"world-writable file": func(c factsCache) error { return os.Chmod(c.path(), 0o602) },
		"world-writable dir":  func(c factsCache) error { return os.Chmod(c.dir, 0o777) },
		"group-writable dir":  func(c factsCache) error { return os.Chmod(c.dir, 0o770) },
		"link": func(c factsCache) error {
			real := filepath.Join(filepath.Dir(c.dir), "real.json")
			if err := os.Rename(c.path(), real); err != nil {
				return err
			}
			return os.Symlink(real, c.path())
		},
		"file of another user": func(c factsCache) error { return chownToNobody(t, c.path()) },
		"dir of another user":  func(c factsCache) error { return chownToNobody(t, c.dir) },
	} {
		t.Run(name, func(t *testing.T) {
			c := testFactsCache(t, "0123abcd")
			c.store(facts)
			if _, ok := c.load(); !ok {
				t.Fatal("before: miss")
			}
			if err := spoil(c); err != nil {
				t.Fatal(err)
			}
			if _, ok := c.load(); ok {
				t.Error("hit")
			}
		})
	}
}

// chownToNobody gives path to user and group nobody; only root can.
func chownToNobody(t *testing.T, path string) error {
	testenv.RequireRoot(t)
	return os.Lchown(path, 65534, 65534)
}

// The running kernel's build id is read from its notes.
func TestGNUBuildID(t *testing.T) {
	notes, err := os.ReadFile("/sys/kernel/notes")
	testenv.Require(t, err)
	id := gnuBuildID(notes)
	if len(id) < 16 {
		t.Errorf("build id %q from %d bytes of notes", id, len(notes))
	}
	if got := gnuBuildID(notes[:20]); got != "" {
		t.Errorf("a truncated note: %q", got)
	}
	if got := gnuBuildID(nil); got != "" {
		t.Errorf("no notes: %q", got)
	}
}
