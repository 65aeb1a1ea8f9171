package vmtest

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// Lines of Debian 6.1.0-56-amd64's modules.dep, plus a compressed module.
const testModulesDep = `kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/9p/9pnet.ko:
kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
`

func TestLoadOrder(t *testing.T) {
	md, err := ParseModulesDep(strings.NewReader(testModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range md.LoadOrder("virtio_pci", "9pnet_virtio", "9p", "not_a_module") {
		got = append(got, m.Name)
	}
	want := []string{
		"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci",
		"9pnet", "9pnet_virtio",
		"netfs", "fscache", "9p",
	}
	if !slices.Equal(got, want) {
		t.Errorf("load order:\n got %v\nwant %v", got, want)
	}
}

func TestLoadOrderNormalisesNames(t *testing.T) {
	md, err := ParseModulesDep(strings.NewReader(testModulesDep))
	if err != nil {
		t.Fatal(err)
	}
	got := md.LoadOrder("virtio-rng")
	want := []Module{
		{Name: "virtio_ring", Path: "kernel/drivers/virtio/virtio_ring.ko"},
		{Name: "virtio", Path: "kernel/drivers/virtio/virtio.ko"},
		{Name: "virtio_rng", Path: "kernel/drivers/char/hw_random/virtio-rng.ko.xz"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("load order:\n got %v\nwant %v", got, want)
	}
}

func TestParseModulesDepRejectsGarbage(t *testing.T) {
	if _, err := ParseModulesDep(strings.NewReader("kernel/a.ko\n")); err == nil {
		t.Error("no error for a line without a colon")
	}
}

func TestModuleName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/net/9p/9pnet_virtio.ko":                   "9pnet_virtio",
		"kernel/drivers/char/hw_random/virtio-rng.ko.zst": "virtio_rng",
		"virtio-rng":            "virtio_rng",
		"kernel/fs/9p/9p.ko.xz": "9p",
	} {
		if got := ModuleName(in); got != want {
			t.Errorf("ModuleName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestReadModule(t *testing.T) {
	dir := t.TempDir()
	content := []byte("\x7fELF pretend module")
	plain := filepath.Join(dir, "m.ko")
	if err := os.WriteFile(plain, content, 0o644); err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(content)
	zw.Close()
	if err := os.WriteFile(plain+".gz", gz.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	files := []string{plain, plain + ".gz"}
	// xz and zstd decompress through the host's tools (make deps installs both).
	testenv.RequireCommands(t, "xz", "zstd")
	for _, tool := range []string{"xz", "zstd"} {
		if out, err := exec.Command(tool, "-k", plain).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", tool, err, out)
		}
		files = append(files, plain+"."+map[string]string{"xz": "xz", "zstd": "zst"}[tool])
	}
	for _, f := range files {
		got, err := ReadModule(f)
		if err != nil {
			t.Errorf("ReadModule(%s): %v", filepath.Base(f), err)
			continue
		}
		if !bytes.Equal(got, content) {
			t.Errorf("ReadModule(%s) = %q, want %q", filepath.Base(f), got, content)
		}
	}
	if _, err := ReadModule(filepath.Join(dir, "m.ko.lz4")); err == nil {
		t.Error("no error for an unknown compression")
	}
}
