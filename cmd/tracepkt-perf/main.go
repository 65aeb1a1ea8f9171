// Command tracepkt-perf sends an ICMP echo and shows, hop by hop, the journey
// of the request and the reply through the machine's interfaces and network
// namespaces.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
	"github.com/tracepkt/tracepkt-perf/internal/phases"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/probes/ping"
)

const usageText = `usage: tracepkt-perf [flags] TARGET
       tracepkt-perf --demo [flags]
       tracepkt-perf --diff A.tpk B.tpk [--json] [--svg OUT]
       tracepkt-perf --listen [--id N] [--duration D] [flags]
       tracepkt-perf --merge A.tpk B.tpk ... [--json] [--stats] [--svg OUT] [--pcapng OUT]

Sends ICMP echo requests to TARGET (an IPv4 or IPv6 address or a host name)
and shows every interface and network namespace the request and the reply
crossed, in kernel time order. Needs root, or the capabilities --check
names (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_DAC_READ_SEARCH).

Flags:
  -c, --count N        echo requests to send (default 1)
  -i, --interval D     time from one request to the next: 0.2, 200ms
                       (default 1s)
  -W, --timeout D      how long to wait for each reply (default 1s)
  -4, -6               resolve TARGET to IPv4 / IPv6 only
  -s, --size N         payload bytes of each request (default 56; 16 to 65507
                       for IPv4, 65527 for IPv6)
  -t, --ttl N          IPv4 TTL / IPv6 hop limit of the requests (1 to 255)
  -M, --pmtudisc M     path MTU discovery: do (set DF, never fragment),
                       dont (fragment), want (DF unless the route's MTU is
                       smaller)
  -I, --interface I    send through interface I, or from source address I
  -m, --mark N         mark the requests with fwmark N (policy routing, rules)
      --tcp PORT       probe TCP PORT with a SYN instead of an echo: open
                       (SYN-ACK), closed (RST), unreachable, dropped or
                       timeout, with the NAT it went through
      --udp PORT       probe UDP PORT with a datagram instead of an echo:
                       reply, closed (port unreachable), unreachable,
                       dropped or timeout, with the NAT it went through
      --payload P      with --udp: the datagram's payload, hex bytes
                       ("0a1b", "0a:1b") or @FILE, at most 504 bytes; the
                       probe's 8-byte mark follows it (default: a DNS query
                       for "." to port 53, the mark alone elsewhere)
      --json           one JSON object per echo, one per line
      --demo           build a throwaway bridge + namespace topology, trace
                       IPv4 and IPv6 echoes and TCP probes of a Service (DNAT
                       to a pod) into it, remove it
      --check          print what this kernel supports; exit 0 when the
                       trace can run (with --json: one JSON object)
      --verbose        with --check: also list the network namespaces, as
                       the tool names them, and their veth pairs
      --from-netns NS  send the echo from inside namespace NS: an ip netns
                       name, a container's or pod's name or id, a PID, or a
                       path such as /proc/PID/ns/net
      --netns NS,...   trace netfilter only in these namespaces (and the
                       --from-netns one); default: every namespace
      --netfilter S    netfilter source: auto, kprobe, nftrace or off
                       (default auto: nftrace, which needs no kprobes)
      --attach A       how the device probes attach: auto (default: a raw
                       tracepoint, else a perf tracepoint event), raw or perf
      --record FILE    also record the run to FILE (a .tpk recording)
      --replay FILE    show a recording, on any machine, without root
      --pcapng OUT     with --replay or --merge: export the packets to OUT for
                       Wireshark
      --stats          per-hop latency percentiles, losses, drops and verdicts
                       over every echo (with -c N, or --replay), grouped by path
      --diff A B       compare two recordings hop by hop: where B's path left
                       A's; exit 0 same path, 1 different, 2 unreadable
      --svg OUT        also draw the journey (or with --diff, both) to OUT
      --listen         send nothing: trace the echoes of any tracepkt-perf run,
                       from this machine or another, and show each one's
                       journey here (a fragment) once it goes quiet for -W;
                       until --duration D or a signal (exit 0)
      --id N           with --listen: only the run of echo id N
      --duration D     with --listen: stop after D (default: at a signal)
      --merge A B ...  join recordings of one run made on several machines
                       (a run's and listeners'): one journey per echo, each
                       row naming its machine, on one clock
      --version        the version, commit, and Go and cilium/ebpf versions
  -h, --help           this help

Exit status: 0 when every echo got a reply (with --tcp: every port was open;
with --udp: every datagram was answered),
1 when one did not (dropped, an ICMP error, closed, or no answer) or a signal
came before the first was sent, 2 for
usage or environment errors, or output that cannot be written.

Examples:
  sudo tracepkt-perf 172.17.0.2
  sudo tracepkt-perf -6 -c 3 --json fd00::2
  sudo tracepkt-perf --demo
  sudo tracepkt-perf --from-netns web-1 172.17.0.3
  sudo tracepkt-perf --tcp 80 10.96.0.10
  sudo tracepkt-perf --udp 53 10.96.0.10
  sudo tracepkt-perf --record incident.tpk 172.17.0.2
  sudo tracepkt-perf --listen --duration 60 --record node-b.tpk
  tracepkt-perf --replay incident.tpk --json
  tracepkt-perf --replay incident.tpk --pcapng incident.pcapng
  sudo tracepkt-perf -c 100 -i 0.01 --stats 172.17.0.2
  tracepkt-perf --diff yesterday.tpk today.tpk --svg diff.svg
`

