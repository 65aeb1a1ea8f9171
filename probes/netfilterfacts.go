package probes

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// netfilterFacts are what a netfilter kprobe needs from the BTF of the
// kernel and of the module holding its function. Reading them parses the
// whole kernel BTF, which the device programs' facts no longer need once
// cached: they are cached too, per function and build of its module.
type netfilterFacts struct {
	Args    NetfilterArgs
	Offsets NetfilterOffsets
}

// netfilterFile is what a cache file of a netfilter function holds.
type netfilterFile struct {
	Version int
	BuildID string
	BTFSize int64
	Module  moduleBuild
	// Schema is netfilterSchema of the build that wrote the file.
	Schema string
	Facts  netfilterFacts
}

// moduleBuild tells a build of a module apart: its GNU build id and the
// size of its BTF (0: none). The zero moduleBuild stands for vmlinux: a
// function found in vmlinux's BTF is built in, for good, in that kernel
// build.
type moduleBuild struct {
	BuildID string
	BTFSize int64
}

// netfilterSchema names the shape of netfilterFacts, as factsSchema does
// for the device programs' facts.
var netfilterSchema = sync.OnceValue(func() string {
	var b strings.Builder
	for _, p := range netfilterProbes {
		fmt.Fprintf(&b, " %s %s", p.Kprobe(), netfilterModule[p])
	}
	describeType(&b, reflect.TypeFor[netfilterFacts]())
	sum := sha256.Sum256([]byte(b.String()))
	return hex.EncodeToString(sum[:16])
})

// loadedModuleBuild reads the build of module mod as loaded now; ok is
// false when there is none to read (not loaded, or built in).
func loadedModuleBuild(mod string) (m moduleBuild, ok bool) {
	notes, err := os.ReadFile(filepath.Join("/sys/module", mod, "notes", ".note.gnu.build-id"))
	if err != nil {
		return m, false
	}
	if m.BuildID = gnuBuildID(notes); m.BuildID == "" {
		return m, false
	}
	if st, err := os.Stat(filepath.Join("/sys/kernel/btf", mod)); err == nil {
		m.BTFSize = st.Size()
	}
	return m, true
}

func (c factsCache) netfilterPath(p decode.Probe, m moduleBuild) string {
	mod := m.BuildID
	if m == (moduleBuild{}) {
		mod = "vmlinux"
	}
	return filepath.Join(c.dir, "kprobe-"+p.Kprobe()+"-"+c.buildID+"-"+mod+".json")
}

// loadNetfilter returns p's facts cached for this kernel and build m of
// its module (zero: built in), if the cache holds them and may be trusted.
func (c factsCache) loadNetfilter(p decode.Probe, m moduleBuild) (netfilterFacts, bool) {
	var nf netfilterFile
	if !c.read(c.netfilterPath(p, m), &nf) {
		return netfilterFacts{}, false
	}
	if nf.Version != factsCacheVersion || nf.BuildID != c.buildID || nf.BTFSize != c.btfSize || nf.Module != m || nf.Schema != netfilterSchema() ||
		nf.Facts.Args.Params == nil || (m == moduleBuild{}) != (nf.Facts.Args.Module == "") {
		return netfilterFacts{}, false
	}
	return nf.Facts, true
}

// storeNetfilter keeps p's facts for this kernel and build m of its module
// (zero: built in); nothing when they do not say the same.
func (c factsCache) storeNetfilter(p decode.Probe, m moduleBuild, f netfilterFacts) {
	if (m == moduleBuild{}) != (f.Args.Module == "") {
		return
	}
	c.write(c.netfilterPath(p, m), netfilterFile{Version: factsCacheVersion, BuildID: c.buildID, BTFSize: c.btfSize, Module: m, Schema: netfilterSchema(), Facts: f})
}

// errNetfilterOffsets wraps why a function's offsets could not be read
// when its arguments could.
type errNetfilterOffsets struct{ err error }

func (e errNetfilterOffsets) Error() string { return e.err.Error() }
func (e errNetfilterOffsets) Unwrap() error { return e.err }

// netfilterFactsOf reads p's facts from the running kernel's BTF: an
// errNetfilterOffsets carries the arguments found when only the offsets
// could not be read.
func netfilterFactsOf(p decode.Probe) (netfilterFacts, error) {
	fn, mod := p.Kprobe(), netfilterModule[p]
	if kf, err := deviceFacts(); err == nil && !kf.BuiltIn[fn] {
		_, noBTF := os.Stat("/sys/kernel/btf/" + mod)
		_, notLoaded := os.Stat("/sys/module/" + mod)
		if noBTF != nil && notLoaded != nil {
			return netfilterFacts{}, moduleNotLoaded(p)
		}
	}
	base, err := KernelBTF()
	if err != nil {
		return netfilterFacts{}, err
	}
	spec, proto, args, err := kernelNetfilterProto(base, p)
	if err != nil {
		return netfilterFacts{}, err
	}
	f := netfilterFacts{Args: args}
	if f.Offsets, err = lookupNetfilterOffsets(base, spec, proto, p); err != nil {
		return f, errNetfilterOffsets{err}
	}
	return f, nil
}

// kernelNetfilterFacts are each netfilter function's facts, read once per
// process: from the cache when it holds them for this kernel and the
// loaded build of the function's module, else from the BTF (then cached).
var kernelNetfilterFacts = func() func(decode.Probe) (netfilterFacts, error) {
	var mu sync.Mutex
	once := map[decode.Probe]func() (netfilterFacts, error){}
	return func(p decode.Probe) (netfilterFacts, error) {
		mu.Lock()
		read, ok := once[p]
		if !ok {
			read = sync.OnceValues(func() (netfilterFacts, error) {
				c := defaultFactsCache()
				m, _ := loadedModuleBuild(netfilterModule[p])
				if f, ok := c.loadNetfilter(p, m); ok {
					return f, nil
				}
				f, err := netfilterFactsOf(p)
				if err == nil {
					c.storeNetfilter(p, m, f)
				}
				return f, err
			})
			once[p] = read
		}
		mu.Unlock()
		return read()
	}
}()

// KernelNetfilterArgs says how the arguments of probe p's function are found
// on the running kernel; ErrModuleNotLoaded or ErrNoModuleBTF when they are
// not.
func KernelNetfilterArgs(p decode.Probe) (NetfilterArgs, error) {
	f, err := kernelNetfilterFacts(p)
	if _, offsets := errors.AsType[errNetfilterOffsets](err); offsets {
		return f.Args, nil
	}
	return f.Args, err
}
