package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

// demoRecording returns a recording of n echoes of the demo topology, IPv4,
// written as a live run writes them: the header block, then one block per
// echo, the snapshot in the first.
func demoRecording(tb testing.TB, n int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, err := tpk.NewWriter(&buf, tpk.Header{ToolVersion: version, StartWall: testrecord.StartWall,
		StartKtime: testrecord.StartKtime, Args: []string{"tracepkt-perf", testrecord.Ctr4.String()}})
	if err != nil {
		tb.Fatal(err)
	}
	if err := w.WriteSnapshot(testrecord.Snapshot()); err != nil {
		tb.Fatal(err)
	}
	for k := range n {
		seq := uint16(k + 1)
		recs, target := testrecord.DemoEcho(4, seq)
		shift := uint64(k+1-int(seq)) * uint64(time.Second) // whole wraps of seq
		for i := range recs {
			if recs[i].Lost == 0 {
				recs[i].Time += shift
			}
		}
		out := tpk.EchoOutcome{Outcome: decode.Outcome{Target: target, EchoID: testrecord.EchoID, Seq: seq,
			Replied: true, RTT: 48 * time.Microsecond, Timeout: time.Second}}
		if err := w.WriteEcho(recs, &out); err != nil {
			tb.Fatal(err)
		}
	}
	return buf.Bytes()
}

// tpkBlocks splits a recording into its preamble and its blocks.
func tpkBlocks(tb testing.TB, data []byte) (preamble []byte, blocks [][]byte) {
	tb.Helper()
	const preambleLen, blockHdrLen = 10, 8
	preamble, data = data[:preambleLen], data[preambleLen:]
	for len(data) > 0 {
		n := blockHdrLen + int(binary.LittleEndian.Uint32(data))
		blocks, data = append(blocks, data[:n]), data[n:]
	}
	return preamble, blocks
}

