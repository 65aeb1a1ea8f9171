package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/vmtest"
)

func main() {
	err := run(os.Args[1:], os.Stdout, os.Stderr)
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return
	}
	fmt.Fprintln(os.Stderr, "vm:", err)
	var ce *commandError
	if errors.As(err, &ce) {
		os.Exit(ce.status)
	}
	os.Exit(1)
}

// commandError is a command in the guest that exited non-zero; the runner
// exits with the same status.
type commandError struct {
	index, total, status int
	release              string
	elapsed              time.Duration
}

func (e *commandError) Error() string {
	return fmt.Sprintf("command %d of %d failed (exit status %d) on %s in %.1fs",
		e.index, e.total, e.status, e.release, e.elapsed.Seconds())
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("tracepkt-vmtest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: tracepkt-vmtest [flags] -- command [args...] [-- command [args...]]...")
		fs.PrintDefaults()
	}
	kernel := fs.String("kernel", "", "bzImage to boot (default: newest /boot/vmlinuz-*); its modules are in <root>/lib/modules for a kernel at <root>/boot/, else in /lib/modules")
	timeout := fs.Duration("timeout", 15*time.Minute, "kill the guest after this long")
	mem := fs.String("mem", "2048", "guest memory, as qemu -m takes it")
	workdir := fs.String("workdir", "", "directory each command starts in, inside the guest (default: the current directory)")
	files := fs.String("files", "", "directory that receives, after the guest ends, what the commands wrote in $"+vmtest.GuestFilesEnvVar+" (replaced)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	commands, err := splitCommands(fs.Args())
	if err != nil {
		fs.Usage()
		return err
	}
	if *kernel == "" {
		if *kernel, err = vmtest.NewestKernel("/boot"); err != nil {
			return err
		}
	}
	// Absolute, because the guest resolves it from its own starting directory.
	if *workdir, err = filepath.Abs(*workdir); err != nil {
		return fmt.Errorf("find working directory: %w", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg := vmtest.Config{
		Kernel:      *kernel,
		ModulesRoot: vmtest.ModulesRoot(*kernel),
		Busybox:     "/bin/busybox",
		Mem:         *mem,
		Timeout:     *timeout,
		Workdir:     *workdir,
		Commands:    commands,
		Files:       *files,
		Env:         vmtest.CommandEnv(os.LookupEnv),
		Stdout:      stdout,
		Stderr:      stderr,
	}
	res, err := vmtest.Run(ctx, cfg)
	// A guest that died before its first command never ran our code: a rare
	// early-boot crash of TCG guests seen here. One more boot, said loudly;
	// a crash once a command has run is never retried.
	if errors.Is(err, vmtest.ErrGuestDied) && len(res.Statuses) == 0 && ctx.Err() == nil {
		fmt.Fprintf(stderr, "vm: WARNING: the guest died before its first command (%v); booting it once more\n", err)
		res, err = vmtest.Run(ctx, cfg)
	}
	if err != nil {
		if res.Elapsed == 0 {
			return err
		}
		return fmt.Errorf("%w (kernel %s, %.1fs)", err, res.Release, res.Elapsed.Seconds())
	}
	for i, status := range res.Statuses {
		if status != 0 {
			return &commandError{index: i + 1, total: len(commands), status: status, release: res.Release, elapsed: res.Elapsed}
		}
	}
	noun := "commands"
	if len(commands) == 1 {
		noun = "command"
	}
	fmt.Fprintf(stdout, "vm: %d %s passed on %s in %.1fs\n", len(commands), noun, res.Release, res.Elapsed.Seconds())
	return nil
}

// splitCommands splits the arguments after the flags into commands at each
// "--", so a command cannot itself take a "--" argument (wrap it in sh -c).
func splitCommands(args []string) ([][]string, error) {
	var commands [][]string
	for len(args) > 0 {
		i := slices.Index(args, "--")
		if i < 0 {
			i = len(args)
		}
		if i == 0 {
			return nil, errors.New("empty command between \"--\" separators")
		}
		commands = append(commands, args[:i])
		args = args[min(i+1, len(args)):]
	}
	if len(commands) == 0 {
		return nil, errors.New("no command to run in the guest")
	}
	return commands, nil
}