// Exit codes are decided in one place, exitCode.
var (
	// errUnanswered: at least one echo got no reply (exit 1).
	errUnanswered = errors.New("an echo got no reply")
	// errHelp: the user asked for the help text (exit 0).
	errHelp = errors.New("help requested")
)

// maxRingPages bounds --ring-pages: 4 MiB per CPU.
const maxRingPages = 1024

// interruptedError: a signal ended the run before it had every reply it was
// to wait for, and no row says so (exit 1, said on stderr).
type interruptedError struct{ when string }

func (e interruptedError) Error() string { return "interrupted " + e.when }

// errInterruptedStartup: a signal came before the first echo was sent.
var errInterruptedStartup = interruptedError{"during start-up, before the first echo was sent"}

// usageError is bad command-line input (exit 2, with a hint).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func main() {
	// A write to a pipe whose reader is gone fails with EPIPE, an error
	// like any other (exit 2, said), rather than kill the tool silently.
	// Caught, not ignored: a live run also ends on a SIGPIPE sent to it.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	span := phases.Begin("main to exit")
	code := exitCode(run(os.Args[1:], stdoutOf(), os.Stderr), os.Stderr)
	span.End()
	phases.Write(os.Stderr)
	os.Exit(code)
}

func exitCode(err error, stderr io.Writer) int {
	var ue usageError
	var ie interruptedError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUnanswered), errors.Is(err, errDiffer):
		return 1
	case errors.As(err, &ie):
		fmt.Fprintf(stderr, "tracepkt-perf: %v\n", err)
		return 1
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "tracepkt-perf: %v\nrun 'tracepkt-perf --help' for usage\n", err)
		return 2
	default:
		fmt.Fprintf(stderr, "tracepkt-perf: %v\n", err)
		return 2
	}
}

type options struct {
	count     int
	interval  time.Duration
	timeout   time.Duration
	only4     bool
	only6     bool
	jsonOut   bool
	demo      bool
	check     bool
	verbose   bool
	fromNetns string
	netns     specList
	netfilter string
	attach    probes.AttachMode
	record    string
	replay    string
	pcapng    string
	stats     bool
	diff      bool
	diffFiles [2]string // A and B of --diff
	svg       string
	version   bool
	target    string
	ping      ping.Options
	// proto and port, when port is not 0, make the probes TCP SYNs
	// (decode.ProtoTCP, --tcp) or UDP datagrams (decode.ProtoUDP, --udp)
	// to that port; payload is --payload's bytes, nil when not given.
	proto   uint8
	port    uint16
	payload []byte
	// merge joins the recordings mergeFiles of several machines (--merge).
	merge      bool
	mergeFiles []string
	// listen runs a listener (--listen): nothing sent, the echoes of any
	// run, or of run listenID, kept for duration (0: until a signal).
	listen   bool
	listenID uint16
	duration time.Duration
	// ringPages is a diagnostic (--ring-pages, not in the help): the data
	// pages of each per-CPU ring, to make loss happen on purpose.
	ringPages int
}

