package tpk

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testrecord"
)

func tcpHeader() Header {
	h := testHeader()
	h.Args = []string{"tracepkt-perf", "--record", "incident.tpk", "--tcp", "8080", "172.31.250.2"}
	h.Proto = decode.ProtoTCP
	return h
}

// demoTCP is testrecord.DemoTCP with its outcome in a recording's form.
func demoTCP(family int, seq uint16, open bool) ([]decode.Record, EchoOutcome) {
	recs, o := testrecord.DemoTCP(family, seq, open)
	return recs, EchoOutcome{Outcome: o}
}

// tcpLoss is what the live run keeps of a TCP probe that a firewall
// rejected: the SYN dropped by a netfilter rule on its way into the
// container, the ICMP error the REJECT sent quoting it, and that error's
// hops.
func tcpLoss(seq uint16) ([]decode.Record, EchoOutcome) {
	recs, out := demoTCP(4, seq, false)
	recs = recs[:3] // the SYN's hops
	unreach := testrecord.HopRecord(recs[2].Time+4000, 0xffff888012f40a00, testrecord.CtrNetns, 2, "eth0", decode.ProbeNetDevQueue, 1,
		testrecord.ICMPEcho(testrecord.Ctr4, testrecord.Host4, false, 0, 0, 0, time.Unix(0, 0)))
	unreach.Packet[20], unreach.ICMPType = 3, 3 // port unreachable, quoting the SYN (bytes not kept)
	unreach.Proto, unreach.EchoID, unreach.Seq = decode.ProtoTCP, testrecord.EchoID, seq
	recs = append(recs, unreach)
	out.Replied, out.RTT, out.TCPFlags, out.From = false, 0, 0, netip.Addr{}
	out.Error = &decode.ICMPError{Family: 4, Type: 3, Code: 3, From: testrecord.Ctr4}
	out.Drop = &decode.Drop{Time: recs[2].Time + 2000, Netns: testrecord.CtrNetns, Ifindex: 2, Ifname: "eth0", Family: 4,
		Proto: decode.ProtoTCP, TCPFlags: decode.TCPSyn, Src: testrecord.Host4, Dst: testrecord.Ctr4,
		Reason: "NETFILTER_DROP", Location: "nf_hook_slow+0xa0", In: true}
	out.Netfilter = []decode.NetfilterEvent{{Netns: testrecord.CtrNetns, Family: "inet", Table: "filter", Chain: "input",
		Hook: decode.HookInput, Type: decode.TraceRule, Verdict: "DROP", RuleHandle: 4, Rule: "tcp dport 8080 reject",
		Iif: 2, TraceID: 0x51, Proto: decode.ProtoTCP, TCPFlags: decode.TCPSyn, EchoID: testrecord.EchoID, Seq: seq,
		Src: testrecord.Host4, Dst: testrecord.Ctr4, Source: "nftrace"}}
	return recs, out
}

// tcpRecording is the recording of testdata/tcp-v3.tpk: TCP probes to an
// open and a closed port, over IPv4 and IPv6, one rejected, one whose
// answer never came, a netfilter record and a lost notice.
func tcpRecording(tb testing.TB) *recording {
	rec := newRecording(tb, tcpHeader())
	rec.snapshot(testrecord.Snapshot())
	rec.echo(demoTCP(4, 1, true))
	rec.echo(demoTCP(4, 2, false))
	recs, out := demoTCP(6, 3, true)
	rec.echo(append(recs, netfilterRecord(recs[2]), decode.Record{CPU: 1, Lost: 3}), out)
	rec.echo(tcpLoss(4))
	recs, out = demoTCP(6, 5, true)
	out.Replied, out.RTT, out.TCPFlags, out.From = false, 0, 0, netip.Addr{}
	rec.echo(recs[:3], out)
	return rec
}

