package ping

import (
	"errors"
	"testing"

	"golang.org/x/sys/unix"
)

func TestEchoReplyFilterListing(t *testing.T) {
	for _, tc := range []struct {
		name   string
		family int
		want   string
	}{
		{"ipv4", unix.AF_INET, `
(000) { 0xb1, 0, 0, 0x00000000 }     ldxb 4*([0]&0xf)               ; X = IPv4 header length, 4*IHL
(001) { 0x50, 0, 0, 0x00000000 }     ldb [x + 0]                    ; A = ICMP type
(002) { 0x15, 0, 3, 0x00000000 }     jeq #0x0 jt 3 jf 6             ; echo reply?
(003) { 0x48, 0, 0, 0x00000004 }     ldh [x + 4]                    ; A = echo id
(004) { 0x15, 0, 1, 0x00001234 }     jeq #0x1234 jt 5 jf 6          ; our echo id?
(005) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
(006) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
`},
		{"ipv6", unix.AF_INET6, `
(000) { 0x30, 0, 0, 0x00000000 }     ldb [0]                        ; A = ICMPv6 type
(001) { 0x15, 0, 3, 0x00000081 }     jeq #0x81 jt 2 jf 5            ; echo reply?
(002) { 0x28, 0, 0, 0x00000004 }     ldh [4]                        ; A = echo id
(003) { 0x15, 0, 1, 0x00001234 }     jeq #0x1234 jt 4 jf 5          ; our echo id?
(004) { 0x06, 0, 0, 0xffffffff }     ret #4294967295                ; accept the whole packet
(005) { 0x06, 0, 0, 0x00000000 }     ret #0                         ; drop
`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := echoReplyFilter(tc.family, 0x1234)
			if err != nil {
				t.Fatal(err)
			}
			if got := "\n" + p.String(); got != tc.want {
				t.Errorf("filter listing changed:\ngot:%s\nwant:%s", got, tc.want)
			}
		})
	}
}

func TestEchoReplyFilterUnknownFamily(t *testing.T) {
	if _, err := echoReplyFilter(unix.AF_UNIX, 1); !errors.Is(err, unix.EAFNOSUPPORT) {
		t.Errorf("echoReplyFilter(AF_UNIX) error = %v, want EAFNOSUPPORT", err)
	}
}

// TestEchoReplyFilterVerdicts runs the filters on literal packets with a small
// classic BPF interpreter, so the offsets are checked without root. The root
// tests check the kernel agrees.
func TestEchoReplyFilterVerdicts(t *testing.T) {
	v4, err := echoReplyFilter(unix.AF_INET, 0x1234)
	if err != nil {
		t.Fatal(err)
	}
	v6, err := echoReplyFilter(unix.AF_INET6, 0x1234)
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			verdict := runFilter(t, tc.prog.sockFilters(), tc.pkt)
			if got := verdict != 0; got != tc.accept {
				t.Errorf("filter returned %#x, want accept=%v", verdict, tc.accept)
			}
		})
	}
}

// runFilter interprets the classic BPF instructions echoReplyFilter emits.
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
	f := icmpv6Filter()
	for typ := range 256 {
		blocked := f.Data[typ>>5]&(1<<(typ&31)) != 0
		if want := typ != icmpv6EchoReply; blocked != want {
			t.Errorf("ICMPv6 type %d: blocked = %v, want %v", typ, blocked, want)
		}
	}
}
