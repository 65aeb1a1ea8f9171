package vmtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// GuestEnvVar is set to "1" for every command run in the guest, so tests can
// tell they run there.
const GuestEnvVar = "TRACEPKT_VM"

// GuestFilesEnvVar names, for every command run in the guest, a writable
// directory whose contents the host keeps when Config.Files is set.
const GuestFilesEnvVar = "TRACEPKT_VM_FILES"

// ErrTimeout means the guest did not power off within Config.Timeout and was
// killed.
var ErrTimeout = errors.New("guest timed out")

// Modules the initramfs needs to mount a 9p share over virtio-pci; modules.dep
// adds their dependencies, whose names change between kernel builds.
var bootModules = []string{"virtio_pci", "9pnet_virtio", "9p"}

// Config says what to boot and what to run in the guest.
type Config struct {
	Kernel      string        // bzImage to boot
	ModulesRoot string        // holds <release>/modules.dep; "/lib/modules" on the host
	Busybox     string        // a static busybox for the initramfs
	Mem         string        // guest memory, as qemu's -m takes it
	Timeout     time.Duration // after it the guest is killed
	Workdir     string        // each command starts here, a path in the host root
	Commands    [][]string    // argv of each command, run in order
	Env         []string      // KEY=value: the commands' environment, besides GuestFilesEnvVar
	Files       string        // when set, receives what the commands left in $GuestFilesEnvVar
	Link        *Link         // when set, the guest's eth0 is joined to another guest's
	Stdout      io.Writer     // the guest's serial console
	Stderr      io.Writer     // qemu's own messages
}

// Link is a virtual Ethernet link between two guests: each sends its frames
// as UDP datagrams from 127.0.0.1:Local to 127.0.0.1:Remote, so two guests
// whose ports cross are joined, whichever boots first. Nothing else is on it.
type Link struct {
	Local, Remote int
	MAC           string // the guest's eth0
}

// Result says how a boot went, as far as it got.
type Result struct {
	Release  string        // the booted kernel's release, as uname -r prints it
	Statuses []int         // exit status of each command that finished
	Elapsed  time.Duration // wall time of the guest, boot to power-off
}

// CommandEnv returns the environment of commands in the guest: GuestEnvVar,
// HOME and TMPDIR in GuestTmp (a tmpfs: the host root, /tmp included, is
// read-only in the guest, and stays visible so a checkout under /tmp works)
// and the host's PATH and, where set, CI, so
// tests that fail rather than skip under CI keep doing so.
func CommandEnv(lookup func(string) (string, bool)) []string {
	path, ok := lookup("PATH")
	if !ok || path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	env := []string{GuestEnvVar + "=1", "PATH=" + path, "HOME=" + GuestTmp, "TMPDIR=" + GuestTmp}
	if ci, ok := lookup("CI"); ok {
		env = append(env, "CI="+ci)
	}
	return env
}

// GuestTmp is the guest commands' writable HOME and TMPDIR.
const GuestTmp = "/run/tmp"

// ErrGuestDied is returned when the guest stopped without reporting the exit
// status of every command: a crash, or a failed boot.
var ErrGuestDied = errors.New("guest died")

