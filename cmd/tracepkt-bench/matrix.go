package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// guestMarker starts each result line the bench prints inside a guest, and
// guestProfileMarker each line of its start-up profile.
const (
	guestMarker        = "tracepkt-bench-guest\t"
	guestProfileMarker = "tracepkt-bench-guest-profile\t"
)

// guestRuns is how many runs of each command a guest gets (TCG is slow).
const guestRuns = 5

// matrixSection boots each kernel of the matrix under QEMU (tracepkt-vmtest)
// and runs this bench's guest part inside it.
func matrixSection(cfg config, progress io.Writer) (section, error) {
	var kernels []string
	for _, pattern := range strings.Fields(cfg.kernels) {
		matches, err := filepath.Glob(pattern)
		if err != nil {
			return section{}, fmt.Errorf("-kernels %q: %w", pattern, err)
		}
		kernels = append(kernels, matches...)
	}
	if len(kernels) == 0 {
		return section{}, fmt.Errorf("no kernel matches %s (make deps installs the matrix's)", cfg.kernels)
	}
	self, err := os.Executable()
	if err != nil {
		return section{}, err
	}
	if strings.HasPrefix(self, os.TempDir()) {
		return section{}, errors.New("the guests do not see the host's /tmp: build the bench outside it (make bench does)")
	}
	vmtest := filepath.Join(filepath.Dir(cfg.tool), "tracepkt-vmtest")
	if _, err := os.Stat(vmtest); err != nil {
		return section{}, fmt.Errorf("the matrix needs %s (make bench builds it): %w", vmtest, err)
	}
	wd, err := os.Getwd()
	if err != nil {
		return section{}, err
	}
	rows := [][]string{{"kernel", "command", "answer", "exit", "exit/ping"}}
	profiles := [][]string{append([]string{"kernel"}, profileHeader...)}
	for _, k := range kernels {
		fmt.Fprintf(progress, "matrix: %s\n", k)
		args := []string{"-kernel", k, "-timeout", "10m", "-workdir", wd, "--",
			self, "-guest", "-tool", cfg.tool, "-n", fmt.Sprint(guestRuns), "-modes", strings.Join(cfg.modes, ",")}
		if cfg.before != "" {
			args = append(args, "-before", cfg.before)
		}
		cmd := exec.Command(vmtest, args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return section{}, err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return section{}, err
		}
		s := bufio.NewScanner(out)
		var log []string
		for s.Scan() {
			line := strings.TrimRight(s.Text(), "\r")
			if _, fields, ok := strings.Cut(line, guestProfileMarker); ok {
				profiles = append(profiles, strings.Split(fields, "\t"))
			} else if _, fields, ok := strings.Cut(line, guestMarker); ok {
				rows = append(rows, strings.Split(fields, "\t"))
			} else {
				log = append(log, line)
			}
		}
		if err := cmd.Wait(); err != nil {
			return section{}, fmt.Errorf("%s: %w\n%s", k, err, strings.Join(log, "\n"))
		}
	}
	return section{
		title: "Kernel matrix",
		method: fmt.Sprintf(`Each Debian kernel of the matrix (6.1 and 6.12 in /boot, 5.10 unpacked by make deps) boots
under QEMU (TCG, 2 vCPUs, no KVM) through tracepkt-vmtest and runs this bench's guest part: a
veth pair to a namespace running the bench's echo service, then ping -c1 and tracepkt-perf -c1
(per attachment mode; echoes, --tcp 7 and --udp 7) to it, %d runs each, one of each in turn;
medians. TCG emulation makes every absolute figure slow: read
the exit/ping ratio, measured in the same guest. The guest's /var/cache is a tmpfs of its
boot, writable as a machine's: one untimed tracepkt-perf -c1 first keeps the kernel facts there,
as any earlier run on a machine would have, and the runs measured read them. The second table is each guest's start-up
profile, %d runs of tracepkt-perf -c1 after the others:
%s`, guestRuns, guestRuns, profileMethod),
		table: table(rows) + "\n\n" + table(profiles),
	}, nil
}

// guestRun is the part of the matrix that runs inside a guest: it prints one
// marked line per command.
func guestRun(cfg config, stdout io.Writer) error {
	n, closeFn, err := serviceTarget("tg")
	if err != nil {
		return err
	}
	defer closeFn()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	release := unix.ByteSliceToString(uts.Release[:])
	// The kernel facts go into the guest's /var/cache, as any earlier run
	// on a machine would have left them.
	if out, err := exec.Command(cfg.tool, "-c1", n.Target4.String()).CombinedOutput(); err != nil {
		return fmt.Errorf("%s -c1 %s: %w\n%s", cfg.tool, n.Target4, err, out)
	}
	cmds := answerCommands(cfg, n.Target4)
	answers, exits, err := measureInterleaved(cfg.runs, cmds)
	if err != nil {
		return err
	}
	for i, c := range cmds {
		fmt.Fprintf(stdout, "%s%s\t%s\t%s\t%s\t%.1fx\n", guestMarker, release, strings.TrimSpace(c.name),
			ms(answers[i].median()), ms(exits[i].median()), float64(exits[i].median())/float64(exits[0].median()))
	}
	profile, err := profileRuns(cfg.tool, n.Target4, cfg.runs)
	if err != nil {
		return err
	}
	for _, row := range profile {
		fmt.Fprintf(stdout, "%s%s\t%s\n", guestProfileMarker, release, strings.Join(row, "\t"))
	}
	return nil
}