// TestTCPRoundTrip: a TCP probe's records, outcome, netfilter events and
// drop come back as they went in, in a version 3 file whose header says so.
func TestTCPRoundTrip(t *testing.T) {
	rec := tcpRecording(t)
	data := rec.bytes()
	if v := binary.LittleEndian.Uint16(data[magicLen:]); v != 3 {
		t.Errorf("a run of TCP probes is written as version %d, want 3", v)
	}
	got, r, err := readAll(t, data)
	if err != io.EOF {
		t.Fatal(err)
	}
	checkHeader(t, r.Header(), tcpHeader())
	checkItems(t, got, rec.items)

	// The values themselves, not only that they came back: the SYN-ACK
	// entering the container's veth peer, and the rejected probe's outcome.
	synAck := got[1+4].rec
	if synAck.Proto != decode.ProtoTCP || synAck.TCPFlags != decode.TCPSyn|decode.TCPAck || synAck.PacketType() != "syn-ack" ||
		synAck.Seq != 1 || synAck.EchoID != testrecord.EchoID || synAck.ICMPType != 0 || synAck.IfName() != "tpdemoh" {
		t.Errorf("SYN-ACK %+v", synAck)
	}
	var rejected *EchoOutcome
	for i := range got {
		if got[i].kind == KindOutcome && got[i].out.Seq == 4 {
			rejected = &got[i].out
		}
	}
	want := decode.Outcome{Target: testrecord.Ctr4, EchoID: testrecord.EchoID, Seq: 4, Timeout: time.Second,
		Proto: decode.ProtoTCP, Port: 8080,
		Error: &decode.ICMPError{Family: 4, Type: 3, Code: 3, From: testrecord.Ctr4},
		Drop: &decode.Drop{Time: 4_002_011_800, Netns: testrecord.CtrNetns, Ifindex: 2, Ifname: "eth0", Family: 4,
			Proto: decode.ProtoTCP, TCPFlags: decode.TCPSyn, Src: testrecord.Host4, Dst: testrecord.Ctr4,
			Reason: "NETFILTER_DROP", Location: "nf_hook_slow+0xa0", In: true}}
	if rejected == nil || !reflect.DeepEqual(rejected.Outcome, want) {
		t.Fatalf("rejected probe's outcome\n got %+v\nwant %+v", rejected, want)
	}
	if e := rejected.Netfilter; len(e) != 1 || e[0].Proto != decode.ProtoTCP || e[0].TCPFlags != decode.TCPSyn || e[0].PacketType() != "syn" {
		t.Errorf("netfilter events %+v", e)
	}
}

// TestTCPReplayRebuildsJourneys: the journeys a replay rebuilds are the live
// run's, with their results and packet types.
func TestTCPReplayRebuildsJourneys(t *testing.T) {
	rec := tcpRecording(t)
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatal(err)
	}
	var (
		recs    []decode.Record
		results []string
		types   [][]string
	)
	for _, it := range got {
		switch it.kind {
		case KindRecord:
			recs = append(recs, it.rec)
		case KindOutcome:
			j := decode.NewJourney(it.out.Outcome, recs, it.out.Netfilter)
			results = append(results, j.Result())
			var ts []string
			for _, h := range j.Hops {
				ts = append(ts, h.PacketType())
			}
			types = append(types, ts)
			recs = recs[:0]
		}
	}
	wantResults := []string{"open", "closed", "open", "unreachable", "timeout"}
	wantTypes := [][]string{
		{"syn", "syn", "syn", "syn-ack", "syn-ack", "syn-ack", "rst", "rst", "rst"},
		{"syn", "syn", "syn", "rst", "rst", "rst"},
		{"syn", "syn", "syn", "syn-ack", "syn-ack", "syn-ack", "rst", "rst", "rst"},
		{"syn", "syn", "syn", "unreachable"},
		{"syn", "syn", "syn"},
	}
	if !reflect.DeepEqual(results, wantResults) || !reflect.DeepEqual(types, wantTypes) {
		t.Errorf("results %v, types %v\nwant %v, %v", results, types, wantResults, wantTypes)
	}
}

// TestEchoRunsStayVersion2: a run of echoes is written as version 2, which
// builds before TCP probes read.
func TestEchoRunsStayVersion2(t *testing.T) {
	data := smallRecording(t).bytes()
	if v := binary.LittleEndian.Uint16(data[magicLen:]); v != 2 {
		t.Errorf("a run of echoes is written as version %d, want 2", v)
	}
}

