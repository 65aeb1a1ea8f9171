package nftrace

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

// tcpRouterRules is R's ruleset for TestTCPRun: the SYN and the RST of a probe to 8080 are
// accepted by a rule, its SYN-ACK by the policy; a SYN to 8081 is rejected with an ICMP
// port unreachable. Handles in a fresh namespace: forward 1, then the rules 2 and 3.
const tcpRouterRules = `table inet filt {
	chain forward {
		type filter hook forward priority 0; policy accept;
		tcp dport 8080 accept
		tcp dport 8081 reject
	}
}
`

// tcpClientRules lets A's input policy see what comes back: the SYN-ACK, and no trace of
// the ICMP error.
const tcpClientRules = `table inet filt {
	chain input {
		type filter hook input priority 0; policy accept;
	}
}
`

// TestTCPRun traces a TCP run from A to B through R: probe 3, a SYN to a listener, its
// SYN-ACK and A's RST; probe 4, a SYN to a port R rejects. Each event carries the run's echo
// id, the probe and the TCP flags. R's ICMP error about probe 4 reaches A's input chain
// untraced: see traceRules.
func TestTCPRun(t *testing.T) {
	requireNftables(t)
	topo := testenv.Topology(t)
	v4, v6 := topology.TestNets()
	r, err := topo.Router(topology.UniqueName("nc"), v4, v6)
	if err != nil {
		t.Fatal(err)
	}
	run(t, r.R.Name, tcpRouterRules, "nft", "-f", "-")
	run(t, r.A.Name, tcpClientRules, "nft", "-f", "-")
	if err := topo.CheckOwnRoute(r.A, r.Target4); err != nil {
		t.Fatalf("not sending: %v", err)
	}
	var ln net.Listener
	if err := r.B.Do(func() (err error) {
		ln, err = net.Listen("tcp", netip.AddrPortFrom(r.Target4, 8080).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var fd int
	if err := r.A.Do(func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_TCP)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)

	m := decode.NewTCPMark(0x7c05, 0x31337000, 8)
	tr, err := Open(netnsList(r.A, r.R, r.B), Match{EchoID: m.EchoID, TCP: &m})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := tr.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	for _, p := range []struct {
		k     uint16
		dport uint16
	}{{3, 8080}, {4, 8081}} {
		syn := tcpSegment(r.A4.Addr(), r.Target4, 40000+p.k, p.dport, m.ISN(p.k), decode.TCPSyn)
		if err := unix.Sendto(fd, syn, 0, &unix.SockaddrInet4{Addr: r.Target4.As4()}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	events, err := tr.Drain(5 * time.Millisecond)
	if err != nil {
		t.Fatalf("Drain: %v", err)
	}
	a, rr := uint32(r.A.Inode), uint32(r.R.Inode)
	fwd := func(typ decode.TraceType, verdict string, handle uint64, rule string, req bool) row {
		return row{rr, "inet", "filt", "forward", decode.HookForward, typ, verdict, "", handle, rule, req}
	}
	in := row{a, "inet", "filt", "input", decode.HookInput, decode.TracePolicy, "ACCEPT", "", 0, "", false}
	want := []tcpEvent{
		{fwd(decode.TraceRule, "ACCEPT", 2, "tcp dport 8080 accept", true), 6, decode.TCPSyn, 0, 3},
		{fwd(decode.TracePolicy, "ACCEPT", 0, "", false), 6, decode.TCPSyn | decode.TCPAck, 0, 3},
		{in, 6, decode.TCPSyn | decode.TCPAck, 0, 3},
		{fwd(decode.TraceRule, "ACCEPT", 2, "tcp dport 8080 accept", true), 6, decode.TCPRst, 0, 3},
		{fwd(decode.TraceRule, "DROP", 3, "tcp dport 8081 reject", true), 6, decode.TCPSyn, 0, 4},
	}
	var got []tcpEvent
	for _, e := range events {
		if e.EchoID != m.EchoID {
			t.Errorf("event of echo id %#x: %+v", e.EchoID, e)
		}
		got = append(got, tcpEvent{rows([]decode.NetfilterEvent{e})[0], e.Proto, e.TCPFlags, e.ICMPType, e.Seq})
	}
	// Events come grouped by namespace, in the order the namespaces were given.
	var inOrder []tcpEvent
	for _, ns := range []uint32{a, rr} {
		for _, w := range want {
			if w.Netns == ns {
				inOrder = append(inOrder, w)
			}
		}
	}
	if !slices.Equal(got, inOrder) {
		t.Errorf("events:\n%v\nwant:\n%v", got, inOrder)
	}
}

// tcpEvent is what TestTCPRun compares of an event.
type tcpEvent struct {
	row
	Proto, TCPFlags, ICMPType uint8
	Seq                       uint16
}

func (e tcpEvent) String() string {
	return fmt.Sprintf("%v proto=%d flags=%#x icmp=%d seq=%d\n", e.row, e.Proto, e.TCPFlags, e.ICMPType, e.Seq)
}

// tcpSegment is a TCP header from src to dst, its checksum set, as a raw socket sends it.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, seq uint32, flags uint8) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12], b[13] = 5<<4, flags
	binary.BigEndian.PutUint16(b[14:], 64240)
	pseudo := slices.Concat(src.AsSlice(), dst.AsSlice(), []byte{0, unix.IPPROTO_TCP, 0, byte(len(b))})
	var sum uint32
	for _, part := range [][]byte{pseudo, b} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(part[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(b[16:], ^uint16(sum))
	return b
}
