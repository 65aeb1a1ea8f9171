package decode

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// rawRecord builds a record the way the BPF program lays it out.
func rawRecord(t testing.TB, family uint8, src, dst netip.Addr, icmpType uint8, seq uint16, ts uint64) []byte {
	t.Helper()
	b := make([]byte, RecordSize+4) // perf pads raw samples; Decode ignores the tail
	ne := binary.NativeEndian
	ne.PutUint64(b[OffTime:], ts)
	ne.PutUint64(b[OffSkb:], 0xffff888004a1c300)
	ne.PutUint32(b[OffNetns:], 4026532281)
	ne.PutUint32(b[OffIfindex:], 7)
	ne.PutUint32(b[OffLen:], 98)
	ne.PutUint32(b[OffCPU:], 1)
	ne.PutUint16(b[OffProbe:], uint16(ProbeNetifReceiveSkb))
	b[OffFamily] = family
	b[OffICMPType] = icmpType
	binary.BigEndian.PutUint16(b[OffEchoID:], 0xbeef)
	binary.BigEndian.PutUint16(b[OffSeq:], seq)
	copy(b[OffIfname:], "veth1234")
	s, d := src.AsSlice(), dst.AsSlice()
	copy(b[OffSrc:], s)
	copy(b[OffDst:], d)
	ne.PutUint16(b[OffCapLen:], 84)
	b[OffPacket] = 0x45
	return b
}

func TestDecodeIPv4(t *testing.T) {
	b := rawRecord(t, 4, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 8, 3, 1000)
	var r Record
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	if r.Time != 1000 || r.Skb != 0xffff888004a1c300 || r.Netns != 4026532281 || r.Ifindex != 7 ||
		r.Len != 98 || r.CPU != 1 || r.Probe != ProbeNetifReceiveSkb || r.EchoID != 0xbeef || r.Seq != 3 ||
		r.CapLen != 84 || r.Packet[0] != 0x45 {
		t.Errorf("decoded %+v", r)
	}
	if r.IfName() != "veth1234" || r.Src.String() != "10.0.0.1" || r.Dst.String() != "10.0.0.2" || !r.IsRequest() {
		t.Errorf("ifname %q src %v dst %v request %v", r.IfName(), r.Src, r.Dst, r.IsRequest())
	}
	if r.Probe.String() != "netif_receive_skb" || r.Probe.Direction() != In {
		t.Errorf("probe %v direction %v", r.Probe, r.Probe.Direction())
	}
}

func TestDecodeIPv6(t *testing.T) {
	b := rawRecord(t, 6, netip.MustParseAddr("fd00:7470::2"), netip.MustParseAddr("fd00:7470::1"), 129, 65535, 1)
	copy(b[OffIfname:], "abcdefghijklmnop") // a full 16-byte name has no NUL
	var r Record
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	if r.Src.String() != "fd00:7470::2" || r.Dst.String() != "fd00:7470::1" || r.IsRequest() || r.Seq != 65535 {
		t.Errorf("decoded src %v dst %v type %d seq %d", r.Src, r.Dst, r.ICMPType, r.Seq)
	}
	if r.IfName() != "abcdefghijklmnop" {
		t.Errorf("ifname %q", r.IfName())
	}
}

func TestDecodeRejects(t *testing.T) {
	good := rawRecord(t, 4, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 0, 1, 1)
	var r Record
	for n := 0; n < RecordSize; n++ {
		if err := r.Decode(good[:n]); !errors.Is(err, ErrShortRecord) {
			t.Fatalf("Decode of %d bytes: %v, want ErrShortRecord", n, err)
		}
	}
	bad := append([]byte(nil), good...)
	bad[OffFamily] = 5
	if err := r.Decode(bad); err == nil {
		t.Error("Decode accepted address family 5")
	}
	bad = append([]byte(nil), good...)
	binary.NativeEndian.PutUint16(bad[OffCapLen:], PacketBytes+1)
	if err := r.Decode(bad); err == nil {
		t.Error("Decode accepted a captured length past the packet bytes")
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(rawRecord(f, 4, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 8, 1, 1))
	f.Add(rawRecord(f, 6, netip.MustParseAddr("::1"), netip.MustParseAddr("::1"), 128, 1, 1))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if r.Decode(b) == nil && r.CapLen > PacketBytes {
			t.Fatal("accepted an impossible captured length")
		}
	})
}

