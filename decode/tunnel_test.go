package decode

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// tunnelRecord is a record of an inner IPv4 echo at off in outer.
func tunnelRecord(outer []byte, off int) Record {
	r := Record{Family: 4, Tunnel: uint16(off), CapLen: uint16(min(len(outer), PacketBytes))}
	copy(r.Packet[:], outer)
	return r
}

func outer4(proto uint8, l4 []byte) []byte {
	b := make([]byte, 20, 20+len(l4))
	b[0], b[9] = 0x45, proto
	copy(b[12:], []byte{192, 168, 0, 1, 192, 168, 0, 2})
	return append(b, l4...)
}

func TestEncap(t *testing.T) {
	udp := func(dport uint16, hdr ...byte) []byte {
		b := binary.BigEndian.AppendUint16([]byte{0xc3, 0x50}, dport)
		return append(append(b, 0, 0, 0, 0), hdr...)
	}
	inner := make([]byte, 14+20) // Ethernet and the inner header: not read
	v6 := make([]byte, 40)
	v6[0], v6[6] = 0x60, 17
	v6[23], v6[39] = 1, 2
	for _, tc := range []struct {
		name   string
		outer  []byte
		off    int
		capLen int
		want   string
	}{
		{"VXLAN", outer4(17, append(udp(4789, 8, 0, 0, 0, 0, 0, 42, 0), inner...)), 50, 0, "vxlan vni 42 192.168.0.1 -> 192.168.0.2:4789"},
		{"Geneve", outer4(17, append(udp(6081, 0, 0, 0x65, 0x58, 0, 0, 7, 0), inner...)), 50, 0, "geneve vni 7 192.168.0.1 -> 192.168.0.2:6081"},
		{"VXLAN over IPv6", append(v6, udp(8472, 8, 0, 0, 0, 0x01, 0x00, 0x00, 0)...), 70, 0, "vxlan vni 65536 ::1 -> [::2]:8472"},
		{"IPIP", outer4(4, inner[14:]), 20, 0, "ipip 192.168.0.1 -> 192.168.0.2"},
		{"SIT", outer4(41, inner[14:]), 20, 0, "sit 192.168.0.1 -> 192.168.0.2"},
		{"GRE with checksum and key", outer4(47, []byte{0xa0, 0, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 5}), 32, 0, "gre key 5 192.168.0.1 -> 192.168.0.2"},
		{"GRETAP", outer4(47, []byte{0, 0, 0x65, 0x58}), 38, 0, "gretap 192.168.0.1 -> 192.168.0.2"},
		{"VXLAN cut inside its header", outer4(17, udp(4789, 8, 0, 0)), 50, 31, "vxlan vni 0 192.168.0.1 -> 192.168.0.2:4789"},
		{"cut inside the outer header", outer4(17, nil), 50, 10, "tunnel"},
	} {
		r := tunnelRecord(tc.outer, tc.off)
		if tc.capLen != 0 {
			r.CapLen = uint16(tc.capLen)
		}
		e, ok := r.Encap()
		if !ok || e.String() != tc.want {
			t.Errorf("%s: Encap = %q, %v; want %q", tc.name, e, ok, tc.want)
		}
		// A recording keeps the bytes and the inner addresses, from
		// which the offset is found again.
		if tc.capLen == 0 {
			r.Src, r.Dst = netip.MustParseAddr("10.244.1.5"), netip.MustParseAddr("10.244.2.7")
			r.Tunnel = 0
			if r.FindTunnel(); int(r.Tunnel) != tc.off {
				t.Errorf("%s: FindTunnel: %d, want %d", tc.name, r.Tunnel, tc.off)
			}
		}
	}
	plain := tunnelRecord(outer4(1, make([]byte, 8)), 0)
	plain.Src, plain.Dst = netip.MustParseAddr("192.168.0.1"), netip.MustParseAddr("192.168.0.2")
	if plain.FindTunnel(); plain.Tunnel != 0 {
		t.Errorf("an echo outside a tunnel: FindTunnel: %d", plain.Tunnel)
	}
	if e, ok := (&Record{Family: 4, CapLen: 20}).Encap(); ok {
		t.Errorf("a record outside a tunnel: Encap = %v, true", e)
	}
}

// A record of a UDP probe in VXLAN has the inner datagram's ports, and
// none when the capture ends before them.
func TestPortsInTunnel(t *testing.T) {
	in := outer4(17, []byte{0x9c, 0x41, 0, 53, 0, 8, 0, 0})
	in[12], in[16] = 10, 10
	vx := outer4(17, append([]byte{0xc3, 0x50, 0x12, 0xb5, 0, 0, 0, 0, 8, 0, 0, 0, 0, 0, 42, 0}, append(make([]byte, 14), in...)...))
	r := tunnelRecord(vx, 50)
	r.Proto, r.Src, r.Dst = ProtoUDP, netip.MustParseAddr("10.168.0.1"), netip.MustParseAddr("10.168.0.2")
	if s, d, ok := r.Ports(); !ok || s != 40001 || d != 53 {
		t.Errorf("Ports = %d, %d, %v; want 40001, 53, true", s, d, ok)
	}
	r.CapLen = 60
	if s, d, ok := r.Ports(); ok {
		t.Errorf("cut capture: Ports = %d, %d, true", s, d)
	}
}
