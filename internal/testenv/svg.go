package testenv

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// SVGElement is an element of an SVG document that has a class attribute,
// with the text inside it and the elements inside it.
type SVGElement struct {
	Name  string
	Attrs map[string]string
	Text  string
	// Inner are the elements inside this one, classed or not, in document
	// order, each with its own text (their own Inner is not filled).
	Inner []SVGElement
}

// SVGElements parses doc as XML and returns its elements that have a class,
// in document order; a document that does not parse fails tb.
func SVGElements(tb testing.TB, doc []byte) []SVGElement {
	tb.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var all []SVGElement // every element, in document order
	inner := map[int][]int{}
	var open []int // indices in all of the elements being read
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatalf("the SVG does not parse: %v\n%s", err, doc)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			e := SVGElement{Name: tok.Name.Local, Attrs: map[string]string{}}
			for _, a := range tok.Attr {
				e.Attrs[a.Name.Local] = a.Value
			}
			for _, o := range open {
				if all[o].Attrs["class"] != "" {
					inner[o] = append(inner[o], len(all))
				}
			}
			open = append(open, len(all))
			all = append(all, e)
		case xml.CharData:
			for _, o := range open {
				all[o].Text += string(tok)
			}
		case xml.EndElement:
			open = open[:len(open)-1]
		}
	}
	var out []SVGElement
	for i, e := range all {
		if e.Attrs["class"] == "" {
			continue
		}
		for _, j := range inner[i] {
			e.Inner = append(e.Inner, all[j])
		}
		out = append(out, e)
	}
	return out
}

// Classed returns the elements of the given class.
func Classed(els []SVGElement, class string) []SVGElement {
	var out []SVGElement
	for _, e := range els {
		if e.Attrs["class"] == class {
			out = append(out, e)
		}
	}
	return out
}

// SVGBoxes lists the namespaces an SVG of decode/svg draws as boxes, in order.
func SVGBoxes(els []SVGElement) []string {
	var out []string
	for _, e := range Classed(els, "netns") {
		if e.Name == "rect" {
			out = append(out, e.Attrs["data-netns"])
		}
	}
	return out
}

// SVGColumns lists the interface columns an SVG of decode/svg draws, as
// "netns ifname" from the labels at their heads, in order.
func SVGColumns(els []SVGElement) []string {
	var out []string
	for _, c := range svgColumns(els) {
		out = append(out, c.name)
	}
	return out
}

type svgColumn struct{ name, x string }

func svgColumns(els []SVGElement) []svgColumn {
	var out []svgColumn
	for _, e := range Classed(els, "netns") {
		if e.Name != "g" {
			continue
		}
		for _, in := range e.Inner {
			if in.Attrs["class"] == "ifname" {
				out = append(out, svgColumn{e.Attrs["data-netns"] + " " + strings.TrimSpace(in.Text), in.Attrs["x"]})
			}
		}
	}
	return out
}

// WantSVGColumns are the columns a ladder of the given hops ("netns ifname",
// in the order drawn) must have: a box per namespace in the order the hops
// first meet it, and in it a column per interface, in the same order.
func WantSVGColumns(hops []string) []string {
	var order []string
	ifaces := map[string][]string{}
	for _, h := range hops {
		ns, ifname, _ := strings.Cut(h, " ")
		if _, ok := ifaces[ns]; !ok {
			order = append(order, ns)
		}
		if !slices.Contains(ifaces[ns], ifname) {
			ifaces[ns] = append(ifaces[ns], ifname)
		}
	}
	var out []string
	for _, ns := range order {
		for _, ifname := range ifaces[ns] {
			out = append(out, ns+" "+ifname)
		}
	}
	return out
}

// SVGHop is a hop as an SVG of decode/svg draws it.
type SVGHop struct {
	// Run is "A" or "B" for a hop of one run only in a diff, else empty.
	Run string
	// Column is the column of the badge, "netns ifname" of the label
	// straight above it; empty when no label is.
	Column string
	// Colour is the badge's fill.
	Colour string
	// Texts are the texts drawn with the hop (times, direction, notes).
	Texts []string
}