func TestNetfilterRecord(t *testing.T) {
	b := rawRecord(t, 4, netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), 8, 3, 5000)
	ne := binary.NativeEndian
	ne.PutUint16(b[OffProbe:], uint16(ProbeIptDoTable))
	ne.PutUint16(b[OffCapLen:], NFInfoBytes)
	clear(b[OffPacket : OffPacket+PacketBytes])
	copy(b[OffNFTable:], "filter")
	ne.PutUint32(b[OffNFVerdict:], 0) // NF_DROP
	b[OffNFHook] = 2                  // NF_INET_FORWARD
	b[OffNFFamily] = 2                // NFPROTO_IPV4
	ne.PutUint32(b[OffNFIif:], 7)
	ne.PutUint32(b[OffNFOif:], 9)
	var r Record
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	if !r.IsNetfilter() || r.Probe.String() != "ipt_do_table" {
		t.Fatalf("probe %v netfilter %v", r.Probe, r.IsNetfilter())
	}
	got := r.NetfilterEvent()
	want := NetfilterEvent{Time: 5000, Netns: 4026532281, Family: "ip", Table: "filter", Chain: "FORWARD", Hook: HookForward,
		Type: TraceChain, Verdict: "DROP", Iif: 7, Oif: 9, ICMPType: 8, EchoID: 0xbeef, Seq: 3,
		Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Source: "kprobe"}
	if got != want {
		t.Errorf("event\n got %+v\nwant %+v", got, want)
	}

	// nftables: the chain is named, the family is the table's, a verdict
	// with a queue number in its upper bits is still ACCEPT/QUEUE by its low byte.
	copy(b[OffNFTable:], "tpfilt\x00")
	copy(b[OffNFChain:], "forward")
	b[OffNFFamily] = 1 // NFPROTO_INET
	ne.PutUint32(b[OffNFVerdict:], 3|5<<16)
	ne.PutUint16(b[OffProbe:], uint16(ProbeNftDoChain))
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	if e := r.NetfilterEvent(); e.Table != "tpfilt" || e.Chain != "forward" || e.Family != "inet" || e.Verdict != "QUEUE" {
		t.Errorf("nft event %+v", e)
	}
	// A packet dropped with a reason: NF_STOLEN with the errno above.
	ne.PutUint32(b[OffNFVerdict:], 1<<16|2)
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	if e := r.NetfilterEvent(); e.Verdict != "DROP" {
		t.Errorf("NF_DROP_REASON verdict read as %s", e.Verdict)
	}
	ne.PutUint32(b[OffNFVerdict:], 2)
	if err := r.Decode(b); err != nil {
		t.Fatal(err)
	}
	if e := r.NetfilterEvent(); e.Verdict != "STOLEN" {
		t.Errorf("NF_STOLEN read as %s", e.Verdict)
	}
	j := NewJourney(Outcome{Target: netip.MustParseAddr("10.0.0.2"), EchoID: 0xbeef, Seq: 3}, []Record{r}, nil)
	if len(j.Hops) != 0 || len(j.Netfilter) != 1 {
		t.Errorf("journey: %d hops, %d netfilter events; want the record as a netfilter event", len(j.Hops), len(j.Netfilter))
	}
}

// TestIPLen: the length an IP header gives, not skb->len, which counts the
// Ethernet header where a bridge frees a frame (5.10, br_dev_queue_push_xmit).
func TestIPLen(t *testing.T) {
	v4 := []byte{0x45, 0, 0x05, 0xd0, 0, 0, 0x40, 0, 64, 1} // total length 1488
	v6 := []byte{0x60, 0, 0, 0, 0x05, 0xa8, 58, 64}         // payload length 1448
	for _, tc := range []struct {
		name   string
		packet []byte
		caplen int
		want   uint32
	}{
		{"ipv4", v4, len(v4), 1488},
		{"ipv6", v6, len(v6), 1488},
		{"ipv4 cut before its length", v4, 3, 0},
		{"ipv6 cut before its length", v6, 5, 0},
		{"not IP", []byte{0x00, 0, 0x05, 0xd0}, 4, 0},
	} {
		r := Record{Len: 1502, CapLen: uint16(tc.caplen)}
		copy(r.Packet[:], tc.packet)
		if got := r.IPLen(); got != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
