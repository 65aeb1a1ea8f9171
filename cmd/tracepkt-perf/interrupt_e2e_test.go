package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// slowDNS is a name server on 127.0.0.1:53 inside a namespace of the test's
// own, which answers only when told: a run toward a host name waits in its
// lookup, after its signal handling is set up and before anything else.
type slowDNS struct {
	ns     *topology.Netns
	conn   net.PacketConn
	resolv string
}

// newSlowDNS makes the namespace, its server and the resolv.conf that
// names it; command runs the tool in that namespace with that file bound
// over /etc/resolv.conf in a mount namespace of its own (the guests' /etc
// is read-only, so /etc/netns cannot be used).
func newSlowDNS(t *testing.T) *slowDNS {
	t.Helper()
	testenv.RequireCommands(t, "ip", "unshare", "mount", "sh")
	topo := testenv.Topology(t)
	ns, err := topo.Netns(topology.UniqueName("tp"))
	if err != nil {
		t.Fatal(err)
	}
	d := &slowDNS{ns: ns, resolv: filepath.Join(t.TempDir(), "resolv.conf")}
	if err := ns.Do(func() (err error) {
		d.conn, err = net.ListenPacket("udp4", "127.0.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.conn.Close() })
	if err := os.WriteFile(d.resolv, []byte("nameserver 127.0.0.1\noptions timeout:30 attempts:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

// command runs args in the server's namespace with its resolv.conf; every
// step execs the next, so the process is the tool's.
func (d *slowDNS) command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", d.ns.Name, "unshare", "--mount", "sh", "-c",
		`mount --bind "$0" /etc/resolv.conf && exec "$@"`, d.resolv}, args...)...)
}

// query waits for the tool's query and returns it and where it came from.
func (d *slowDNS) query(t *testing.T) ([]byte, net.Addr) {
	t.Helper()
	d.conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 512)
	n, from, err := d.conn.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no DNS query from the tool: %v", err)
	}
	return buf[:n], from
}

// answer answers query q, a question for an A record, with 127.0.0.1.
func (d *slowDNS) answer(t *testing.T, q []byte, to net.Addr) {
	t.Helper()
	end := 12
	for end < len(q) && q[end] != 0 {
		end += int(q[end]) + 1
	}
	end += 5 // the root label, QTYPE and QCLASS
	if end > len(q) {
		t.Fatalf("malformed DNS query %x", q)
	}
	msg := append([]byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, q[12:end]...)
	msg = append(msg, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
	if _, err := d.conn.WriteTo(msg, to); err != nil {
		t.Fatal(err)
	}
}

// TestE2EInterruptedBeforeFirstEcho signals runs that have sent nothing
// yet: while their host name is looked up, and once the lookup is answered
// (the tool is stopped while the answer and the signal are given, so the
// signal lands in the start-up that follows, or in the lookup's end).
// Each exits 1 and says it was interrupted before the first echo was sent;
// never exit 0 with nothing, never `0 echoes`, never an unknown host, and
// --record writes nothing.
func TestE2EInterruptedBeforeFirstEcho(t *testing.T) {
	d := newSlowDNS(t)
	self := testBinary(t)
	dir := openTempDir(t)
	const host = "slow.tracepkt.test."
	for _, when := range []string{"resolving", "start-up"} {
		for _, mode := range []string{"plain", "stats", "record", "json"} {
			for _, sig := range []string{"SIGINT", "SIGTERM", "SIGHUP"} {
				t.Run(when+"/"+mode+"/"+sig, func(t *testing.T) {
					rec := filepath.Join(dir, "run.tpk")
					args := map[string][]string{"plain": nil, "stats": {"--stats"}, "record": {"--record", rec}, "json": {"--json"}}[mode]
					cmd := d.command(append([]string{self, "-4"}, append(args, host)...)...)
					cmd.Env = append(os.Environ(), asToolEnv+"=1")
					var stdout, stderr bytes.Buffer
					cmd.Stdout, cmd.Stderr = &stdout, &stderr
					if err := cmd.Start(); err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() {
						if cmd.ProcessState == nil {
							cmd.Process.Kill()
							cmd.Wait()
						}
					})
					q, from := d.query(t)
					if when == "start-up" {
						if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
							t.Fatal(err)
						}
						d.answer(t, q, from)
					}
					if err := cmd.Process.Signal(signalNamed(sig)); err != nil {
						t.Fatal(err)
					}
					if when == "start-up" {
						if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
							t.Fatal(err)
						}
					}
					err := cmd.Wait()
					var ee *exec.ExitError
					if err != nil && !errors.As(err, &ee) {
						t.Fatal(err)
					}
					code := cmd.ProcessState.ExitCode()
					last := strings.TrimSpace(stderr.String())
					if i := strings.LastIndexByte(last, '\n'); i >= 0 {
						last = last[i+1:]
					}
					wantLast := "tracepkt-perf: interrupted during start-up, before the first echo was sent"
					if when == "resolving" {
						wantLast = "tracepkt-perf: interrupted while resolving " + host + ", before the first echo was sent"
					} else if strings.HasPrefix(last, "tracepkt-perf: interrupted while resolving ") {
						// The signal reached the tool before the answer did.
						t.Logf("the signal came before the answer")
						wantLast = "tracepkt-perf: interrupted while resolving " + host + ", before the first echo was sent"
					}
					if code != 1 || last != wantLast || stdout.Len() != 0 {
						t.Errorf("exit %d, stdout %q, stderr:\n%s\nwant exit 1, nothing on stdout, and last %q", code, stdout.String(), stderr.String(), wantLast)
					}
					if _, err := os.Stat(rec); !errors.Is(err, os.ErrNotExist) {
						t.Errorf("the recording exists after an interrupted start-up (%v)", err)
					}
				})
			}
		}
	}
}

