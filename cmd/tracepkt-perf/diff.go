package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// errDiffer: --diff found that the runs took different paths (exit 1).
var errDiffer = errors.New("the runs took different paths")

// diffRuns compares two recordings hop by hop.
func diffRuns(o options, stdout, stderr io.Writer) error {
	ro, err := newRunOutput(o, stdout)
	if err != nil {
		return err
	}
	defer ro.close()
	var runs [2]*loadedRun
	for i, path := range o.diffFiles {
		r, err := loadRun("diff", path, stderr)
		if err != nil {
			return err
		}
		runs[i] = r
	}
	a, b := runs[0].run(), runs[1].run()
	d := stats.Compare(a, b)
	if err := ro.writeSVG(func(w io.Writer) error { return diffSVG(w, runs[0], runs[1], a, b, &d) }); err != nil {
		return err
	}
	if o.jsonOut {
		err = json.NewEncoder(stdout).Encode(diffJSON(runs[0], runs[1], a, b, &d))
	} else {
		_, err = io.WriteString(stdout, diffText(runs[0], runs[1], a, b, &d))
	}
	if err != nil {
		return err
	}
	if !d.Same {
		return errDiffer
	}
	return nil
}

func (l *loadedRun) run() *stats.Run {
	s := stats.Summarize(l.journeys, l.rc.statsNames())
	return &stats.Run{Summary: s, Origin: stats.Origin{Host: l.hdr.Hostname, Kernel: l.hdr.KernelRelease, BootID: l.hdr.BootID}}
}

// runLine introduces a run: its file, what its echoes did, where it was recorded.
func runLine(name string, l *loadedRun, r *stats.Run) string {
	s := &r.Summary
	return fmt.Sprintf("%s: %s: %s to %s, %s (host %s, kernel %s, %s)", name, l.path, probeCount(s, s.Echoes), probed(s),
		answers(s, s.Replied, s.Closed), l.hdr.Hostname, l.hdr.KernelRelease, l.hdr.StartWall.Format("2006-01-02 15:04:05 MST"))
}

func diffText(la, lb *loadedRun, a, b *stats.Run, d *stats.Diff) string {
	var out strings.Builder
	out.WriteString(runLine("A", la, a) + "\n")
	out.WriteString(runLine("B", lb, b) + "\n")
	ga := a.Summary.Groups
	switch {
	case d.Same && len(ga) > 0:
		fmt.Fprintf(&out, "same path: %s, from %s to %s\n", plural(len(ga[0].Hops), "hop", "hops"),
			stats.HopText(&ga[0].Hops[0]), stats.HopText(&ga[0].Hops[len(ga[0].Hops)-1]))
	case d.Same:
		out.WriteString("same path: no echo of either run reached a network device\n")
	case d.Divergence != nil:
		fmt.Fprintf(&out, "the paths differ: %s\n", d.Divergence.Text)
	default:
		out.WriteString("the main paths are the same, but some echoes took other paths\n")
	}
	if len(d.Verdicts) > 0 {
		out.WriteString("netfilter verdicts only one run met:\n")
		for _, v := range d.Verdicts {
			fmt.Fprintf(&out, "  %s only, at %s: %s %s (%s)\n", v.Run, stats.HopText(&v.Hop), v.Verdict.Chain, v.Verdict.Verdict, v.Verdict.Rule)
		}
	}
	if len(d.Latency) > 0 {
		out.WriteString("hops whose time moved beyond the noise of both runs:\n")
		for _, l := range d.Latency {
			fmt.Fprintf(&out, "  %s: p50 %s in A, %s in B (p90 %s, %s)\n", stats.HopText(&l.Hop),
				stats.FormatDuration(l.A.P50), stats.FormatDuration(l.B.P50), stats.FormatDuration(l.A.P90), stats.FormatDuration(l.B.P90))
		}
	}
	if len(d.Paths) > 0 {
		out.WriteString("paths only one run took:\n")
		for _, p := range d.Paths {
			fmt.Fprintf(&out, "  %s, %s: %s\n", p.Run, plural(p.Echoes, "echo", "echoes"), pathText(p.Hops))
		}
	}
	for _, n := range d.Notes {
		out.WriteString("note: " + n + "\n")
	}
	return out.String()
}

// pathText is a path on one line: "eth0 out in a, eth0 in in r, ...".
func pathText(hops []stats.Hop) string {
	parts := make([]string, len(hops))
	for i := range hops {
		h := &hops[i]
		parts[i] = fmt.Sprintf("%s %s %s (%s)", h.Ifname, h.Dir, stats.NetnsText(h), h.Type)
	}
	return strings.Join(parts, ", ")
}

// jsonDiff is the --diff --json schema; its field names are a contract.
type jsonDiff struct {
	SamePath   bool              `json:"same_path"`
	A          jsonRun           `json:"a"`
	B          jsonRun           `json:"b"`
	Divergence *jsonDivergence   `json:"divergence"`
	Verdicts   []jsonVerdictDiff `json:"verdicts"`
	Latency    []jsonLatencyDiff `json:"latency"`
	Paths      []jsonPathDiff    `json:"paths"`
	Notes      []string          `json:"notes"`
}

type jsonRun struct {
	File    string      `json:"file"`
	Host    string      `json:"host"`
	Kernel  string      `json:"kernel"`
	Target  string      `json:"target"`
	Echoes  int         `json:"echoes"`
	Replied int         `json:"replied"`
	Path    []jsonPlace `json:"path"`
}

