package svg

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

// A container on a docker-like bridge pings a database behind a router
// namespace; the second container shares the bridge.
const inoWeb, inoHost, inoRouter, inoDB = 4026532301, 4026531833, 4026532402, 4026532503

func hop(ns string, inode uint32, ifname string, dir decode.Direction, req bool, dt time.Duration) stats.Hop {
	h := stats.Hop{Place: stats.Place{Netns: ns, Ifname: ifname, Dir: dir, Request: req}, Inode: inode, Count: 1}
	if dt > 0 {
		h.Delta = stats.Percentiles{N: 1, P50: dt, P90: dt, P99: dt, Max: dt}
	}
	return h
}

func webToDB() []stats.Hop {
	out, in := decode.Out, decode.In
	us := time.Microsecond
	return []stats.Hop{
		hop("web-1", inoWeb, "eth0", out, true, 0),
		hop("host", inoHost, "veth-web1", in, true, 9*us),
		hop("host", inoHost, "br0", in, true, 4*us),
		hop("host", inoHost, "veth-rtr", out, true, 12*us),
		hop("router", inoRouter, "eth0", in, true, 8*us),
		hop("router", inoRouter, "eth1", out, true, 15*us),
		hop("db-1", inoDB, "eth0", in, true, 8*us),
		hop("db-1", inoDB, "eth0", out, false, 21*us),
		hop("router", inoRouter, "eth1", in, false, 7*us),
		hop("router", inoRouter, "eth0", out, false, 11*us),
		hop("host", inoHost, "veth-rtr", in, false, 8*us),
		hop("host", inoHost, "br0", out, false, 10*us),
		hop("host", inoHost, "veth-web1", out, false, 5*us),
		hop("web-1", inoWeb, "eth0", in, false, 8*us),
	}
}

func droppedAtRouter() stats.Group {
	hops := webToDB()[:5]
	hops[4].LostAfter = 1
	hops[4].Verdicts = []stats.Verdict{{Chain: "filter.FORWARD", Verdict: "DROP", Rule: "rule 7: ip daddr 10.0.2.0/24 icmp type echo-request drop", Count: 1}}
	hops[4].Drops = []stats.Count{{Reason: "NETFILTER_DROP", Count: 1}}
	return stats.Group{Hops: hops, Echoes: 1}
}

// element is an SVG element with a class, as the tests look for them.
type element struct {
	name  string
	attrs map[string]string
	text  string
}

// parse reads doc as XML and returns its elements that have a class, in
// document order, with the text inside them.
func parse(t *testing.T, doc []byte) []element {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var out []element
	var open []int // indices in out of the classed elements being read, -1 for others
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG does not parse: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := element{name: tok.Name.Local, attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.attrs[a.Name.Local] = a.Value
			}
			if e.attrs["class"] == "" {
				open = append(open, -1)
				continue
			}
			open = append(open, len(out))
			out = append(out, e)
		case xml.CharData:
			for _, i := range open {
				if i >= 0 {
					out[i].text += string(tok)
				}
			}
		case xml.EndElement:
			open = open[:len(open)-1]
		}
	}
	return out
}

func classed(els []element, class string) []element {
	var out []element
	for _, e := range els {
		if e.attrs["class"] == class {
			out = append(out, e)
		}
	}
	return out
}

func hopsOf(els []element) []string {
	var out []string
	for _, e := range classed(els, "hop") {
		out = append(out, fmt.Sprintf("%s %s %s %s %s %s", e.attrs["data-num"], e.attrs["data-run"], e.attrs["data-netns"], e.attrs["data-ifname"], e.attrs["data-dir"], e.attrs["data-type"]))
	}
	return out
}

func wantHops(run string, first int, hops []stats.Hop) []string {
	var out []string
	for i, h := range hops {
		typ := "reply"
		if h.Request {
			typ = "request"
		}
		out = append(out, fmt.Sprintf("%d %s %s %s %s %s", first+i, run, h.Netns, h.Ifname, h.Dir, typ))
	}
	return out
}

func boxes(els []element) []string {
	var out []string
	for _, e := range classed(els, "netns") {
		if e.name == "rect" {
			out = append(out, e.attrs["data-netns"])
		}
	}
	return out
}

