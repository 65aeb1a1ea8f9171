package probes

import (
	"fmt"

	"github.com/cilium/ebpf/asm"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// The tunnels the outer pass looks into, one level deep, when the outer IP
// header is bare (no IPv4 options, no IPv6 extension headers: encapsulating
// drivers add none): UDP to a VXLAN or Geneve port, IP in IP (IPIP, SIT,
// IP6IP6) and GRE. Each test ends at "decap" with rInner at the inner
// network header, or gives up, reading nothing past the outer packet's
// length. Only packets of these protocols pay for it.
var tunnels = []struct {
	proto uint8
	block string
}{
	{decode.ProtoUDP, "udp"},
	{decode.ProtoIPIP, "ip"},
	{decode.ProtoIPv6, "ip"},
	{decode.ProtoGRE, "gre"},
}

// tunnelLabel is the label of a tunnel test of the outer family.
func tunnelLabel(block string, family int) string {
	return fmt.Sprintf("%s_tunnel_%d", block, family)
}

// Header lengths of the tunnels (RFC 7348 VXLAN, RFC 8926 Geneve without
// options, RFC 2784 GRE without optional fields) and of an Ethernet header.
const (
	vxlanHeaderLen  = 8
	geneveHeaderLen = 8
	greHeaderLen    = 4
	etherHeaderLen  = 14
)

// tunnelTests emits the tunnel tests of both outer families.
func (f Filter) tunnelTests() asm.Instructions {
	var insns asm.Instructions
	for _, family := range []int{4, 6} {
		insns = append(insns, f.udpTunnel(family)...)
		insns = append(insns, ipTunnel(family)...)
		insns = append(insns, greTunnel(family)...)
	}
	return insns
}

// udpTunnel tests a UDP datagram, whose header is in ipSlot, for VXLAN and
// Geneve. A datagram that is not a tunnel's goes on to the UDP clauses,
// with rL4Off back at its header.
func (f Filter) udpTunnel(family int) asm.Instructions {
	l4 := int32(fixedL4(family))
	at := func(s string) string { return fmt.Sprintf("udp_%s_%d", s, family) }
	notTunnel := f.firstClause(decode.ProtoUDP, family, true, 0)
	giveUp := notTunnel
	if notTunnel != "exit" {
		giveUp = at("not_tunnel")
	}
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, int16(ipSlot+l4+2), asm.Half).WithSymbol(tunnelLabel("udp", family)).WithSource(asm.Comment("tunnels: UDP to a VXLAN or Geneve port")),
		asm.JEq.Imm(asm.R1, wire(decode.PortVXLAN), at("vxlan")),
		asm.JEq.Imm(asm.R1, wire(decode.PortVXLANLinux), at("vxlan")),
		asm.JEq.Imm(asm.R1, wire(decode.PortGeneve), at("geneve")),
		asm.Ja.Label(notTunnel),
		asm.Mov.Imm(rInner, l4+udpHeaderLen+vxlanHeaderLen).WithSymbol(at("vxlan")).WithSource(asm.Comment("VXLAN: an Ethernet frame after its header")),
		asm.Ja.Label(at("ether")),
	}
	// rL4Off is still at the UDP header.
	geneve := note("Geneve: version 0, options (length in 4-byte units), protocol", holds(family, udpHeaderLen+geneveHeaderLen, giveUp))
	geneve = append(geneve, read(scratch2, 4, rNet, l4+udpHeaderLen, giveUp)...)
	insns = append(insns, label(at("geneve"), geneve)...)
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Byte),
		asm.JGT.Imm(asm.R1, 0x3f, giveUp),
		asm.LSh.Imm(asm.R1, 2),
		asm.Mov.Reg(rInner, asm.R1),
		asm.Add.Imm(rInner, l4+udpHeaderLen+geneveHeaderLen),
		asm.LoadMem(asm.R1, asm.RFP, scratch2+2, asm.Half),
		asm.JEq.Imm(asm.R1, wire(decode.EtherTEB), at("ether")),
	)
	insns = append(insns, ipEtherTypes(at("ip"), giveUp)...)
	insns = append(insns, label(at("ether"), ether(family, at("ip"), giveUp))...)
	insns = append(insns, label(at("ip"), innerIP(family, giveUp))...)
	if giveUp != notTunnel {
		insns = append(insns,
			asm.Mov.Imm(rL4Off, l4).WithSymbol(giveUp).WithSource(asm.Comment("not a tunnel's: the UDP clauses")),
			asm.Ja.Label(notTunnel),
		)
	}
	return insns
}

