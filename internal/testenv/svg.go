package testenv

import (
	"bytes"
	"encoding/xml"
	"image/png"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// SVGElement is an element of an SVG document that has a class attribute,
// with the text inside it.
type SVGElement struct {
	Name  string
	Attrs map[string]string
	Text  string
}

// SVGElements parses doc as XML and returns its elements that have a class,
// in document order; a document that does not parse fails tb.
func SVGElements(tb testing.TB, doc []byte) []SVGElement {
	tb.Helper()
	dec := xml.NewDecoder(bytes.NewReader(doc))
	var out []SVGElement
	var open []int // indices in out of the elements being read, -1 for unclassed ones
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
			if e.Attrs["class"] == "" {
				open = append(open, -1)
				continue
			}
			open = append(open, len(out))
			out = append(out, e)
		case xml.CharData:
			for _, i := range open {
				if i >= 0 {
					out[i].Text += string(tok)
				}
			}
		case xml.EndElement:
			open = open[:len(open)-1]
		}
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
