package probes

import (
	"encoding/binary"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// listenMessage is an echo message of type typ, header id and seq, whose
// payload starts with a pinger's cookie: 2 random bytes, the run's echo id
// run, then the magic.
func listenMessage(typ uint8, id, seq, run uint16) []byte {
	b := echoMessage(typ, id, seq, 0x8a5b0000|uint32(run))
	binary.BigEndian.PutUint32(b[12:], decode.ListenMagic)
	return b
}

// kept is a case of a packet the filter keeps, with its sequence and ICMP
// type; left one it leaves out.
func kept(name string, packet []byte, seq uint16, icmp uint8) filterCase {
	return filterCase{name: name, family: packet[0] >> 4, packet: packet, ours: true, k: seq, icmp: icmp}
}

func left(name string, packet []byte) filterCase {
	return filterCase{name: name, family: packet[0] >> 4, packet: packet}
}

// TestListenFilterPackets hands a listener's device programs crafted
// packets, as TestEchoCookieFilterPackets does: echoes carrying the magic
// are kept whatever their header's id (a NAT's rewrite), with the run's
// echo id from their cookie, and ICMP errors quoting them; echoes without
// the magic, with it out of place, and other ICMP messages are not. A
// listener narrowed to one run (--id) leaves the other runs' echoes out.
func TestListenFilterPackets(t *testing.T) {
	testenv.RequireRoot(t)
	n := newTCPNet(t)
	const run, other, rewritten = 0x4d02, 0x4d03, 0x9a18
	c4, s4, c6, s6 := n.client4, n.server4, n.client6, n.server6
	late := echoMessage(8, run, 9, 0)
	binary.BigEndian.PutUint32(late[13:], decode.ListenMagic)
	for _, narrowed := range []bool{false, true} {
		name := "any run"
		cfg := Config{Listen: true}
		if narrowed {
			name, cfg.EchoID = "one run", run
		}
		t.Run(name, func(t *testing.T) {
			tr := openTracer(t, cfg)
			q4 := func(m []byte) []byte { return icmpError(3, 1, ipv4Packet(c4, s4, 1, nil, m)) }
			q6 := func(m []byte) []byte { return icmpError(1, 3, ipv6Packet(c6, s6, 58, m)) }
			cases := []filterCase{
				kept("request", ipv4Packet(c4, s4, 1, nil, listenMessage(8, run, 1, run)), 1, 8),
				kept("request whose id a NAT rewrote", ipv4Packet(c4, s4, 1, nil, listenMessage(8, rewritten, 2, run)), 2, 8),
				kept("its reply", ipv4Packet(s4, c4, 1, nil, listenMessage(0, rewritten, 2, run)), 2, 0),
				kept("IPv6 request", ipv6Packet(c6, s6, 58, listenMessage(128, run, 3, run)), 3, 128),
				kept("IPv6 reply", ipv6Packet(s6, c6, 58, listenMessage(129, rewritten, 3, run)), 3, 129),
				kept("unreachable quoting a request", ipv4Packet(s4, c4, 1, nil, q4(listenMessage(8, rewritten, 4, run))), 4, 3),
				kept("ICMPv6 unreachable quoting a request", ipv6Packet(s6, c6, 58, q6(listenMessage(128, run, 5, run))), 5, 1),

				left("no magic", ipv4Packet(c4, s4, 1, nil, echoMessage(8, run, 6, 0x8a5b0000|run))),
				left("the magic one byte late", ipv4Packet(c4, s4, 1, nil, late)),
				left("a timestamp request carrying it", ipv4Packet(c4, s4, 1, nil, listenMessage(13, run, 7, run))),
				left("unreachable quoting an echo without it", ipv4Packet(s4, c4, 1, nil, q4(echoMessage(8, run, 7, 0)))),
			}
			// Another run's echo: kept by a listener of any run, with its
			// own id, and left out by one narrowed to the run.
			otherRun := []filterCase{kept("another run's request", ipv4Packet(c4, s4, 1, nil, listenMessage(8, other, 8, other)), 8, 8)}
			otherRun[0].ours = !narrowed
			last := []filterCase{kept("request, last", ipv4Packet(c4, s4, 1, nil, listenMessage(8, run, 9, run)), 9, 8)}
			same := func(_ filterCase, r tcpRow) tcpRow { return r }
			want := sendCases(t, n, 0, run, cases, same)
			want = append(want, sendCases(t, n, 0, other, otherRun, same)...)
			want = append(want, sendCases(t, n, 0, run, last, same)...)
			checkRows(t, readRows(t, tr, want, 300*time.Millisecond, tcpRowOf), want)
		})
	}
}
