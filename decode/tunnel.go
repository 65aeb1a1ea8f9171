package decode

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Tunnels the filter looks into, by how the outer packet says so: UDP to a
// VXLAN or Geneve port, or an IP protocol.
const (
	PortVXLAN      = 4789 // IANA's VXLAN port
	PortVXLANLinux = 8472 // Linux's VXLAN port before IANA's, flannel's
	PortGeneve     = 6081
	ProtoIPIP      = 4  // IPv4 in IPv4 or IPv6
	ProtoIPv6      = 41 // IPv6 in IPv4 (SIT) or IPv6
	ProtoGRE       = 47
	// EtherTypes in a tunnel header (GRE's and Geneve's protocol type)
	// and an inner Ethernet header.
	EtherIPv4 = 0x0800
	EtherIPv6 = 0x86dd
	EtherTEB  = 0x6558 // transparent Ethernet bridging: an Ethernet frame follows
)

// TunnelKind names a tunnel as `ip link add ... type` does.
type TunnelKind uint8

const (
	// TunnelUnknown: the capture ends before the outer headers say.
	TunnelUnknown TunnelKind = iota
	TunnelVXLAN
	TunnelGeneve
	TunnelIPIP   // IPv4 in IPv4
	TunnelSIT    // IPv6 in IPv4
	TunnelIP6TNL // IPv4 or IPv6 in IPv6
	TunnelGRE
	TunnelGRETAP // Ethernet in GRE
)

var tunnelNames = [...]string{"tunnel", "vxlan", "geneve", "ipip", "sit", "ip6tnl", "gre", "gretap"}

func (k TunnelKind) String() string {
	if int(k) < len(tunnelNames) {
		return tunnelNames[k]
	}
	return tunnelNames[TunnelUnknown]
}

// Encap is what the outer headers say of a packet of ours seen in a
// tunnel. Fields the capture does not hold are zero.
type Encap struct {
	Kind TunnelKind
	// VNI is the network identifier of VXLAN and Geneve.
	VNI uint32
	// Key is GRE's key, when HasKey.
	Key    uint32
	HasKey bool
	// Src and Dst are the outer addresses; Sport and Dport the outer UDP
	// ports of VXLAN and Geneve.
	Src, Dst     netip.Addr
	Sport, Dport uint16
}

// Encap reads the outer headers of a record of a packet in a tunnel from
// its captured bytes; ok is false for a packet that was not in one.
func (r *Record) Encap() (e Encap, ok bool) {
	if r.Tunnel == 0 {
		return Encap{}, false
	}
	e, _ = outerHeaders(r.Packet[:min(int(r.Tunnel), int(r.CapLen))])
	return e, true
}

// FindTunnel sets r.Tunnel from r's captured bytes, for a record read
// from a recording, which does not keep it: a packet whose own IP header
// does not have the record's addresses is a tunnel's, whose inner header
// starts where its outer headers say (as the filter found it).
func (r *Record) FindTunnel() {
	r.Tunnel = 0
	p := r.Packet[:r.CapLen]
	if r.IsNetfilter() || len(p) < 1 {
		return
	}
	if src, dst := packetAddrs(p); src == r.Src && dst == r.Dst {
		return
	}
	if _, inner := outerHeaders(p); inner > 0 {
		r.Tunnel = uint16(inner)
	}
}

// packetAddrs are the addresses of the IP header p starts with.
func packetAddrs(p []byte) (src, dst netip.Addr) {
	switch {
	case len(p) >= 20 && p[0]>>4 == 4:
		return netip.AddrFrom4([4]byte(p[12:16])), netip.AddrFrom4([4]byte(p[16:20]))
	case len(p) >= 40 && p[0]>>4 == 6:
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
	}
	return netip.Addr{}, netip.Addr{}
}

