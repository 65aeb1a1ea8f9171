package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"slices"
	"strings"
)

// Module is one loadable kernel module of a kernel's modules.dep.
type Module struct {
	Name string // normalised: "9pnet_virtio", never "9pnet-virtio"
	Path string // as listed in modules.dep, relative to /lib/modules/<release>
}

// ModuleDeps maps a module's normalised name to its file and the modules it
// depends on, as modules.dep lists them.
type ModuleDeps map[string]moduleEntry

type moduleEntry struct {
	path string
	deps []string
}

// ParseModulesDep reads a modules.dep file: lines of "path: dep-path dep-path...".
func ParseModulesDep(r io.Reader) (ModuleDeps, error) {
	md := ModuleDeps{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, deps, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("parse modules.dep line %q: no colon", line)
		}
		e := moduleEntry{path: file}
		for _, d := range strings.Fields(deps) {
			e.deps = append(e.deps, ModuleName(d))
		}
		md[ModuleName(file)] = e
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.dep: %w", err)
	}
	return md, nil
}

// ModuleName turns a module file path or a user-written name into the name
// the kernel uses: no directory, no .ko or compression suffix, '-' as '_'.
func ModuleName(s string) string {
	s = path.Base(s)
	if i := strings.LastIndex(s, ".ko"); i >= 0 {
		s = s[:i]
	}
	return strings.ReplaceAll(s, "-", "_")
}

// LoadOrder returns the modules to insert, dependencies first, so that the
// named modules load. A name missing from modules.dep is skipped: the kernel
// either has it built in or lacks it, and in both cases there is nothing to
// insert (a lacking feature shows when the guest uses it).
func (md ModuleDeps) LoadOrder(names ...string) []Module {
	var order []Module
	seen := map[string]bool{}
	var visit func(name string)
	visit = func(name string) {
		e, ok := md[name]
		if !ok || seen[name] {
			return
		}
		seen[name] = true
		// modprobe inserts a module's listed dependencies last to first.
		for _, d := range slices.Backward(e.deps) {
			visit(d)
		}
		order = append(order, Module{Name: name, Path: e.path})
	}
	for _, n := range names {
		visit(ModuleName(n))
	}
	return order
}

// ReadModule returns the uncompressed bytes of a module file. Distribution
// kernels may compress modules, and busybox insmod cannot be relied on to
// decompress them, so that happens here. xz and zstd are the host's commands
// because the Go standard library has no decoder for them.
func ReadModule(file string) ([]byte, error) {
	switch {
	case strings.HasSuffix(file, ".ko"):
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		return data, nil
	case strings.HasSuffix(file, ".ko.gz"):
		f, err := os.Open(file)
		if err != nil {
			return nil, fmt.Errorf("read module: %w", err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", file, err)
		}
		data, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("decompress module %s: %w", file, err)
		}
		return data, nil
	case strings.HasSuffix(file, ".ko.xz"):
		return decompressWith(file, "xz", "xz-utils")
	case strings.HasSuffix(file, ".ko.zst"):
		return decompressWith(file, "zstd", "zstd")
	}
	return nil, fmt.Errorf("read module %s: unknown file suffix", file)
}

func decompressWith(file, tool, pkg string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", file)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if errors.Is(err, exec.ErrNotFound) {
			return nil, fmt.Errorf("decompress module %s: %w (install %s)", file, err, pkg)
		}
		return nil, fmt.Errorf("decompress module %s: %s: %w: %s", file, tool, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}
