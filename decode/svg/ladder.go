package svg

import (
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode/stats"
)

// Header is the text above the picture; long lines are wrapped.
type Header struct {
	Title string
	Lines []string
}

// ladder is a picture before layout: interface columns grouped in namespace
// boxes, and one row per hop, in the order drawn.
type ladder struct {
	cols     []column
	boxes    []box
	machines []machine // in a merge: the boxes of each machine, side by side
	rows     []row
	diff     bool
	divider  int // the divergence bar goes above this row (or below the last); -1 for none
	divText  string
}

type column struct{ netns, ifname string }

// box is a namespace around the columns first..last.
type box struct {
	netns, label, sub string
	first, last       int
}

// machine is a machine of a merge around the columns first..last.
type machine struct {
	host        string
	first, last int
}

type row struct {
	hop     stats.Hop
	num     int
	from    int // column of the previous hop; -1 for the first hop
	to      int
	run     string // "A" or "B" for a hop of one run only, in a diff
	time    string // above the arrow
	sub     string // below it
	outlier bool
	notes   []note
}

type note struct {
	text string
	kind string // "verdict", "drop" or "only" (a verdict of one run only)
}

// lines wraps the note to the width of the picture.
func (n note) lines(width float64) []string { return wrap(n.text, width-2*margin, noteW) }

// Geometry, in pixels.
const (
	margin  = 20
	colW    = 124
	gutter  = 96 // right of the last column, for loop labels
	rowH    = 34
	noteH   = 16
	boxHead = 62  // namespace name, its inode or owner, the interface names
	hostH   = 26  // a machine's name, above its namespaces
	charW   = 6.4 // a character of 11px text, about
	boldW   = 7.6 // a character of 12px bold text, about
	titleW  = 10  // a character of the title, about
	// minWidth leaves room for the legend and the header.
	minWidth = 720
	noteW    = 6.9 // a character of a note (11px, some bold), about
	badgeR   = 10
)

// Colours: request (the prober's packets), reply (the target's answers),
// drop (and ICMP errors), the B run of a diff, and greys.
const (
	colRequest = "#1f6feb"
	colReply   = "#1a7f37"
	colDrop    = "#cf222e"
	colB       = "#bc4c00"
	colText    = "#1f2328"
	colMuted   = "#57606a"
	colBox     = "#8c959f"
	colBoxFill = "#f6f8fa"
)