// maxWait bounds -i and -W: beyond it a run would never end in practice,
// and a number of seconds such as 1e10 would overflow time.Duration.
const maxWait = time.Hour

func parseArgs(args []string, stdout io.Writer) (options, error) {
	o := options{count: 1, interval: time.Second, timeout: time.Second, netfilter: "auto", attach: probes.AttachAuto}
	fs := flag.NewFlagSet("tracepkt-perf", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, name := range []string{"c", "count"} {
		fs.IntVar(&o.count, name, o.count, "")
	}
	for _, name := range []string{"i", "interval"} {
		fs.Var((*seconds)(&o.interval), name, "")
	}
	for _, name := range []string{"W", "timeout"} {
		fs.Var((*seconds)(&o.timeout), name, "")
	}
	for _, name := range []string{"s", "size"} {
		fs.IntVar(&o.ping.Size, name, 0, "")
	}
	for _, name := range []string{"t", "ttl"} {
		fs.IntVar(&o.ping.TTL, name, 0, "")
	}
	for _, name := range []string{"M", "pmtudisc"} {
		fs.StringVar(&o.ping.PMTUDisc, name, "", "")
	}
	var iface string
	for _, name := range []string{"I", "interface"} {
		fs.StringVar(&iface, name, "", "")
	}
	var mark uint64
	for _, name := range []string{"m", "mark"} {
		fs.Uint64Var(&mark, name, 0, "")
	}
	fs.BoolVar(&o.only4, "4", false, "")
	fs.BoolVar(&o.only6, "6", false, "")
	fs.BoolVar(&o.jsonOut, "json", false, "")
	fs.BoolVar(&o.demo, "demo", false, "")
	fs.BoolVar(&o.check, "check", false, "")
	fs.BoolVar(&o.verbose, "verbose", false, "")
	fs.StringVar(&o.fromNetns, "from-netns", "", "")
	fs.Var(&o.netns, "netns", "")
	fs.BoolVar(&o.version, "version", false, "")
	fs.StringVar(&o.netfilter, "netfilter", o.netfilter, "")
	attach := string(o.attach)
	fs.StringVar(&attach, "attach", attach, "")
	fs.StringVar(&o.record, "record", "", "")
	fs.StringVar(&o.replay, "replay", "", "")
	fs.StringVar(&o.pcapng, "pcapng", "", "")
	fs.BoolVar(&o.stats, "stats", false, "")
	fs.BoolVar(&o.diff, "diff", false, "")
	fs.StringVar(&o.svg, "svg", "", "")
	fs.IntVar(&o.ringPages, "ring-pages", 0, "")
	var tcpPort, udpPort int
	fs.IntVar(&tcpPort, "tcp", 0, "")
	fs.IntVar(&udpPort, "udp", 0, "")
	var payload string
	fs.StringVar(&payload, "payload", "", "")
	fs.BoolVar(&o.listen, "listen", false, "")
	fs.BoolVar(&o.merge, "merge", false, "")
	var listenID int
	fs.IntVar(&listenID, "id", 0, "")
	fs.Var((*seconds)(&o.duration), "duration", "")
	args = splitShortValues(fs, args)
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				if _, err := fmt.Fprint(stdout, usageText); err != nil {
					return o, err
				}
				return o, errHelp
			}
			return o, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		// Flags may follow the target, as with ping.
		positional = append(positional, args[0])
		args = args[1:]
	}
	if o.diff {
		if len(positional) != 2 {
			return o, usageError{fmt.Sprintf("--diff takes two recordings, A.tpk B.tpk, not %d", len(positional))}
		}
		o.diffFiles = [2]string(positional)
		if o.replay != "" || o.record != "" || o.demo || o.check || o.stats || o.pcapng != "" {
			return o, usageError{"--diff excludes --replay, --record, --demo, --check, --stats and --pcapng"}
		}
		return o, nil
	}
	if o.merge {
		if len(positional) < 2 {
			return o, usageError{fmt.Sprintf("--merge takes two recordings or more, A.tpk B.tpk ..., not %d", len(positional))}
		}
		o.mergeFiles = positional
		if o.replay != "" || o.record != "" || o.demo || o.check || o.diff || o.listen {
			return o, usageError{"--merge excludes --replay, --record, --demo, --check, --diff and --listen"}
		}
		if o.pcapng != "" && (o.jsonOut || o.stats || o.svg != "") {
			return o, usageError{"--merge with --pcapng writes packets only: --json, --stats and --svg do not apply"}
		}
		return o, nil
	}
	var attachErr error
	o.attach, attachErr = probes.ParseAttachMode(attach)
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if o.listen || set["id"] || set["duration"] {
		return o, listenArgs(&o, set, positional, listenID, attachErr)
	}
	// A size or TTL given is held to what it says, 0 included: only one
	// not given means ping's default.
	var sizeErr error
	if set["s"] || set["size"] {
		sizeErr = checkSize(o.ping.Size, sizeFamilyIs6(o, positional))
	}
	switch {
	case attachErr != nil:
		return o, usageError{attachErr.Error()}
	case o.count < 1:
		return o, usageError{fmt.Sprintf("--count must be at least 1, not %d", o.count)}
	case o.interval < 0 || o.interval > maxWait:
		return o, usageError{fmt.Sprintf("--interval must be between 0 and %s", stats.FormatDuration(maxWait))}
	case o.timeout <= 0 || o.timeout > maxWait:
		return o, usageError{fmt.Sprintf("--timeout must be more than 0 and at most %s", stats.FormatDuration(maxWait))}
	case o.only4 && o.only6:
		return o, usageError{"-4 and -6 exclude each other"}
	case set["tcp"] && (tcpPort < 1 || tcpPort > 65535):
		return o, usageError{fmt.Sprintf("--tcp takes a port from 1 to 65535, not %d", tcpPort)}
	case set["udp"] && (udpPort < 1 || udpPort > 65535):
		return o, usageError{fmt.Sprintf("--udp takes a port from 1 to 65535, not %d", udpPort)}
	case set["tcp"] && set["udp"]:
		return o, usageError{"--tcp and --udp exclude each other"}
	case set["tcp"] && (set["s"] || set["size"]):
		return o, usageError{"--size is an echo's payload: a --tcp probe is a bare SYN"}
	case set["udp"] && (set["s"] || set["size"]):
		return o, usageError{"--size is an echo's payload: give a --udp probe's with --payload"}
	case set["payload"] && !set["udp"]:
		return o, usageError{"--payload is a --udp probe's payload: use it with --udp PORT"}
	case (set["tcp"] || set["udp"]) && o.demo:
		return o, usageError{"--demo runs its own probes: not with --tcp or --udp"}
	case sizeErr != nil:
		return o, sizeErr
	case (set["t"] || set["ttl"]) && (o.ping.TTL < 1 || o.ping.TTL > 255):
		return o, usageError{fmt.Sprintf("--ttl must be between 1 and 255, not %d", o.ping.TTL)}
	case o.ping.PMTUDisc != "" && o.ping.PMTUDisc != "do" && o.ping.PMTUDisc != "dont" && o.ping.PMTUDisc != "want":
		return o, usageError{fmt.Sprintf("--pmtudisc takes do, dont or want, not %q", o.ping.PMTUDisc)}
	case mark > 0xffffffff:
		return o, usageError{fmt.Sprintf("--mark must fit in 32 bits, not %d", mark)}
	case o.netfilter != "auto" && o.netfilter != "kprobe" && o.netfilter != "nftrace" && o.netfilter != "off":
		return o, usageError{fmt.Sprintf("--netfilter takes auto, kprobe, nftrace or off, not %q", o.netfilter)}
	case o.ringPages < 0 || o.ringPages > maxRingPages || o.ringPages&(o.ringPages-1) != 0:
		return o, usageError{fmt.Sprintf("--ring-pages must be a power of two up to %d, not %d", maxRingPages, o.ringPages)}
	case o.pcapng != "" && o.replay == "":
		return o, usageError{"--pcapng exports recordings: use it with --replay FILE or --merge A.tpk B.tpk ..."}
	case (o.stats || o.svg != "") && (o.demo || o.check || o.pcapng != ""):
		return o, usageError{"--stats and --svg work with a target or --replay, not with --demo, --check or --pcapng"}
	case o.version && len(set) > 1:
		return o, usageError{"--version takes no other flag"}
	case (o.version || o.demo || o.check || o.replay != "") && len(positional) > 0:
		return o, usageError{"--version, --demo, --check and --replay take no target"}
	case o.demo && o.check:
		return o, usageError{"--demo and --check exclude each other"}
	case o.verbose && !o.check:
		return o, usageError{"--verbose goes with --check"}
	case (o.fromNetns != "" || len(o.netns) > 0) && (o.demo || o.check || o.replay != ""):
		return o, usageError{"--from-netns and --netns trace a live run: not with --demo, --check or --replay"}
	case o.verbose && o.jsonOut:
		return o, usageError{"--verbose lists the namespaces in the text of --check, not with --json"}
	case o.replay != "" && (o.demo || o.check):
		return o, usageError{"--replay excludes --demo and --check"}
	case !o.version && !o.demo && !o.check && o.replay == "" && len(positional) == 0:
		return o, usageError{"missing target"}
	case len(positional) > 1:
		return o, usageError{fmt.Sprintf("one target only, got %s", strings.Join(positional, " "))}
	}
	if err := refuseUnusedFlags(o, set); err != nil {
		return o, err
	}
	if len(positional) == 1 {
		o.target = positional[0]
	}
	o.ping.Mark = uint32(mark)
	switch {
	case set["tcp"]:
		o.proto, o.port = decode.ProtoTCP, uint16(tcpPort)
	case set["udp"]:
		o.proto, o.port = decode.ProtoUDP, uint16(udpPort)
	}
	if set["payload"] {
		b, err := decode.ParsePayload(payload, os.ReadFile)
		if err != nil {
			return o, usageError{fmt.Sprintf("--payload: %v", err)}
		}
		if len(b) > decode.MaxPayload-decode.MarkLen {
			return o, usageError{fmt.Sprintf("--payload: %d bytes, at most %d", len(b), decode.MaxPayload-decode.MarkLen)}
		}
		o.payload = b
	}
	if a, err := netip.ParseAddr(iface); err == nil {
		o.ping.Source = a.Unmap()
	} else {
		o.ping.Interface = iface
	}
	return o, nil
}

