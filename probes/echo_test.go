package probes

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// echoMessage is an ICMP or ICMPv6 echo message of type typ, id and seq,
// whose payload starts with cookie (checksum 0: nothing checks it on the
// way to the records).
func echoMessage(typ uint8, id, seq uint16, cookie uint32) []byte {
	b := make([]byte, 8, 24)
	b[0] = typ
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	b = binary.BigEndian.AppendUint32(b, cookie)
	return append(b, "0123456789ab"...)
}

// TestEchoCookieFilterPackets hands the device programs of an echo run with
// a cookie crafted packets, as TestTCPFilterPackets does: echoes of the
// run's id, and echoes whose id a NAT rewrote but whose payload starts with
// the cookie, requests and replies, over IPv4 with and without options and
// IPv6, and ICMP errors quoting them, are recorded with the run's id; echoes
// of another id without the cookie, the cookie out of place, and other ICMP
// messages carrying it are not.
func TestEchoCookieFilterPackets(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	const id, cookie, rewritten = 0x4d01, 0xc0ffee01, 0x9a17
	tr := openTracer(t, Config{EchoID: id, EchoCookie: cookie})
	c4, s4, c6, s6 := n.client4, n.server4, n.client6, n.server6
	nop := []byte{1, 1, 1, 1}
	late := echoMessage(8, rewritten, 9, 0)
	binary.BigEndian.PutUint32(late[9:], cookie)
	cases := []filterCase{
		{"request of the run's id", 4, ipv4Packet(c4, s4, 1, nil, echoMessage(8, id, 1, cookie)), true, 1, 0, 8, 0},
		{"request whose id a NAT rewrote", 4, ipv4Packet(c4, s4, 1, nil, echoMessage(8, rewritten, 2, cookie)), true, 2, 0, 8, 0},
		{"its reply", 4, ipv4Packet(s4, c4, 1, nil, echoMessage(0, rewritten, 2, cookie)), true, 2, 0, 0, 0},
		{"rewritten, IPv4 options", 4, ipv4Packet(c4, s4, 1, nop, echoMessage(8, rewritten, 3, cookie)), true, 3, 0, 8, 0},
		{"rewritten, IPv6", 6, ipv6Packet(c6, s6, 58, echoMessage(128, rewritten, 4, cookie)), true, 4, 0, 128, 0},
		{"rewritten reply, IPv6", 6, ipv6Packet(s6, c6, 58, echoMessage(129, rewritten, 4, cookie)), true, 4, 0, 129, 0},
		{"unreachable quoting a rewritten request", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 1, ipv4Packet(c4, s4, 1, nil, echoMessage(8, rewritten, 5, cookie)))), true, 5, 0, 3, 0},
		{"ICMPv6 unreachable quoting a rewritten request", 6, ipv6Packet(s6, c6, 58, icmpError(1, 3, ipv6Packet(c6, s6, 58, echoMessage(128, rewritten, 6, cookie)))), true, 6, 0, 1, 0},

		{"another id, another cookie", 4, ipv4Packet(c4, s4, 1, nil, echoMessage(8, rewritten, 7, cookie+1)), false, 0, 0, 0, 0},
		{"another id, another cookie, IPv6", 6, ipv6Packet(c6, s6, 58, echoMessage(128, rewritten, 7, cookie^0x80000000)), false, 0, 0, 0, 0},
		{"the cookie one byte late", 4, ipv4Packet(c4, s4, 1, nil, late), false, 0, 0, 0, 0},
		{"a timestamp request carrying it", 4, ipv4Packet(c4, s4, 1, nil, echoMessage(13, rewritten, 7, cookie)), false, 0, 0, 0, 0},
		{"unreachable quoting another cookie", 4, ipv4Packet(s4, c4, 1, nil, icmpError(3, 1, ipv4Packet(c4, s4, 1, nil, echoMessage(8, rewritten, 7, cookie+1)))), false, 0, 0, 0, 0},
	}
	// The last case is ours: once its records come, the others' have had
	// time to.
	cases = append(cases, filterCase{"request, last", 4, ipv4Packet(c4, s4, 1, nil, echoMessage(8, id, 8, cookie)), true, 8, 0, 8, 0})
	want := sendCases(t, n, 0, id, cases, func(_ filterCase, r tcpRow) tcpRow { return r })
	checkRows(t, readRows(t, tr, want, 300*time.Millisecond, tcpRowOf), want)
}