// layout finds the columns and boxes of the hops of the given paths:
// namespaces in the order the paths meet them, and their interfaces in the
// same order inside.
func (l *ladder) layout(paths ...[]stats.Hop) {
	var order []string
	ifaces := map[string][]string{}
	first := map[string]stats.Hop{}
	for _, p := range paths {
		for _, h := range p {
			if _, ok := ifaces[h.Netns]; !ok {
				order = append(order, h.Netns)
				ifaces[h.Netns] = nil
				first[h.Netns] = h
			}
			if !contains(ifaces[h.Netns], h.Ifname) {
				ifaces[h.Netns] = append(ifaces[h.Netns], h.Ifname)
			}
		}
	}
	// A merge's namespaces go in one box per machine, the machines in the
	// order the paths meet them.
	var hosts []string
	for _, ns := range order {
		if h := first[ns].Host; !contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	slices.SortStableFunc(order, func(a, b string) int {
		return cmp.Compare(slices.Index(hosts, first[a].Host), slices.Index(hosts, first[b].Host))
	})
	for _, ns := range order {
		b := box{netns: ns, first: len(l.cols)}
		h := first[ns]
		// Below the name, the inode: a box has no room for more. Inside its
		// machine's box, a namespace goes by its own name.
		b.label, b.sub = strings.TrimPrefix(ns, h.Host+": "), "inode "+strconv.FormatUint(uint64(h.Inode), 10)
		if strings.HasPrefix(ns, "#") || b.label == strconv.FormatUint(uint64(h.Inode), 10) {
			b.label, b.sub = strconv.FormatUint(uint64(h.Inode), 10), "unnamed namespace"
		}
		if h.Host != "" {
			if n := len(l.machines); n == 0 || l.machines[n-1].host != h.Host {
				l.machines = append(l.machines, machine{host: h.Host, first: len(l.cols)})
			}
			l.machines[len(l.machines)-1].last = len(l.cols) + len(ifaces[ns]) - 1
		}

		for _, ifn := range ifaces[ns] {
			l.cols = append(l.cols, column{ns, ifn})
		}
		b.last = len(l.cols) - 1
		l.boxes = append(l.boxes, b)
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func (l *ladder) col(h *stats.Hop) int {
	for i, c := range l.cols {
		if c.netns == h.Netns && c.ifname == h.Ifname {
			return i
		}
	}
	return -1
}

func colX(i int) float64 { return margin + float64(i)*colW + colW/2 }

// svgWriter writes the document, keeping the first error.
type svgWriter struct {
	w   io.Writer
	err error
}

func (s *svgWriter) printf(format string, args ...any) {
	if s.err == nil {
		_, s.err = fmt.Fprintf(s.w, format, args...)
	}
}

func esc(v string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(v))
	return b.String()
}

// halo keeps text readable over the lines it crosses.
const halo = ` stroke="white" stroke-width="3" stroke-linejoin="round" paint-order="stroke"`

// wrap cuts text into lines of at most width pixels, at spaces, for
// characters about cw pixels wide.
func wrap(text string, width, cw float64) []string {
	max := int(width / cw)
	var lines []string
	var cur string
	for _, w := range strings.Fields(text) {
		if cur != "" && len([]rune(cur))+1+len([]rune(w)) > max {
			lines = append(lines, cur)
			cur = ""
		}
		if cur != "" {
			cur += " "
		}
		cur += w
	}
	if cur != "" {
		lines = append(lines, cur)
	}
	return lines
}

// ellipsis shortens text to fit width pixels.
func ellipsis(text string, width float64) string {
	r := []rune(text)
	if n := int(width / charW); len(r) > n && n > 1 {
		return string(r[:n-1]) + "…"
	}
	return text
}

func (l *ladder) draw(w io.Writer, h Header) error {
	s := &svgWriter{w: w}
	width := max(minWidth, 2*margin+float64(len(l.cols))*colW+gutter)
	textW := width - 2*margin

	title := wrap(h.Title, textW, titleW)
	var head []string
	for _, line := range h.Lines {
		head = append(head, wrap(line, textW, charW)...)
	}
	y := 30.0
	headTop := y
	y += 20*float64(len(title)) + 17*float64(len(head)) + 22 // title, lines, legend
	hostTop := y
	if len(l.machines) > 0 {
		y += hostH
	}
	boxTop := y
	rowY := make([]float64, len(l.rows))
	divY := -1.0
	var divLines []string
	cur := boxTop + boxHead + 26
	for i := 0; i <= len(l.rows); i++ {
		if i == l.divider {
			divLines = wrap(l.divText, textW-8, boldW)
			divY = cur - 6
			cur += 10 + 16*float64(len(divLines))
		}
		if i < len(l.rows) {
			rowY[i] = cur
			cur += rowH
			for _, n := range l.rows[i].notes {
				cur += noteH * float64(len(n.lines(width)))
			}
		}
	}
	bottom := cur
	height := bottom + margin

	s.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="DejaVu Sans, Verdana, sans-serif">`+"\n",
		width, height, width, height)
	s.printf("<defs>\n")
	for _, m := range []struct{ id, color string }{{"req", colRequest}, {"rep", colReply}, {"err", colDrop}, {"b", colB}} {
		s.printf(`<marker id="ah-%s" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>`+"\n", m.id, m.color)
	}
	s.printf("</defs>\n")
	s.printf(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")

	// Header and legend.
	ly := headTop - 20
	for _, line := range title {
		ly += 20
		s.printf(`<text x="%d" y="%.0f" font-size="16" font-weight="bold" fill="%s">%s</text>`+"\n", margin, ly, colText, esc(line))
	}
	for _, line := range head {
		ly += 17
		s.printf(`<text x="%d" y="%.0f" font-size="12" fill="%s">%s</text>`+"\n", margin, ly, colText, esc(line))
	}
	ly += 22
	l.legend(s, ly)

	// Machines, around their namespaces.
	for _, m := range l.machines {
		x := margin + float64(m.first)*colW + 1 // a gap between two machines
		mw := float64(m.last-m.first+1)*colW - 2
		s.printf(`<g class="machine" data-host="%s">`+"\n", esc(m.host))
		s.printf(`<rect class="machine" data-host="%s" x="%.0f" y="%.0f" width="%.0f" height="%.0f" rx="10" fill="none" stroke="%s" stroke-width="2"/>`+"\n",
			esc(m.host), x, hostTop, mw, bottom-hostTop+4, colText)
		s.printf(`<text class="host" x="%.0f" y="%.0f" font-size="13" font-weight="bold" text-anchor="middle" fill="%s"><title>%s</title>%s</text>`+"\n",
			x+mw/2, hostTop+17, colText, esc(m.host), esc(ellipsis(m.host, mw-8)))
		s.printf("</g>\n")
	}

	// Namespace boxes, interface names and lifelines.
	for _, b := range l.boxes {
		x := margin + float64(b.first)*colW + 4
		bw := float64(b.last-b.first+1)*colW - 8
		s.printf(`<g class="netns" data-netns="%s">`+"\n", esc(b.netns))
		s.printf(`<rect class="netns" data-netns="%s" x="%.0f" y="%.0f" width="%.0f" height="%.0f" rx="8" fill="%s" stroke="%s" stroke-width="1.5"/>`+"\n",
			esc(b.netns), x, boxTop, bw, bottom-boxTop, colBoxFill, colBox)
		s.printf(`<text x="%.0f" y="%.0f" font-size="13" font-weight="bold" text-anchor="middle" fill="%s"><title>%s</title>%s</text>`+"\n",
			x+bw/2, boxTop+18, colText, esc(b.label), esc(ellipsis(b.label, bw-8)))
		s.printf(`<text x="%.0f" y="%.0f" font-size="10" text-anchor="middle" fill="%s">%s</text>`+"\n",
			x+bw/2, boxTop+32, colMuted, esc(ellipsis(b.sub, bw-8)))
		for c := b.first; c <= b.last; c++ {
			cx := colX(c)
			s.printf(`<rect x="%.0f" y="%.0f" width="%d" height="20" rx="10" fill="white" stroke="%s"/>`+"\n", cx-colW/2+10, boxTop+40, colW-20, colBox)
			s.printf(`<text class="ifname" x="%.0f" y="%.0f" font-size="12" font-family="DejaVu Sans Mono, monospace" text-anchor="middle" fill="%s">%s</text>`+"\n",
				cx, boxTop+54, colText, esc(ellipsis(l.cols[c].ifname, colW-24)))
			s.printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-dasharray="3 4"/>`+"\n", cx, boxTop+60, cx, bottom-6, colBox)
		}
		s.printf("</g>\n")
	}

	if divY >= 0 {
		s.printf(`<g class="divergence">` + "\n")
		s.printf(`<line x1="%d" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2" stroke-dasharray="8 4"/>`+"\n", margin, divY, width-margin, divY, colDrop)
		s.printf(`<rect x="%d" y="%.0f" width="%.0f" height="%.0f" fill="white" fill-opacity="0.9"/>`+"\n", margin, divY+3, width-2*margin, 16*float64(len(divLines))+2)
		for i, line := range divLines {
			s.printf(`<text x="%d" y="%.0f" font-size="12" font-weight="bold" fill="%s">%s</text>`+"\n", margin+4, divY+16+16*float64(i), colDrop, esc(line))
		}
		s.printf("</g>\n")
	}
	for i := range l.rows {
		prev := -1.0
		if i > 0 {
			prev = rowY[i-1]
		}
		l.drawRow(s, &l.rows[i], rowY[i], prev, width)
	}
	s.printf("</svg>\n")
	return s.err
}

