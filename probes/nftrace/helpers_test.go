package nftrace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
	"github.com/tracepkt/tracepkt-perf/probes/ping"

	"github.com/tracepkt/tracepkt-perf/probes/netns"
)

// netnsOf returns the netns.Netns of a namespace the topology created.
func netnsOf(n *topology.Netns) netns.Netns {
	return netns.Netns{Inode: uint32(n.Inode), Path: n.Path, Names: []string{n.Name}}
}

func netnsList(ns ...*topology.Netns) []netns.Netns {
	out := make([]netns.Netns, len(ns))
	for i, n := range ns {
		out[i] = netnsOf(n)
	}
	return out
}

// run runs a command inside the named namespace ("" for this process's) with stdin, and
// returns its standard output; a failure fails tb.
func run(tb testing.TB, netns, stdin string, args ...string) string {
	tb.Helper()
	if netns != "" {
		args = append([]string{"ip", "netns", "exec", netns}, args...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Stdin = strings.NewReader(stdin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out)
}

// requireNftables skips (fails in CI) without root, nft and iptables-nft.
func requireNftables(tb testing.TB) {
	tb.Helper()
	testenv.RequireRoot(tb)
	testenv.RequireCommands(tb, "ip", "nft", "iptables", "ip6tables")
}

// rulesets returns `nft --handle --stateless list ruleset` of this process's namespace (key
// "") and of each namespace named: the ruleset with its handles, so that a table deleted
// and made again shows, without the counters the tests' own echoes move.
func rulesets(tb testing.TB, names ...string) map[string]string {
	tb.Helper()
	list := []string{"nft", "--handle", "--stateless", "list", "ruleset"}
	out := map[string]string{"": run(tb, "", "", list...)}
	for _, n := range names {
		out[n] = run(tb, n, "", list...)
	}
	return out
}

// checkRulesetsUnchanged fails tb unless the rulesets are what before recorded.
func checkRulesetsUnchanged(tb testing.TB, before map[string]string) {
	tb.Helper()
	var names []string
	for n := range before {
		names = append(names, n)
	}
	after := rulesets(tb, filterEmpty(names)...)
	for n, b := range before {
		if after[n] != b {
			tb.Errorf("ruleset of netns %q changed:\nbefore:\n%s\nafter:\n%s", n, b, after[n])
		}
	}
}

func filterEmpty(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" {
			out = append(out, n)
		}
	}
	return out
}

// openTracer opens a tracer and closes it when tb ends, failing tb if Close fails.
func openTracer(tb testing.TB, nss []netns.Netns, id uint16) *Tracer {
	tb.Helper()
	t, err := Open(nss, Match{EchoID: id})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := t.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return t
}

// echo sends one echo request with id and seq from src to dst with the project's pinger and
// waits up to a second for the reply. It returns os.ErrDeadlineExceeded when none came. It
// refuses, sending nothing, unless dst is reached over the topology's own links.
func echo(tb testing.TB, topo *topology.Topology, src *topology.Netns, dst netip.Addr, id, seq uint16) error {
	tb.Helper()
	if err := topo.CheckOwnRoute(src, dst); err != nil {
		tb.Fatalf("not pinging: %v", err)
	}
	return src.Do(func() error {
		p, err := ping.Open(dst, id, ping.Options{})
		if err != nil {
			return err
		}
		defer p.Close()
		if _, err := p.Send(seq); err != nil {
			return err
		}
		r, err := p.Receive(time.Now().Add(time.Second))
		if err != nil {
			return err
		}
		if r.Seq != seq || r.From != dst {
			return fmt.Errorf("reply %+v, want seq %d from %v", r, seq, dst)
		}
		return nil
	})
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// row is what the end-to-end tests compare of an event.
type row struct {
	Netns   uint32
	Family  string
	Table   string
	Chain   string
	Hook    decode.Hook
	Type    decode.TraceType
	Verdict string
	Target  string
	Handle  uint64
	Rule    string
	Request bool
}

func (r row) String() string {
	return fmt.Sprintf("{%d %s %s %s %v type=%d %s %q handle=%d %q req=%v}", r.Netns, r.Family, r.Table, r.Chain, r.Hook, r.Type, r.Verdict, r.Target, r.Handle, r.Rule, r.Request)
}

func rows(events []decode.NetfilterEvent) []row {
	out := make([]row, len(events))
	for i, e := range events {
		out[i] = row{e.Netns, e.Family, e.Table, e.Chain, e.Hook, e.Type, e.Verdict, e.Target, e.RuleHandle, e.Rule, e.IsRequest()}
	}
	return out
}