// TestReplayBlockSequence: a five-echo recording with the second echo's block
// left out, or the third's repeated, keeps every checksum; each mode that reads
// it says which block is missing or repeated and exits 2, instead of showing
// the later echoes decoded against the wrong records.
func TestReplayBlockSequence(t *testing.T) {
	preamble, blocks := tpkBlocks(t, demoRecording(t, 5))
	if len(blocks) != 6 {
		t.Fatalf("%d blocks, want the header's and one per echo", len(blocks))
	}
	dir := t.TempDir()
	good := filepath.Join(dir, "good.tpk")
	if err := os.WriteFile(good, bytes.Join(append([][]byte{preamble}, blocks...), nil), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		order []int
		want  string
	}{
		{"removed", []int{0, 1, 3, 4, 5}, "block 2 is missing or out of order: this is block 3"},
		{"repeated", []int{0, 1, 2, 3, 3, 4, 5}, "block 3 again, after block 3"},
	} {
		file := filepath.Join(dir, c.name+".tpk")
		parts := [][]byte{preamble}
		for _, i := range c.order {
			parts = append(parts, blocks[i])
		}
		if err := os.WriteFile(file, bytes.Join(parts, nil), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, mode := range [][]string{
			{"--replay", file},
			{"--replay", file, "--json"},
			{"--replay", file, "--stats"},
			{"--replay", file, "--svg", filepath.Join(dir, "out.svg")},
			{"--replay", file, "--pcapng", filepath.Join(dir, "out.pcapng")},
			{"--diff", good, file},
			{"--diff", file, good},
		} {
			res := runTool(t, nil, mode...)
			want := "tracepkt-perf: replay " + file + ": block at offset "
			if res.code != 2 || !strings.HasPrefix(res.stderr, want) || !strings.Contains(res.stderr, c.want) ||
				strings.Count(res.stderr, "\n") != 1 {
				t.Errorf("%s: %v: exit %d, stderr %q; want exit 2 and one line %q...%q", c.name, mode, res.code, res.stderr, want, c.want)
			}
		}
	}
}

// A two-machine echo, each machine on its own kernel clock: node-a sends
// from its root namespace; node-b's clock reads theta more, and its wall
// clock 3ms more than node-a's; each way takes 40µs on the wire, and 25µs
// pass in node-b, through its root namespace (the same inode as node-a's,
// as init_net's often is) to pod web-2.
const (
	theta    = 5_000_000_000
	a1       = 2_000_000
	wire     = 40_000
	b1       = a1 + wire + theta
	b2       = b1 + 25_000
	a2       = b2 - theta + wire
	podNetns = 4026532400
)

// writeMachine writes a recording of host, boot id boot, whose kernel
// clock started at ktime when its wall clock read wall, holding snap and
// one echo: recs and out.
func writeMachine(t *testing.T, path, host, boot string, ktime uint64, wall time.Time, caps []string, snap *decode.Snapshot, recs []decode.Record, out decode.Outcome) {
	t.Helper()
	var b bytes.Buffer
	w, err := tpk.NewWriter(&b, tpk.Header{ToolVersion: "test", Hostname: host, BootID: boot, StartKtime: ktime, StartWall: wall, Capabilities: caps})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteEcho(recs, &tpk.EchoOutcome{Outcome: out}); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// twoMachines writes node-a's run and node-b's listener of one echo to dir.
func twoMachines(t *testing.T, dir string) (string, string) {
	t.Helper()
	src, dst := testrecord.Host4, testrecord.Ctr4
	req := testrecord.ICMPEcho(src, dst, true, testrecord.EchoID, 1, 1, testrecord.StartWall)
	rep := testrecord.ICMPEcho(dst, src, false, testrecord.EchoID, 1, 2, testrecord.StartWall)
	root := uint32(testrecord.RootNetns)
	hop := func(ts uint64, netns, ifindex uint32, ifname string, p decode.Probe, pkt []byte) decode.Record {
		return testrecord.HopRecord(ts, 0, netns, ifindex, ifname, p, 0, pkt)
	}
	a := filepath.Join(dir, "node-a.tpk")
	writeMachine(t, a, "node-a", "boot-a", testrecord.StartKtime, testrecord.StartWall, nil,
		&decode.Snapshot{Namespaces: []decode.Namespace{{Inode: root, Interfaces: []decode.Interface{{Ifindex: 2, Name: "eth0", Kind: "veth"}}}}},
		[]decode.Record{hop(a1, root, 2, "eth0", decode.ProbeNetDevQueue, req), hop(a2, root, 2, "eth0", decode.ProbeNetifReceiveSkb, rep)},
		decode.Outcome{Target: dst, EchoID: testrecord.EchoID, Seq: 1, Replied: true, RTT: time.Duration(a2 - a1)})
	b := filepath.Join(dir, "node-b.tpk")
	writeMachine(t, b, "node-b", "boot-b", testrecord.StartKtime+theta, testrecord.StartWall.Add(3*time.Millisecond), []string{capListen},
		&decode.Snapshot{Namespaces: []decode.Namespace{
			{Inode: root, Interfaces: []decode.Interface{{Ifindex: 2, Name: "eth0", Kind: "veth"}, {Ifindex: 7, Name: "veth-web", Kind: "veth"}}},
			{Inode: podNetns, Names: []string{"web-2"}, Interfaces: []decode.Interface{{Ifindex: 2, Name: "eth0", Kind: "veth"}}},
		}},
		[]decode.Record{
			hop(b1, root, 2, "eth0", decode.ProbeNetifReceiveSkb, req), hop(b1+2_000, root, 7, "veth-web", decode.ProbeNetDevQueue, req),
			hop(b1+5_000, podNetns, 2, "eth0", decode.ProbeNetifReceiveSkb, req), hop(b1+20_000, podNetns, 2, "eth0", decode.ProbeNetDevQueue, rep),
			hop(b1+22_000, root, 7, "veth-web", decode.ProbeNetifReceiveSkb, rep), hop(b2, root, 2, "eth0", decode.ProbeNetDevQueue, rep),
		},
		decode.Outcome{Target: dst, EchoID: testrecord.EchoID, Seq: 1})
	return a, b
}

// TestMergeTwoMachines: a run's recording and another machine's listener's
// join into one journey: every row in the order the packet took, named by
// its machine (the two root namespaces kept apart though their inodes are
// the same), at times on node-a's clock (node-b's offset found from the
// crossings: theta, within half of the 80µs on the wire), and a line that
// gives node-b's wall clock against node-a's (3ms ahead, ±40µs). The files'
// order does not matter: the run is the reference.
func TestMergeTwoMachines(t *testing.T) {
	a, b := twoMachines(t, t.TempDir())
	root := uint64(testrecord.RootNetns)
	want := []string{
		"node-a " + row(root, "eth0", "out", "request"), "node-b " + row(root, "eth0", "in", "request"),
		"node-b " + row(root, "veth-web", "out", "request"), "node-b " + row(podNetns, "eth0", "in", "request"),
		"node-b " + row(podNetns, "eth0", "out", "reply"), "node-b " + row(root, "veth-web", "in", "reply"),
		"node-b " + row(root, "eth0", "out", "reply"), "node-a " + row(root, "eth0", "in", "reply"),
	}
	wantT := []int64{0, wire, wire + 2_000, wire + 5_000, wire + 20_000, wire + 22_000, wire + 25_000, a2 - a1}
	for _, files := range [][]string{{a, b}, {b, a}} {
		var out, errOut bytes.Buffer
		if err := run(append([]string{"--merge", "--json"}, files...), &out, &errOut); err != nil {
			t.Fatalf("--merge %v: %v %s", files, err, errOut.String())
		}
		e := decodeEchoes(t, out.String())[0]
		var got []string
		var gotT []int64
		for _, h := range e.Hops {
			got = append(got, h.Host+" "+row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
			gotT = append(gotT, h.TNs)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") || fmt.Sprint(gotT) != fmt.Sprint(wantT) {
			t.Errorf("--merge %v rows:\n%s\n%v\nwant:\n%s\n%v", files, strings.Join(got, "\n"), gotT, strings.Join(want, "\n"), wantT)
		}
		if e.Result != "reply" {
			t.Errorf("result %q, want reply", e.Result)
		}
	}
	var out bytes.Buffer
	if err := run([]string{"--merge", a, b}, &out, new(bytes.Buffer)); err != nil {
		t.Fatal(err)
	}
	// The picture names each namespace by its machine too.
	pic := filepath.Join(t.TempDir(), "merge.svg")
	if err := run([]string{"--merge", a, b, "--svg", pic}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile(pic)
	if err != nil {
		t.Fatal(err)
	}
	// One box per machine, in the order the echo met them, around exactly
	// its namespaces' boxes; inside, a namespace goes by its own name and
	// its inode on its machine.
	els := testenv.SVGElements(t, doc)
	span := func(e testenv.SVGElement) (float64, float64) {
		x, err1 := strconv.ParseFloat(e.Attrs["x"], 64)
		w, err2 := strconv.ParseFloat(e.Attrs["width"], 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("rect %v", e.Attrs)
		}
		return x, x + w
	}
	var hosts []string
	inside := map[string][]string{}
	for _, m := range testenv.Classed(els, "machine") {
		if m.Name != "rect" {
			continue
		}
		host := m.Attrs["data-host"]
		hosts = append(hosts, host)
		lo, hi := span(m)
		for _, b := range testenv.Classed(els, "netns") {
			if b.Name != "rect" {
				continue
			}
			if x0, x1 := span(b); x0 >= lo && x1 <= hi {
				inside[host] = append(inside[host], b.Attrs["data-netns"])
			}
		}
	}
	var labels []string
	for _, g := range testenv.Classed(els, "netns") {
		if g.Name == "g" {
			var texts []string
			for _, in := range g.Inner {
				if in.Name == "text" && in.Attrs["class"] == "" {
					texts = append(texts, strings.TrimSpace(in.Text))
				}
			}
			labels = append(labels, strings.Join(texts, " / "))
		}
	}
	wantInside := map[string][]string{"node-a": {"node-a: 4026531833"}, "node-b": {"node-b: 4026531833", "node-b: web-2"}}
	if fmt.Sprint(hosts) != "[node-a node-b]" || fmt.Sprint(inside) != fmt.Sprint(wantInside) {
		t.Errorf("--merge --svg: machines %v holding %v, want [node-a node-b] holding %v", hosts, inside, wantInside)
	}
	// (Each name twice: its title, then the name drawn, cut to its box.)
	if want := "[40265318334026531833 / unnamed namespa… 40265318334026531833 / unnamed namespace web-2web-2 / inode 4026532400]"; fmt.Sprint(labels) != want {
		t.Errorf("--merge --svg: namespace labels %q, want %s", labels, want)
	}
	wantLines(t, out.String(), "node-b: web-2 (4026532400)  eth0",
		"clock: node-b's wall clock is 3ms ahead of node-a's, ±40µs (from the crossings of seq 1)")

	// The packets, for Wireshark: one per row, in the rows' order, each
	// interface described by its machine and namespace as the table names
	// them, each time node-a's wall clock at the run's start plus the row's.
	pcap := filepath.Join(t.TempDir(), "merge.pcapng")
	var errOut bytes.Buffer
	if err := run([]string{"--merge", b, a, "--pcapng", pcap}, io.Discard, &errOut); err != nil || errOut.String() != "wrote 8 packets to "+pcap+"\n" {
		t.Fatalf("--merge --pcapng: %v, %q", err, errOut.String())
	}
	testenv.RequireCommands(t, "tshark")
	fields, err := exec.Command("tshark", "-r", pcap, "-T", "fields", "-E", "separator=|", "-e", "frame.interface_name", "-e", "frame.interface_description", "-e", "frame.time_epoch").Output()
	if err != nil {
		t.Fatalf("tshark: %v", err)
	}
	var cells []string
	for line := range strings.Lines(out.String()) {
		if f := strings.SplitN(line, "  ", 2); len(f) == 2 && strings.HasPrefix(f[0], "node-") {
			cells = append(cells, f[0])
		}
	}
	var got, wantPkts []string
	for i, line := range strings.Split(strings.TrimSpace(string(fields)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 3 || i >= len(want) || i >= len(cells) {
			t.Fatalf("tshark line %q: %d rows, %d table cells", line, len(want), len(cells))
		}
		sec, frac, _ := strings.Cut(f[2], ".")
		ns, err1 := strconv.ParseInt(sec, 10, 64)
		nsec, err2 := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("tshark time %q", f[2])
		}
		got = append(got, fmt.Sprintf("%s %s %d", f[1], f[0], ns*1e9+nsec-testrecord.StartWall.UnixNano()))
		wantPkts = append(wantPkts, fmt.Sprintf("%s %s %d", cells[i], strings.Fields(want[i])[2], a1+wantT[i]-testrecord.StartKtime))
	}
	if strings.Join(got, "\n") != strings.Join(wantPkts, "\n") {
		t.Errorf("--merge --pcapng packets (description, interface, ns after node-a's start):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantPkts, "\n"))
	}
	if !slices.Contains(cells, "node-b: web-2 (4026532400)") || !slices.Contains(cells, "node-a: 4026531833") {
		t.Errorf("table cells %q", cells)
	}
}

// TestMergeRefuses: recordings that cannot be joined are refused with one
// line and exit status 2: the same file twice, two runs that share no echo,
// a file that is not a recording, a missing file, and one recording alone.
func TestMergeRefuses(t *testing.T) {
	dir := t.TempDir()
	a, b := twoMachines(t, dir)
	other := filepath.Join(dir, "other.tpk")
	writeMachine(t, other, "node-c", "boot-c", testrecord.StartKtime, testrecord.StartWall, nil, testrecord.Snapshot(), nil,
		decode.Outcome{Target: testrecord.Ctr4, EchoID: testrecord.EchoID + 1, Seq: 1, Timeout: time.Second})
	junk := filepath.Join(dir, "junk.tpk")
	if err := os.WriteFile(junk, []byte("not a recording at all"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{a, a}, a + " and " + a + " are the same recording"},
		{[]string{a, b, other}, other + " shares no echo with " + a + ": recordings of unrelated runs"},
		{[]string{a, junk}, "merge " + junk + ": not a tracepkt-perf recording"},
		{[]string{a, filepath.Join(dir, "missing.tpk")}, "no such file or directory"},
		{[]string{a}, "--merge takes two recordings or more"},
	} {
		var out bytes.Buffer
		err := run(append([]string{"--merge"}, c.args...), &out, new(bytes.Buffer))
		code := exitCode(err, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") || out.Len() != 0 || code != 2 {
			t.Errorf("--merge %v: %v (exit %d), printed %q; want one line with %q, exit 2, nothing printed", c.args, err, code, out.String(), c.want)
		}
	}
}

// TestMergeDropOnTheFarSide: node-a's run saw its request leave and no
// reply; node-b's listener saw the request reach pod web-2 and a rule drop
// it there. The merged journey ends in that drop, named by node-b's
// machine, and only one way crossed: the clock line says so.
func TestMergeDropOnTheFarSide(t *testing.T) {
	dir := t.TempDir()
	src, dst := testrecord.Host4, testrecord.Ctr4
	req := testrecord.ICMPEcho(src, dst, true, testrecord.EchoID, 1, 1, testrecord.StartWall)
	root := uint32(testrecord.RootNetns)
	a := filepath.Join(dir, "node-a.tpk")
	writeMachine(t, a, "node-a", "boot-a", testrecord.StartKtime, testrecord.StartWall, nil,
		&decode.Snapshot{Namespaces: []decode.Namespace{{Inode: root, Interfaces: []decode.Interface{{Ifindex: 2, Name: "eth0", Kind: "veth"}}}}},
		[]decode.Record{testrecord.HopRecord(a1, 0, root, 2, "eth0", decode.ProbeNetDevQueue, 0, req)},
		decode.Outcome{Target: dst, EchoID: testrecord.EchoID, Seq: 1, Timeout: time.Second})
	b := filepath.Join(dir, "node-b.tpk")
	in := testrecord.HopRecord(b1, 0, podNetns, 2, "eth0", decode.ProbeNetifReceiveSkb, 0, req)
	drop := decode.Drop{Time: b1 + 9_000, Netns: podNetns, Ifindex: 2, Ifname: "eth0", Family: 4, ICMPType: 8, Src: src, Dst: dst,
		Reason: "NETFILTER_DROP", Location: "nft_do_chain+0x46f", In: true}
	writeMachine(t, b, "node-b", "boot-b", testrecord.StartKtime+theta, testrecord.StartWall, []string{capListen},
		&decode.Snapshot{Namespaces: []decode.Namespace{{Inode: podNetns, Names: []string{"web-2"}, Interfaces: []decode.Interface{{Ifindex: 2, Name: "eth0", Kind: "veth"}}}}},
		[]decode.Record{in}, decode.Outcome{Target: dst, EchoID: testrecord.EchoID, Seq: 1, Drop: &drop})
	var out bytes.Buffer
	err := run([]string{"--merge", b, a}, &out, io.Discard)
	if exitCode(err, io.Discard) != 1 {
		t.Errorf("--merge of an echo without a reply: %v, want exit 1", err)
	}
	wantLines(t, out.String(), "dropped in netns node-b: web-2 (4026532400) after eth0: NETFILTER_DROP (nft_do_chain+0x46f)",
		"clock: node-b's rows placed right after the request left node-a (seq 1): no reply crossed back, so its wall clock is only known to be at most 40µs ahead of node-a's")
}

// TestMergeDropOnTheNearSide: node-a's run was dropped on node-a, before
// its request could leave; node-b's listener, listening from before the
// run began, kept another run's echo and none of this one's. The merge is
// node-a's journey and drop, and says that node-b saw none of it. A
// listener that began after the run, or a run, sharing no echo is still
// refused.
func TestMergeDropOnTheNearSide(t *testing.T) {
	dir := t.TempDir()
	src, dst := testrecord.Host4, testrecord.Ctr4
	req := testrecord.ICMPEcho(src, dst, true, testrecord.EchoID, 1, 1, testrecord.StartWall)
	root := uint32(testrecord.RootNetns)
	snap := &decode.Snapshot{Namespaces: []decode.Namespace{{Inode: root, Interfaces: []decode.Interface{{Ifindex: 2, Name: "eth0", Kind: "veth"}}}}}
	a := filepath.Join(dir, "node-a.tpk")
	drop := decode.Drop{Time: a1 + 3_000, Netns: root, Ifindex: 2, Ifname: "eth0", Family: 4, ICMPType: 8, Src: src, Dst: dst,
		Reason: "NETFILTER_DROP", Location: "nft_do_chain+0x46f", In: true}
	writeMachine(t, a, "node-a", "boot-a", testrecord.StartKtime, testrecord.StartWall, nil, snap,
		[]decode.Record{testrecord.HopRecord(a1, 0, root, 2, "eth0", decode.ProbeNetifReceiveSkb, 0, req)},
		decode.Outcome{Target: dst, EchoID: testrecord.EchoID, Seq: 1, Timeout: time.Second, Drop: &drop})
	listener := func(name string, wall time.Time) string {
		other := testrecord.ICMPEcho(src, dst, true, testrecord.EchoID+1, 1, 1, testrecord.StartWall)
		path := filepath.Join(dir, name)
		writeMachine(t, path, "node-b", "boot-b", testrecord.StartKtime+theta, wall, []string{capListen}, snap,
			[]decode.Record{testrecord.HopRecord(b1, 0, root, 2, "eth0", decode.ProbeNetifReceiveSkb, 0, other)},
			decode.Outcome{Target: dst, EchoID: testrecord.EchoID + 1, Seq: 1})
		return path
	}
	before, after := listener("before.tpk", testrecord.StartWall.Add(-time.Minute)), listener("after.tpk", testrecord.StartWall.Add(time.Minute))
	var out bytes.Buffer
	err := run([]string{"--merge", before, a}, &out, io.Discard)
	if exitCode(err, io.Discard) != 1 {
		t.Errorf("--merge of an echo dropped on node-a: %v, want exit 1", err)
	}
	wantLines(t, out.String(), "dropped in netns node-a: 4026531833 after eth0: NETFILTER_DROP",
		"node-b saw none of these echoes: "+before+" listened there from before the run began, and kept none of them")
	if strings.Contains(out.String(), "node-b: ") {
		t.Errorf("--merge shows rows of node-b, which saw none of the run:\n%s", out.String())
	}
	err = run([]string{"--merge", a, after}, new(bytes.Buffer), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "shares no echo with") {
		t.Errorf("--merge with a listener that began after the run: %v, want it refused", err)
	}
}

// wantLines checks that a merge's output out has each of lines.
func wantLines(t *testing.T, out string, lines ...string) {
	t.Helper()
	for _, line := range lines {
		if !strings.Contains(out, line) {
			t.Errorf("--merge output:\n%s\nwant a line with %q", out, line)
		}
	}
}