// render turns the SVG into a PNG with librsvg and checks the PNG decodes
// to a picture of the SVG's size with something drawn on it.
func render(t *testing.T, name string, doc []byte) {
	t.Helper()
	testenv.RequireCommands(t, "rsvg-convert")
	dir := t.TempDir()
	in, out := filepath.Join(dir, name+".svg"), filepath.Join(dir, name+".png")
	if err := os.WriteFile(in, doc, 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("rsvg-convert", "-o", out, in).CombinedOutput(); err != nil || len(b) > 0 {
		t.Fatalf("rsvg-convert: %v %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the PNG rsvg-convert wrote: %v", err)
	}
	var root struct {
		Width  int `xml:"width,attr"`
		Height int `xml:"height,attr"`
	}
	if err := xml.Unmarshal(doc, &root); err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != root.Width || b.Dy() != root.Height {
		t.Errorf("PNG is %dx%d, the SVG %dx%d", b.Dx(), b.Dy(), root.Width, root.Height)
	}
	colours := map[[3]uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 12, g >> 12, bl >> 12}] = true
		}
	}
	if len(colours) < 8 {
		t.Errorf("the PNG has %d colours: nothing was drawn", len(colours))
	}
	if dir := os.Getenv("TRACEPKT_SVG_OUT"); dir != "" {
		// To look at the pictures: TRACEPKT_SVG_OUT=/tmp/x go test ./decode/svg
		os.WriteFile(filepath.Join(dir, name+".svg"), doc, 0o644)
		pngb, _ := os.ReadFile(out)
		os.WriteFile(filepath.Join(dir, name+".png"), pngb, 0o644)
	}
}

func TestJourney(t *testing.T) {
	g := stats.Group{Hops: webToDB(), Echoes: 1, Replied: 1}
	g.Hops[0].Verdicts = []stats.Verdict{{Chain: "filter.OUTPUT", Verdict: "ACCEPT", Rule: "policy", Count: 1}}
	var buf bytes.Buffer
	if err := Journey(&buf, Header{Title: "echo to 10.0.2.9", Lines: []string{"reply in 175µs"}}, &g); err != nil {
		t.Fatal(err)
	}
	els := parse(t, buf.Bytes())
	if got, want := hopsOf(els), wantHops("", 1, g.Hops); !slices.Equal(got, want) {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got := boxes(els); !slices.Equal(got, []string{"web-1", "host", "router", "db-1"}) {
		t.Errorf("namespace boxes %v", got)
	}
	if d := classed(els, "drop"); len(d) != 0 {
		t.Errorf("drops in a journey that had none: %v", d)
	}
	if v := classed(els, "verdict"); len(v) != 1 || v[0].text != "filter.OUTPUT ACCEPT (policy)" {
		t.Errorf("verdicts %v", v)
	}
	render(t, "journey", buf.Bytes())
}

func TestJourneyDrop(t *testing.T) {
	g := droppedAtRouter()
	var buf bytes.Buffer
	if err := Journey(&buf, Header{Title: "echo to 10.0.2.9"}, &g); err != nil {
		t.Fatal(err)
	}
	els := parse(t, buf.Bytes())
	if got, want := hopsOf(els), wantHops("", 1, g.Hops); !slices.Equal(got, want) {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	drops := classed(els, "drop")
	if len(drops) != 1 || !strings.Contains(drops[0].text, "dropped by filter.FORWARD (rule 7:") {
		t.Fatalf("drops %v", drops)
	}
	// The drop is drawn under the hop it followed.
	hops := classed(els, "hop")
	if last := hops[len(hops)-1]; !strings.Contains(last.text, "dropped by filter.FORWARD") {
		t.Errorf("the drop is not under the last hop: %q", last.text)
	}
	render(t, "journey-drop", buf.Bytes())
}

func TestDiff(t *testing.T) {
	a := stats.Group{Hops: webToDB(), Echoes: 1, Replied: 1}
	b := droppedAtRouter()
	ra := &stats.Run{Summary: stats.Summary{Groups: []stats.Group{a}}}
	rb := &stats.Run{Summary: stats.Summary{Groups: []stats.Group{b}}}
	d := stats.Compare(ra, rb)
	var buf bytes.Buffer
	if err := Diff(&buf, Header{Title: "A: ok.tpk, B: broken.tpk"}, &a, &b, &d); err != nil {
		t.Fatal(err)
	}
	els := parse(t, buf.Bytes())
	// The common part once, then the rest of A; B has no hop of its own.
	want := append(wantHops("", 1, a.Hops[:5]), wantHops("A", 6, a.Hops[5:])...)
	if got := hopsOf(els); !slices.Equal(got, want) {
		t.Errorf("hops:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	div := classed(els, "divergence")
	if len(div) != 1 || !strings.Contains(div[0].text, "B stops after the request entering eth0 in router: dropped by filter.FORWARD") {
		t.Errorf("divergence %v", div)
	}
	if drops := classed(els, "drop"); len(drops) != 1 || !strings.Contains(drops[0].text, "B only: dropped by filter.FORWARD") {
		t.Errorf("drops %v", drops)
	}
	render(t, "diff", buf.Bytes())
}
