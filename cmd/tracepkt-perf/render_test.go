package main

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("output differs from %s (go test -update rewrites it):\n%s", path, got)
	}
}

func record(ts uint64, netns, ifindex uint32, ifname string, p decode.Probe, icmpType uint8, src, dst string) decode.Record {
	r := decode.Record{
		Time: ts, Netns: netns, Ifindex: ifindex, Probe: p, Family: 4, ICMPType: icmpType,
		EchoID: 0x1234, Seq: 1, Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst), Len: 98, CPU: uint32(ts % 2),
	}
	copy(r.Ifname[:], ifname)
	return r
}

// bridgeJourney is a docker-like journey: bridge, veth, container and back.
func bridgeJourney() decode.Journey {
	const root, ctr = 4026531833, 4026532400
	out, in := decode.ProbeNetDevQueue, decode.ProbeNetifReceiveSkb
	return decode.Journey{
		Outcome: decode.Outcome{Target: netip.MustParseAddr("172.31.250.2"), EchoID: 0x1234, Seq: 1, Replied: true, RTT: 96300 * time.Nanosecond},
		Hops: []decode.Record{
			record(1000000, root, 9, "tpdemo0", out, 8, "172.31.250.1", "172.31.250.2"),
			record(1003100, root, 10, "tpdemoh", out, 8, "172.31.250.1", "172.31.250.2"),
			record(1009800, ctr, 2, "eth0", in, 8, "172.31.250.1", "172.31.250.2"),
			record(1021000, ctr, 2, "eth0", out, 0, "172.31.250.2", "172.31.250.1"),
			record(1027500, root, 10, "tpdemoh", in, 0, "172.31.250.2", "172.31.250.1"),
			record(1048000, root, 9, "tpdemo0", in, 0, "172.31.250.2", "172.31.250.1"),
		},
	}
}

func lostJourney() decode.Journey {
	j := bridgeJourney()
	j.Replied, j.RTT, j.Timeout, j.Lost = false, 0, time.Second, 12
	j.Hops = j.Hops[:2]
	return j
}

func nfRow(netns uint32, table, chain string, hook decode.Hook, typ decode.TraceType, verdict string, handle uint64, rule string, icmpType uint8, iif, oif uint32) decode.NetfilterEvent {
	src, dst := "172.31.250.1", "172.31.250.2"
	if icmpType == 0 {
		src, dst = dst, src
	}
	return decode.NetfilterEvent{Netns: netns, Family: "ip", Table: table, Chain: chain, Hook: hook, Type: typ, Verdict: verdict,
		RuleHandle: handle, Rule: rule, ICMPType: icmpType, EchoID: 0x1234, Seq: 1, Iif: iif, Oif: oif, Source: "nftrace",
		Src: netip.MustParseAddr(src), Dst: netip.MustParseAddr(dst)}
}

