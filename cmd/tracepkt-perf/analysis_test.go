package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
	"github.com/tracepkt/tracepkt-perf/internal/testenv"
)

func testdata(name string) string { return filepath.Join("testdata", name+".tpk") }

// replayEchoes replays a recording to its per-echo JSON.
func replayEchoes(t *testing.T, name string) []jsonEcho {
	t.Helper()
	res := runTool(t, nil, "--replay", testdata(name), "--json")
	if res.code > 1 || res.stderr != "" {
		t.Fatalf("replay %s: exit %d, stderr %q", name, res.code, res.stderr)
	}
	return decodeEchoes(t, res.stdout)
}

// replayStats replays a recording with --stats --json; wantCode is the exit
// status the replay must have.
func replayStats(t *testing.T, name string, wantCode int) (jsonStats, string) {
	t.Helper()
	res := runTool(t, nil, "--replay", testdata(name), "--stats", "--json")
	if res.code != wantCode || res.stderr != "" {
		t.Fatalf("replay %s --stats: exit %d, stderr %q", name, res.code, res.stderr)
	}
	var s jsonStats
	if err := jsonUnmarshal(res.stdout, &s); err != nil {
		t.Fatal(err)
	}
	return s, res.stdout
}

// deviceHops are the rows of an echo that are device hops, not netfilter ones.
func deviceHops(e jsonEcho) []jsonHop {
	var out []jsonHop
	for _, h := range e.Hops {
		if h.Probe != "netfilter" {
			out = append(out, h)
		}
	}
	return out
}

// nearestRank is the p-th percentile of vals by counting: the smallest value
// that at least p% of the values do not exceed.
func nearestRank(vals []int64, p int) int64 {
	best := int64(-1)
	for _, v := range vals {
		n := 0
		for _, w := range vals {
			if w <= v {
				n++
			}
		}
		if n*100 >= p*len(vals) && (best < 0 || v < best) {
			best = v
		}
	}
	return best
}

