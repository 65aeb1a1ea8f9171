package nftrace

import (
	"encoding/hex"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tracepkt/tracepkt-perf/internal/testenv"
	"github.com/tracepkt/tracepkt-perf/internal/topology"
)

var capture = flag.Bool("capture", false, "print the raw trace messages of router echoes, to refresh the literals of trace_test.go")

// TestCaptureTraceMessages is how the literal messages in trace_test.go were obtained: the
// topology and rulesets of TestRouter, a tracer for echo id 0x4242 in A and R, a second
// trace socket in each, one IPv4 and one IPv6 echo. Run it with -args -capture.
func TestCaptureTraceMessages(t *testing.T) {
	if !*capture {
		testenv.Elsewhere(t, "a tool run by hand, not a test: go test -run TestCaptureTraceMessages -args -capture")
	}
	topo, r := routerSetup(t)
	const id = 0x4242
	openTracer(t, netnsList(r.A, r.R), id)
	socks := map[string]int{}
	for _, ns := range []*topology.Netns{r.A, r.R} {
		var fd int
		if err := ns.Do(func() (err error) { fd, err = traceSocket(); return err }); err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		socks[ns.Name] = fd
	}
	for seq, dst := range []netip.Addr{r.Target4, r.Target6} {
		if err := echo(t, topo, r.A, dst, id, uint16(seq+1)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		for _, ns := range []*topology.Netns{r.A, r.R} {
			buf := make([]byte, readBufSize)
			for {
				n, _, err := unix.Recvfrom(socks[ns.Name], buf, unix.MSG_DONTWAIT)
				if err != nil {
					break
				}
				var m traceMsg
				_ = parseTraceMessages(buf[:n], func(mm *traceMsg) { m = *mm })
				fmt.Fprintf(os.Stdout, "// %s %s: %s %s type %d handle %d id %08x\nmustHex(%q),\n",
					ns.Name, dst, m.Table, m.Chain, m.Type, m.RuleHandle, m.ID, hex.EncodeToString(buf[:n]))
			}
		}
	}
}
