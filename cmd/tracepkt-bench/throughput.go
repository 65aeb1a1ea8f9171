package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/tpk"
)

// echoLine is what the bench reads of a --json line.
type echoLine struct {
	Seq    int               `json:"seq"`
	Result string            `json:"result"`
	Lost   uint64            `json:"lost_samples"`
	Hops   []json.RawMessage `json:"hops"`
}

// tracedRun is one -c N -i 0 --json run.
type tracedRun struct {
	echoes []echoLine
	span   time.Duration // first to last echo line
	res    result
}

func backToBack(cfg config, count int, target string, mode probeMode, extra ...string) (tracedRun, error) {
	argv := slices.Concat([]string{cfg.tool, "--json", "-c", fmt.Sprint(count), "-i", "0", "-W", "1"}, mode.args, extra, []string{target})
	res, err := runOnce(`"seq":`, true, argv...)
	if err != nil {
		return tracedRun{}, err
	}
	run := tracedRun{res: res}
	for _, l := range res.lines {
		var e echoLine
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			return tracedRun{}, fmt.Errorf("decode %q: %w", l, err)
		}
		if e.Result != mode.result {
			return tracedRun{}, fmt.Errorf("echo %d: %s", e.Seq, e.Result)
		}
		run.echoes = append(run.echoes, e)
	}
	if len(run.echoes) != count {
		return tracedRun{}, fmt.Errorf("%d echo lines, want %d", len(run.echoes), count)
	}
	run.span = res.at[len(res.at)-1] - res.at[0]
	return run, nil
}

// totals are the events received and the losses reported over echoes[from:].
func (r tracedRun) totals(from int) (events, lost uint64) {
	for _, e := range r.echoes[from:] {
		events += uint64(len(e.Hops))
		lost += e.Lost
	}
	return events, lost
}

// echoCounts are one echo's records in a recording.
type echoCounts struct {
	received int
	lost     uint64
}

// ringCounts reads a recording: per echo, the records and the losses its
// lost notices report.
func ringCounts(path string) ([]echoCounts, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := tpk.NewReader(bufio.NewReader(f))
	if err != nil {
		return nil, err
	}
	var counts []echoCounts
	var cur echoCounts
	var rec decode.Record
	for {
		kind, err := r.Next(&rec, nil, nil)
		if errors.Is(err, io.EOF) {
			return counts, nil
		}
		if err != nil {
			return nil, err
		}
		switch kind {
		case tpk.KindRecord:
			if rec.Lost > 0 {
				cur.lost += rec.Lost
			} else {
				cur.received++
			}
		case tpk.KindOutcome:
			counts, cur = append(counts, cur), echoCounts{}
		}
	}
}

// chainRouters is the length of the router line of the loss test: 4 records
// per link and echo, 240 bytes each in a ring, well past one 4 KiB page
// (topology.CheckOwnRoute follows at most 8 namespaces).
const chainRouters = 6

// perfSampleSize is one record in a ring: the perf header, the raw size, the
// record, padded to 8 bytes.
const perfSampleSize = (8 + 4 + decode.RecordSize + 7) &^ 7