func (l *ladder) legend(s *svgWriter, y float64) {
	x := float64(margin)
	item := func(color, dash, label string) {
		s.printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s/>`+"\n", x, y-4, x+24, y-4, color, dash)
		s.printf(`<text x="%.0f" y="%.0f" font-size="11" fill="%s">%s</text>`+"\n", x+30, y, colMuted, esc(label))
		x += 40 + charW*float64(len(label))
	}
	switch {
	case l.diff:
		item(colRequest, "", "A and B, or A only")
		item(colB, ` stroke-dasharray="6 3"`, "B only")
	case l.tcp():
		item(colRequest, "", "SYN, the prober's RST")
		item(colReply, "", "SYN-ACK or RST")
	default:
		item(colRequest, "", "request")
		item(colReply, "", "reply")
	}
	s.printf(`<text x="%.0f" y="%.0f" font-size="11" fill="%s">✕ drop, ICMP error</text>`+"\n", x, y, colDrop)
	x += 120
	for _, r := range l.rows {
		if r.outlier {
			s.printf(`<text x="%.0f" y="%.0f" font-size="11" font-weight="bold" fill="%s">⚠ p99 stands out</text>`+"\n", x, y, colText)
			x += 125
			break
		}
	}
	s.printf(`<text x="%.0f" y="%.0f" font-size="11" fill="%s">numbers: hop order; time since the previous hop</text>`+"\n", x, y, colMuted)
}

// tcp reports whether the ladder is a TCP probe's: its first packet is a SYN.
func (l *ladder) tcp() bool { return len(l.rows) > 0 && isTCP(l.rows[0].hop.Type) }

// sideNames are the data-side attributes of a hop's side of the exchange.
var sideNames = map[stats.Side]string{stats.SideRequest: "request", stats.SideAnswer: "answer", stats.SideError: "error"}

func (l *ladder) drawRow(s *svgWriter, r *row, y, prevY, width float64) {
	color, marker, dash := colDrop, "err", "" // an ICMP error about the request
	switch r.hop.Side {
	case stats.SideRequest:
		color, marker = colRequest, "req"
	case stats.SideAnswer:
		color, marker = colReply, "rep"
	}
	if r.run == "B" {
		color, marker, dash = colB, "b", ` stroke-dasharray="6 3"`
	}
	typ, dir := r.hop.Type, r.hop.Dir.String()
	s.printf(`<g class="hop" data-num="%d" data-netns="%s" data-ifname="%s" data-dir="%s" data-type="%s" data-side="%s" data-run="%s">`+"\n",
		r.num, esc(r.hop.Netns), esc(r.hop.Ifname), dir, typ, sideNames[r.hop.Side], r.run)
	x := colX(r.to)
	label := r.time
	if r.run != "" {
		label = r.run + " " + label
	}
	weight := ""
	if r.outlier {
		label = "⚠ " + label
		weight = ` font-weight="bold"`
	}
	// The direction goes beside the badge, on the side no arrow comes from.
	dirX, dirAnchor := x-badgeR-3, "end"
	switch {
	case r.from < 0:
		s.printf(`<text x="%.0f" y="%.0f" font-size="11" fill="%s"`+halo+`>%s</text>`+"\n", x+badgeR+4, y-8, colMuted, esc(strings.TrimSpace(r.run+" sent here")))
	case r.from == r.to:
		// The packet left the interface it came in by: a loop on its lifeline.
		top := prevY + badgeR
		if prevY < 0 {
			top = y - rowH
		}
		s.printf(`<path d="M%.0f,%.0f H%.0f V%.0f H%.0f" fill="none" stroke="%s" stroke-width="2"%s marker-end="url(#ah-%s)"/>`+"\n",
			x+4, top, x+30, y, x+badgeR+2, color, dash, marker)
		mid := y - (y-top)/2
		s.printf(`<text x="%.0f" y="%.0f" font-size="11" fill="%s"%s`+halo+`>%s</text>`+"\n", x+36, mid-1, color, weight, esc(label))
		s.printf(`<text x="%.0f" y="%.0f" font-size="10" fill="%s"%s`+halo+`>%s</text>`+"\n", x+36, mid+11, color, weight, esc(r.sub))
	default:
		x0 := colX(r.from)
		x1 := x - badgeR - 2
		if r.from > r.to {
			x1 = x + badgeR + 2
		} else {
			dirX, dirAnchor = x+badgeR+3, "start"
		}
		s.printf(`<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"%s marker-end="url(#ah-%s)"/>`+"\n", x0, y, x1, y, color, dash, marker)
		s.printf(`<text x="%.0f" y="%.0f" font-size="11" text-anchor="middle" fill="%s"%s`+halo+`>%s</text>`+"\n", (x0+x)/2, y-6, color, weight, esc(label))
		s.printf(`<text x="%.0f" y="%.0f" font-size="10" text-anchor="middle" fill="%s"%s`+halo+`>%s</text>`+"\n", (x0+x)/2, y+14, color, weight, esc(r.sub))
	}
	s.printf(`<circle cx="%.0f" cy="%.0f" r="%d" fill="%s"/>`+"\n", x, y, badgeR, color)
	s.printf(`<text x="%.0f" y="%.0f" font-size="11" font-weight="bold" text-anchor="middle" fill="white">%d</text>`+"\n", x, y+4, r.num)
	s.printf(`<text x="%.0f" y="%.0f" font-size="9" text-anchor="%s" fill="%s">%s</text>`+"\n", dirX, y+3, dirAnchor, colMuted, dir)
	ny := y + 30
	for _, n := range r.notes {
		fill, weight, class := colMuted, "", "verdict"
		switch n.kind {
		case "drop":
			fill, weight, class = colDrop, ` font-weight="bold"`, "drop"
		case "only":
			fill = colB
		}
		lines := n.lines(width)
		widest := 0
		for _, line := range lines {
			widest = max(widest, len([]rune(line)))
		}
		nx := max(float64(margin), min(x-30, width-margin-noteW*float64(widest)))
		s.printf(`<text class="%s" x="%.0f" y="%.0f" font-size="11" fill="%s"%s`+halo+`>`, class, nx, ny, fill, weight)
		for i, line := range lines {
			if i < len(lines)-1 {
				line += " "
			}
			s.printf(`<tspan x="%.0f" y="%.0f">%s</tspan>`, nx, ny, esc(line))
			ny += noteH
		}
		s.printf("</text>\n")
	}
	s.printf("</g>\n")
}