// maxPayload is the largest ICMP echo payload: what an IP packet without
// jumbo options holds after the 8-byte ICMP header. IPv4's 16-bit total
// length counts its 20-byte header; IPv6's payload length does not count
// its 40-byte one.
func maxPayload(v6 bool) int {
	if v6 {
		return 65535 - 8
	}
	return 65535 - 20 - 8
}

// checkSize refuses a --size the echo cannot carry: below ping.MinSize the
// request has no room for the cookie and the send time.
func checkSize(size int, v6 bool) error {
	if size < ping.MinSize || size > maxPayload(v6) {
		family := "IPv4"
		if v6 {
			family = "IPv6"
		}
		return usageError{fmt.Sprintf("--size must be between %d and %d for %s, not %d", ping.MinSize, maxPayload(v6), family, size)}
	}
	return nil
}

// sizeFamilyIs6 is the family whose bound --size is held to before the
// target is resolved: IPv6's, the larger, unless the family is already
// known to be IPv4 (-4, an IPv4 address, or --demo without -6, which
// sends IPv4 first); run holds a host name to its address's bound.
func sizeFamilyIs6(o options, positional []string) bool {
	switch {
	case o.only4:
		return false
	case o.only6:
		return true
	case o.demo:
		return false
	case len(positional) == 1:
		a, err := netip.ParseAddr(positional[0])
		return err != nil || !a.Unmap().Is4()
	}
	return true
}

