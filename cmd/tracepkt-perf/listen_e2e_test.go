package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// listener is a tracepkt-perf --listen running beside a test.
type listener struct {
	cmd    *exec.Cmd
	stdout strings.Builder
}

// startListener starts tracepkt-perf --listen with args, and returns once
// it says it listens: its probes are attached.
func startListener(t *testing.T, args ...string) *listener {
	t.Helper()
	l := &listener{cmd: exec.Command(testBinary(t), append([]string{"--listen"}, args...)...)}
	l.cmd.Env = append(os.Environ(), asToolEnv+"=1")
	l.cmd.Stdout = &l.stdout
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	l.cmd.Stderr = w
	err = l.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if l.cmd.ProcessState == nil {
			l.cmd.Process.Kill()
			l.cmd.Wait()
		}
	})
	ready := make(chan string, 1)
	go func() {
		defer r.Close()
		lines := bufio.NewScanner(r)
		lines.Scan()
		ready <- lines.Text() + "\n"
		for lines.Scan() { // the rest, until the listener exits
		}
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "tracepkt-perf: listening for the echoes of ") {
			t.Fatalf("listener said %q", line)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the listener did not start listening in 30s")
	}
	return l
}

// stop ends the listener with SIGINT, the way a person stops it, and
// returns its exit status and what it printed.
func (l *listener) stop(t *testing.T) (int, string) {
	t.Helper()
	if err := l.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	l.cmd.Wait()
	return l.cmd.ProcessState.ExitCode(), l.stdout.String()
}

// TestE2EListen: a listener sends nothing and keeps the echoes of any run
// of the tool by the magic in their payload. Two echoes from A to B through
// R: the listener shows each as a fragment with the prober's echo id and
// sequence, the same device rows the prober saw (A out, R in and out, B in,
// then the reply back), each in the namespace /proc names; a listener
// narrowed to another run's id shows nothing; the recording replays as the
// listener printed it; and the listener exits 0 on SIGINT.
func TestE2EListen(t *testing.T) {
	topo, n := router(t)
	if err := topo.CheckOwnRoute(n.A, n.Target4); err != nil {
		t.Fatalf("not probing: %v", err)
	}
	rec := t.TempDir() + "/listen.tpk"
	all := startListener(t, "--json", "-W", "0.3", "--record", rec)
	other := startListener(t, "--json", "--id", "65535")
	sent := t.TempDir() + "/run.tpk"
	e, _ := probeJSON(t, n.A, 0, "-c", "2", "-i", "0.2", "--record", sent, n.Target4.String())
	time.Sleep(time.Second) // the fragments go quiet for -W
	code, out := all.stop(t)
	if code != 0 {
		t.Fatalf("listener: exit %d", code)
	}
	frags := decodeEchoes(t, out)
	a, r, b := inode(t, n.A), inode(t, n.R), inode(t, n.B)
	want := []string{
		row(a, n.ALink, "out", "request"), row(r, n.RLinkA, "in", "request"), row(r, n.RLinkB, "out", "request"), row(b, n.BLink, "in", "request"),
		row(b, n.BLink, "out", "reply"), row(r, n.RLinkB, "in", "reply"), row(r, n.RLinkA, "out", "reply"), row(a, n.ALink, "in", "reply"),
	}
	if len(frags) != 2 {
		t.Fatalf("%d fragments, want 2:\n%s", len(frags), out)
	}
	for i, f := range frags {
		if f.EchoID != e.EchoID || f.Seq != uint16(i+1) || f.Result != "seen" || f.Target != n.Target4.String() {
			t.Errorf("fragment %d: echo id %d seq %d result %q target %s, want %d %d seen %s", i, f.EchoID, f.Seq, f.Result, f.Target, e.EchoID, i+1, n.Target4)
		}
		if got := rows(f); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("fragment %d rows:\n%s\nwant:\n%s", i, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	// (Unless the prober drew that very id, 1 in 65535.)
	if code, out := other.stop(t); code != 0 || out != "" && e.EchoID != 65535 {
		t.Errorf("listener of another run: exit %d, printed:\n%s", code, out)
	}
	replayed := runTool(t, nil, "--replay", rec, "--json")
	if replayed.code != 0 || replayed.stdout != out {
		t.Errorf("replay: exit %d, %s\n%s\nwant what the listener printed:\n%s", replayed.code, replayed.stderr, replayed.stdout, out)
	}

	// Both recordings are of this machine: a merge keeps each row once, on
	// its one clock, named by the host.
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	merged := runTool(t, nil, "--merge", rec, sent, "--json")
	joined := decodeEchoes(t, merged.stdout)
	if merged.code != 0 || len(joined) != 2 {
		t.Fatalf("--merge: exit %d, %s, %d journeys:\n%s", merged.code, merged.stderr, len(joined), merged.stdout)
	}
	for i, j := range joined {
		if got := rows(j); strings.Join(got, "\n") != strings.Join(want, "\n") || j.Result != "reply" || j.Hops[0].Host != host {
			t.Errorf("merged journey %d: result %q, host %q, rows:\n%s\nwant reply, %q:\n%s", i, j.Result, j.Hops[0].Host, strings.Join(got, "\n"), host, strings.Join(want, "\n"))
		}
	}
	if text := runTool(t, nil, "--merge", sent, rec); !strings.Contains(text.stdout, "clock: "+rec+" is recorded on "+host+"'s machine") {
		t.Errorf("--merge says nothing of the one clock:\n%s", text.stdout)
	}

	// B's firewall drops the request: the listener names the drop where
	// it saw it, as the prober does.
	inNetns(t, n.B, "nft", "add", "table", "inet", "tplisten")
	t.Cleanup(func() { inNetns(t, n.B, "nft", "delete", "table", "inet", "tplisten") })
	inNetns(t, n.B, "nft", "add", "chain", "inet", "tplisten", "input", "{ type filter hook input priority 0; }")
	inNetns(t, n.B, "nft", "add", "rule", "inet", "tplisten", "input", "icmp", "type", "echo-request", "drop")
	l := startListener(t, "--json", "-W", "0.3")
	probeJSON(t, n.A, 1, n.Target4.String())
	time.Sleep(time.Second)
	code, out = l.stop(t)
	frags = decodeEchoes(t, out)
	if code != 0 || len(frags) != 1 {
		t.Fatalf("listener of a dropped echo: exit %d, %d fragments:\n%s", code, len(frags), out)
	}
	assertLoss(t, frags[0], wantLoss{result: "dropped", reason: "NETFILTER_DROP", netns: b, ifname: n.BLink, withoutAnError: true})
}
