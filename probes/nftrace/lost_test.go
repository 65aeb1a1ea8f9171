package nftrace

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

// TestReadAllCountsUnparsable: a datagram whose message does not parse is
// counted in Lost, where the run shows it, rather than dropped unseen.
func TestReadAllCountsUnparsable(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	tr := &Tracer{claims: claimer{match: Match{EchoID: 1}}, buf: make([]byte, readBufSize), nss: []*nsState{{fd: fds[0]}}}
	// A netlink header whose length runs past the datagram, then a
	// truncated NFT_MSG_TRACE.
	short := []byte{64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	trace := make([]byte, 17)
	trace[0] = 17
	binary.NativeEndian.PutUint16(trace[4:], traceMsgType)
	for _, d := range [][]byte{short, trace} {
		if _, err := unix.Write(fds[1], d); err != nil {
			t.Fatal(err)
		}
	}
	if err := tr.readAll(); err != nil {
		t.Fatal(err)
	}
	if got := tr.Lost(); got != 2 {
		t.Errorf("Lost() = %d after two unparsable datagrams, want 2", got)
	}
}