// ipEtherTypes goes on at ip if r1, a protocol type as loaded from the
// packet, is IPv4's or IPv6's, else to fail.
func ipEtherTypes(ip, fail string) asm.Instructions {
	return asm.Instructions{
		asm.JEq.Imm(asm.R1, wire(decode.EtherIPv4), ip),
		asm.JEq.Imm(asm.R1, wire(decode.EtherIPv6), ip),
		asm.Ja.Label(fail),
	}
}

// ether goes past the Ethernet header at rInner, to ip if its EtherType is
// IPv4's or IPv6's, else to fail.
func ether(family int, ip, fail string) asm.Instructions {
	insns := note("inner Ethernet header: IPv4 or IPv6", holds(family, etherHeaderLen, fail))
	insns = append(insns, readNet(scratch2, 2, rInner, 12, fail)...)
	return append(insns,
		asm.LoadMem(asm.R1, asm.RFP, scratch2, asm.Half),
		asm.Add.Imm(rInner, etherHeaderLen),
		asm.JEq.Imm(asm.R1, wire(decode.EtherIPv4), ip),
		asm.JEq.Imm(asm.R1, wire(decode.EtherIPv6), ip),
		asm.Ja.Label(fail),
	)
}

// innerIP goes on to the inner pass at "decap" if the outer packet holds an
// IPv4 header (the shorter) at rInner, else to fail.
func innerIP(family int, fail string) asm.Instructions {
	insns := note("the inner header is in the packet", holds(family, ipv4HeaderLen, fail))
	return append(insns, asm.Ja.Label("decap"))
}

// ipTunnel: IP in IP, the inner header right after the outer one.
func ipTunnel(family int) asm.Instructions {
	insns := asm.Instructions{asm.Mov.Imm(rInner, int32(fixedL4(family))).WithSymbol(tunnelLabel("ip", family)).WithSource(asm.Comment("tunnels: IP in IP"))}
	return append(insns, innerIP(family, "exit")...)
}

// greTunnel tests a GRE packet, whose base header is in ipSlot: version 0
// without routing, then its optional checksum, key and sequence words, and
// IP or (GRETAP) an Ethernet frame.
func greTunnel(family int) asm.Instructions {
	l4 := int32(fixedL4(family))
	at := func(s string) string { return fmt.Sprintf("gre_%s_%d", s, family) }
	insns := asm.Instructions{
		asm.LoadMem(asm.R1, asm.RFP, int16(ipSlot+l4), asm.Half).WithSymbol(tunnelLabel("gre", family)).WithSource(asm.Comment("tunnels: GRE flags and version")),
		asm.Mov.Reg(asm.R2, asm.R1),
		asm.And.Imm(asm.R2, wire(0x4007)),
		asm.JNE.Imm(asm.R2, 0, "exit"),
		asm.Mov.Imm(rInner, l4+greHeaderLen),
	}
	// Each optional word present moves the inner header 4 bytes on; a
	// word's test is where the previous one skips to.
	skip := ""
	for _, flag := range []struct {
		name string
		bit  uint16
	}{{"checksum", 0x8000}, {"key", 0x2000}, {"sequence", 0x1000}} {
		insns = append(insns,
			asm.Mov.Reg(asm.R2, asm.R1).WithSymbol(skip).WithSource(asm.Comment(flag.name+": 4 bytes")),
			asm.And.Imm(asm.R2, wire(flag.bit)),
			asm.JEq.Imm(asm.R2, 0, at("no_"+flag.name)),
			asm.Add.Imm(rInner, 4),
		)
		skip = at("no_" + flag.name)
	}
	insns = append(insns,
		asm.LoadMem(asm.R1, asm.RFP, int16(ipSlot+l4+2), asm.Half).WithSymbol(skip).WithSource(asm.Comment("protocol")),
		asm.JEq.Imm(asm.R1, wire(decode.EtherTEB), at("ether")),
	)
	insns = append(insns, ipEtherTypes(at("ip"), "exit")...)
	insns = append(insns, label(at("ether"), ether(family, at("ip"), "exit"))...)
	return append(insns, label(at("ip"), innerIP(family, "exit"))...)
}
