package pcapng

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

// pcapngHops are the records of the pcapng tests: an IPv4 echo, a lost
// notice, an IPv6 echo and a packet longer than the probes keep.
func pcapngHops() []decode.Record {
	v4, _ := testrecord.DemoEcho(4, 1)
	v6, _ := testrecord.DemoEcho(6, 2)
	recs := append(v4, decode.Record{CPU: 1, Lost: 2})
	recs = append(recs, v6...)
	big := testrecord.ICMPEchoSize(testrecord.Host6, testrecord.Ctr6, true, testrecord.EchoID, 3, 0, time.Unix(0, 0), 156)
	return append(recs, testrecord.HopRecord(3_000_000_000, 1, testrecord.CtrNetns, 2, "eth0", decode.ProbeNetifReceiveSkb, 0, big[:decode.PacketBytes]))
}

// testHeader is the header of the recording tests, which the section header
// describes.
func testHeader() tpk.Header {
	h := tpk.Header{ToolVersion: "v0.4.0-test", KernelRelease: "6.1.0-28-amd64", Hostname: "tracehost",
		BootID: "5b3cbe5e-2b4a-4f69-9c1e-0d6a4e1c0a7e", StartWall: testrecord.StartWall, StartKtime: testrecord.StartKtime}
	h.Args = []string{"tracepkt-perf", "--record", "incident.tpk", "172.31.250.2"}
	return h
}