// netfilterJourney is bridgeJourney with iptables-nft chains on both sides.
func netfilterJourney() decode.Journey {
	const root, ctr = 4026531833, 4026532400
	j := bridgeJourney()
	j.Netfilter = []decode.NetfilterEvent{
		nfRow(root, "nat", "OUTPUT", decode.HookOutput, decode.TracePolicy, "ACCEPT", 0, "", 8, 0, 9),
		nfRow(root, "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "ACCEPT", 3, "ip daddr 172.31.250.0/24 accept", 8, 0, 9),
		nfRow(root, "nat", "POSTROUTING", decode.HookPostrouting, decode.TracePolicy, "ACCEPT", 0, "", 8, 0, 9),
		nfRow(ctr, "filter", "INPUT", decode.HookInput, decode.TracePolicy, "ACCEPT", 0, "", 8, 2, 0),
		nfRow(root, "filter", "INPUT", decode.HookInput, decode.TraceRule, "JUMP", 5, "jump ICMP", 0, 9, 0),
	}
	j.Netfilter[4].Target = "ICMP"
	return j
}

// droppedJourney ends at a FORWARD rule of a router namespace.
func droppedJourney() decode.Journey {
	const a, r = 4026532500, 4026532501
	j := decode.Journey{Outcome: decode.Outcome{Target: netip.MustParseAddr("172.31.250.2"), EchoID: 0x1234, Seq: 1, Timeout: time.Second},
		Hops: []decode.Record{
			record(1000000, a, 2, "eth0", decode.ProbeNetDevQueue, 8, "172.31.250.1", "172.31.250.2"),
			record(1004000, r, 2, "eth0", decode.ProbeNetifReceiveSkb, 8, "172.31.250.1", "172.31.250.2"),
		},
		Netfilter: []decode.NetfilterEvent{nfRow(r, "filt", "fwd", decode.HookForward, decode.TraceRule, "DROP", 7, "icmp type echo-request drop", 8, 2, 3)},
	}
	j.Netfilter[0].Family = "inet"
	return j
}

// noRouteJourney dies in a router without a route onward, which answers
// network unreachable: the drop with its reason, place and hint, and the error.
func noRouteJourney() decode.Journey {
	const a, r = 4026532500, 4026532400
	j := decode.Journey{
		Outcome: decode.Outcome{Target: netip.MustParseAddr("172.31.250.2"), EchoID: 0x1234, Seq: 1, Timeout: time.Second,
			Error: &decode.ICMPError{Family: 4, Type: 3, Code: 0, From: netip.MustParseAddr("172.31.250.254")},
			Drop: &decode.Drop{Time: 1010500, Netns: r, Ifindex: 2, Ifname: "eth0", Family: 4, ICMPType: 8, In: true,
				Src: netip.MustParseAddr("172.31.250.1"), Dst: netip.MustParseAddr("172.31.250.2"), Reason: "IP_INNOROUTES", Location: "ip_error+0x5c"},
			Hint: "route lookup in tpdemo0-1234 for 172.31.250.2: no route (network unreachable)"},
		Hops: []decode.Record{
			record(1000000, a, 2, "eth0", decode.ProbeNetDevQueue, 8, "172.31.250.1", "172.31.250.2"),
			record(1004000, r, 2, "eth0", decode.ProbeNetifReceiveSkb, 8, "172.31.250.1", "172.31.250.2"),
			record(1009000, r, 2, "eth0", decode.ProbeNetDevQueue, 3, "172.31.250.254", "172.31.250.1"),
			record(1013000, a, 2, "eth0", decode.ProbeNetifReceiveSkb, 3, "172.31.250.254", "172.31.250.1"),
		},
	}
	return j
}

// kprobeFirstJourney has a kprobe verdict before the first device hop: times
// count from it, and none is negative.
func kprobeFirstJourney() decode.Journey {
	j := droppedJourney()
	j.Netfilter = []decode.NetfilterEvent{nfRow(4026532500, "filter", "OUTPUT", decode.HookOutput, decode.TraceRule, "ACCEPT", 0, "", 8, 0, 2)}
	j.Netfilter[0].Time, j.Netfilter[0].Source = 993320, "kprobe"
	j.Drop = &decode.Drop{Time: 1006000, Netns: 4026532501, Ifindex: 2, Ifname: "eth0", Family: 4, ICMPType: 8, In: true,
		Src: netip.MustParseAddr("172.31.250.1"), Dst: netip.MustParseAddr("172.31.250.2"), Reason: "IP_INADDRERRORS", Location: "ip_error+0x3c"}
	j.Hint = "forwarding is off in 4026532501: net.ipv4.conf.eth0.forwarding = 0, so 172.31.250.2 arriving on eth0 is not routed on"
	return j
}

// replyLostJourney's reply was last seen on its way back.
func replyLostJourney() decode.Journey {
	j := bridgeJourney()
	j.Replied, j.RTT, j.Timeout, j.Seq = false, 0, time.Second, 4
	j.Hops = j.Hops[:5]
	j.Hint = "route lookup in 4026531833 for 172.31.250.1: local 172.31.250.1 dev lo"
	return j
}

// refusedJourney is a request this host refused to send: larger than the
// path MTU an earlier "too big" taught it.
func refusedJourney() decode.Journey {
	return decode.Journey{Outcome: decode.Outcome{Target: netip.MustParseAddr("fd00::9"), EchoID: 0x1234, Seq: 3, Timeout: time.Second,
		Error: &decode.ICMPError{Family: 6, Type: 2, MTU: 1280}}}
}

// troubledJourney is droppedJourney cut short by a signal, with netfilter
// trace messages lost and a failed rule lookup.
func troubledJourney() decode.Journey {
	j := droppedJourney()
	j.Interrupted, j.Timeout = true, 730*time.Millisecond
	j.Lost, j.NetfilterLost = 5, 2
	j.Notes = []string{"netfilter: list rules in 4026532501: nft: exit status 1: netfilter rows may be missing their hook or rule"}
	return j
}

// goldenContext names the host and the container's namespace and notes
// legacy tables, as a run on a kernel without kprobes would.
func goldenContext() *renderContext {
	rc := newRenderContext([]string{"probe:net:net_dev_queue", "netfilter:nftrace", "kprobes:no", "legacy-tables:filter,nat"})
	rc.setSnapshot(&decode.Snapshot{Namespaces: []decode.Namespace{
		{Inode: 4026532400, Names: []string{"docker/5c2a9d1e7f30"}, Owner: decode.Owner{
			Kind: "docker", ID: "3f4e8a1c2b9d0e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f", Name: "web-1", Pid: 1234, Comm: "nginx"}},
		{Inode: 4026531833, Owner: decode.Owner{Kind: "process", Name: "host", Pid: 1, Comm: "systemd"}},
	}})
	return rc
}

// A recording made before owners were recorded names namespaces after
// their bind mounts.
func TestNetnsCellBeforeOwners(t *testing.T) {
	rc := newRenderContext(nil)
	rc.setSnapshot(&decode.Snapshot{Namespaces: []decode.Namespace{{Inode: 4026532400, Names: []string{"tpdemo0-1234"}}, {Inode: 4026531833}}})
	if got, want := rc.netnsCell(4026532400), "tpdemo0-1234 (4026532400)"; got != want {
		t.Errorf("netnsCell = %q, want %q", got, want)
	}
	if got, want := rc.netnsCell(4026531833), "4026531833"; got != want {
		t.Errorf("netnsCell = %q, want %q", got, want)
	}
}

func TestTableGolden(t *testing.T) {
	var buf bytes.Buffer
	tw := newJourneyWriter(false, &buf, goldenContext())
	for _, j := range []decode.Journey{bridgeJourney(), lostJourney(), netfilterJourney(), droppedJourney(), noRouteJourney(), kprobeFirstJourney(), refusedJourney(), replyLostJourney(), troubledJourney(), {Outcome: decode.Outcome{Target: netip.MustParseAddr("fd00::9"), Seq: 2, Timeout: 2 * time.Second}}} {
		if err := tw.Journey(&j); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "table", buf.Bytes())
}

func TestJSONGolden(t *testing.T) {
	var buf bytes.Buffer
	w := newJourneyWriter(true, &buf, goldenContext())
	for _, j := range []decode.Journey{bridgeJourney(), lostJourney(), netfilterJourney(), droppedJourney(), noRouteJourney(), kprobeFirstJourney(), refusedJourney(), troubledJourney()} {
		if err := w.Journey(&j); err != nil {
			t.Fatal(err)
		}
	}
	golden(t, "json", buf.Bytes())
}