func throughputSection(cfg config, progress io.Writer) (section, error) {
	n, closeFn, err := serviceTarget("tt")
	if err != nil {
		return section{}, err
	}
	defer closeFn()
	const count = 2000
	rows := [][]string{{"command", "probes", "probes/s", "events/s", "lost"}}
	for _, mode := range cfg.modes {
		for _, nf := range [][]string{{"--netfilter", "off"}, nil} {
			extra := slices.Concat(attachArgs(mode), nf)
			for _, probes := range probeModes {
				args := slices.Concat(probes.args, extra)
				fmt.Fprintf(progress, "throughput: -c %d -i 0 %v\n", count, args)
				run, err := backToBack(cfg, count, n.Target4.String(), probes, extra...)
				if err != nil {
					return section{}, err
				}
				events, lost := run.totals(1)
				secs := run.span.Seconds()
				rows = append(rows, []string{fmt.Sprintf("-c %d -i 0 %v", count, args), fmt.Sprint(count),
					fmt.Sprintf("%.0f", float64(count-1)/secs), fmt.Sprintf("%.0f", float64(events)/secs), fmt.Sprint(lost)})
			}
		}
	}

	target, closeChain, err := chainTarget("tl", chainRouters)
	if err != nil {
		return section{}, err
	}
	defer closeChain()
	const lossCount = 200
	lossRows := [][]string{{"ring pages", "records/echo", "sent", "received", "sent-received", "reported lost", "unreported at exit"}}
	perEcho := 0
	dir, err := os.MkdirTemp("", "tracepkt-bench")
	if err != nil {
		return section{}, err
	}
	defer os.RemoveAll(dir)
	for _, pages := range []int{8, 4, 2, 1} {
		fmt.Fprintf(progress, "ring loss: %d routers, --ring-pages %d\n", chainRouters, pages)
		file := filepath.Join(dir, fmt.Sprintf("pages%d.tpk", pages))
		if _, err := backToBack(cfg, lossCount, target.String(), echoProbes, "--netfilter", "off", "--ring-pages", fmt.Sprint(pages), "--record", file); err != nil {
			return section{}, err
		}
		// The recording holds the records as they came out of the rings,
		// lost notices included, every one of them, shown as a hop or not.
		counts, err := ringCounts(file)
		if err != nil {
			return section{}, err
		}
		if perEcho == 0 {
			// The largest ring loses nothing: it gives the records of one echo.
			for _, c := range counts {
				if c.lost != 0 || c.received != counts[0].received {
					return section{}, fmt.Errorf("%d pages: not a lossless reference (%+v)", pages, c)
				}
			}
			perEcho = counts[0].received
		}
		// The kernel writes a ring's lost notice only when a later record
		// fits in that ring: losses are reported during the same echo (once
		// the drain made room) or a later one, and the last losses of the
		// run may never be. Compare totals over the whole run.
		var received, reported uint64
		for _, c := range counts {
			received += uint64(c.received)
			reported += c.lost
		}
		sent := uint64(perEcho * len(counts))
		lossRows = append(lossRows, []string{fmt.Sprint(pages), fmt.Sprint(perEcho), fmt.Sprint(sent), fmt.Sprint(received),
			fmt.Sprint(sent - received), fmt.Sprint(reported), fmt.Sprint(int64(sent-received) - int64(reported))})
	}
	return section{
		title: "Lossless throughput and loss accounting",
		method: fmt.Sprintf(`Back-to-back traced probes (tracepkt-perf --json -c %d -i 0) through a veth pair:
echoes; with --tcp %d SYNs to the bench's echo service (RFC 862) on TCP port %d in the
namespace, each answered by a SYN-ACK that the tool's kernel resets; with --udp %d datagrams
to its UDP port %d, each echoed back. probes/s and events/s (hops received) from the first
probe line to the last, lost the lost_samples summed over the run. Each probe waits for its
answer and then drains the rings, so the rate is bound by one round trip plus one drain per
probe, not by the rings.

Loss: a line of %d routers (this namespace, %d forwarding namespaces, a target, one /24 of
/30s), so that one echo makes about %d device records on one CPU (%d bytes each with the
perf header), then shrinking rings (--ring-pages, a diagnostic flag: per-CPU ring data
pages, a power of two, default 8). -c %d -i 0 --netfilter off --record FILE each, and the
recording read back: it keeps every record as it came out of the rings (the drop probe's
frees of copies too, which the table does not show as hops) and every lost notice. sent
is the records per echo of the lossless 8-page run times the echoes; received the records
read; reported lost the sum of the lost notices, all over the whole run. The kernel writes a ring's lost
notice only when a later record fits in that ring (once the drain after the reply made room,
or during a later echo), so a loss is reported with the echo in whose drain the notice
arrives, not always its own; losses after the last record of a ring stay unreported:
"unreported at exit" is sent - received - reported.`,
			count, servicePort, servicePort, servicePort, servicePort, chainRouters, chainRouters, 4*(chainRouters+1), perfSampleSize, lossCount),
		table: table(rows) + "\n" + table(lossRows),
	}, nil
}
