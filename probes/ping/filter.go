package ping

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// The socket filter is classic BPF rather than eBPF: it only reads the ICMP
// type and echo id at fixed offsets from the ICMP header, and classic BPF's
// BPF_MSH load skips the variable IPv4 header in one instruction. Attaching it
// needs nothing beyond the raw socket itself: no bpf() syscall, no verifier
// log to surface, no program fd to keep alive, and no CAP_BPF on distributions
// that set kernel.unprivileged_bpf_disabled, so the pinger keeps working with
// CAP_NET_RAW alone. The kernel translates it to eBPF internally anyway.

// filterAccept is returned for packets to keep: the whole packet.
const filterAccept = 0xffffffff

// filterInsn is one classic BPF instruction with a comment for the listing.
type filterInsn struct {
	unix.SockFilter
	Comment string
}

// filterProgram is a classic BPF socket filter program.
type filterProgram []filterInsn

// echoReplyFilter builds the socket filter that accepts only echo replies
// carrying id: ICMP type 0 for family unix.AF_INET, ICMPv6 type 129 for
// unix.AF_INET6. Raw IPv4 sockets run the filter on the packet from the IP
// header on, ICMPv6 raw sockets from the ICMPv6 header on.
func echoReplyFilter(family int, id uint16) (filterProgram, error) {
	const (
		ldxMSH = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
		ldbAbs = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
		ldhAbs = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
		ldbInd = unix.BPF_LD | unix.BPF_B | unix.BPF_IND
		ldhInd = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
		jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		retK   = unix.BPF_RET | unix.BPF_K
	)
	stmt := func(code uint16, k uint32, comment string) filterInsn {
		return filterInsn{unix.SockFilter{Code: code, K: k}, comment}
	}

	var p filterProgram
	switch family {
	case unix.AF_INET:
		p = filterProgram{
			stmt(ldxMSH, 0, "X = IPv4 header length, 4*IHL"),
			stmt(ldbInd, 0, "A = ICMP type"),
			stmt(jeqK, icmpv4EchoReply, "echo reply?"),
			stmt(ldhInd, 4, "A = echo id"),
			stmt(jeqK, uint32(id), "our echo id?"),
		}
	case unix.AF_INET6:
		p = filterProgram{
			stmt(ldbAbs, 0, "A = ICMPv6 type"),
			stmt(jeqK, icmpv6EchoReply, "echo reply?"),
			stmt(ldhAbs, 4, "A = echo id"),
			stmt(jeqK, uint32(id), "our echo id?"),
		}
	default:
		return nil, fmt.Errorf("build echo reply filter: address family %d: %w", family, unix.EAFNOSUPPORT)
	}
	p = append(p,
		stmt(retK, filterAccept, "accept the whole packet"),
		stmt(retK, 0, "drop"),
	)
	// Every test falls through when true and jumps to the final drop when false.
	drop := len(p) - 1
	for i := range p {
		if p[i].Code == jeqK {
			p[i].Jf = uint8(drop - i - 1)
		}
	}
	return p, nil
}

// sockFilters returns the instructions as SO_ATTACH_FILTER takes them.
func (p filterProgram) sockFilters() []unix.SockFilter {
	out := make([]unix.SockFilter, len(p))
	for i, ins := range p {
		out[i] = ins.SockFilter
	}
	return out
}

// String lists the program one instruction a line: index, encoding as
// tcpdump -dd prints it, mnemonic as tcpdump -d prints it (jump targets are
// absolute), comment.
func (p filterProgram) String() string {
	var b strings.Builder
	for i, ins := range p {
		enc := fmt.Sprintf("{ 0x%02x, %d, %d, 0x%08x }", ins.Code, ins.Jt, ins.Jf, ins.K)
		fmt.Fprintf(&b, "(%03d) %-30s %-30s ; %s\n", i, enc, disassemble(i, ins.SockFilter), ins.Comment)
	}
	return b.String()
}

// disassemble renders the instructions echoReplyFilter uses; anything else is
// shown as a raw opcode.
func disassemble(pc int, ins unix.SockFilter) string {
	const classMask, sizeMask, modeMask = 0x07, 0x18, 0xe0
	load := map[uint16]string{unix.BPF_W: "ld", unix.BPF_H: "ldh", unix.BPF_B: "ldb"}[ins.Code&sizeMask]
	isLD := ins.Code&classMask == unix.BPF_LD
	switch {
	case ins.Code == unix.BPF_LDX|unix.BPF_B|unix.BPF_MSH:
		return fmt.Sprintf("ldxb 4*([%d]&0xf)", ins.K)
	case isLD && ins.Code&modeMask == unix.BPF_ABS:
		return fmt.Sprintf("%s [%d]", load, ins.K)
	case isLD && ins.Code&modeMask == unix.BPF_IND:
		return fmt.Sprintf("%s [x + %d]", load, ins.K)
	case ins.Code == unix.BPF_JMP|unix.BPF_JEQ|unix.BPF_K:
		return fmt.Sprintf("jeq #0x%x jt %d jf %d", ins.K, pc+1+int(ins.Jt), pc+1+int(ins.Jf))
	case ins.Code == unix.BPF_RET|unix.BPF_K:
		return fmt.Sprintf("ret #%d", ins.K)
	default:
		return fmt.Sprintf("opcode 0x%02x", ins.Code)
	}
}