func writePcapng(tb testing.TB, h *tpk.Header, s *decode.Snapshot, recs []decode.Record) []byte {
	tb.Helper()
	var buf bytes.Buffer
	p, err := NewWriter(&buf, h, s)
	if err != nil {
		tb.Fatal(err)
	}
	for i := range recs {
		if err := p.WriteRecord(&recs[i]); err != nil {
			tb.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

type pcapngBlock struct {
	typ  uint32
	body []byte // between the leading and the trailing total length
}

// parsePcapng splits a little-endian pcapng file into blocks, checking their lengths.
func parsePcapng(tb testing.TB, b []byte) []pcapngBlock {
	tb.Helper()
	var blocks []pcapngBlock
	for len(b) > 0 {
		if len(b) < 12 {
			tb.Fatalf("%d bytes after the last block", len(b))
		}
		typ, total := binary.LittleEndian.Uint32(b), int(binary.LittleEndian.Uint32(b[4:]))
		if total%4 != 0 || total < 12 || total > len(b) {
			tb.Fatalf("block %#x of total length %d, %d bytes left", typ, total, len(b))
		}
		if trailer := int(binary.LittleEndian.Uint32(b[total-4:])); trailer != total {
			tb.Fatalf("block %#x: total length %d, trailer %d", typ, total, trailer)
		}
		blocks = append(blocks, pcapngBlock{typ, b[8 : total-4]})
		b = b[total:]
	}
	return blocks
}

// pcapngOptions parses options up to opt_endofopt, which must end b.
func pcapngOptions(tb testing.TB, b []byte) map[uint16]string {
	tb.Helper()
	opts := map[uint16]string{}
	for {
		if len(b) < 4 {
			tb.Fatalf("options end without opt_endofopt")
		}
		code, n := binary.LittleEndian.Uint16(b), int(binary.LittleEndian.Uint16(b[2:]))
		if code == 0 {
			if n != 0 || len(b) != 4 {
				tb.Fatalf("opt_endofopt of length %d followed by %d bytes", n, len(b)-4)
			}
			return opts
		}
		padded := n + -n&3
		if 4+padded > len(b) {
			tb.Fatalf("option %d of %d bytes overruns its block", code, n)
		}
		opts[code] = string(b[4 : 4+n])
		b = b[4+padded:]
	}
}

func TestPcapng(t *testing.T) {
	h := testHeader()
	recs := pcapngHops()
	blocks := parsePcapng(t, writePcapng(t, &h, testrecord.Snapshot(), recs))

	shb := blocks[0]
	if shb.typ != pcapngSHB || binary.LittleEndian.Uint32(shb.body) != pcapngByteOrder ||
		binary.LittleEndian.Uint16(shb.body[4:]) != 1 || binary.LittleEndian.Uint16(shb.body[6:]) != 0 {
		t.Fatalf("section header % x", shb.body)
	}
	opts := pcapngOptions(t, shb.body[16:])
	wantComment := "recorded on tracehost (boot 5b3cbe5e-2b4a-4f69-9c1e-0d6a4e1c0a7e) at 2025-03-14T15:09:26.535897932Z: " +
		"tracepkt-perf --record incident.tpk 172.31.250.2"
	if opts[optShbUserApp] != "tracepkt-perf v0.4.0-test" || opts[optShbOS] != "Linux 6.1.0-28-amd64" || opts[optComment] != wantComment {
		t.Errorf("section header options %v", opts)
	}

	type iface struct{ name, desc string }
	var ifaces []iface
	var got []string
	for _, b := range blocks[1:] {
		switch b.typ {
		case pcapngIDB:
			if lt, snap := binary.LittleEndian.Uint16(b.body), binary.LittleEndian.Uint32(b.body[4:]); lt != linktypeRaw || snap != decode.PacketBytes {
				t.Errorf("interface with link type %d, snap length %d", lt, snap)
			}
			o := pcapngOptions(t, b.body[8:])
			if o[optIfTsresol] != "\x09" {
				t.Errorf("if_tsresol %q", o[optIfTsresol])
			}
			ifaces = append(ifaces, iface{o[optIfName], o[optIfDesc]})
		case pcapngEPB:
			le := binary.LittleEndian
			id, capLen, origLen := le.Uint32(b.body), int(le.Uint32(b.body[12:])), le.Uint32(b.body[16:])
			ts := uint64(le.Uint32(b.body[4:]))<<32 | uint64(le.Uint32(b.body[8:]))
			data := b.body[20 : 20+capLen]
			o := pcapngOptions(t, b.body[20+capLen+(-capLen&3):])
			if int(id) >= len(ifaces) {
				t.Fatalf("packet on interface %d of %d", id, len(ifaces))
			}
			got = append(got, fmt.Sprintf("%s|%s|%s|%d|%d|%d|% x|%q|%x",
				ifaces[id].name, ifaces[id].desc, time.Unix(0, int64(ts)).UTC().Format(time.RFC3339Nano),
				capLen, origLen, len(data), data[:min(len(data), 2)], o[optComment], o[optEpbFlags]))
		default:
			t.Errorf("unexpected block type %#x", b.typ)
		}
	}
	want := []string{
		"tpdemo0|netns 4026531833|2025-03-14T15:09:27.536900851Z|84|84|84|45 00|\"request out tpdemo0 (net_dev_queue) netns 4026531833\"|02000000",
		"tpdemoh|netns 4026531833|2025-03-14T15:09:27.536903951Z|84|84|84|45 00|\"request out tpdemoh (net_dev_queue) netns 4026531833\"|02000000",
		"eth0|netns 4026532400 (tpdemo0-1234)|2025-03-14T15:09:27.536910651Z|84|84|84|45 00|\"request in eth0 (netif_receive_skb) netns 4026532400\"|01000000",
		"eth0|netns 4026532400 (tpdemo0-1234)|2025-03-14T15:09:27.536921851Z|84|84|84|45 00|\"reply out eth0 (net_dev_queue) netns 4026532400\"|02000000",
		"tpdemoh|netns 4026531833|2025-03-14T15:09:27.536928351Z|84|84|84|45 00|\"reply in tpdemoh (netif_receive_skb) netns 4026531833\"|01000000",
		"tpdemo0|netns 4026531833|2025-03-14T15:09:27.536948851Z|84|84|84|45 00|\"reply in tpdemo0 (netif_receive_skb) netns 4026531833\"|01000000",
		"tpdemo0|netns 4026531833|2025-03-14T15:09:28.53689877Z|104|104|104|60 00|\"request out tpdemo0 (net_dev_queue) netns 4026531833\"|02000000",
		"tpdemoh|netns 4026531833|2025-03-14T15:09:28.53690187Z|104|104|104|60 00|\"request out tpdemoh (net_dev_queue) netns 4026531833\"|02000000",
		"eth0|netns 4026532400 (tpdemo0-1234)|2025-03-14T15:09:28.53690857Z|104|104|104|60 00|\"request in eth0 (netif_receive_skb) netns 4026532400\"|01000000",
		"eth0|netns 4026532400 (tpdemo0-1234)|2025-03-14T15:09:28.53691977Z|104|104|104|60 00|\"reply out eth0 (net_dev_queue) netns 4026532400\"|02000000",
		"tpdemoh|netns 4026531833|2025-03-14T15:09:28.53692627Z|104|104|104|60 00|\"reply in tpdemoh (netif_receive_skb) netns 4026531833\"|01000000",
		"tpdemo0|netns 4026531833|2025-03-14T15:09:28.53694677Z|104|104|104|60 00|\"reply in tpdemo0 (netif_receive_skb) netns 4026531833\"|01000000",
		"eth0|netns 4026532400 (tpdemo0-1234)|2025-03-14T15:09:29.534897932Z|128|204|128|60 00|\"request in eth0 (netif_receive_skb) netns 4026532400\"|01000000",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("packets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(ifaces) != 3 {
		t.Errorf("%d interfaces, want 3: %v", len(ifaces), ifaces)
	}
}

// TestPcapngWithoutHeader: without a header or snapshot, timestamps are the
// kernel's and interfaces are named by what the records say.
func TestPcapngWithoutHeader(t *testing.T) {
	r := testrecord.HopRecord(1_500_000_000, 1, 7, 42, "", decode.ProbeNetDevQueue, 0, testrecord.ICMPEcho(testrecord.Host4, testrecord.Ctr4, true, 1, 1, 1, time.Unix(0, 0)))
	r.CapLen = 2 // too short to read the IP length
	blocks := parsePcapng(t, writePcapng(t, nil, nil, []decode.Record{r}))
	if len(blocks) != 3 {
		t.Fatalf("%d blocks", len(blocks))
	}
	if o := pcapngOptions(t, blocks[0].body[16:]); len(o) != 0 {
		t.Errorf("section header options %v", o)
	}
	if o := pcapngOptions(t, blocks[1].body[8:]); o[optIfName] != "if42" || o[optIfDesc] != "netns 7" {
		t.Errorf("interface options %v", o)
	}
	le := binary.LittleEndian
	epb := blocks[2].body
	ts := uint64(le.Uint32(epb[4:]))<<32 | uint64(le.Uint32(epb[8:]))
	if ts != 1_500_000_000 || le.Uint32(epb[12:]) != 2 || le.Uint32(epb[16:]) != 2 {
		t.Errorf("packet at %d, captured %d of %d bytes", ts, le.Uint32(epb[12:]), le.Uint32(epb[16:]))
	}
}

// recording writes a recording of h, snap (when not nil), recs and out
// (when not nil) and returns a reader of it.
func recording(t *testing.T, h tpk.Header, snap *decode.Snapshot, recs []decode.Record, out *tpk.EchoOutcome) *tpk.Reader {
	t.Helper()
	var file bytes.Buffer
	w, err := tpk.NewWriter(&file, h)
	if err != nil {
		t.Fatal(err)
	}
	if snap != nil {
		if err := w.WriteSnapshot(snap); err != nil {
			t.Fatal(err)
		}
	}
	for i := range recs {
		if err := w.WriteRecord(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if out != nil {
		if err := w.WriteOutcome(out); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r, err := tpk.NewReader(&file)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestExportPcapng exports a recording: the same packets as writing its
// records, with the interfaces described by its snapshot.
func TestExportPcapng(t *testing.T) {
	h := testHeader()
	recs := pcapngHops()
	r := recording(t, h, testrecord.Snapshot(), recs, nil)
	var buf bytes.Buffer
	n, err := Export(&buf, r)
	if err != nil || n != len(recs)-1 {
		t.Fatalf("exported %d packets: %v", n, err)
	}
	if want := writePcapng(t, &h, testrecord.Snapshot(), recs); !bytes.Equal(buf.Bytes(), want) {
		t.Error("exporting the recording differs from writing its records")
	}
}

// requireTshark skips the test when tshark is missing, and fails it in CI.
func requireTshark(tb testing.TB) {
	tb.Helper()
	testenv.RequireCommands(tb, "tshark")
}

// tsharkFields has tshark read the pcapng file at path, checking IP, TCP
// and ICMP checksums and numbering TCP sequences as sent, and returns the
// fields of each packet, separated by "|", a line a packet.
func tsharkFields(t *testing.T, path string, fields ...string) string {
	t.Helper()
	args := []string{"-r", path, "-n", "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
		"-o", "tcp.relative_sequence_numbers:FALSE", "-T", "fields", "-E", "separator=|"}
	for _, f := range fields {
		args = append(args, "-e", f)
	}
	cmd := exec.Command("tshark", args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, stderr.String())
	}
	t.Logf("%s", out)
	return string(out)
}

// TestPcapngTshark has Wireshark read the export: every hop shows its echo
// request or reply, with valid checksums, on its interface, with its comment.
func TestPcapngTshark(t *testing.T) {
	requireTshark(t)
	h := testHeader()
	path := filepath.Join(t.TempDir(), "out.pcapng")
	if err := os.WriteFile(path, writePcapng(t, &h, testrecord.Snapshot(), pcapngHops()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := tsharkFields(t, path, "frame.interface_name", "frame.interface_description", "frame.time_epoch",
		"frame.len", "frame.cap_len", "frame.packet_flags_direction",
		"ip.checksum.status", "icmp.type", "icmp.checksum.status",
		"icmpv6.type", "icmpv6.checksum.status", "icmpv6.echo.sequence_number", "frame.comment")
	want := `tpdemo0|netns 4026531833|1741964967.536900851|84|84|0x00000002|1|8|1||||request out tpdemo0 (net_dev_queue) netns 4026531833
tpdemoh|netns 4026531833|1741964967.536903951|84|84|0x00000002|1|8|1||||request out tpdemoh (net_dev_queue) netns 4026531833
eth0|netns 4026532400 (tpdemo0-1234)|1741964967.536910651|84|84|0x00000001|1|8|1||||request in eth0 (netif_receive_skb) netns 4026532400
eth0|netns 4026532400 (tpdemo0-1234)|1741964967.536921851|84|84|0x00000002|1|0|1||||reply out eth0 (net_dev_queue) netns 4026532400
tpdemoh|netns 4026531833|1741964967.536928351|84|84|0x00000001|1|0|1||||reply in tpdemoh (netif_receive_skb) netns 4026531833
tpdemo0|netns 4026531833|1741964967.536948851|84|84|0x00000001|1|0|1||||reply in tpdemo0 (netif_receive_skb) netns 4026531833
tpdemo0|netns 4026531833|1741964968.536898770|104|104|0x00000002||||128|1|2|request out tpdemo0 (net_dev_queue) netns 4026531833
tpdemoh|netns 4026531833|1741964968.536901870|104|104|0x00000002||||128|1|2|request out tpdemoh (net_dev_queue) netns 4026531833
eth0|netns 4026532400 (tpdemo0-1234)|1741964968.536908570|104|104|0x00000001||||128|1|2|request in eth0 (netif_receive_skb) netns 4026532400
eth0|netns 4026532400 (tpdemo0-1234)|1741964968.536919770|104|104|0x00000002||||129|1|2|reply out eth0 (net_dev_queue) netns 4026532400
tpdemoh|netns 4026531833|1741964968.536926270|104|104|0x00000001||||129|1|2|reply in tpdemoh (netif_receive_skb) netns 4026531833
tpdemo0|netns 4026531833|1741964968.536946770|104|104|0x00000001||||129|1|2|reply in tpdemo0 (netif_receive_skb) netns 4026531833
eth0|netns 4026532400 (tpdemo0-1234)|1741964969.534897932|204|128|0x00000001||||128|2|3|request in eth0 (netif_receive_skb) netns 4026532400
`
	if out != want {
		t.Errorf("tshark read:\n%s\nwant:\n%s", out, want)
	}
}

func BenchmarkPcapng(b *testing.B) {
	h := testHeader()
	recs := pcapngHops()
	p, err := NewWriter(io.Discard, &h, testrecord.Snapshot())
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i := range recs {
			if err := p.WriteRecord(&recs[i]); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/packet")
}

// TestPcapngSkipsNetfilterRecords: a netfilter record has no packet to export.
func TestPcapngSkipsNetfilterRecords(t *testing.T) {
	recs, _ := testrecord.DemoEcho(4, 1)
	nf := recs[0]
	nf.Probe, nf.CapLen = decode.ProbeIptDoTable, 0
	blocks := parsePcapng(t, writePcapng(t, nil, nil, []decode.Record{nf, recs[0]}))
	if len(blocks) != 3 || blocks[1].typ != pcapngIDB || blocks[2].typ != pcapngEPB {
		t.Errorf("%d blocks, want a section header, an interface and one packet", len(blocks))
	}
}

// TestExportNetfilterInComments: a kprobe netfilter record is not a packet
// (its bytes are a table name and a verdict); its verdict goes into the
// comment of the packet it was about, as do an outcome's nftrace verdicts.
func TestExportNetfilterInComments(t *testing.T) {
	recs, target := testrecord.DemoEcho(4, 1)
	// ipt_do_table accepted the request on INPUT in the container.
	var in decode.Record
	for _, r := range recs {
		if r.IsRequest() && r.Netns == testrecord.CtrNetns {
			in = r
		}
	}
	nf := in
	nf.Time += 500
	nf.Probe, nf.CapLen, nf.Packet = decode.ProbeIptDoTable, 0, [decode.PacketBytes]byte{}
	nf.NF = decode.NFInfo{Verdict: 1, Hook: 1, Family: 2, Iif: in.Ifindex} // NF_ACCEPT at NF_INET_LOCAL_IN, NFPROTO_IPV4
	copy(nf.NF.Table[:], "filter")
	// nftables dropped nothing but saw the reply leave, by its rule.
	out := tpk.EchoOutcome{Outcome: decode.Outcome{Target: target, EchoID: testrecord.EchoID, Seq: 1, Replied: true}, Netfilter: []decode.NetfilterEvent{{
		Netns: testrecord.CtrNetns, Family: "inet", Table: "f", Chain: "out", Hook: decode.HookOutput, Type: decode.TraceRule,
		Verdict: "ACCEPT", RuleHandle: 4, Rule: "icmp type echo-reply accept", ICMPType: 0, EchoID: testrecord.EchoID, Seq: 1,
		Oif: 2, Src: testrecord.Ctr4, Dst: testrecord.Host4, Source: "nftrace"}}}

	r := recording(t, testHeader(), nil, append(recs, nf), &out)
	var buf bytes.Buffer
	n, err := Export(&buf, r)
	if err != nil || n != 6 {
		t.Fatalf("exported %d packets (%v), want the 6 hops", n, err)
	}
	var comments []string
	for _, b := range parsePcapng(t, buf.Bytes()) {
		if b.typ != pcapngEPB {
			continue
		}
		capLen := int(binary.LittleEndian.Uint32(b.body[12:]))
		if data := b.body[20 : 20+capLen]; data[0]>>4 != 4 {
			t.Errorf("a packet that is not IPv4: % x", data[:min(len(data), 8)])
		}
		comments = append(comments, pcapngOptions(t, b.body[20+capLen+(-capLen&3):])[optComment])
	}
	want := []string{
		"request out tpdemo0 (net_dev_queue) netns 4026531833",
		"request out tpdemoh (net_dev_queue) netns 4026531833",
		"request in eth0 (netif_receive_skb) netns 4026532400; netfilter filter.INPUT ACCEPT",
		"reply out eth0 (net_dev_queue) netns 4026532400; netfilter f.out ACCEPT (rule 4: icmp type echo-reply accept)",
		"reply in tpdemoh (netif_receive_skb) netns 4026531833",
		"reply in tpdemo0 (netif_receive_skb) netns 4026531833",
	}
	if strings.Join(comments, "\n") != strings.Join(want, "\n") {
		t.Errorf("comments:\n%s\nwant:\n%s", strings.Join(comments, "\n"), strings.Join(want, "\n"))
	}
}

// tcpHops are the records of the TCP tests: a probe to an open port over
// IPv4 (SYN, SYN-ACK, the prober's RST), one to a closed port over IPv6
// (SYN, RST), and an ICMP error quoting a SYN.
func tcpHops() []decode.Record {
	open, _ := testrecord.DemoTCP(4, 1, true)
	closed, _ := testrecord.DemoTCP(6, 2, false)
	unreach := testrecord.HopRecord(3_000_000_000, 1, testrecord.CtrNetns, 2, "eth0", decode.ProbeNetDevQueue, 0,
		testrecord.ICMPEcho(testrecord.Ctr4, testrecord.Host4, false, 0, 0, 0, time.Unix(0, 0)))
	unreach.ICMPType, unreach.Proto = 3, decode.ProtoTCP
	return append(append(open, closed...), unreach)
}

// TestPcapngTCP: a TCP probe's packets are exported as the IP packets they
// are, each named by what it is in its comment.
func TestPcapngTCP(t *testing.T) {
	recs := tcpHops()
	var got []string
	for _, b := range parsePcapng(t, writePcapng(t, nil, testrecord.Snapshot(), recs)) {
		if b.typ == pcapngIDB {
			if lt := binary.LittleEndian.Uint16(b.body); lt != linktypeRaw {
				t.Errorf("interface of link type %d", lt)
			}
		}
		if b.typ != pcapngEPB {
			continue
		}
		capLen := int(binary.LittleEndian.Uint32(b.body[12:]))
		data := b.body[20 : 20+capLen]
		got = append(got, fmt.Sprintf("%d % x %s", capLen, data[:1], pcapngOptions(t, b.body[20+capLen+(-capLen&3):])[optComment]))
	}
	want := []string{
		"40 45 syn out tpdemo0 (net_dev_queue) netns 4026531833",
		"40 45 syn out tpdemoh (net_dev_queue) netns 4026531833",
		"40 45 syn in eth0 (netif_receive_skb) netns 4026532400",
		"40 45 syn-ack out eth0 (net_dev_queue) netns 4026532400",
		"40 45 syn-ack in tpdemoh (netif_receive_skb) netns 4026531833",
		"40 45 syn-ack in tpdemo0 (netif_receive_skb) netns 4026531833",
		"40 45 rst out tpdemo0 (net_dev_queue) netns 4026531833",
		"40 45 rst out tpdemoh (net_dev_queue) netns 4026531833",
		"40 45 rst in eth0 (netif_receive_skb) netns 4026532400",
		"60 60 syn out tpdemo0 (net_dev_queue) netns 4026531833",
		"60 60 syn out tpdemoh (net_dev_queue) netns 4026531833",
		"60 60 syn in eth0 (netif_receive_skb) netns 4026532400",
		"60 60 rst out eth0 (net_dev_queue) netns 4026532400",
		"60 60 rst in tpdemoh (netif_receive_skb) netns 4026531833",
		"60 60 rst in tpdemo0 (netif_receive_skb) netns 4026531833",
		"84 45 unreachable out eth0 (net_dev_queue) netns 4026532400",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("packets:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestPcapngTCPTshark has Wireshark read a TCP probe's packets: TCP, with
// valid checksums, the ports and flags they were sent with.
func TestPcapngTCPTshark(t *testing.T) {
	requireTshark(t)
	open, _ := testrecord.DemoTCP(4, 1, true)
	closed, _ := testrecord.DemoTCP(6, 2, false)
	path := filepath.Join(t.TempDir(), "tcp.pcapng")
	if err := os.WriteFile(path, writePcapng(t, nil, nil, append(open, closed...)), 0o644); err != nil {
		t.Fatal(err)
	}
	out := tsharkFields(t, path, "frame.interface_name", "frame.protocols", "ip.checksum.status", "tcp.srcport", "tcp.dstport",
		"tcp.flags", "tcp.seq", "tcp.ack", "tcp.checksum.status", "frame.comment")
	// Probe 1's ISN is the mark's cookie 0x5eed0000 + 2; the answers
	// acknowledge ISN+1 and the prober's RST has it as its sequence number.
	want := `tpdemo0|raw:ip:tcp|1|40001|8080|0x0002|1592590338|0|1|syn out tpdemo0 (net_dev_queue) netns 4026531833
tpdemoh|raw:ip:tcp|1|40001|8080|0x0002|1592590338|0|1|syn out tpdemoh (net_dev_queue) netns 4026531833
eth0|raw:ip:tcp|1|40001|8080|0x0002|1592590338|0|1|syn in eth0 (netif_receive_skb) netns 4026532400
eth0|raw:ip:tcp|1|8080|40001|0x0012|2050686977|1592590339|1|syn-ack out eth0 (net_dev_queue) netns 4026532400
tpdemoh|raw:ip:tcp|1|8080|40001|0x0012|2050686977|1592590339|1|syn-ack in tpdemoh (netif_receive_skb) netns 4026531833
tpdemo0|raw:ip:tcp|1|8080|40001|0x0012|2050686977|1592590339|1|syn-ack in tpdemo0 (netif_receive_skb) netns 4026531833
tpdemo0|raw:ip:tcp|1|40001|8080|0x0004|1592590339|0|1|rst out tpdemo0 (net_dev_queue) netns 4026531833
tpdemoh|raw:ip:tcp|1|40001|8080|0x0004|1592590339|0|1|rst out tpdemoh (net_dev_queue) netns 4026531833
eth0|raw:ip:tcp|1|40001|8080|0x0004|1592590339|0|1|rst in eth0 (netif_receive_skb) netns 4026532400
tpdemo0|raw:ipv6:tcp||40002|8080|0x0002|1592590340|0|1|syn out tpdemo0 (net_dev_queue) netns 4026531833
tpdemoh|raw:ipv6:tcp||40002|8080|0x0002|1592590340|0|1|syn out tpdemoh (net_dev_queue) netns 4026531833
eth0|raw:ipv6:tcp||40002|8080|0x0002|1592590340|0|1|syn in eth0 (netif_receive_skb) netns 4026532400
eth0|raw:ipv6:tcp||8080|40002|0x0014|0|1592590341|1|rst out eth0 (net_dev_queue) netns 4026532400
tpdemoh|raw:ipv6:tcp||8080|40002|0x0014|0|1592590341|1|rst in tpdemoh (netif_receive_skb) netns 4026531833
tpdemo0|raw:ipv6:tcp||8080|40002|0x0014|0|1592590341|1|rst in tpdemo0 (netif_receive_skb) netns 4026531833
`
	if out != want {
		t.Errorf("tshark read:\n%s\nwant:\n%s", out, want)
	}
}

// TestExportPcapngTCP exports a recording of TCP probes (version 3): the
// same packets as writing their records.
func TestExportPcapngTCP(t *testing.T) {
	h := testHeader()
	h.Proto = decode.ProtoTCP
	recs, o := testrecord.DemoTCP(4, 1, true)
	r := recording(t, h, testrecord.Snapshot(), recs, &tpk.EchoOutcome{Outcome: o})
	var buf bytes.Buffer
	n, err := Export(&buf, r)
	if err != nil || n != len(recs) {
		t.Fatalf("exported %d packets: %v, want %d", n, err, len(recs))
	}
	if want := writePcapng(t, &h, testrecord.Snapshot(), recs); !bytes.Equal(buf.Bytes(), want) {
		t.Error("exporting the recording differs from writing its records")
	}
}
