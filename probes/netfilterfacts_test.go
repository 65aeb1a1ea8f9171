package probes

import (
	"errors"
	"os"
	"os/exec"
	"reflect"
	"runtime"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// A netfilter function's facts, read from the BTF, are cached for this
// kernel build and the loaded build of its module (or as built in), and a
// file that names another kernel, another build of the module, or the
// other kind (module or built in) is not used.
func TestNetfilterFactsCache(t *testing.T) {
	testenv.RequireRoot(t) // a module's build id note is root's to read
	_, err := os.Stat("/sys/kernel/btf/vmlinux")
	testenv.Require(t, err)
	tested := 0
	for _, p := range []decode.Probe{decode.ProbeNftDoChain, decode.ProbeIptDoTable} {
		mod := netfilterModule[p]
		// Loads the module where it is one (no error where it is built in).
		exec.Command("modprobe", "-q", mod).Run()
		f, err := netfilterFactsOf(p)
		if errors.Is(err, ErrNoModuleBTF) {
			continue // no kprobe on it on this kernel (5.10's nf_tables): nothing to cache
		}
		if err != nil {
			t.Fatalf("%s: %v", p.Kprobe(), err)
		}
		tested++
		m, loaded := loadedModuleBuild(mod)
		if loaded == (f.Args.Module == "") {
			t.Errorf("%s: module %s loaded %v (build %+v), but the facts say module %q", p.Kprobe(), mod, loaded, m, f.Args.Module)
		}
		c := testFactsCache(t, "0123abcd")
		if _, ok := c.loadNetfilter(p, m); ok {
			t.Fatalf("%s: cold cache: hit", p.Kprobe())
		}
		c.storeNetfilter(p, m, f)
		got, ok := c.loadNetfilter(p, m)
		if !ok || !reflect.DeepEqual(got, f) {
			t.Fatalf("%s: warm cache: %+v, %v; want %+v", p.Kprobe(), got, ok, f)
		}
		if runtime.GOARCH == "amd64" {
			if o, err := KernelNetfilterOffsets(p); err != nil || o != f.Offsets {
				t.Errorf("%s: KernelNetfilterOffsets: %+v, %v; want %+v", p.Kprobe(), o, err, f.Offsets)
			}
		}
		if a, err := KernelNetfilterArgs(p); err != nil || !reflect.DeepEqual(a, f.Args) {
			t.Errorf("%s: KernelNetfilterArgs: %+v, %v; want %+v", p.Kprobe(), a, err, f.Args)
		}

		// The file of this build, under the name of another: another build
		// of the module, the same build id with another BTF, another
		// kernel.
		resized := m
		resized.BTFSize++
		otherKernel := c
		otherKernel.buildID = "4567ef01"
		for name, other := range map[string]struct {
			c factsCache
			m moduleBuild
		}{
			"another build of the module": {c, moduleBuild{BuildID: "feedface", BTFSize: m.BTFSize}},
			"another BTF of the module":   {c, resized},
			"another kernel":              {otherKernel, m},
		} {
			path := other.c.netfilterPath(p, other.m)
			same := path == c.netfilterPath(p, m) // a module's BTF size is not in the name
			if !same {
				if err := os.Link(c.netfilterPath(p, m), path); err != nil {
					t.Fatal(err)
				}
			}
			if _, ok := other.c.loadNetfilter(p, other.m); ok {
				t.Errorf("%s: %s: hit", p.Kprobe(), name)
			}
			if !same {
				os.Remove(path)
			}
		}
		// Facts that say built in are never kept for a module, nor a
		// module's as built in.
		contrary := moduleBuild{}
		if m == contrary {
			contrary = moduleBuild{BuildID: "feedface"}
		}
		c.storeNetfilter(p, contrary, f)
		if _, err := os.Stat(c.netfilterPath(p, contrary)); !os.IsNotExist(err) {
			t.Errorf("%s: facts of module %q stored for build %+v (%v)", p.Kprobe(), f.Args.Module, contrary, err)
		}
		data, err := os.ReadFile(c.netfilterPath(p, m))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(c.netfilterPath(p, m), data[:len(data)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, ok := c.loadNetfilter(p, m); ok {
			t.Errorf("%s: truncated file: hit", p.Kprobe())
		}
	}
	if tested == 0 {
		t.Fatal("no netfilter function with BTF to read on this kernel")
	}
}

// The kernel facts say which netfilter functions vmlinux has, as the full
// parse of its BTF finds them: a run skips that parse for a function that
// is neither built in nor loaded.
func TestNetfilterBuiltIn(t *testing.T) {
	facts := kernelFactsForTest(t)
	base, err := KernelBTF()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range netfilterProbes {
		_, err := funcProto(base, p.Kprobe())
		if builtIn := err == nil; facts.BuiltIn[p.Kprobe()] != builtIn {
			t.Errorf("%s: facts say built in %v, the BTF %v (%v)", p.Kprobe(), facts.BuiltIn[p.Kprobe()], builtIn, err)
		}
	}
}
