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

// ICMP error types whose message quotes the packet that caused it (RFC 792,
// RFC 4443): the socket filter passes those quoting our echo.
const (
	icmpv4DestUnreach   = 3
	icmpv4TimeExceeded  = 11
	icmpv4ParamProblem  = 12
	icmpv6DestUnreach   = 1
	icmpv6PacketTooBig  = 2
	icmpv6TimeExceeded  = 3
	icmpv6ParamProblem  = 4
	ipv6HeaderLen       = 40
	ipv4ProtoOffset     = 9 // protocol byte of an IPv4 header
	ipv6NextHdrOffset   = 6 // next header byte of an IPv6 header
	protoICMP           = 1
	protoICMPv6         = 58
	icmpErrorHeaderLen  = 8 // type, code, checksum, then 4 bytes before the quoted packet
	quotedIPv4HdrOffset = icmpErrorHeaderLen
	tcpDstPortOffset    = 2 // destination port in a TCP header
)

// socketFilter builds the socket filter that accepts only echo replies
// carrying id (ICMP type 0 for unix.AF_INET, ICMPv6 type 129 for
// unix.AF_INET6) and ICMP errors whose quoted packet is an echo request
// carrying id. Raw IPv4 sockets run the filter on the packet from the IP
// header on, ICMPv6 raw sockets from the ICMPv6 header on.
func socketFilter(family int, id uint16) (filterProgram, error) {
	var prog []insn
	switch family {
	case unix.AF_INET:
		prog = []insn{
			{code: ldxMSH, comment: "X = IPv4 header length, 4*IHL"},
			{code: ldbInd, comment: "A = ICMP type"},
			{code: jeqK, k: icmpv4EchoReply, jt: "id", jf: "+", comment: "echo reply?"},
			{code: jeqK, k: icmpv4DestUnreach, jt: "quoted", jf: "+", comment: "destination unreachable?"},
			{code: jeqK, k: icmpv4TimeExceeded, jt: "quoted", jf: "+", comment: "time exceeded?"},
			{code: jeqK, k: icmpv4ParamProblem, jt: "quoted", comment: "parameter problem?"},
			{code: ldbInd, k: quotedIPv4HdrOffset + ipv4ProtoOffset, label: "quoted", comment: "A = quoted IPv4 protocol"},
			{code: jeqK, k: protoICMP, jt: "+", comment: "ICMP?"},
			{code: ldbInd, k: quotedIPv4HdrOffset, comment: "A = quoted version and IHL"},
			{code: andK, k: 0xf, comment: "A = quoted IHL"},
			{code: lshK, k: 2, comment: "A = quoted IPv4 header length"},
			{code: addX, comment: "+ IPv4 header length"},
			{code: addK, k: icmpErrorHeaderLen, comment: "+ ICMP error header"},
			{code: tax, comment: "X = offset of the quoted ICMP header"},
			{code: ldbInd, comment: "A = quoted ICMP type"},
			{code: jeqK, k: icmpv4EchoRequest, jt: "id", comment: "echo request?"},
			{code: ldhInd, k: 4, label: "id", comment: "A = echo id"},
			{code: jeqK, k: uint32(id), jt: "accept", comment: "our echo id?"},
		}
	case unix.AF_INET6:
		quoted := uint32(icmpErrorHeaderLen + ipv6HeaderLen)
		prog = []insn{
			{code: ldbAbs, comment: "A = ICMPv6 type"},
			{code: jeqK, k: icmpv6EchoReply, jt: "id", jf: "+", comment: "echo reply?"},
			{code: jeqK, k: icmpv6DestUnreach, jt: "quoted", jf: "+", comment: "destination unreachable?"},
			{code: jeqK, k: icmpv6PacketTooBig, jt: "quoted", jf: "+", comment: "packet too big?"},
			{code: jeqK, k: icmpv6TimeExceeded, jt: "quoted", jf: "+", comment: "time exceeded?"},
			{code: jeqK, k: icmpv6ParamProblem, jt: "quoted", comment: "parameter problem?"},
			{code: ldbAbs, k: icmpErrorHeaderLen + ipv6NextHdrOffset, label: "quoted", comment: "A = quoted IPv6 next header"},
			{code: jeqK, k: protoICMPv6, jt: "+", comment: "ICMPv6?"},
			{code: ldbAbs, k: quoted, comment: "A = quoted ICMPv6 type"},
			{code: jeqK, k: icmpv6EchoRequest, jt: "+", comment: "echo request?"},
			{code: ldhAbs, k: quoted + 4, comment: "A = quoted echo id"},
			{code: jeqK, k: uint32(id), jt: "accept", comment: "our echo id?"},
			{code: ldhAbs, k: 4, label: "id", comment: "A = echo id"},
			{code: jeqK, k: uint32(id), jt: "accept", comment: "our echo id?"},
		}
	default:
		return nil, fmt.Errorf("build socket filter: address family %d: %w", family, unix.EAFNOSUPPORT)
	}
	return assemble(prog), nil
}