type jsonPlace struct {
	Netns      uint32     `json:"netns"`
	NetnsName  string     `json:"netns_name,omitempty"`
	NetnsOwner *jsonOwner `json:"netns_owner,omitempty"`
	Ifname     string     `json:"ifname"`
	Dir        string     `json:"dir"`
	Type       string     `json:"type"`
}

type jsonDivergence struct {
	CommonHops int        `json:"common_hops"`
	After      *jsonPlace `json:"after"`
	ANext      *jsonPlace `json:"a_next"`
	BNext      *jsonPlace `json:"b_next"`
	AReplied   bool       `json:"a_replied"`
	BReplied   bool       `json:"b_replied"`
	AWhy       string     `json:"a_why,omitempty"`
	BWhy       string     `json:"b_why,omitempty"`
	Text       string     `json:"text"`
}

type jsonVerdictDiff struct {
	Run string    `json:"run"`
	Hop jsonPlace `json:"hop"`
	jsonVerdict
}

type jsonLatencyDiff struct {
	Hop     jsonPlace `json:"hop"`
	AP50Ns  int64     `json:"a_p50_ns"`
	AP90Ns  int64     `json:"a_p90_ns"`
	BP50Ns  int64     `json:"b_p50_ns"`
	BP90Ns  int64     `json:"b_p90_ns"`
	AEchoes int       `json:"a_echoes"`
	BEchoes int       `json:"b_echoes"`
}

type jsonPathDiff struct {
	Run    string      `json:"run"`
	Echoes int         `json:"echoes"`
	Path   []jsonPlace `json:"path"`
}

func place(h *stats.Hop, rc *renderContext) jsonPlace {
	return jsonPlace{Netns: h.Inode, NetnsName: rc.names[h.Inode], NetnsOwner: rc.jsonOwner(h.Inode), Ifname: h.Ifname, Dir: h.Dir.String(), Type: h.Type}
}

func placeRef(h *stats.Hop, rc *renderContext) *jsonPlace {
	if h == nil {
		return nil
	}
	p := place(h, rc)
	return &p
}

func places(hops []stats.Hop, rc *renderContext) []jsonPlace {
	out := []jsonPlace{}
	for i := range hops {
		out = append(out, place(&hops[i], rc))
	}
	return out
}

func diffJSON(la, lb *loadedRun, a, b *stats.Run, d *stats.Diff) jsonDiff {
	side := func(l *loadedRun, r *stats.Run) jsonRun {
		s := &r.Summary
		jr := jsonRun{File: l.path, Host: l.hdr.Hostname, Kernel: l.hdr.KernelRelease, Target: s.Target.String(),
			Echoes: s.Echoes, Replied: s.Replied, Path: []jsonPlace{}}
		if len(s.Groups) > 0 {
			jr.Path = places(s.Groups[0].Hops, l.rc)
		}
		return jr
	}
	out := jsonDiff{SamePath: d.Same, A: side(la, a), B: side(lb, b), Verdicts: []jsonVerdictDiff{},
		Latency: []jsonLatencyDiff{}, Paths: []jsonPathDiff{}, Notes: append([]string{}, d.Notes...)}
	if dv := d.Divergence; dv != nil {
		out.Divergence = &jsonDivergence{
			CommonHops: dv.Common, After: placeRef(dv.After, la.rc), ANext: placeRef(dv.A.Next, la.rc), BNext: placeRef(dv.B.Next, lb.rc),
			AReplied: dv.A.Replied, BReplied: dv.B.Replied, AWhy: dv.A.Why, BWhy: dv.B.Why, Text: dv.Text,
		}
	}
	for _, v := range d.Verdicts {
		out.Verdicts = append(out.Verdicts, jsonVerdictDiff{Run: v.Run, Hop: place(&v.Hop, la.rc),
			jsonVerdict: jsonVerdict{v.Verdict.Chain, v.Verdict.Verdict, v.Verdict.Rule, v.Verdict.Count}})
	}
	for _, l := range d.Latency {
		out.Latency = append(out.Latency, jsonLatencyDiff{Hop: place(&l.Hop, la.rc),
			AP50Ns: l.A.P50.Nanoseconds(), AP90Ns: l.A.P90.Nanoseconds(), BP50Ns: l.B.P50.Nanoseconds(), BP90Ns: l.B.P90.Nanoseconds(),
			AEchoes: l.A.N, BEchoes: l.B.N})
	}
	for _, p := range d.Paths {
		rc := la.rc
		if p.Run == "B" {
			rc = lb.rc
		}
		out.Paths = append(out.Paths, jsonPathDiff{Run: p.Run, Echoes: p.Echoes, Path: places(p.Hops, rc)})
	}
	return out
}

// loadedRun is a recording read whole, for --diff and --stats.
type loadedRun struct {
	path     string
	hdr      tpk.Header
	rc       *renderContext
	journeys []decode.Journey
}

// loadRun reads a whole recording for mode (diff, merge).
func loadRun(mode, path string, stderr io.Writer) (*loadedRun, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", mode, err)
	}
	defer f.Close()
	r, err := tpk.NewReader(bufio.NewReaderSize(f, 1<<16))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", mode, path, err)
	}
	l := &loadedRun{path: path, hdr: r.Header()}
	all := &collector{}
	if _, err := replayJourneys(r, path, func(rc *renderContext) journeyWriter { l.rc = rc; return all }, stderr); err != nil {
		return nil, err
	}
	l.journeys = all.journeys
	return l, nil
}