// TestWriterRefusesTCPInEchoRun: the writer of a run of echoes refuses
// whatever belongs to a TCP probe, which its version cannot hold (a
// version 2 reader would show it as an echo), and protocols the format
// does not know; the refused calls leave the recording intact.
func TestWriterRefusesTCPInEchoRun(t *testing.T) {
	if _, err := NewWriter(io.Discard, Header{Proto: 132}); err == nil {
		t.Error("NewWriter accepted a run of SCTP probes")
	}
	syn, _ := demoTCP(4, 1, true)
	rec := newRecording(t, testHeader())
	for name, r := range map[string]decode.Record{
		"a SYN":                       syn[0],
		"TCP flags":                   {Family: 4, TCPFlags: decode.TCPRst},
		"an ICMP error quoting a SYN": {Family: 4, ICMPType: 3, Proto: decode.ProtoTCP},
	} {
		if err := rec.w.WriteRecord(&r); !errors.Is(err, ErrTCPInEchoRun) {
			t.Errorf("WriteRecord of %s: %v, want ErrTCPInEchoRun", name, err)
		}
	}
	for name, o := range map[string]EchoOutcome{
		"a TCP outcome":       {Outcome: decode.Outcome{Proto: decode.ProtoTCP}},
		"a port":              {Outcome: decode.Outcome{Port: 80}},
		"an answer's address": {Outcome: decode.Outcome{From: testrecord.Ctr4}},
		"a probe's source":    {Outcome: decode.Outcome{Source: netip.AddrPortFrom(testrecord.Host4, 40001)}},
		"a TCP verdict":       {Netfilter: []decode.NetfilterEvent{{TCPFlags: decode.TCPSyn}}},
		"a TCP drop":          {Outcome: decode.Outcome{Drop: &decode.Drop{Proto: decode.ProtoTCP}}},
	} {
		if err := rec.w.WriteOutcome(&o); !errors.Is(err, ErrTCPInEchoRun) {
			t.Errorf("WriteOutcome of %s: %v, want ErrTCPInEchoRun", name, err)
		}
	}
	tcp := newRecording(t, tcpHeader())
	if err := tcp.w.WriteRecord(&decode.Record{Proto: 132}); err == nil {
		t.Error("WriteRecord accepted an SCTP packet")
	}
	if err := tcp.w.WriteOutcome(&EchoOutcome{Netfilter: []decode.NetfilterEvent{{Proto: 132}}}); err == nil {
		t.Error("WriteOutcome accepted a verdict on an SCTP packet")
	}
	rec.echo(demoEcho(4, 1))
	tcp.echo(demoTCP(4, 1, true))
	for _, r := range []*recording{rec, tcp} {
		got, _, err := readAll(t, r.bytes())
		if err != io.EOF {
			t.Fatal(err)
		}
		checkItems(t, got, r.items)
	}
}

