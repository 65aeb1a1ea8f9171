package vmtest

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteInitramfs writes the guest's initramfs to w: a static busybox with the
// applets initScript uses, the modules (uncompressed, from modulesDir, the
// kernel's /lib/modules/<release>) and /init.
func WriteInitramfs(w io.Writer, busybox, modulesDir string, modules []Module) error {
	bb, err := readStaticBinary(busybox)
	if err != nil {
		return err
	}
	c := NewCPIOWriter(w)
	for _, d := range []string{"bin", "dev", "proc", "sys", "host", "lib", "lib/modules"} {
		if err := c.Dir(d, 0o755); err != nil {
			return err
		}
	}
	// Linux 5:1 is /dev/console; init's stdio is opened on it before /init runs.
	if err := c.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := c.File("bin/busybox", 0o755, bb); err != nil {
		return err
	}
	for _, a := range busyboxApplets {
		if err := c.Symlink("bin/"+a, "busybox"); err != nil {
			return err
		}
	}
	for _, m := range modules {
		data, err := ReadModule(filepath.Join(modulesDir, m.Path))
		if err != nil {
			return err
		}
		if err := c.File("lib/modules/"+m.Name+".ko", 0o644, data); err != nil {
			return err
		}
	}
	if err := c.File("init", 0o755, []byte(initScript(modules, modulesDir))); err != nil {
		return err
	}
	return c.Close()
}

// readStaticBinary reads an executable that must run without the host's
// shared libraries, which are not in the initramfs.
func readStaticBinary(file string) ([]byte, error) {
	f, err := elf.Open(file)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w (install busybox-static)", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return nil, fmt.Errorf("read busybox: %s is dynamically linked (install busybox-static)", file)
		}
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read busybox: %w", err)
	}
	return data, nil
}