// tcpAnswerFilter builds the filter of a TCP prober's raw TCP socket, which
// gets a copy of every TCP segment delivered in the namespace: it accepts
// only segments to port, the port the prober holds. Raw IPv4 sockets run it
// from the IP header on, raw IPv6 sockets from the TCP header on. The mark
// is checked in Go.
func tcpAnswerFilter(family int, port uint16) (filterProgram, error) {
	var prog []insn
	switch family {
	case unix.AF_INET:
		prog = []insn{
			{code: ldxMSH, comment: "X = IPv4 header length, 4*IHL"},
			{code: ldhInd, k: tcpDstPortOffset, comment: "A = TCP destination port"},
		}
	case unix.AF_INET6:
		prog = []insn{{code: ldhAbs, k: tcpDstPortOffset, comment: "A = TCP destination port"}}
	default:
		return nil, fmt.Errorf("build tcp socket filter: address family %d: %w", family, unix.EAFNOSUPPORT)
	}
	prog = append(prog, insn{code: jeqK, k: uint32(port), jt: "accept", comment: "our port?"})
	return assemble(prog), nil
}

// icmpErrorFilter builds the filter of a TCP or UDP prober's raw ICMP
// socket: it accepts the ICMP errors that quote a packet. Which packet is
// checked in Go. (ICMPv6 sockets get the same from ICMP6_FILTER.)
func icmpErrorFilter() filterProgram {
	return assemble([]insn{
		{code: ldxMSH, comment: "X = IPv4 header length, 4*IHL"},
		{code: ldbInd, comment: "A = ICMP type"},
		{code: jeqK, k: icmpv4DestUnreach, jt: "accept", jf: "+", comment: "destination unreachable?"},
		{code: jeqK, k: icmpv4TimeExceeded, jt: "accept", jf: "+", comment: "time exceeded?"},
		{code: jeqK, k: icmpv4ParamProblem, jt: "accept", comment: "parameter problem?"},
	})
}

// Classic BPF opcodes the socket filters use.
const (
	ldxMSH = unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH
	ldbAbs = unix.BPF_LD | unix.BPF_B | unix.BPF_ABS
	ldhAbs = unix.BPF_LD | unix.BPF_H | unix.BPF_ABS
	ldbInd = unix.BPF_LD | unix.BPF_B | unix.BPF_IND
	ldhInd = unix.BPF_LD | unix.BPF_H | unix.BPF_IND
	andK   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	lshK   = unix.BPF_ALU | unix.BPF_LSH | unix.BPF_K
	addK   = unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K
	addX   = unix.BPF_ALU | unix.BPF_ADD | unix.BPF_X
	tax    = unix.BPF_MISC | unix.BPF_TAX
	jeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	retK   = unix.BPF_RET | unix.BPF_K
)

// insn is a filter instruction before its jumps are resolved. A test jumps
// to its label when true and to the final drop when false, unless it names
// a label for false too; "+" is the next instruction.
type insn struct {
	code    uint16
	k       uint32
	jt, jf  string
	label   string
	comment string
}

// assemble appends the final drop and accept to prog and resolves its jumps.
func assemble(prog []insn) filterProgram {
	prog = append(prog,
		insn{code: retK, label: "drop", comment: "drop"},
		insn{code: retK, k: filterAccept, label: "accept", comment: "accept the whole packet"},
	)
	labels := map[string]int{}
	for i, in := range prog {
		if in.label != "" {
			labels[in.label] = i
		}
	}
	target := func(pc int, label string) uint8 {
		switch label {
		case "+":
			return 0
		case "":
			label = "drop"
		}
		return uint8(labels[label] - pc - 1)
	}
	p := make(filterProgram, len(prog))
	for i, in := range prog {
		p[i] = filterInsn{unix.SockFilter{Code: in.code, K: in.k}, in.comment}
		if in.code == jeqK {
			p[i].Jt, p[i].Jf = target(i, in.jt), target(i, in.jf)
		}
	}
	return p
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

// disassemble renders the instructions socketFilter uses; anything else is
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
	case ins.Code == unix.BPF_ALU|unix.BPF_AND|unix.BPF_K:
		return fmt.Sprintf("and #0x%x", ins.K)
	case ins.Code == unix.BPF_ALU|unix.BPF_LSH|unix.BPF_K:
		return fmt.Sprintf("lsh #%d", ins.K)
	case ins.Code == unix.BPF_ALU|unix.BPF_ADD|unix.BPF_K:
		return fmt.Sprintf("add #%d", ins.K)
	case ins.Code == unix.BPF_ALU|unix.BPF_ADD|unix.BPF_X:
		return "add x"
	case ins.Code == unix.BPF_MISC|unix.BPF_TAX:
		return "tax"
	case ins.Code == unix.BPF_RET|unix.BPF_K:
		return fmt.Sprintf("ret #%d", ins.K)
	default:
		return fmt.Sprintf("opcode 0x%02x", ins.Code)
	}
}