// outerHeaders reads the tunnel whose outer headers p starts with, and
// where its inner header starts (0 if p does not hold the headers that
// say). Fields p does not hold are left zero.
func outerHeaders(p []byte) (e Encap, inner int) {
	e.Src, e.Dst = packetAddrs(p)
	if !e.Src.IsValid() {
		return e, 0
	}
	proto, l4 := p[6], 40
	if e.Src.Is4() {
		proto, l4 = p[9], int(p[0]&0xf)*4
	}
	be := binary.BigEndian
	// etherAt is where the inner header starts after an Ethernet header
	// at off, of a tunnel whose protocol type, if it has one, is typ.
	etherAt := func(off int, typ uint16) int {
		if typ == EtherTEB {
			return off + 14
		}
		return off
	}
	switch proto {
	case ProtoIPIP, ProtoIPv6:
		switch {
		case e.Src.Is6():
			e.Kind = TunnelIP6TNL
		case proto == ProtoIPIP:
			e.Kind = TunnelIPIP
		default:
			e.Kind = TunnelSIT
		}
		return e, l4
	case ProtoUDP:
		if len(p) < l4+8 {
			return e, 0
		}
		e.Sport, e.Dport = be.Uint16(p[l4:]), be.Uint16(p[l4+2:])
		e.Kind = TunnelVXLAN
		if e.Dport == PortGeneve {
			e.Kind = TunnelGeneve
		}
		// VXLAN and Geneve both have the VNI in bytes 4-6 of their header.
		hdr := l4 + 8
		if len(p) < hdr+8 {
			return e, 0
		}
		e.VNI = be.Uint32(p[hdr+4:]) >> 8
		if e.Kind == TunnelVXLAN {
			return e, etherAt(hdr+8, EtherTEB)
		}
		return e, etherAt(hdr+8+int(p[hdr]&0x3f)*4, be.Uint16(p[hdr+2:]))
	case ProtoGRE:
		if len(p) < l4+4 {
			return e, 0
		}
		flags, typ := be.Uint16(p[l4:]), be.Uint16(p[l4+2:])
		e.Kind = TunnelGRE
		if typ == EtherTEB {
			e.Kind = TunnelGRETAP
		}
		off := l4 + 4
		if flags&0x8000 != 0 {
			off += 4
		}
		if flags&0x2000 != 0 {
			if len(p) >= off+4 {
				e.Key, e.HasKey = be.Uint32(p[off:]), true
			}
			off += 4
		}
		if flags&0x1000 != 0 {
			off += 4
		}
		return e, etherAt(off, typ)
	}
	return e, 0
}

// String says the tunnel as a hop row shows it: `vxlan vni 42 192.168.0.1
// -> 192.168.0.2:4789`, `gre key 5 10.0.0.1 -> 10.0.0.2`.
func (e Encap) String() string {
	return strings.Join(append([]string{e.Kind.String()}, e.Details()...), " ")
}

// Details are the tunnel's ID and Path, those it has.
func (e Encap) Details() []string {
	var d []string
	for _, p := range []string{e.ID(), e.Path()} {
		if p != "" {
			d = append(d, p)
		}
	}
	return d
}

// ID names the tunnel's network: "vni 42", "key 5", or "" for a tunnel
// without one.
func (e Encap) ID() string {
	switch {
	case e.Kind == TunnelVXLAN || e.Kind == TunnelGeneve:
		return fmt.Sprintf("vni %d", e.VNI)
	case e.HasKey:
		return fmt.Sprintf("key %d", e.Key)
	}
	return ""
}

// Path is the outer packet's way: "192.168.0.1 -> 192.168.0.2:4789", ""
// when the capture does not hold it.
func (e Encap) Path() string {
	switch {
	case !e.Src.IsValid():
		return ""
	case e.Dport != 0:
		return fmt.Sprintf("%v -> %v", e.Src, netip.AddrPortFrom(e.Dst, e.Dport))
	}
	return fmt.Sprintf("%v -> %v", e.Src, e.Dst)
}

// TunnelCrossing is one tunnel a packet of a journey went through: the
// hops of one packet type (PacketType) with the same outer headers, from
// the namespace of the first to that of the last.
type TunnelCrossing struct {
	Encap
	Packet   string
	From, To uint32
}

// Tunnels are the journey's tunnel crossings, in the order of their first
// hops.
func (j *Journey) Tunnels() []TunnelCrossing {
	var out []TunnelCrossing
	for i := range j.Hops {
		h := &j.Hops[i]
		e, ok := h.Encap()
		if !ok {
			continue
		}
		c := TunnelCrossing{Encap: e, Packet: h.PacketType(), From: h.Netns, To: h.Netns}
		k := slices.IndexFunc(out, func(o TunnelCrossing) bool { return o.Encap == c.Encap && o.Packet == c.Packet })
		if k < 0 {
			out = append(out, c)
		} else {
			out[k].To = h.Netns
		}
	}
	return out
}