// Run boots cfg.Kernel under QEMU (TCG: a KVM guest hangs in early boot on
// the Firecracker machines this runs on), runs cfg.Commands in it and returns
// their exit statuses. An error means the guest did not report a status for
// every command; a command's failure is a status, not an error.
func Run(ctx context.Context, cfg Config) (Result, error) {
	var res Result
	if dir, ok := hiddenInGuest(cfg.Workdir); ok {
		return res, fmt.Errorf("workdir %s is under %s, which the guest mounts a fresh file system over: use a directory elsewhere", cfg.Workdir, dir)
	}
	release, err := KernelRelease(cfg.Kernel)
	if err != nil {
		return res, err
	}
	res.Release = release
	// Absolute: the guest reaches it through the host root.
	modulesDir, err := filepath.Abs(filepath.Join(cfg.ModulesRoot, release))
	if err != nil {
		return res, fmt.Errorf("find modules of kernel %s: %w", release, err)
	}
	if dir, ok := hiddenInGuest(modulesDir); ok {
		return res, fmt.Errorf("modules of kernel %s are under %s, which the guest mounts a fresh file system over", release, dir)
	}
	depFile, err := os.Open(filepath.Join(modulesDir, "modules.dep"))
	if err != nil {
		// The guest also runs modprobe against this directory through the host root.
		return res, fmt.Errorf("find modules of kernel %s: %w (install its linux-image package)", release, err)
	}
	deps, err := ParseModulesDep(depFile)
	depFile.Close()
	if err != nil {
		return res, err
	}

	tmp, err := os.MkdirTemp("", "tracepkt-vmtest-")
	if err != nil {
		return res, fmt.Errorf("create temp dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initramfs.cpio")
	modules := bootModules
	if cfg.Link != nil {
		modules = append(slices.Clip(modules), "virtio_net")
	}
	if err := writeInitramfsFile(initrd, cfg.Busybox, modulesDir, deps.LoadOrder(modules...)); err != nil {
		return res, err
	}
	outDir := filepath.Join(tmp, "out")
	if err := os.Mkdir(outDir, 0o755); err != nil {
		return res, fmt.Errorf("create out share: %w", err)
	}
	if err := os.Mkdir(filepath.Join(outDir, filesName), 0o755); err != nil {
		return res, fmt.Errorf("create out share: %w", err)
	}
	env := append(slices.Clip(cfg.Env), GuestFilesEnvVar+"="+guestFilesDir)
	script := runScript(cfg.Commands, cfg.Workdir, env)
	if err := os.WriteFile(filepath.Join(outDir, runScriptName), []byte(script), 0o644); err != nil {
		return res, fmt.Errorf("write run script: %w", err)
	}

	fmt.Fprintf(cfg.Stdout, "vm: booting %s (%s) under qemu (tcg), %d command(s)\n", release, cfg.Kernel, len(cfg.Commands))
	runCtx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	crash := &crashWatch{}
	console := &crlfWriter{w: io.MultiWriter(cfg.Stdout, crash)}
	cmd := exec.CommandContext(runCtx, "qemu-system-x86_64", qemuArgs(cfg.Kernel, initrd, outDir, cfg.Mem, cfg.Link)...)
	cmd.Stdout = console
	cmd.Stderr = cfg.Stderr
	// Own process group: a terminal's ^C reaches only the runner, which then
	// kills qemu and cleans up. Pdeathsig: qemu must not outlive a killed runner.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	qemuErr := cmd.Run()
	res.Elapsed = time.Since(start)
	if err := console.Flush(); err != nil {
		return res, fmt.Errorf("write console output: %w", err)
	}

	// Kept whatever happened next: a failed test's files help to see why.
	if cfg.Files != "" {
		if err := keepFiles(filepath.Join(outDir, filesName), cfg.Files); err != nil {
			return res, err
		}
	}
	switch {
	case ctx.Err() != nil:
		return res, fmt.Errorf("interrupted, killed qemu: %w", ctx.Err())
	case runCtx.Err() != nil:
		return res, fmt.Errorf("%w: still running after %v, killed qemu", ErrTimeout, cfg.Timeout)
	}
	var exitErr *exec.ExitError
	if qemuErr != nil && !errors.As(qemuErr, &exitErr) {
		return res, fmt.Errorf("run qemu: %w", qemuErr)
	}
	status, err := os.ReadFile(filepath.Join(outDir, statusName))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, fmt.Errorf("read guest status: %w", err)
	}
	res.Statuses, err = parseStatus(status)
	if err != nil {
		return res, err
	}
	if n := len(res.Statuses); n < len(cfg.Commands) {
		// qemu's own exit status says little (a power-off and a panic reboot
		// both end it), so it is only a hint here.
		hint := ""
		if qemuErr != nil {
			hint = ", qemu: " + qemuErr.Error()
		}
		if s := crash.String(); s != "" {
			hint += "; " + s
		}
		return res, fmt.Errorf("guest stopped after %d of %d commands without an exit status for command %d (it crashed or failed to boot: see its console output above%s): %w",
			n, len(cfg.Commands), n+1, hint, ErrGuestDied)
	}
	return res, nil
}

// keepFiles replaces dst with a copy of the guest's files directory.
func keepFiles(src, dst string) error {
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("keep guest files: %w", err)
	}
	if err := os.CopyFS(dst, os.DirFS(src)); err != nil {
		return fmt.Errorf("keep guest files: %w", err)
	}
	return nil
}