// TestTCPCorruptFrames: what a version 3 reader refuses of a TCP probe's
// frames, and of TCP fields in a file of an older version.
func TestTCPCorruptFrames(t *testing.T) {
	_, out := demoTCP(4, 1, true)
	tcpOut := encodeOutcome(nil, &out, tcpVersion)
	_, lossOut := tcpLoss(2)
	loss := encodeOutcome(nil, &lossOut, tcpVersion)
	ev := appendNetfilter(nil, &lossOut.Netfilter[0], echoVersion) // up to Src and Dst
	nfEnd := bytes.Index(loss, ev) + len(ev)
	dropEnd := bytes.Index(loss, []byte("+0xa0")) + len("+0xa0") // after Location, before Proto
	withProto := func(b []byte, at int, p byte) []byte { b = bytes.Clone(b); b[at] = p; return b }
	for _, c := range []struct {
		name    string
		version uint16
		typ     uint64
		body    []byte
	}{
		{"record field of a later version", tcpVersion, frameRecords, binary.AppendUvarint(nil, fTCPFlags<<1)},
		{"record protocol SCTP", tcpVersion, frameRecords, []byte{0x80, 0x40, 132}}, // fProto
		{"record cut before its TCP flags", tcpVersion, frameRecords, []byte{0x80, 0x80, 0x01}},
		{"TCP outcome cut after its protocol", tcpVersion, frameOutcome, tcpOut[:len(tcpOut)-8]},
		{"TCP outcome cut after its port", tcpVersion, frameOutcome, tcpOut[:len(tcpOut)-6]},
		{"TCP outcome cut inside its address", tcpVersion, frameOutcome, tcpOut[:len(tcpOut)-2]},
		{"TCP outcome of protocol SCTP", tcpVersion, frameOutcome, withProto(tcpOut, len(tcpOut)-9, 132)},
		{"TCP outcome port past 65535", tcpVersion, frameOutcome,
			append(append(bytes.Clone(tcpOut[:len(tcpOut)-8]), 0x80, 0x80, 0x04), tcpOut[len(tcpOut)-6:]...)},
		{"verdict cut before its TCP fields", tcpVersion, frameOutcome, loss[:nfEnd]},
		{"verdict on protocol SCTP", tcpVersion, frameOutcome, withProto(loss, nfEnd, 132)},
		{"drop cut before its TCP flags", tcpVersion, frameOutcome, loss[:dropEnd+1]},
		{"drop of protocol SCTP", tcpVersion, frameOutcome, withProto(loss, dropEnd, 132)},
		{"TCP outcome in version 2", echoVersion, frameOutcome, encodeOutcome(nil, &out, echoVersion)},
		{"record protocol in version 2", echoVersion, frameRecords, []byte{0x80, 0x40, decode.ProtoTCP}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h, recs, o := testHeader(), []decode.Record(nil), EchoOutcome{}
			if c.version == tcpVersion {
				h = tcpHeader()
				recs, o = demoTCP(4, 1, false)
			} else {
				recs, o = demoEcho(4, 1)
			}
			rec := newRecording(t, h)
			rec.echo(recs, o)
			craft(rec.w, c.typ, c.body)
			rec.flush()
			got, _, err := readAll(t, rec.bytes())
			t.Log(err)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v, want ErrCorrupt", err)
			}
			checkItems(t, got, rec.items)
		})
	}
}

// TestTCPRunAsVersion2: a run of TCP probes whose file says version 2
// (every checksum holds: the version is outside the blocks) is refused at
// its header, not read as echoes.
func TestTCPRunAsVersion2(t *testing.T) {
	data := bytes.Clone(tcpRecording(t).bytes())
	data[magicLen] = 2
	if _, err := NewReader(bytes.NewReader(data)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("NewReader: %v, want ErrCorrupt", err)
	}
}

// TestTCPTruncation cuts a TCP recording at every byte, as TestTruncation
// does an echo recording.
func TestTCPTruncation(t *testing.T) {
	checkTruncations(t, tcpRecording(t))
}

// TestTCPSource: the source a TCP or UDP probe was sent from is appended
// after the TCP fields, so a version 3 reader that predates it reads the
// outcome as it did (it stops before it) and recordings without it keep
// their bytes; a source of no address with a port, or cut short, is
// corrupt.
func TestTCPSource(t *testing.T) {
	rec := newRecording(t, tcpHeader())
	recs, out := demoTCP(4, 1, true)
	without := encodeOutcome(nil, &out, tcpVersion)
	out.Source = netip.AddrPortFrom(testrecord.Host4, 40001)
	with := encodeOutcome(nil, &out, tcpVersion)
	if tail, ok := bytes.CutPrefix(with, without); !ok || !bytes.Equal(tail, append(appendAddr(nil, testrecord.Host4), 0xc1, 0xb8, 0x02)) {
		t.Errorf("outcome with a source\n%x\nis not the one without\n%x\nand the source after it", with, without)
	}
	rec.echo(recs, out)
	recs, out = demoTCP(6, 2, false)
	out.Source = netip.AddrPortFrom(testrecord.Host6, 40002)
	rec.echo(recs, out)
	got, _, err := readAll(t, rec.bytes())
	if err != io.EOF {
		t.Fatal(err)
	}
	checkItems(t, got, rec.items)

	for name, body := range map[string][]byte{
		"no address with a port": append(bytes.Clone(without), 0, 0x2a),
		"cut inside its address": with[:len(with)-4],
		"cut before its port":    with[:len(with)-3],
	} {
		rec := newRecording(t, tcpHeader())
		rec.echo(demoTCP(4, 1, false))
		craft(rec.w, frameOutcome, body)
		rec.flush()
		got, _, err := readAll(t, rec.bytes())
		if !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: error %v, want ErrCorrupt", name, err)
		}
		checkItems(t, got, rec.items)
	}
}