// statsGolden checks --stats over a recording against its golden, after
// recording it again with record under -update.
func statsGolden(t *testing.T, name string, record func(t *testing.T)) {
	t.Helper()
	if *update {
		record(t)
	}
	res := runTool(t, nil, "--replay", testdata(name), "--stats")
	if res.code != 0 || res.stderr != "" {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	golden(t, name+".stats", []byte(res.stdout))
}

// recordedRouter finds the inodes of the namespaces A, R and B of a
// recording through a router (routerNamed), by their names: the first hop's
// namespace is A, and the others are named after it. Each name must have
// one inode, and the three must differ.
func recordedRouter(t *testing.T, hops []jsonStatHop) (a, r, b uint64) {
	t.Helper()
	if len(hops) == 0 {
		t.Fatal("no hop")
	}
	prefix, ok := strings.CutSuffix(hops[0].NetnsName, "-a")
	if !ok {
		t.Fatalf("first hop in %q, want the namespace A (name ending in -a)", hops[0].NetnsName)
	}
	inodes := map[string]uint64{}
	for _, h := range hops {
		if ino, ok := inodes[h.NetnsName]; ok && ino != uint64(h.Netns) {
			t.Fatalf("namespace %s recorded with inodes %d and %d", h.NetnsName, ino, h.Netns)
		}
		inodes[h.NetnsName] = uint64(h.Netns)
	}
	a, r, b = inodes[prefix+"-a"], inodes[prefix+"-r"], inodes[prefix+"-b"]
	if a == 0 || r == 0 || b == 0 || a == r || r == b || a == b || len(inodes) != 3 {
		t.Fatalf("namespaces %v, want %s-a, -r and -b, with three inodes", inodes, prefix)
	}
	return a, r, b
}

func TestStatsRouter(t *testing.T) {
	statsGolden(t, "stats-router-ipv4", recordStatsRouter)
	s, out := replayStats(t, "stats-router-ipv4", 0)
	golden(t, "stats-router-ipv4.stats.json", []byte(out))

	echoes := replayEchoes(t, "stats-router-ipv4")
	if len(echoes) != 50 || s.Echoes != 50 || s.Replied != 50 || s.Unseen != 0 || s.LostSamples != 0 || len(s.Paths) != 1 {
		t.Fatalf("%d echoes replayed; stats: %d echoes, %d replies, %d unseen, %d lost samples, %d paths",
			len(echoes), s.Echoes, s.Replied, s.Unseen, s.LostSamples, len(s.Paths))
	}
	p := s.Paths[0]
	a, r, b := recordedRouter(t, p.Hops)
	want := routerRows(a, r, b, "eth1", "eth0")
	if got := statRows(p.Hops); !slices.Equal(got, want) {
		t.Fatalf("path:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if p.Echoes != 50 || p.Replied != 50 || len(p.Seqs) != 50 || p.Seqs[0] != 1 || p.Seqs[49] != 50 {
		t.Errorf("path of %d echoes, %d replies, seqs %v; want 1 to 50, all replied", p.Echoes, p.Replied, p.Seqs)
	}
	// The percentiles again, from the times each echo recorded.
	deltas := make([][]int64, len(p.Hops))
	var rtts, kernel []int64
	for _, e := range echoes {
		hops := deviceHops(e)
		var got []string
		for i, h := range hops {
			got = append(got, row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
			if i > 0 {
				deltas[i] = append(deltas[i], h.TNs-hops[i-1].TNs)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("echo %d took another path:\n%s", e.Seq, strings.Join(got, "\n"))
		}
		rtts = append(rtts, e.RTTNs)
		kernel = append(kernel, hops[len(hops)-1].TNs-hops[0].TNs)
	}
	for i, h := range p.Hops {
		if i == 0 {
			if h.P50Ns != 0 || h.MaxNs != 0 || h.Echoes != 50 {
				t.Errorf("first hop: %+v", h)
			}
			continue
		}
		wantP := [4]int64{nearestRank(deltas[i], 50), nearestRank(deltas[i], 90), nearestRank(deltas[i], 99), slices.Max(deltas[i])}
		if got := [4]int64{h.P50Ns, h.P90Ns, h.P99Ns, h.MaxNs}; got != wantP || h.Echoes != 50 || h.LostAfter != 0 {
			t.Errorf("hop %d: p50/p90/p99/max %v, want %v (echoes %d, lost after %d)", i+1, got, wantP, h.Echoes, h.LostAfter)
		}
	}
	if p.RTTP50Ns != nearestRank(rtts, 50) || p.RTTP99Ns != nearestRank(rtts, 99) ||
		p.KernelP50Ns != nearestRank(kernel, 50) || p.KernelP99Ns != nearestRank(kernel, 99) {
		t.Errorf("round trip %d/%d kernel %d/%d, want %d/%d and %d/%d", p.RTTP50Ns, p.RTTP99Ns, p.KernelP50Ns, p.KernelP99Ns,
			nearestRank(rtts, 50), nearestRank(rtts, 99), nearestRank(kernel, 50), nearestRank(kernel, 99))
	}
}

func TestStatsReroute(t *testing.T) {
	statsGolden(t, "stats-reroute-ipv4", recordReroute)
	s, _ := replayStats(t, "stats-reroute-ipv4", 0)
	if len(s.Paths) != 2 || s.Paths[0].Echoes+s.Paths[1].Echoes != 12 {
		t.Fatalf("%d paths: %+v", len(s.Paths), s.Paths)
	}
	// The paths again, from the rows each echo recorded: the first five
	// went from R's eth1 into B's eth0, the rest from R's eth2 into B's
	// eth1, every reply back over the first link; the path more echoes
	// took comes first.
	a, r, b := recordedRouter(t, s.Paths[0].Hops)
	before, after := routerRows(a, r, b, "eth1", "eth0"), routerRows(a, r, b, "eth2", "eth1")
	var seqsBefore, seqsAfter []uint16
	for _, e := range replayEchoes(t, "stats-reroute-ipv4") {
		var got []string
		for _, h := range deviceHops(e) {
			got = append(got, row(uint64(h.Netns), h.Ifname, h.Dir, h.Type))
		}
		switch {
		case e.Result != "reply":
			t.Errorf("echo %d: %s", e.Seq, e.Result)
		case slices.Equal(got, before):
			seqsBefore = append(seqsBefore, e.Seq)
		case slices.Equal(got, after):
			seqsAfter = append(seqsAfter, e.Seq)
		default:
			t.Errorf("echo %d took neither path:\n%s", e.Seq, strings.Join(got, "\n"))
		}
	}
	if !slices.Equal(seqsBefore, []uint16{1, 2, 3, 4, 5}) || !slices.Equal(seqsAfter, []uint16{6, 7, 8, 9, 10, 11, 12}) {
		t.Errorf("echoes %v through eth1, %v through eth2; want 1-5 and 6-12", seqsBefore, seqsAfter)
	}
	for i, w := range []struct {
		rows []string
		seqs []uint16
	}{{after, seqsAfter}, {before, seqsBefore}} {
		p := s.Paths[i]
		if got := statRows(p.Hops); !slices.Equal(got, w.rows) || !slices.Equal(p.Seqs, w.seqs) || p.Echoes != len(w.seqs) || p.Replied != len(w.seqs) {
			t.Errorf("path %d: seqs %v, %d echoes, %d replies, rows:\n%s\nwant seqs %v, all replied, rows:\n%s",
				i+1, p.Seqs, p.Echoes, p.Replied, strings.Join(got, "\n"), w.seqs, strings.Join(w.rows, "\n"))
		}
		for j, h := range p.Hops {
			if h.Echoes != len(w.seqs) || h.LostAfter != 0 {
				t.Errorf("path %d, hop %d: %d echoes, %d lost after; want %d, none lost", i+1, j+1, h.Echoes, h.LostAfter, len(w.seqs))
			}
		}
	}
}

func TestDiff(t *testing.T) {
	if *update {
		recordDiffs(t)
	}
	ok, drop, again := testdata("diff-ok-ipv4"), testdata("diff-drop-ipv4"), testdata("diff-ok-again-ipv4")

	t.Run("drop", func(t *testing.T) {
		res := runTool(t, nil, "--diff", ok, drop)
		if res.code != 1 || res.stderr != "" {
			t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
		}
		golden(t, "diff-drop", []byte(res.stdout))
		// The router is the namespace of the second hop of the working run.
		r := deviceHops(replayEchoes(t, "diff-ok-ipv4")[0])[1].NetnsName
		want := fmt.Sprintf("the paths differ: B stops after the request entering eth0 in %s: dropped by tpstats.forward (rule ", r)
		wantEnd := fmt.Sprintf(": icmp type echo-request drop), where A went on to the request leaving eth1 in %s\n", r)
		line := strings.SplitAfter(res.stdout, "\n")[2]
		if r == "" || !strings.HasPrefix(line, want) || !strings.HasSuffix(line, wantEnd) {
			t.Errorf("divergence line %q\nwant %q ... %q", line, want, wantEnd)
		}
		res = runTool(t, nil, "--diff", ok, drop, "--json")
		if res.code != 1 {
			t.Fatalf("--json: exit %d", res.code)
		}
		golden(t, "diff-drop.json", []byte(res.stdout))
		var d jsonDiff
		if err := jsonUnmarshal(res.stdout, &d); err != nil {
			t.Fatal(err)
		}
		dv := d.Divergence
		if d.SamePath || dv == nil || dv.CommonHops != 2 || dv.BNext != nil || dv.ANext == nil || dv.ANext.Ifname != "eth1" ||
			dv.ANext.NetnsName != r || !dv.AReplied || dv.BReplied || !strings.HasPrefix(dv.BWhy, "dropped by tpstats.forward") {
			t.Errorf("divergence %+v", dv)
		}
	})
	t.Run("reject", func(t *testing.T) {
		res := runTool(t, nil, "--diff", ok, testdata("diff-reject-ipv4"))
		if res.code != 1 || res.stderr != "" {
			t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
		}
		golden(t, "diff-reject", []byte(res.stdout))
		// R's error goes back the way the request came, instead of the
		// request going on.
		r := deviceHops(replayEchoes(t, "diff-ok-ipv4")[0])[1].NetnsName
		want := fmt.Sprintf("the paths differ: the runs part after the request entering eth0 in %s: A went on to the request leaving eth1 in %[1]s, "+
			"B went on to the ICMP error (unreachable) leaving eth0 in %[1]s (destination unreachable: communication administratively prohibited from ", r)
		if line := strings.SplitAfter(res.stdout, "\n")[2]; !strings.HasPrefix(line, want) {
			t.Errorf("divergence line %q\nwant %q...", line, want)
		}
	})
	t.Run("other-inodes", func(t *testing.T) {
		a, b := deviceHops(replayEchoes(t, "diff-ok-ipv4")[0]), deviceHops(replayEchoes(t, "diff-ok-again-ipv4")[0])
		if len(a) != 8 || len(b) != 8 {
			t.Fatalf("%d and %d hops", len(a), len(b))
		}
		for i := range a {
			if a[i].Netns == b[i].Netns || a[i].NetnsName != b[i].NetnsName || a[i].NetnsName == "" {
				t.Errorf("hop %d: %d (%s) and %d (%s): want the same name on other inodes", i+1, a[i].Netns, a[i].NetnsName, b[i].Netns, b[i].NetnsName)
			}
		}
		res := runTool(t, nil, "--diff", ok, again)
		if res.code != 0 || !strings.Contains(res.stdout, "\nsame path: 8 hops, ") {
			t.Errorf("exit %d:\n%s%s", res.code, res.stdout, res.stderr)
		}
	})
	t.Run("other-machine", func(t *testing.T) {
		moved := filepath.Join(t.TempDir(), "elsewhere.tpk")
		asRecordedOn(t, again, moved, "db-host-2", "6.1.0-57-amd64")
		res := runTool(t, nil, "--diff", ok, moved)
		hdr := recordingHeader(t, ok)
		note := fmt.Sprintf("note: A was recorded on %s (kernel %s), B on db-host-2 (kernel 6.1.0-57-amd64): hops are matched by namespace name", hdr.Hostname, hdr.KernelRelease)
		if res.code != 0 || !strings.Contains(res.stdout, "\nsame path: 8 hops, ") || !strings.Contains(res.stdout, note) {
			t.Errorf("exit %d:\n%s%s", res.code, res.stdout, res.stderr)
		}
	})
	t.Run("same-file", func(t *testing.T) {
		for _, f := range []string{ok, drop} {
			res := runTool(t, nil, "--diff", f, f)
			if res.code != 0 || !strings.Contains(res.stdout, "\nsame path: ") {
				t.Errorf("%s against itself: exit %d:\n%s%s", f, res.code, res.stdout, res.stderr)
			}
		}
	})
	t.Run("unreadable", func(t *testing.T) {
		dir := t.TempDir()
		garbage := filepath.Join(dir, "garbage.tpk")
		if err := os.WriteFile(garbage, []byte("GIF89a and then some bytes that are not a recording"), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, args := range [][]string{
			{"--diff", ok, garbage}, {"--diff", garbage, ok, "--json"}, {"--diff", ok, filepath.Join(dir, "missing.tpk")},
		} {
			res := runTool(t, nil, args...)
			if res.code != 2 || res.stdout != "" || strings.Count(res.stderr, "\n") != 1 || !strings.HasPrefix(res.stderr, "tracepkt-perf: diff") {
				t.Errorf("%v: exit %d, stdout %q, stderr %q", args, res.code, res.stdout, res.stderr)
			}
		}
	})
}

// svgHops are the hops an SVG drew, as "netns ifname dir type".
func svgHops(els []testenv.SVGElement, run string) []string {
	var out []string
	for _, e := range testenv.Classed(els, "hop") {
		if e.Attrs["data-run"] == run || e.Attrs["data-run"] == "" {
			out = append(out, strings.Join([]string{e.Attrs["data-netns"], e.Attrs["data-ifname"], e.Attrs["data-dir"], e.Attrs["data-type"]}, " "))
		}
	}
	return out
}

// pathHops are the hops of the main path of a run, as svgHops names them.
func pathHops(t *testing.T, hops []jsonStatHop) (out, namespaces []string) {
	t.Helper()
	for _, h := range hops {
		if h.NetnsName == "" {
			t.Fatalf("hop in unnamed namespace %d: the recordings here name every namespace", h.Netns)
		}
		out = append(out, strings.Join([]string{h.NetnsName, h.Ifname, h.Dir, h.Type}, " "))
		if !slices.Contains(namespaces, h.NetnsName) {
			namespaces = append(namespaces, h.NetnsName)
		}
	}
	return out, namespaces
}

// checkSVGPath checks the hops of a path as an SVG drew them, hops[i] as
// drawn[i], against the interface columns of all the hops drawn: each badge
// in its interface's column and in its type's colour, and the time since
// the previous hop, the median of the echoes, written within the rounding
// to three digits.
func checkSVGPath(t *testing.T, els []testenv.SVGElement, drawn []testenv.SVGHop, hops []jsonStatHop) {
	t.Helper()
	var places []string
	for _, h := range hops {
		places = append(places, h.NetnsName+" "+h.Ifname)
	}
	if got, want := testenv.SVGColumns(els), testenv.WantSVGColumns(places); !slices.Equal(got, want) {
		t.Errorf("columns %q, want %q", got, want)
	}
	if len(drawn) != len(hops) {
		t.Fatalf("%d hops drawn, want %d", len(drawn), len(hops))
	}
	for i, d := range drawn {
		h := hops[i]
		if d.Column != places[i] {
			t.Errorf("hop %d (%s %s %s): badge in column %q", i+1, places[i], h.Dir, h.Type, d.Column)
		}
		if c := testenv.SVGColour(h.Type, d.Run); d.Colour != c {
			t.Errorf("hop %d (%s%s): colour %s, want %s", i+1, h.Type, d.Run, d.Colour, c)
		}
		if i == 0 {
			continue
		}
		got, ok := svgMedian(d.Texts, h.Echoes)
		if diff := max(got-h.P50Ns, h.P50Ns-got); !ok || diff*200 > h.P50Ns {
			t.Errorf("hop %d: texts %q, want the median %dns among them", i+1, d.Texts, h.P50Ns)
		}
	}
}

// svgMedian reads the time since the previous hop among the texts of a hop
// of a group of echoes: "+2.5µs" for one echo, "p50 2.5µs" for more, after
// the run's letter or a warning sign.
func svgMedian(texts []string, echoes int) (int64, bool) {
	for _, text := range texts {
		for _, p := range []string{"⚠ ", "A ", "B "} {
			text = strings.TrimPrefix(text, p)
		}
		v, ok := strings.CutPrefix(text, "p50 ")
		if echoes == 1 {
			v, ok = strings.CutPrefix(text, "+")
		}
		if d, err := time.ParseDuration(v); ok && err == nil {
			return int64(d), true
		}
	}
	return 0, false
}

func TestSVG(t *testing.T) {
	for _, tc := range []struct {
		name string
		code int
		drop bool
	}{
		{"stats-router-ipv4", 0, false},
		{"stats-reroute-ipv4", 0, false},
		{"diff-drop-ipv4", 1, true},
		{"diff-reject-ipv4", 1, true},
		{"svg-example-ipv4", 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "svg-example-ipv4" && *update {
				recordSVGExample(t)
			}
			out := filepath.Join(t.TempDir(), "journey.svg")
			res := runTool(t, nil, "--replay", testdata(tc.name), "--svg", out, "--stats")
			if res.code != tc.code || res.stderr != "" {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			doc, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			s, _ := replayStats(t, tc.name, tc.code)
			els := testenv.SVGElements(t, doc)
			want, namespaces := pathHops(t, s.Paths[0].Hops)
			if got := svgHops(els, ""); !slices.Equal(got, want) {
				t.Errorf("hops drawn:\n%s\nthe main path:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
			if got := testenv.SVGBoxes(els); !slices.Equal(got, namespaces) {
				t.Errorf("namespace boxes %v, want %v", got, namespaces)
			}
			checkSVGPath(t, els, testenv.SVGHops(t, els), s.Paths[0].Hops)
			if drops := testenv.Classed(els, "drop"); (len(drops) > 0) != tc.drop {
				t.Errorf("drops drawn: %v", drops)
			}
			testenv.RenderSVG(t, tc.name, doc)
			if tc.name == "svg-example-ipv4" {
				// The README's picture.
				readme := filepath.Join("..", "..", "docs", "journey.svg")
				if *update {
					if err := os.WriteFile(readme, doc, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				if want, err := os.ReadFile(readme); err != nil || string(want) != string(doc) {
					t.Errorf("%s is not the picture of %s (go test -update rewrites it): %v", readme, testdata(tc.name), err)
				}
			}
		})
	}
	t.Run("diff", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "diff.svg")
		res := runTool(t, nil, "--diff", testdata("diff-ok-ipv4"), testdata("diff-drop-ipv4"), "--svg", out)
		if res.code != 1 || res.stderr != "" {
			t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
		}
		doc, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		a, _ := replayStats(t, "diff-ok-ipv4", 0)
		want, namespaces := pathHops(t, a.Paths[0].Hops)
		els := testenv.SVGElements(t, doc)
		if got := svgHops(els, "A"); !slices.Equal(got, want) {
			t.Errorf("A's hops drawn:\n%s\nA's path:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		if got := testenv.SVGBoxes(els); !slices.Equal(got, namespaces) {
			t.Errorf("namespace boxes %v, want %v", got, namespaces)
		}
		var drawnA []testenv.SVGHop
		for _, h := range testenv.SVGHops(t, els) {
			if h.Run != "B" {
				drawnA = append(drawnA, h)
			}
		}
		checkSVGPath(t, els, drawnA, a.Paths[0].Hops)
		div := testenv.Classed(els, "divergence")
		drops := testenv.Classed(els, "drop")
		if len(div) != 1 || !strings.Contains(div[0].Text, "B stops after the request entering eth0") || len(drops) != 1 {
			t.Errorf("divergence %v, drops %v", div, drops)
		}
		testenv.RenderSVG(t, "diff", doc)
	})
}

func recordingHeader(t *testing.T, path string) tpk.Header {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := tpk.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	return r.Header()
}

// asRecordedOn copies the recording src to dst as if another machine, with
// another kernel, had recorded it: same records, another header.
func asRecordedOn(t *testing.T, src, dst, host, kernel string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	r, err := tpk.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	hdr := r.Header()
	hdr.Hostname, hdr.KernelRelease, hdr.BootID = host, kernel, "another-boot"
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	w, err := tpk.NewWriter(out, hdr)
	if err != nil {
		t.Fatal(err)
	}
	var (
		rec  decode.Record
		snap decode.Snapshot
		o    tpk.EchoOutcome
	)
	for {
		kind, err := r.Next(&rec, &snap, &o)
		if errors.Is(err, io.EOF) {
			break
		}
		switch {
		case err != nil:
		case kind == tpk.KindRecord:
			err = w.WriteRecord(&rec)
		case kind == tpk.KindSnapshot:
			err = w.WriteSnapshot(&snap)
		case kind == tpk.KindOutcome:
			err = w.WriteOutcome(&o)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
}
