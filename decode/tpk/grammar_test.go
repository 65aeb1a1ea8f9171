package tpk_test

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// TestHandBuiltBlock builds a recording byte by byte from the grammar
// written in format.go, frames.go and record.go, without the package's
// encoders, and reads it back: the written spec itself is tested, not only
// the code's agreement with itself.
func TestHandBuiltBlock(t *testing.T) {
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	sv := func(v int64) []byte { return binary.AppendVarint(nil, v) } // zigzag, as encoding/binary's varint
	str := func(s string) []byte { return append(uv(uint64(len(s))), s...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	frame := func(typ uint64, body []byte) []byte { return cat(uv(typ), uv(uint64(len(body))), body) }

	// header = ToolVersion KernelRelease Hostname BootID:string
	//          StartWall:(seconds:varint nanoseconds:uvarint) StartKtime:uvarint
	//          Args Capabilities:list(string)
	header := cat(str("v9"), str("6.18.0"), str("box"), str(""),
		sv(1_700_000_000), uv(5), uv(1000),
		uv(2), str("tracepkt-perf"), str("10.0.0.2"), uv(1), str("netfilter:off"))
	// record = mask:uvarint (never 0) then the fields of the set bits, in
	// bit order: fTime fIface fProbe fAddrs fType ... fFamily fEchoID fSeq.
	const fTime, fIface, fProbe, fAddrs, fType, fFamily, fEchoID, fSeq = 1 << 0, 1 << 1, 1 << 2, 1 << 3, 1 << 4, 1 << 9, 1 << 10, 1 << 11
	record := cat(uv(fTime|fIface|fProbe|fAddrs|fType|fFamily|fEchoID|fSeq),
		sv(50),                                         // fTime: delta from the header's StartKtime
		uv(0), uv(7), uv(2), []byte{4}, []byte("eth0"), // fIface: literal netns ifindex n Ifname[:n]
		uv(2),                                                 // fProbe: netif_receive_skb
		uv(0), []byte{4, 10, 0, 0, 1}, []byte{4, 10, 0, 0, 2}, // fAddrs: literal addr addr
		[]byte{8},          // fType: echo request
		[]byte{4},          // fFamily
		[]byte{0x12, 0x34}, // fEchoID: u16 big-endian
		sv(1),              // fSeq: delta from 0
	)
	// A second record: only its time differs from the first.
	again := cat(uv(fTime), sv(7))
	// outcome = Target:addr EchoID Seq:uvarint Replied:u8 RTT Timeout:varint ns
	outcome := cat([]byte{4, 10, 0, 0, 2}, uv(0x1234), uv(1), []byte{1}, sv(35_000), sv(int64(time.Second)))
	payload := cat(frame(1, header), frame(3, cat(record, again)), frame(4, outcome))

	// file = magic version:u16 block*; block = length:u32 crc:u32 payload,
	// crc the CRC-32C of the 4 length bytes, then the payload, and from
	// version 2 on payload = index:uvarint frame*, the first block's index 0.
	for version, payload := range map[byte][]byte{1: payload, 2: cat(uv(0), payload)} {
		length := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
		table := crc32.MakeTable(crc32.Castagnoli)
		crc := crc32.Update(crc32.Checksum(length, table), table, payload)
		file := cat([]byte("\x89TPK\r\n\x1a\n"), []byte{version, 0}, length, binary.LittleEndian.AppendUint32(nil, crc), payload)
		t.Run(fmt.Sprintf("version %d", version), func(t *testing.T) { readHandBuilt(t, file) })
	}
}

func readHandBuilt(t *testing.T, file []byte) {
	r, err := tpk.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	h := r.Header()
	if h.ToolVersion != "v9" || h.KernelRelease != "6.18.0" || h.Hostname != "box" || h.BootID != "" ||
		!h.StartWall.Equal(time.Unix(1_700_000_000, 5)) || h.StartKtime != 1000 ||
		len(h.Args) != 2 || h.Args[1] != "10.0.0.2" || len(h.Capabilities) != 1 || h.Capabilities[0] != "netfilter:off" {
		t.Errorf("header %+v", h)
	}
	want := decode.Record{Time: 1050, Netns: 7, Ifindex: 2, Probe: decode.ProbeNetifReceiveSkb,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), ICMPType: 8, Family: 4, EchoID: 0x1234, Seq: 1}
	copy(want.Ifname[:], "eth0")
	var (
		rec decode.Record
		out tpk.EchoOutcome
	)
	for i, wantTime := range []uint64{1050, 1057} {
		want.Time = wantTime
		if k, err := r.Next(&rec, nil, &out); err != nil || k != tpk.KindRecord || rec != want {
			t.Fatalf("item %d: %v %v\n got %+v\nwant %+v", i, k, err, rec, want)
		}
	}
	if k, err := r.Next(&rec, nil, &out); err != nil || k != tpk.KindOutcome || out.Target != netip.MustParseAddr("10.0.0.2") ||
		out.EchoID != 0x1234 || out.Seq != 1 || !out.Replied || out.RTT != 35*time.Microsecond || out.Timeout != time.Second {
		t.Fatalf("outcome: %v %v %+v", k, err, out)
	}
	if _, err := r.Next(&rec, nil, &out); err != io.EOF {
		t.Errorf("after the block: %v, want io.EOF", err)
	}
}

// TestHandBuiltTCPBlock builds a version 3 recording of a TCP probe from the
// grammar, as TestHandBuiltBlock does one of an echo: the header's Proto,
// the record fields fProto and fTCPFlags, and an outcome with a netfilter
// event and a drop (each ending with Proto TCPFlags) and the TCP fields.
func TestHandBuiltTCPBlock(t *testing.T) {
	uv := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	sv := func(v int64) []byte { return binary.AppendVarint(nil, v) }
	str := func(s string) []byte { return append(uv(uint64(len(s))), s...) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	frame := func(typ uint64, body []byte) []byte { return cat(uv(typ), uv(uint64(len(body))), body) }
	a1, a2 := []byte{4, 10, 0, 0, 1}, []byte{4, 10, 0, 0, 2}

	// header, then Proto:u8 appended.
	header := cat(str("v9"), str("6.18.0"), str("box"), str(""), sv(1_700_000_000), uv(0), uv(1000),
		uv(0), uv(0), []byte{6})
	// record: fTime fAddrs fFamily fEchoID fSeq, and fProto (bit 13) fTCPFlags (bit 14).
	const fTime, fAddrs, fFamily, fEchoID, fSeq, fProto, fTCPFlags = 1 << 0, 1 << 3, 1 << 9, 1 << 10, 1 << 11, 1 << 13, 1 << 14
	syn := cat(uv(fTime|fAddrs|fFamily|fEchoID|fSeq|fProto|fTCPFlags), sv(50), uv(0), a1, a2,
		[]byte{4}, []byte{0x12, 0x34}, sv(1), []byte{6}, []byte{0x02})
	synAck := cat(uv(fTime|fTCPFlags), sv(9), []byte{0x12}) // SYN|ACK: only the flags and the time change
	// netfilter event = Time Netns Family Table Chain Verdict Target Rule
	// Source Hook Type ICMPType RuleHandle Iif Oif TraceID EchoID Seq Src Dst
	// Proto TCPFlags.
	event := cat(uv(0), uv(7), str("inet"), str("f"), str("in"), str("ACCEPT"), str(""), str(""), str("nftrace"),
		[]byte{2, 1, 0}, uv(0), uv(2), uv(0), uv(0), uv(0x1234), uv(1), a1, a2, []byte{6, 0x02})
	// loss = flags (lossDrop) drop = time netns ifindex ifname family
	// icmptype src dst reason location proto tcpflags.
	loss := cat([]byte{2}, uv(1070), uv(7), uv(2), str("eth0"), []byte{4, 0}, a1, a2, str(""), str("tcp_v4_rcv+0x1"), []byte{6, 0x02})
	// outcome = Target EchoID Seq Replied RTT Timeout, list(event) loss
	// NetfilterLost list(Notes), Proto Port TCPFlags From.
	outcome := cat(a2, uv(0x1234), uv(1), []byte{1}, sv(35_000), sv(int64(time.Second)),
		uv(1), event, loss, uv(0), uv(0), []byte{6}, uv(8080), []byte{0x12}, a2)
	payload := cat(uv(0), frame(1, header), frame(3, cat(syn, synAck)), frame(4, outcome))
	length := binary.LittleEndian.AppendUint32(nil, uint32(len(payload)))
	table := crc32.MakeTable(crc32.Castagnoli)
	crc := crc32.Update(crc32.Checksum(length, table), table, payload)
	file := cat([]byte("\x89TPK\r\n\x1a\n"), []byte{3, 0}, length, binary.LittleEndian.AppendUint32(nil, crc), payload)

	r, err := tpk.NewReader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if h := r.Header(); h.Proto != decode.ProtoTCP || h.StartKtime != 1000 {
		t.Errorf("header %+v", h)
	}
	src, dst := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	want := decode.Record{Time: 1050, Src: src, Dst: dst, Family: 4, EchoID: 0x1234, Seq: 1, Proto: decode.ProtoTCP, TCPFlags: decode.TCPSyn}
	var (
		rec decode.Record
		out tpk.EchoOutcome
	)
	for i, flags := range []uint8{decode.TCPSyn, decode.TCPSyn | decode.TCPAck} {
		want.TCPFlags = flags
		if k, err := r.Next(&rec, nil, &out); err != nil || k != tpk.KindRecord || rec != want {
			t.Fatalf("item %d: %v %v\n got %+v\nwant %+v", i, k, err, rec, want)
		}
		want.Time += 9
	}
	if k, err := r.Next(&rec, nil, &out); err != nil || k != tpk.KindOutcome {
		t.Fatalf("outcome: %v %v", k, err)
	}
	wantOut := decode.Outcome{Target: dst, EchoID: 0x1234, Seq: 1, Replied: true, RTT: 35 * time.Microsecond, Timeout: time.Second,
		Proto: decode.ProtoTCP, Port: 8080, TCPFlags: decode.TCPSyn | decode.TCPAck, From: dst,
		Drop: &decode.Drop{Time: 1070, Netns: 7, Ifindex: 2, Ifname: "eth0", Family: 4, Proto: decode.ProtoTCP, TCPFlags: decode.TCPSyn,
			Src: src, Dst: dst, Location: "tcp_v4_rcv+0x1"}}
	wantEvent := decode.NetfilterEvent{Netns: 7, Family: "inet", Table: "f", Chain: "in", Verdict: "ACCEPT", Source: "nftrace",
		Hook: decode.HookInput, Type: decode.TracePolicy, Iif: 2, EchoID: 0x1234, Seq: 1, Src: src, Dst: dst,
		Proto: decode.ProtoTCP, TCPFlags: decode.TCPSyn}
	if !reflect.DeepEqual(out.Outcome, wantOut) || len(out.Netfilter) != 1 || out.Netfilter[0] != wantEvent {
		t.Errorf("outcome\n got %+v %+v\nwant %+v %+v", out.Outcome, out.Netfilter, wantOut, wantEvent)
	}
	if _, err := r.Next(&rec, nil, &out); err != io.EOF {
		t.Errorf("after the block: %v, want io.EOF", err)
	}
}