// liveOnly are the flags that shape a live run: they mean nothing to
// --check or --replay.
var liveOnly = []string{"c", "count", "i", "interval", "W", "timeout", "s", "size", "t", "ttl", "M", "pmtudisc",
	"I", "interface", "m", "mark", "4", "6", "netfilter", "record", "from-netns", "netns", "ring-pages", "tcp", "udp", "payload"}

// refuseUnusedFlags refuses the flags that mean nothing in the chosen mode,
// rather than ignore them: --check --record x would otherwise exit 0 and
// write nothing.
func refuseUnusedFlags(o options, set map[string]bool) error {
	var mode string
	var unused []string
	switch {
	case o.listen:
		mode, unused = "--listen", listenUnused
	case o.version:
		return nil
	case o.check:
		mode, unused = "--check", slices.Concat(liveOnly, []string{"stats", "svg"})
	case o.replay != "" && o.pcapng != "":
		mode, unused = "--replay with --pcapng", slices.Concat(liveOnly, []string{"attach", "json", "stats", "svg"})
	case o.replay != "":
		mode, unused = "--replay", slices.Concat(liveOnly, []string{"attach"})
	default:
		return nil
	}
	for _, name := range unused {
		if set[name] {
			dash := "-"
			if len(name) > 1 {
				dash = "--"
			}
			return usageError{fmt.Sprintf("%s%s does not apply to %s", dash, name, mode)}
		}
	}
	return nil
}