// TestE2EDemoInterruptedBeforeFirstEcho signals a demo held in its start-up:
// its stderr is a pipe the test filled, so the demo blocks on the line it
// prints once its topology is built, before it opens its probes; the signal
// comes while it is blocked there. It exits 1, says the demo was interrupted
// before any echo, and removes what it built.
func TestE2EDemoInterruptedBeforeFirstEcho(t *testing.T) {
	testenv.RequireRoot(t)
	for _, sig := range []string{"SIGINT", "SIGTERM", "SIGHUP"} {
		t.Run(sig, func(t *testing.T) {
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			fillPipe(t, w)
			cmd := exec.Command(testBinary(t), "--demo")
			cmd.Env = append(os.Environ(), asToolEnv+"=1")
			var stdout bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			t.Cleanup(func() {
				if cmd.ProcessState == nil {
					cmd.Process.Kill()
					cmd.Wait()
				}
			})
			waitBlockedOnPipe(t, cmd.Process.Pid)
			if err := cmd.Process.Signal(signalNamed(sig)); err != nil {
				t.Fatal(err)
			}
			out, _ := io.ReadAll(r)
			cmd.Wait()
			stderr := string(out[bytes.LastIndexByte(out, 'x')+1:]) // past what the test put in
			code := cmd.ProcessState.ExitCode()
			if code != 1 || !strings.HasSuffix(stderr, "\ntracepkt-perf: interrupted during the demo, after 0 probes of its 12\n") || stdout.Len() != 0 {
				t.Errorf("exit %d, stdout %q, stderr:\n%s", code, stdout.String(), stderr)
			}
			assertDemoRemoved(t)
			assertNoPrograms(t)
		})
	}
}

// fillPipe writes 'x' into the pipe w until it is full.
func fillPipe(t *testing.T, w *os.File) {
	t.Helper()
	fd := int(w.Fd())
	if err := unix.SetNonblock(fd, true); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("x"), 4096)
	for {
		if _, err := unix.Write(fd, chunk); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	for {
		// Less than a page may still fit.
		if _, err := unix.Write(fd, chunk[:1]); errors.Is(err, unix.EAGAIN) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		t.Fatal(err)
	}
}

// waitBlockedOnPipe waits until a thread of process pid sleeps in a write
// to its stderr: its wchan says pipe_write (anon_pipe_write from 6.15), or,
// where wchan says 0 (5.10 with the ORC unwinder), its syscall file says
// write (1 on amd64) on fd 2.
func waitBlockedOnPipe(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
		for _, task := range tasks {
			if b, err := os.ReadFile(task + "/wchan"); err == nil && strings.HasSuffix(string(b), "pipe_write") {
				return
			}
			if b, err := os.ReadFile(task + "/syscall"); err == nil && strings.HasPrefix(string(b), fmt.Sprintf("%d 0x2 ", unix.SYS_WRITE)) {
				return
			}
		}
	}
	t.Fatalf("process %d never blocked writing to its stderr", pid)
}
