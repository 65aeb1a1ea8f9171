package main

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/probes/ping"

	"github.com/tracepkt/tracepkt-perf/probes"
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
		{"--replay", "a.tpk", "--pcapng", "o.pcapng", "--stats"},
		{"-s", "15", "x"}, {"-s", "65508", "x"}, {"-t", "256", "x"}, {"-t", "-1", "x"}, {"-M", "probe", "x"},
		{"-m", "4294967296", "x"}, {"-m", "-1", "x"}, {"-s", "big", "x"},
		{"--ring-pages", "3", "x"}, {"--ring-pages", "2048", "x"}, {"--attach", "kprobe", "x"},
		{"--verbose", "x"}, {"--from-netns", "a", "--demo"},
		{"--netns", "a", "--replay", "a.tpk"}, {"--netns", "a,,b", "x"}, {"--from-netns", "a", "--check"},
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
		if _, err := resolve(t.Context(), target, false, false); err == nil {
			t.Errorf("resolve(%q) succeeded", target)
		}
	}
	if _, err := resolve(t.Context(), "::1", true, false); err == nil {
		t.Error("resolve(::1) with -4 succeeded")
	}
	if a, err := resolve(t.Context(), "::ffff:127.0.0.1", false, false); err != nil || a.String() != "127.0.0.1" {
		t.Errorf("resolve of a mapped address: %v, %v", a, err)
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