// splitShortValues turns ping-style "-c3" into "-c", "3". A lowercase
// letter (or W) taking a number is split only when a number follows, so
// "-check", "-count", "-stats" or "-ttl 3" stay whole; -M and -I take words,
// and no flag name starts with an uppercase M or I. The value of a flag of
// fs ("-W -Inf") is never split.
func splitShortValues(fs *flag.FlagSet, args []string) []string {
	out := make([]string, 0, len(args))
	isValue := false
	for _, a := range args {
		if isValue {
			out, isValue = append(out, a), false
			continue
		}
		numeric := len(a) > 2 && strings.ContainsRune("ciWstm", rune(a[1])) && isDecimal(a[2:])
		word := len(a) > 2 && strings.ContainsRune("MI", rune(a[1])) && a[2] != '='
		if a != "" && a[0] == '-' && (numeric || word) {
			out = append(out, a[:2], a[2:])
			continue
		}
		isValue = takesValue(fs, a)
		out = append(out, a)
	}
	return out
}

// takesValue reports whether a is a flag of fs whose value is the next argument.
func takesValue(fs *flag.FlagSet, a string) bool {
	name := strings.TrimLeft(a, "-")
	if len(a)-len(name) < 1 || len(a)-len(name) > 2 || strings.Contains(name, "=") {
		return false
	}
	f := fs.Lookup(name)
	if f == nil {
		return false
	}
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return !ok || !b.IsBoolFlag()
}

// isDecimal reports whether s is digits with at most one decimal point.
func isDecimal(s string) bool {
	digits, points := 0, 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.':
			points++
		default:
			return false
		}
	}
	return digits > 0 && points <= 1
}

// seconds is a duration flag that also takes a plain number of seconds, as ping does.
type seconds time.Duration

func (s *seconds) String() string { return time.Duration(*s).String() }

func (s *seconds) Set(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err == nil {
		// NaN, Inf and huge values are refused before the conversion
		// could overflow into a wrong but valid duration.
		if math.IsNaN(f) || math.Abs(f) > maxWait.Seconds() {
			return fmt.Errorf("want at most %g seconds, not %q", maxWait.Seconds(), v)
		}
		*s = seconds(f * float64(time.Second))
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("want a duration such as 1s, 200ms or 0.5, not %q", v)
	}
	*s = seconds(d)
	return nil
}

