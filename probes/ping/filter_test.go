package ping

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSocketFilterListing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		want   string
	}{
		{"ipv4", unix.AF_INET, `
(000) { 0xb1, 0, 0, 0x00000000 }     ldxb 4*([0]&0xf)               ; X = IPv4 header length, 4*IHL
(001) { 0x50, 0, 0, 0x00000000 }     ldb [x + 0]                    ; A = ICMP type
(002) { 0x15, 13, 0, 0x00000000 }    jeq #0x0 jt 16 jf 3            ; echo reply?
(003) { 0x15, 2, 0, 0x00000003 }     jeq #0x3 jt 6 jf 4             ; destination unreachable?
(004) { 0x15, 1, 0, 0x0000000b }     jeq #0xb jt 6 jf 5             ; time exceeded?
(005) { 0x15, 0, 12, 0x0000000c }    jeq #0xc jt 6 jf 18            ; parameter problem?
(006) { 0x50, 0, 0, 0x00000011 }     ldb [x + 17]                   ; A = quoted IPv4 protocol
(007) { 0x15, 0, 10, 0x00000001 }    jeq #0x1 jt 8 jf 18            ; ICMP?
(008) { 0x50, 0, 0, 0x00000008 }     ldb [x + 8]                    ; A = quoted version and IHL
(009) { 0x54, 0, 0, 0x0000000f }     and #0xf                       ; A = quoted IHL
(010) { 0x64, 0, 0, 0x00000002 }     lsh #2                         ; A = quoted IPv4 header length
(011) { 0x0c, 0, 0, 0x00000000 }     add x                          ; + IPv4 header length
(012) { 0x04, 0, 0, 0x00000008 }     add #8                         ; + ICMP error header
(013) { 0x07, 0, 0, 0x00000000 }     tax                            ; X = offset of the quoted ICMP header
(014) { 0x50, 0, 0, 0x00000000 }     ldb [x + 0]                    ; A = quoted ICMP type
(015) { 0x15, 0, 2, 0x00000008 }     jeq #0x8 jt 16 jf 18           ; echo request?
(016) { 0x48, 0, 0, 0x00000004 }     ldh [x + 4]                    ; A = echo id
(017) { 0x15, 1, 0, 0x00001234 }     jeq #0x1234 jt 19 jf 18        ; our echo id?
(018) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
(019) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
`},
		{"ipv6", unix.AF_INET6, `
(000) { 0x30, 0, 0, 0x00000000 }     ldb [0]                        ; A = ICMPv6 type
(001) { 0x15, 10, 0, 0x00000081 }    jeq #0x81 jt 12 jf 2           ; echo reply?
(002) { 0x15, 3, 0, 0x00000001 }     jeq #0x1 jt 6 jf 3             ; destination unreachable?
(003) { 0x15, 2, 0, 0x00000002 }     jeq #0x2 jt 6 jf 4             ; packet too big?
(004) { 0x15, 1, 0, 0x00000003 }     jeq #0x3 jt 6 jf 5             ; time exceeded?
(005) { 0x15, 0, 8, 0x00000004 }     jeq #0x4 jt 6 jf 14            ; parameter problem?
(006) { 0x30, 0, 0, 0x0000000e }     ldb [14]                       ; A = quoted IPv6 next header
(007) { 0x15, 0, 6, 0x0000003a }     jeq #0x3a jt 8 jf 14           ; ICMPv6?
(008) { 0x30, 0, 0, 0x00000030 }     ldb [48]                       ; A = quoted ICMPv6 type
(009) { 0x15, 0, 4, 0x00000080 }     jeq #0x80 jt 10 jf 14          ; echo request?
(010) { 0x28, 0, 0, 0x00000034 }     ldh [52]                       ; A = quoted echo id
(011) { 0x15, 3, 2, 0x00001234 }     jeq #0x1234 jt 15 jf 14        ; our echo id?
(012) { 0x28, 0, 0, 0x00000004 }     ldh [4]                        ; A = echo id
(013) { 0x15, 1, 0, 0x00001234 }     jeq #0x1234 jt 15 jf 14        ; our echo id?
(014) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
(015) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := socketFilter(tc.family, 0x1234)
			if err != nil {
				t.Fatal(err)
			}
			if got := "\n" + p.String(); got != tc.want {
				t.Errorf("filter listing changed:\ngot:%s\nwant:%s", got, tc.want)
			}
		})
	}
}

func TestSocketFilterUnknownFamily(t *testing.T) {
	if _, err := socketFilter(unix.AF_UNIX, 1); !errors.Is(err, unix.EAFNOSUPPORT) {
		t.Errorf("socketFilter(AF_UNIX) error = %v, want EAFNOSUPPORT", err)
	}
}

// TestSocketFilterVerdicts runs the filters on literal packets with a small
// classic BPF interpreter, so the offsets are checked without root. The root
// tests check the kernel agrees.
func TestSocketFilterVerdicts(t *testing.T) {
	v4, err := socketFilter(unix.AF_INET, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := socketFilter(unix.AF_INET6, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	otherID := cat(echoReplyV4)
	otherID[5] = 0x35

	for _, tc := range []struct {
		name   string
		prog   filterProgram
		pkt    []byte
		accept bool
	}{
		{"v4 reply", v4, cat(ipv4Header, echoReplyV4), true},
		{"v4 reply with ip options", v4, cat(ipv4HeaderOptions, echoReplyV4), true},
		{"v4 reply other id", v4, cat(ipv4Header, otherID), false},
		{"v4 request", v4, cat(ipv4Header, echoRequestV4), false},
		{"v4 truncated before id", v4, cat(ipv4Header, echoReplyV4[:5]), false},
		{"v4 empty", v4, nil, false},
		{"v6 reply", v6, echoReplyV6, true},
		{"v6 reply other id", v6, cat(echoReplyV6[:5], []byte{0x35}, echoReplyV6[6:]), false},
		{"v6 request", v6, echoRequestV6, false},
		{"v6 truncated before id", v6, echoReplyV6[:5], false},
		{"v4 port unreachable quoting our request", v4, cat(ipv4Header, errorV4(3, 3, 0, ipv4Header, echoRequestV4)), true},
		{"v4 time exceeded quoting our request, 8 bytes", v4, cat(ipv4Header, errorV4(11, 0, 0, ipv4Header, echoRequestV4[:8])), true},
		{"v4 frag needed quoting ip options", v4, cat(ipv4Header, errorV4(3, 4, 1280, ipv4HeaderOptions, echoRequestV4)), true},
		{"v4 error quoting another id", v4, cat(ipv4Header, errorV4(3, 1, 0, ipv4Header, cat(echoRequestV4[:4], []byte{0x12, 0x35}, echoRequestV4[6:]))), false},
		{"v4 error quoting a reply", v4, cat(ipv4Header, errorV4(3, 1, 0, ipv4Header, echoReplyV4)), false},
		{"v4 redirect", v4, cat(ipv4Header, errorV4(5, 1, 0, ipv4Header, echoRequestV4)), false},
		{"v4 error truncated in the quote", v4, cat(ipv4Header, errorV4(3, 1, 0, ipv4Header, echoRequestV4)[:30]), false},
		{"v6 unreachable quoting our request", v6, errorV6(1, 4, 0, echoRequestV6), true},
		{"v6 packet too big", v6, errorV6(2, 0, 1280, echoRequestV6), true},
		{"v6 time exceeded", v6, errorV6(3, 0, 0, echoRequestV6), true},
		{"v6 error quoting another id", v6, errorV6(1, 0, 0, cat(echoRequestV6[:4], []byte{0x12, 0x35}, echoRequestV6[6:])), false},
		{"v6 error quoting a reply", v6, errorV6(1, 0, 0, echoReplyV6), false},
		{"v6 redirect", v6, errorV6(137, 0, 0, echoRequestV6), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verdict := runFilter(t, tc.prog.sockFilters(), tc.pkt)
			if got := verdict != 0; got != tc.accept {
				t.Errorf("filter returned %#x, want accept=%v", verdict, tc.accept)
			}
		})
	}
}

// errorV4 is an ICMP error of type and code (mtu for "fragmentation needed")
// quoting an IPv4 header and what followed it; the checksum is not checked.
func errorV4(typ, code uint8, mtu uint16, hdr, quoted []byte) []byte {
	h := []byte{typ, code, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}
	return cat(h, hdr, quoted)
}

// errorV6 is an ICMPv6 error quoting an IPv6 header (next header ICMPv6) and msg.
func errorV6(typ, code uint8, mtu uint32, msg []byte) []byte {
	return errorV6Quoting(typ, code, mtu, protoICMPv6, msg)
}

// errorV6Quoting is an ICMPv6 error quoting an IPv6 header with next header
// nh, and msg.
func errorV6Quoting(typ, code uint8, mtu uint32, nh uint8, msg []byte) []byte {
	h := []byte{typ, code, 0, 0, byte(mtu >> 24), byte(mtu >> 16), byte(mtu >> 8), byte(mtu)}
	ip6 := make([]byte, 40)
	ip6[0], ip6[6], ip6[7] = 0x60, nh, 64
	return cat(h, ip6, msg)
}

// runFilter interprets the classic BPF instructions socketFilter emits.
// Like the kernel, a load beyond the packet ends the program with 0 (drop).
func runFilter(tb testing.TB, prog []unix.SockFilter, pkt []byte) uint32 {
	tb.Helper()
	var a, x uint32
	load := func(off uint32, size uint32) (uint32, bool) {
		if uint64(off)+uint64(size) > uint64(len(pkt)) {
			return 0, false
		}
		var v uint32
		for _, b := range pkt[off : off+size] {
			v = v<<8 | uint32(b)
		}
		return v, true
	}
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		ok := true
		switch ins.Code {
		case unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH:
			x, ok = load(ins.K, 1)
			x = 4 * (x & 0xf)
		case unix.BPF_LD | unix.BPF_B | unix.BPF_ABS:
			a, ok = load(ins.K, 1)
		case unix.BPF_LD | unix.BPF_H | unix.BPF_ABS:
			a, ok = load(ins.K, 2)
		case unix.BPF_LD | unix.BPF_B | unix.BPF_IND:
			a, ok = load(x+ins.K, 1)
		case unix.BPF_LD | unix.BPF_H | unix.BPF_IND:
			a, ok = load(x+ins.K, 2)
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			a &= ins.K
		case unix.BPF_ALU | unix.BPF_LSH | unix.BPF_K:
			a <<= ins.K
		case unix.BPF_ALU | unix.BPF_ADD | unix.BPF_K:
			a += ins.K
		case unix.BPF_ALU | unix.BPF_ADD | unix.BPF_X:
			a += x
		case unix.BPF_MISC | unix.BPF_TAX:
			x = a
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			if a == ins.K {
				pc += int(ins.Jt)
			} else {
				pc += int(ins.Jf)
			}
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		default:
			tb.Fatalf("runFilter: unsupported opcode %#x at %d", ins.Code, pc)
		}
		if !ok {
			return 0
		}
	}
	tb.Fatalf("runFilter: program fell off its end")
	return 0
}

func TestICMPv6Filter(t *testing.T) {
	f := icmpv6Filter(echoICMPv6Types...)
	for typ := range 256 {
		blocked := f.Data[typ>>5]&(1<<(typ&31)) != 0
		passes := typ == icmpv6EchoReply || typ >= 1 && typ <= 4
		if want := !passes; blocked != want {
			t.Errorf("ICMPv6 type %d: blocked = %v, want %v", typ, blocked, want)
		}
	}
}
