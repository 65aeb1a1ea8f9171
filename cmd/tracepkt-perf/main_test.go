package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net"
	"net/netip"
	"reflect"
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
)

func TestParseArgs(t *testing.T) {
	o, err := parseArgs([]string{"-c", "3", "fd00::2", "--json", "-W", "250ms", "-i=10ms", "-6"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := options{count: 3, interval: 10 * time.Millisecond, timeout: 250 * time.Millisecond, only6: true, jsonOut: true, netfilter: "auto", attach: probes.AttachAuto, target: "fd00::2"}
	if !reflect.DeepEqual(o, want) {
		t.Errorf("got %+v\nwant %+v", o, want)
	}
	o, err = parseArgs([]string{"--diff", "a.tpk", "b.tpk", "--json", "--svg", "d.svg"}, nil)
	if err != nil || !o.diff || o.diffFiles != [2]string{"a.tpk", "b.tpk"} || !o.jsonOut || o.svg != "d.svg" {
		t.Errorf("--diff: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"--from-netns", "web-1", "--netns", "web-1,db", "--netns=4242", "10.0.0.2"}, nil)
	if err != nil || o.fromNetns != "web-1" || !reflect.DeepEqual(o.netns, specList{"web-1", "db", "4242"}) {
		t.Errorf("namespace flags: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"--listen", "--id", "4242", "--duration", "30", "-W", "0.5", "--record", "b.tpk", "--json"}, nil)
	if err != nil || !o.listen || o.listenID != 4242 || o.duration != 30*time.Second || o.timeout != 500*time.Millisecond || o.record != "b.tpk" {
		t.Errorf("--listen: %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--check", "--verbose"}, nil); err != nil || !o.verbose {
		t.Errorf("--check --verbose: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"-c5", "-W", "2", "-i0.25", "::1"}, nil)
	if err != nil || o.count != 5 || o.timeout != 2*time.Second || o.interval != 250*time.Millisecond || o.target != "::1" {
		t.Errorf("ping-style flags: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"-s1400", "-M", "do", "-t", "1", "-m", "42", "-I", "eth1", "10.0.0.2"}, nil)
	if err != nil || o.ping != (ping.Options{Size: 1400, PMTUDisc: "do", TTL: 1, Mark: 42, Interface: "eth1"}) {
		t.Errorf("ping's shaping flags: %+v, %v", o.ping, err)
	}
	o, err = parseArgs([]string{"--size", "16", "--pmtudisc=want", "--ttl=64", "--mark", "4294967295", "-I", "fd00::1", "fd00::2"}, nil)
	if err != nil || o.ping != (ping.Options{Size: 16, PMTUDisc: "want", TTL: 64, Mark: 4294967295, Source: netip.MustParseAddr("fd00::1")}) {
		t.Errorf("long shaping flags, -I ADDR: %+v, %v", o.ping, err)
	}
	o, err = parseArgs([]string{"--count=2", "--interval", "1ms", "--timeout", "2s", "--demo"}, nil)
	if err != nil || o.count != 2 || o.interval != time.Millisecond || o.timeout != 2*time.Second || !o.demo {
		t.Errorf("long flags: %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--attach", "perf", "::1"}, nil); err != nil || o.attach != probes.AttachPerf {
		t.Errorf("--attach perf: %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--tcp", "443", "-c", "2", "::1"}, nil); err != nil || o.proto != decode.ProtoTCP || o.port != 443 || o.count != 2 {
		t.Errorf("--tcp 443: %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--udp", "53", "::1"}, nil); err != nil || o.proto != decode.ProtoUDP || o.port != 53 || o.payload != nil {
		t.Errorf("--udp 53: %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--udp", "7", "--payload", "0a:0b", "::1"}, nil); err != nil || !bytes.Equal(o.payload, []byte{10, 11}) {
		t.Errorf("--payload 0a:0b: %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--udp", "7", "--payload", "", "::1"}, nil); err != nil || o.payload == nil || len(o.payload) != 0 {
		t.Errorf("--payload '': %+v, %v", o, err)
	}
	if o, err = parseArgs([]string{"--ring-pages", "2", "::1"}, nil); err != nil || o.ringPages != 2 {
		t.Errorf("--ring-pages 2: %+v, %v", o, err)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, args := range [][]string{
		{}, {"-c", "0", "x"}, {"-W", "0s", "x"}, {"-i", "-1s", "x"}, {"-4", "-6", "x"},
		{"--demo", "x"}, {"a", "b"}, {"--nope", "x"}, {"-c", "many", "x"}, {"-W", "soon", "x"}, {"-cx", "y"},
		{"--netfilter", "iptables", "x"}, {"--pcapng", "o.pcapng", "x"}, {"--replay", "a.tpk", "--record", "b.tpk"},
		{"--replay", "a.tpk", "x"}, {"--check", "--demo"},
		{"--diff", "a.tpk"}, {"--diff", "a.tpk", "b.tpk", "c.tpk"}, {"--diff", "a.tpk", "b.tpk", "--stats"},
		{"--diff", "a.tpk", "b.tpk", "--replay", "c.tpk"}, {"--stats", "--demo"}, {"--svg", "o.svg", "--check"},
		{"--replay", "a.tpk", "--pcapng", "o.pcapng", "--stats"}, {"--merge", "a.tpk", "b.tpk", "--pcapng", "o.pcapng", "--json"},
		{"-s", "15", "x"}, {"-s", "65508", "10.0.0.2"}, {"-t", "256", "x"}, {"-t", "-1", "x"}, {"-M", "probe", "x"},
		{"-m", "4294967296", "x"}, {"-m", "-1", "x"}, {"-s", "big", "x"},
		{"--ring-pages", "3", "x"}, {"--ring-pages", "2048", "x"}, {"--attach", "kprobe", "x"},
		{"--verbose", "x"}, {"--from-netns", "a", "--demo"},
		{"--netns", "a", "--replay", "a.tpk"}, {"--netns", "a,,b", "x"}, {"--from-netns", "a", "--check"},
		{"--tcp", "0", "x"}, {"--tcp", "65536", "x"}, {"--tcp", "http", "x"}, {"--tcp", "80", "-s", "100", "x"},
		{"--tcp", "80", "--demo"},
		{"--tcp", "80", "--replay", "a.tpk"}, {"--tcp", "80", "--check"},
		{"--udp", "0", "x"}, {"--udp", "65536", "x"}, {"--udp", "dns", "x"}, {"--udp", "53", "--tcp", "80", "x"},
		{"--udp", "53", "-s", "100", "x"}, {"--udp", "53", "--demo"}, {"--udp", "53", "--replay", "a.tpk"},
		{"--payload", "00", "x"}, {"--tcp", "80", "--payload", "00", "x"}, {"--udp", "7", "--payload", "0g", "x"},
		{"--udp", "7", "--payload", "abc", "x"}, {"--udp", "7", "--payload", "@/nonexistent/q.bin", "x"},
		{"--udp", "7", "--payload", strings.Repeat("00", 505), "x"},
		{"--listen", "x"}, {"--listen", "-c", "2"}, {"--listen", "--version"}, {"--listen", "--tcp", "80"}, {"--listen", "--replay", "a.tpk"},
		{"--listen", "--id", "0"}, {"--listen", "--id", "65536"}, {"--listen", "--duration", "0"}, {"--listen", "--netfilter", "nftrace"},
		{"--id", "7", "x"}, {"--duration", "5", "x"},
	} {
		_, err := parseArgs(args, nil)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseArgs(%q) = %v, want a usage error", args, err)
		}
		var stderr bytes.Buffer
		if code := exitCode(err, &stderr); code != 2 || !strings.Contains(stderr.String(), "--help") {
			t.Errorf("parseArgs(%q): exit %d, stderr %q", args, code, stderr.String())
		}
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run([]string{"--help"}, &stdout, &stderr)
	if code := exitCode(err, &stderr); code != 0 {
		t.Fatalf("--help exits %d", code)
	}
	if !strings.Contains(stdout.String(), "usage: tracepkt-perf") || stderr.Len() != 0 {
		t.Errorf("--help printed %q, stderr %q", stdout.String(), stderr.String())
	}
}

func TestResolveMalformed(t *testing.T) {
	for _, target := range []string{"1.2.3", "300.1.1.1", "fd00:::1:::", "10.0.0.0/8"} {
		if _, err := resolve(t.Context(), net.DefaultResolver.LookupNetIP, target, false, false); err == nil {
			t.Errorf("resolve(%q) succeeded", target)
		}
	}
	if _, err := resolve(t.Context(), net.DefaultResolver.LookupNetIP, "::1", true, false); err == nil {
		t.Error("resolve(::1) with -4 succeeded")
	}
	if a, err := resolve(t.Context(), net.DefaultResolver.LookupNetIP, "::ffff:127.0.0.1", false, false); err != nil || a.String() != "127.0.0.1" {
		t.Errorf("resolve of a mapped address: %v, %v", a, err)
	}
}

// TestResolveInterrupted: a signal during a slow lookup is an interrupted
// run (exit 1, said so), not an unknown host.
func TestResolveInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	blocking := func(ctx context.Context, network, host string) ([]netip.Addr, error) {
		cancel() // the signal, while the lookup waits for an answer
		<-ctx.Done()
		return nil, &net.DNSError{Err: ctx.Err().Error(), Name: host}
	}
	_, err := resolve(ctx, blocking, "slow.example", false, false)
	var stderr bytes.Buffer
	if code := exitCode(err, &stderr); code != 1 || stderr.String() != "tracepkt-perf: interrupted while resolving slow.example, before the first echo was sent\n" {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	failing := func(context.Context, string, string) ([]netip.Addr, error) {
		return nil, &net.DNSError{Err: "no such host", Name: "nope.example", IsNotFound: true}
	}
	if _, err := resolve(t.Context(), failing, "nope.example", false, false); exitCode(err, io.Discard) != 2 || !strings.Contains(err.Error(), "unknown host nope.example") {
		t.Errorf("an unknown host: %v", err)
	}
}

func TestExitCodes(t *testing.T) {
	var stderr bytes.Buffer
	if exitCode(nil, &stderr) != 0 || exitCode(errUnanswered, &stderr) != 1 || stderr.Len() != 0 {
		t.Errorf("nil/unanswered: stderr %q", stderr.String())
	}
	if exitCode(errors.New("open tracepoint net/x: boom"), &stderr) != 2 || stderr.String() != "tracepkt-perf: open tracepoint net/x: boom\n" {
		t.Errorf("environment error: stderr %q", stderr.String())
	}
}

func TestReasonName(t *testing.T) {
	s := &session{reasons: map[uint64]string{2: "NOT_SPECIFIED", 88: "IP_INNOROUTES"}}
	for r, want := range map[uint32]string{88: "IP_INNOROUTES", 2: "NOT_SPECIFIED", 500: "reason 500", 3<<16 | 7: "subsystem 3 reason 7"} {
		if got := s.reasonName(r); got != want {
			t.Errorf("reasonName(%#x) = %q, want %q", r, got, want)
		}
	}
	if got := (&session{}).reasonName(0); got != "" {
		t.Errorf("a kernel without reasons named one %q", got)
	}
}

// TestParseArgsSizeAndTTL: -s and -t given are held to what they say, 0
// included (never the default in disguise), and the size to the bound of
// the family: 65507 for IPv4, 65527 for IPv6.
func TestParseArgsSizeAndTTL(t *testing.T) {
	for _, args := range []string{
		"-s 0 x", "--size=0 x", "-t 0 x", "--ttl 0 x", "-s 65508 10.0.0.2", "-4 -s 65508 x", "-6 -s 65528 x",
		"-s 65528 fd00::2", "--demo -s 65508", "--demo -6 -s 65528",
	} {
		_, err := parseArgs(strings.Fields(args), nil)
		var ue usageError
		if !errors.As(err, &ue) || strings.Contains(err.Error(), "\n") {
			t.Errorf("parseArgs(%s) = %v, want a one-line usage error", args, err)
		}
	}
	for args, want := range map[string]ping.Options{
		"x":                     {},
		"-s 65507 10.0.0.2":     {Size: 65507},
		"-6 -s 65527 x":         {Size: 65527},
		"-s 65527 fd00::2":      {Size: 65527},
		"-s 65527 host.example": {Size: 65527}, // held to its address's family once resolved
		"--demo -6 -s 65527":    {Size: 65527},
		"-s 16 -t 1 x":          {Size: 16, TTL: 1},
	} {
		if o, err := parseArgs(strings.Fields(args), nil); err != nil || o.ping != want {
			t.Errorf("parseArgs(%s) = %+v, %v, want %+v", args, o.ping, err, want)
		}
	}
	if err := checkSize(65508, false); err == nil || !strings.Contains(err.Error(), "65507 for IPv4") {
		t.Errorf("checkSize(65508, IPv4) = %v", err)
	}
	if err := checkSize(65527, true); err != nil {
		t.Errorf("checkSize(65527, IPv6) = %v", err)
	}
}

// TestParseArgsPingStyleOnlyNumbers: a short flag glued to its value is
// split only when the value is a number, so Go-style single-dash long flags
// keep working.
func TestParseArgsPingStyleOnlyNumbers(t *testing.T) {
	o, err := parseArgs([]string{"-check"}, nil)
	if err != nil || !o.check {
		t.Errorf("-check: %+v, %v", o, err)
	}
	o, err = parseArgs([]string{"-count", "2", "-interval", "0.1", "-W3", "-c7", "x"}, nil)
	if err != nil || o.count != 7 || o.interval != 100*time.Millisecond || o.timeout != 3*time.Second {
		t.Errorf("-count 2 -interval 0.1 -W3 -c7: %+v, %v", o, err)
	}
	for _, a := range []string{"-c3", "-i0.25", "-W.5", "-c10", "-s56", "-t3", "-m7", "-Mdo", "-Ieth0"} {
		if got := splitShortValues(flag.NewFlagSet("", 0), []string{a}); len(got) != 2 {
			t.Errorf("%s split as %q", a, got)
		}
	}
	for _, a := range []string{"-check", "-count", "-interval", "-c=3", "-i1.2.3", "-Wx", "-c-1", "-stats", "-svg", "-ttl", "-mark"} {
		if got := splitShortValues(flag.NewFlagSet("", 0), []string{a}); len(got) != 1 {
			t.Errorf("%s split as %q", a, got)
		}
	}
}

// TestParseArgsBounds: durations beyond the bounds, NaN and Inf are refused
// with the bound, never overflowed into another value.
func TestParseArgsBounds(t *testing.T) {
	for _, args := range [][]string{
		{"-W", "1e10", "x"}, {"-i", "1e10", "x"}, {"-W", "NaN", "x"}, {"-i", "NaN", "x"}, {"-W", "Inf", "x"},
		{"-i", "+Inf", "x"}, {"-W", "-Inf", "x"}, {"-W", "3601", "x"}, {"-i", "2h", "x"}, {"-W", "100000h", "x"},
		{"-i", "-0.5", "x"},
	} {
		_, err := parseArgs(args, nil)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("parseArgs(%q) = %v, want a usage error", args, err)
			continue
		}
		if !strings.Contains(err.Error(), "3600") && !strings.Contains(err.Error(), "1h") {
			t.Errorf("parseArgs(%q): %v does not say the bound", args, err)
		}
	}
	o, err := parseArgs([]string{"-W", "3600", "-i", "1h", "x"}, nil)
	if err != nil || o.timeout != time.Hour || o.interval != time.Hour {
		t.Errorf("the bounds themselves: %+v, %v", o, err)
	}
}

// TestParseArgsModeFlags: a flag that means nothing in the chosen mode is
// refused, naming the flag and the mode; --check --json is supported.
func TestParseArgsModeFlags(t *testing.T) {
	for args, flag := range map[string]string{
		"--check --record x.tpk":                  "--record",
		"--check -c 2":                            "-c",
		"--check --netfilter off":                 "--netfilter",
		"--check -6":                              "-6",
		"--replay a.tpk -W 2":                     "-W",
		"--replay a.tpk --interval 1":             "--interval",
		"--replay a.tpk --netfilter kprobe":       "--netfilter",
		"--replay a.tpk --pcapng b.pcapng --json": "--json",
		"--version --json":                        "--version",
		"--version x":                             "--version",
	} {
		_, err := parseArgs(strings.Fields(args), nil)
		var ue usageError
		if !errors.As(err, &ue) || !strings.Contains(err.Error(), flag) {
			t.Errorf("parseArgs(%s) = %v, want a usage error naming %s", args, err, flag)
		}
	}
	for _, args := range []string{"--check --json", "--replay a.tpk --json", "--replay a.tpk --pcapng b.pcapng", "--demo -c 2 --json --record x", "--version"} {
		if _, err := parseArgs(strings.Fields(args), nil); err != nil {
			t.Errorf("parseArgs(%s): %v", args, err)
		}
	}
}

// TestRefuseNonUnicast: multicast, broadcast and unspecified targets are
// refused with one line, before anything is sent.
func TestRefuseNonUnicast(t *testing.T) {
	for _, a := range []string{"224.0.0.1", "239.1.2.3", "ff02::1", "ff05::2", "255.255.255.255", "0.0.0.0", "::"} {
		err := refuseNonUnicast(netip.MustParseAddr(a))
		var ue usageError
		if !errors.As(err, &ue) || strings.Contains(err.Error(), "\n") {
			t.Errorf("refuseNonUnicast(%s) = %v, want a one-line usage error", a, err)
		}
	}
	if err := refuseNonUnicast(netip.MustParseAddr("fe80::1")); err == nil || !strings.Contains(err.Error(), "fe80::1%") {
		t.Errorf("refuseNonUnicast(fe80::1) = %v, want an error asking for the interface", err)
	}
	for _, a := range []string{"127.0.0.1", "::1", "fe80::1%lo"} {
		if err := refuseNonUnicast(netip.MustParseAddr(a)); err != nil {
			t.Errorf("refuseNonUnicast(%s) = %v", a, err)
		}
	}
}

// TestVersion: --version names the version, the commit (unknown in a test
// binary, which has no VCS stamp), Go and cilium/ebpf.
func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := exitCode(run([]string{"--version"}, &stdout, &stderr), &stderr); code != 0 {
		t.Fatalf("--version exits %d: %s", code, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 4 || lines[0] != "tracepkt-perf "+version || !strings.HasPrefix(lines[1], "commit ") ||
		lines[2] != runtime.Version() || !strings.HasPrefix(lines[3], "cilium/ebpf v0.") {
		t.Errorf("--version printed:\n%s", stdout.String())
	}
	info := &debug.BuildInfo{GoVersion: "go1.99", Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}},
		Deps: []*debug.Module{{Path: "github.com/cilium/ebpf", Version: "v0.22.0"}}}
	want := "tracepkt-perf " + version + "\ncommit abc123 (with local changes)\ngo1.99\ncilium/ebpf v0.22.0\n"
	if got := versionText(info); got != want {
		t.Errorf("versionText = %q, want %q", got, want)
	}
}