func run(args []string, stdout, stderr io.Writer) (err error) {
	o, err := parseArgs(args, stdout)
	if err != nil {
		return err
	}
	if o.diff {
		return diffRuns(o, stdout, stderr)
	}
	if o.merge {
		return mergeRuns(o, stdout, stderr)
	}
	if o.version {
		return printVersion(stdout)
	}
	if o.replay != "" {
		return replay(o, stdout, stderr)
	}
	if o.check {
		return check(stdout, o.jsonOut, o.verbose, o.attach)
	}
	ro, err := newRunOutput(o, stdout)
	if err != nil {
		return err
	}
	defer ro.close()

	// Every signal that would end the process ends the run instead, so the
	// deferred cleanups run: a closed terminal (SIGHUP) or a closed pipe
	// (SIGPIPE: the write to stdout then fails with EPIPE) included.
	ctx, stop := signal.NotifyContext(context.Background(), stopSignals...)
	defer stop()
	var target netip.Addr
	if !o.demo && !o.listen {
		if target, err = resolve(ctx, net.DefaultResolver.LookupNetIP, o.target, o.only4, o.only6); err != nil {
			return err
		}
		if err := refuseNonUnicast(target); err != nil {
			return err
		}
		if o.ping.Size != 0 {
			if err := checkSize(o.ping.Size, target.Is6()); err != nil {
				return err
			}
		}
	}
	// The recording is opened once the input is known to be good, and
	// fails before anything is attached; its path is only written once
	// an echo is in it.
	var rec *outFile
	if o.record != "" {
		if rec, err = createOutFile(o.record); err != nil {
			return fmt.Errorf("record: %w", err)
		}
		defer func() { err = closeRecording(rec, err, stderr) }()
	}
	if o.demo {
		return runDemo(ctx, o, rec, ro.writer, stderr)
	}
	s, err := openSession(o, rec, ro.writer)
	if err != nil {
		return err
	}
	defer s.Close()
	if o.listen {
		if err := s.listen(ctx, o, stderr); err != nil {
			return err
		}
		return ro.finish()
	}
	if err := s.trace(ctx, target, o); err != nil && !errors.Is(err, errUnanswered) {
		return err
	} else if ferr := ro.finish(); ferr != nil {
		return ferr
	} else {
		return err
	}
}

// closeRecording closes the recording at the end of a run that ended with
// err: a failure to sync or close it fails the run; a run that recorded no
// echo says so, and leaves the path as it was.
func closeRecording(rec *outFile, err error, stderr io.Writer) error {
	cerr := rec.Close()
	switch {
	case errors.Is(cerr, errNotPublished):
		fmt.Fprintf(stderr, "tracepkt-perf: record: %v: no echo completed\n", cerr)
		return err
	case cerr != nil:
		return errors.Join(err, fmt.Errorf("record: %w", cerr))
	}
	return err
}

// stopSignals are the catchable signals whose default action ends a process.
var stopSignals = []os.Signal{
	syscall.SIGHUP, syscall.SIGINT, syscall.SIGQUIT, syscall.SIGPIPE, syscall.SIGALRM, syscall.SIGTERM,
	syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGXCPU, syscall.SIGXFSZ, syscall.SIGVTALRM,
}

// lookupFunc looks host up as net.Resolver.LookupNetIP does.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

// resolve turns TARGET into one address, preferring IPv4 like ping; a host
// name is looked up with lookup.
func resolve(ctx context.Context, lookup lookupFunc, target string, only4, only6 bool) (netip.Addr, error) {
	if a, err := netip.ParseAddr(target); err == nil {
		a = a.Unmap()
		if only4 && !a.Is4() {
			return netip.Addr{}, usageError{fmt.Sprintf("-4 given, but %s is not an IPv4 address", target)}
		}
		if only6 && !a.Is6() {
			return netip.Addr{}, usageError{fmt.Sprintf("-6 given, but %s is not an IPv6 address", target)}
		}
		return a, nil
	}
	if strings.ContainsAny(target, ":/") || strings.Trim(target, "0123456789.") == "" {
		return netip.Addr{}, usageError{fmt.Sprintf("malformed address %q", target)}
	}
	network := "ip"
	if only4 {
		network = "ip4"
	} else if only6 {
		network = "ip6"
	}
	addrs, err := lookup(ctx, network, target)
	if err != nil && ctx.Err() != nil {
		return netip.Addr{}, interruptedError{fmt.Sprintf("while resolving %s, before the first echo was sent", target)}
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("unknown host %s: %w", target, err)
	}
	for _, a := range addrs {
		if a.Unmap().Is4() {
			return a.Unmap(), nil
		}
	}
	return addrs[0], nil
}
