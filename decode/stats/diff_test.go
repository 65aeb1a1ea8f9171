package stats

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/tracepkt/tracepkt-perf/decode"
)

var here = Origin{Host: "h1", Kernel: "6.18", BootID: "b1"}

func run(o Origin, names Names, js ...decode.Journey) *Run {
	return &Run{Summary: Summarize(js, names), Origin: o}
}

func TestCompareSame(t *testing.T) {
	a := run(here, routerNames, journey(1, true, routerPath("eth1")), journey(2, true, routerPath("eth1")))
	d := Compare(a, a)
	if !d.Same || d.Divergence != nil || len(d.Verdicts)+len(d.Latency)+len(d.Paths)+len(d.Notes) != 0 {
		t.Errorf("a run against itself: %+v", d)
	}
}

func TestCompareOtherInodesAndMachine(t *testing.T) {
	a := run(here, routerNames, journey(1, true, routerPath("eth1")))
	other := routerPath("eth1")
	names := Names{}
	for i := range other {
		other[i].netns += 1000
		names[other[i].netns] = routerNames[other[i].netns-1000]
	}
	b := run(Origin{Host: "h2", Kernel: "6.1", BootID: "b2"}, names, journey(9, true, other))
	d := Compare(a, b)
	if !d.Same || d.Divergence != nil {
		t.Errorf("same names, other inodes: %+v", d)
	}
	if len(d.Notes) != 1 || !strings.Contains(d.Notes[0], "A was recorded on h1 (kernel 6.18), B on h2 (kernel 6.1)") {
		t.Errorf("notes %q", d.Notes)
	}
	c := run(here, routerNames, journey(1, true, routerPath("eth1")))
	c.Summary.Target = netip.MustParseAddr("10.0.1.3")
	if d := Compare(a, c); !d.Same || len(d.Notes) != 1 || d.Notes[0] != "A traced echoes to 10.0.1.2, B to 10.0.1.3" {
		t.Errorf("other target: same %v, notes %q", d.Same, d.Notes)
	}
}

func TestCompareDropNamed(t *testing.T) {
	a := run(here, routerNames, journey(1, true, routerPath("eth1"), outputAccept()))
	b := run(here, routerNames, journey(1, false, routerPath("eth1")[:2], outputAccept(), forwardDrop()))
	d := Compare(a, b)
	if d.Same || d.Divergence == nil {
		t.Fatalf("%+v", d)
	}
	want := "B stops after the request entering eth0 in r: dropped by filter.FORWARD (rule 7: icmp type echo-request drop), where A went on to the request leaving eth1 in r"
	if d.Divergence.Text != want || d.Divergence.Common != 2 {
		t.Errorf("divergence %d %q\nwant %q", d.Divergence.Common, d.Divergence.Text, want)
	}
	if len(d.Verdicts) != 1 || d.Verdicts[0].Run != "B" || d.Verdicts[0].Verdict.Verdict != "DROP" || d.Verdicts[0].Hop.Ifname != "eth0" {
		t.Errorf("verdicts %+v", d.Verdicts)
	}
	// The other way round.
	if d := Compare(b, a); !strings.HasPrefix(d.Divergence.Text, "A stops after the request entering eth0 in r: dropped by filter.FORWARD") ||
		!strings.HasSuffix(d.Divergence.Text, "where B went on to the request leaving eth1 in r") {
		t.Errorf("reversed: %q", d.Divergence.Text)
	}
}

func TestCompareRerouted(t *testing.T) {
	a := run(here, routerNames, journey(1, true, routerPath("eth1")))
	b := run(here, routerNames, journey(1, true, routerPath("eth2")), journey(2, true, routerPath("eth2")), journey(3, true, routerPath("eth1")))
	d := Compare(a, b)
	want := "the runs part after the request entering eth0 in r: A went on to the request leaving eth1 in r, B went on to the request leaving eth2 in r"
	if d.Same || d.Divergence == nil || d.Divergence.Text != want {
		t.Fatalf("got %+v", d.Divergence)
	}
	// B's second path is A's: not listed as a path of its own.
	if len(d.Paths) != 0 {
		t.Errorf("paths %+v", d.Paths)
	}
	c := run(here, routerNames, journey(1, true, routerPath("eth1")), journey(2, true, routerPath("eth1")), journey(3, true, routerPath("eth2")))
	d = Compare(a, c)
	if d.Same || d.Divergence != nil || len(d.Paths) != 1 || d.Paths[0].Run != "B" || d.Paths[0].Echoes != 1 {
		t.Errorf("a second path in B only: %+v", d)
	}
}

func TestCompareLatencyMoved(t *testing.T) {
	var fast, slow, jittery []decode.Journey
	for seq := uint16(1); seq <= 10; seq++ {
		fast = append(fast, journey(seq, true, routerPath("eth1", 0, 10000+uint64(seq)*100)))
		slow = append(slow, journey(seq, true, routerPath("eth1", 0, 40000+uint64(seq)*100)))
		jittery = append(jittery, journey(seq, true, routerPath("eth1", 0, uint64(seq)*3000)))
	}
	d := Compare(run(here, routerNames, fast...), run(here, routerNames, slow...))
	if !d.Same || len(d.Latency) != 1 || d.Latency[0].Hop.Ifname != "eth0" || d.Latency[0].B.P50 != 40500 {
		t.Errorf("latency %+v", d.Latency)
	}
	// Within the noise of a jittery run: not reported.
	if d := Compare(run(here, routerNames, fast...), run(here, routerNames, jittery...)); len(d.Latency) != 0 {
		t.Errorf("latency within the noise: %+v", d.Latency)
	}
	// Too few echoes to know the noise.
	if d := Compare(run(here, routerNames, fast[:2]...), run(here, routerNames, slow[:2]...)); len(d.Latency) != 0 {
		t.Errorf("latency of 2 echoes: %+v", d.Latency)
	}
}

func TestCompareICMPError(t *testing.T) {
	a := run(here, routerNames, journey(1, true, routerPath("eth1")))
	b := run(here, routerNames, unreachable(1))
	d := Compare(a, b)
	want := "the runs part after the request entering eth0 in r: A went on to the request leaving eth1 in r, " +
		"B went on to the ICMP error (unreachable) leaving eth0 in r (destination unreachable: communication administratively prohibited from 10.0.0.1)"
	if d.Same || d.Divergence == nil || d.Divergence.Text != want {
		t.Errorf("got %+v\nwant %q", d.Divergence, want)
	}
}