// SVGHops are the hops an SVG of decode/svg draws, in order; a hop without
// its badge fails tb.
func SVGHops(tb testing.TB, els []SVGElement) []SVGHop {
	tb.Helper()
	cols := svgColumns(els)
	var out []SVGHop
	for _, e := range Classed(els, "hop") {
		h := SVGHop{Run: e.Attrs["data-run"]}
		badge := false
		for _, in := range e.Inner {
			switch in.Name {
			case "circle":
				badge = true
				h.Colour = in.Attrs["fill"]
				for _, c := range cols {
					if c.x == in.Attrs["cx"] {
						h.Column = c.name
					}
				}
			case "text":
				h.Texts = append(h.Texts, strings.TrimSpace(in.Text))
			}
		}
		if !badge {
			tb.Fatalf("hop %s has no badge", e.Attrs["data-num"])
		}
		out = append(out, h)
	}
	return out
}

// SVGColour is the colour decode/svg must draw a hop of type typ in (its
// legend): requests blue, replies green, ICMP errors red, and in a diff
// the hops of run B only orange. A TCP probe's "syn" is a request and its
// "syn-ack" an answer; an "rst" can be either, see SVGSideColour.
func SVGColour(typ, run string) string {
	side := "error"
	switch typ {
	case "request", "syn":
		side = "request"
	case "reply", "syn-ack":
		side = "answer"
	}
	return SVGSideColour(side, run)
}

// SVGSideColour is the colour decode/svg must draw a hop in by the side of
// the exchange its data-side attribute names: "request" (the prober's
// packets) blue, "answer" green, "error" (ICMP errors) red, and in a diff
// the hops of run B only orange.
func SVGSideColour(side, run string) string {
	switch {
	case run == "B":
		return "#bc4c00"
	case side == "request":
		return "#1f6feb"
	case side == "answer":
		return "#1a7f37"
	}
	return "#cf222e"
}

// RenderSVG renders doc to PNG with librsvg's rsvg-convert (a real
// renderer) and checks that the PNG decodes to a picture of the SVG's size
// with something drawn on it. With TRACEPKT_SVG_OUT set to a directory, the
// SVG and the PNG are kept there under name, to be looked at.
func RenderSVG(tb testing.TB, name string, doc []byte) {
	tb.Helper()
	RequireCommands(tb, "rsvg-convert")
	dir := tb.TempDir()
	in, out := filepath.Join(dir, name+".svg"), filepath.Join(dir, name+".png")
	if err := os.WriteFile(in, doc, 0o644); err != nil {
		tb.Fatal(err)
	}
	if b, err := exec.Command("rsvg-convert", "-o", out, in).CombinedOutput(); err != nil || len(b) > 0 {
		tb.Fatalf("rsvg-convert: %v %s", err, b)
	}
	pngBytes, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(pngBytes))
	if err != nil {
		tb.Fatalf("the PNG rsvg-convert wrote: %v", err)
	}
	var root struct {
		Width  int `xml:"width,attr"`
		Height int `xml:"height,attr"`
	}
	if err := xml.Unmarshal(doc, &root); err != nil {
		tb.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != root.Width || b.Dy() != root.Height {
		tb.Errorf("PNG is %dx%d, the SVG %dx%d", b.Dx(), b.Dy(), root.Width, root.Height)
	}
	colours := map[[3]uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 12, g >> 12, bl >> 12}] = true
		}
	}
	if len(colours) < 8 {
		tb.Errorf("the PNG has %d colours: nothing was drawn", len(colours))
	}
	if keep := os.Getenv("TRACEPKT_SVG_OUT"); keep != "" {
		if err := os.WriteFile(filepath.Join(keep, name+".svg"), doc, 0o644); err != nil {
			tb.Error(err)
		}
		if err := os.WriteFile(filepath.Join(keep, name+".png"), pngBytes, 0o644); err != nil {
			tb.Error(err)
		}
	}
}