// hiddenInGuest says whether the guest's own mounts over the host root (see
// initScript) hide path, and under which of them.
func hiddenInGuest(path string) (string, bool) {
	for _, dir := range []string{"/run", "/proc", "/sys", "/dev"} {
		if rel, err := filepath.Rel(dir, path); err == nil && filepath.IsLocal(rel) {
			return dir, true
		}
	}
	return "", false
}

func writeInitramfsFile(name, busybox, modulesDir string, modules []Module) error {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("create initramfs: %w", err)
	}
	w := bufio.NewWriter(f)
	err = WriteInitramfs(w, busybox, modulesDir, modules)
	if err == nil {
		err = w.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	return nil
}

func qemuArgs(kernel, initrd, outDir, mem string, link *Link) []string {
	args := []string{
		// One host thread runs both vCPUs in turn. With a thread each, a
		// 6.12 guest twice died of an int3 no handler claimed, at a jump
		// label the other vCPU was patching (skb:kfree_skb's, nf_tables'
		// trace key); in turn, no vCPU runs code another is changing, and
		// the guests were no slower (36.0 s against 39.4 s for the same
		// tests).
		"-accel", "tcg,thread=single", "-cpu", "max", "-m", mem, "-smp", "2",
		// What -nographic does, less SeaBIOS's serial console, whose
		// terminal-reset escapes would land in the output.
		"-display", "none", "-vga", "none", "-serial", "stdio", "-monitor", "none",
		"-no-reboot", "-nic", "none",
		"-kernel", kernel, "-initrd", initrd,
		// panic=-1 turns a panic (init exiting, say) into a reboot, which
		// -no-reboot turns into qemu exiting instead of a hang.
		// init_on_alloc=0: Debian's kernels zero every allocation, and
		// 5.10's 9p client allocates two msize buffers (1 MiB) for each
		// request. Zeroing them took two thirds of the 5.10 guest's CPU
		// while it ran programs (perf, cpu-clock): ip -V took 162 ms there
		// with it, 65 ms without (6.1: 59 ms).
		"-append", "console=ttyS0 panic=-1 quiet init_on_alloc=0",
		// The root share spans several host file systems: remap keeps their
		// inode numbers from colliding in the guest.
		"-virtfs", "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
		"-virtfs", "local,path=" + qemuOptEscape(outDir) + ",mount_tag=out,security_model=none",
	}
	if link != nil {
		args = append(args,
			"-netdev", fmt.Sprintf("dgram,id=link,local.type=inet,local.host=127.0.0.1,local.port=%d,remote.type=inet,remote.host=127.0.0.1,remote.port=%d", link.Local, link.Remote),
			"-device", "virtio-net-pci,netdev=link,mac="+link.MAC)
	}
	return args
}

// qemuOptEscape escapes a value inside a qemu option list, where ',' separates
// options and ",," stands for a literal comma.
func qemuOptEscape(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

// parseStatus reads the status file: one "index exit-status" line per
// finished command, index counting from 1.
func parseStatus(data []byte) ([]int, error) {
	var statuses []int
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		if line == "" {
			continue
		}
		idx, code, ok := strings.Cut(line, " ")
		i, err1 := strconv.Atoi(idx)
		c, err2 := strconv.Atoi(code)
		if !ok || err1 != nil || err2 != nil || i != len(statuses)+1 {
			return nil, fmt.Errorf("parse guest status line %q", line)
		}
		statuses = append(statuses, c)
	}
	return statuses, nil
}

// crlfWriter turns the serial console's "\r\n" line ends into "\n", keeping
// any other '\r'.
type crlfWriter struct {
	w  io.Writer
	cr bool // the last byte written was a '\r' not yet passed on
}

func (c *crlfWriter) Write(p []byte) (int, error) {
	var out bytes.Buffer
	for _, b := range p {
		if c.cr && b != '\n' {
			out.WriteByte('\r')
		}
		c.cr = b == '\r'
		if !c.cr {
			out.WriteByte(b)
		}
	}
	if _, err := c.w.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush passes on a '\r' held back at the end of the output.
func (c *crlfWriter) Flush() error {
	if !c.cr {
		return nil
	}
	c.cr = false
	_, err := c.w.Write([]byte{'\r'})
	return err
}
