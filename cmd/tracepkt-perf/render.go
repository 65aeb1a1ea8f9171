package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/renderer"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/tracepkt/tracepkt-perf/decode"
)

// journeyWriter prints journeys as they complete; live runs and replays share it.
type journeyWriter interface {
	Journey(j *decode.Journey) error
}

// tableWriter prints one table per echo, then a summary line; a blank line
// separates echoes.
type tableWriter struct {
	w       io.Writer
	written bool
}

func (t *tableWriter) Journey(j *decode.Journey) error {
	var buf bytes.Buffer
	if t.written {
		buf.WriteByte('\n')
	}
	t.written = true
	table := tablewriter.NewTable(&buf,
		tablewriter.WithRenderer(renderer.NewBlueprint(tw.Rendition{
			Borders:  tw.BorderNone,
			Symbols:  tw.NewSymbols(tw.StyleNone),
			Settings: tw.Settings{Separators: tw.Separators{BetweenColumns: tw.On}, Lines: tw.LinesNone},
		})),
		tablewriter.WithHeaderAutoFormat(tw.Off),
		tablewriter.WithHeaderAlignment(tw.AlignLeft),
		tablewriter.WithRowAlignment(tw.AlignLeft),
		tablewriter.WithPadding(tw.Padding{Right: "  ", Overwrite: true}),
	)
	table.Header([]string{"NETWORK NS", "INTERFACE", "DIR", "TYPE", "ADDRESSES", "+TIME"})
	for i, h := range j.Hops {
		err := table.Append([]string{
			strconv.FormatUint(uint64(h.Netns), 10),
			h.IfName(),
			h.Probe.Direction().String(),
			echoType(&h),
			h.Src.String() + " -> " + h.Dst.String(),
			sinceFirst(j.Since(i)),
		})
		if err != nil {
			return err
		}
	}
	if len(j.Hops) > 0 {
		if err := table.Render(); err != nil {
			return err
		}
	}
	// The renderer pads the last column; trailing blanks only get in the way of copy and paste.
	var out strings.Builder
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		out.WriteString(strings.TrimRight(line, " \n"))
		if strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	out.WriteString(summary(j) + "\n")
	_, err := io.WriteString(t.w, out.String())
	return err
}

func echoType(r *decode.Record) string {
	if r.IsRequest() {
		return "request"
	}
	return "reply"
}

// sinceFirst formats a hop's time since the first hop: "0", "+850ns", "+3.1µs".
func sinceFirst(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return "+" + shortDuration(d)
}

var durationUnits = []struct {
	unit   time.Duration
	suffix string
}{{time.Second, "s"}, {time.Millisecond, "ms"}, {time.Microsecond, "µs"}}

// shortDuration keeps three significant digits, which is what a reader compares.
func shortDuration(d time.Duration) string {
	for _, u := range durationUnits {
		if d < u.unit {
			continue
		}
		v := float64(d) / float64(u.unit)
		prec := 2
		if v >= 100 {
			prec = 0
		} else if v >= 10 {
			prec = 1
		}
		s := strconv.FormatFloat(v, 'f', prec, 64)
		if strings.Contains(s, ".") {
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
		}
		return s + u.suffix
	}
	return strconv.FormatInt(int64(d), 10) + "ns"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// summary is the line under each table: the outcome, and where a lost echo was last seen.
func summary(j *decode.Journey) string {
	var b strings.Builder
	if j.Replied {
		nss, ifs := j.Crossed()
		fmt.Fprintf(&b, "reply from %s in %s: crossed %s, %s", j.Target, shortDuration(j.RTT),
			plural(nss, "network namespace", "network namespaces"), plural(ifs, "interface", "interfaces"))
	} else {
		fmt.Fprintf(&b, "no reply from %s (seq %d) within %s", j.Target, j.Seq, shortDuration(j.Timeout))
		if last, ok := j.LastRequest(); ok {
			verb := "leaving"
			if last.Probe.Direction() == decode.In {
				verb = "entering"
			}
			fmt.Fprintf(&b, ": the request was last seen %s %s in network namespace %d", verb, last.IfName(), last.Netns)
		} else {
			b.WriteString(": the request never reached a network device")
		}
	}
	if j.Lost > 0 {
		fmt.Fprintf(&b, "\n%s lost: the kernel's rings overflowed, rows may be missing", plural(int(j.Lost), "event", "events"))
	}
	return b.String()
}

// jsonWriter prints one JSON object per echo, each on its own line.
type jsonWriter struct{ enc *json.Encoder }

func newJSONWriter(w io.Writer) jsonWriter { return jsonWriter{json.NewEncoder(w)} }

// jsonEcho is the --json schema; its field names are a contract with users' scripts.
type jsonEcho struct {
	Target      string    `json:"target"`
	Family      string    `json:"family"`
	EchoID      uint16    `json:"echo_id"`
	Seq         uint16    `json:"seq"`
	Result      string    `json:"result"`
	RTTNs       int64     `json:"rtt_ns"`
	LostSamples uint64    `json:"lost_samples"`
	Hops        []jsonHop `json:"hops"`
}

type jsonHop struct {
	TNs     int64  `json:"t_ns"`
	Netns   uint32 `json:"netns"`
	Ifname  string `json:"ifname"`
	Ifindex uint32 `json:"ifindex"`
	Probe   string `json:"probe"`
	Type    string `json:"type"`
	Src     string `json:"src"`
	Dst     string `json:"dst"`
	Dir     string `json:"dir"`
	KtimeNs uint64 `json:"ktime_ns"`
	CPU     uint32 `json:"cpu"`
	Len     uint32 `json:"len"`
}

func (w jsonWriter) Journey(j *decode.Journey) error {
	e := jsonEcho{
		Target:      j.Target.String(),
		Family:      "ipv4",
		EchoID:      j.EchoID,
		Seq:         j.Seq,
		Result:      "timeout",
		LostSamples: j.Lost,
		Hops:        []jsonHop{},
	}
	if j.Target.Is6() {
		e.Family = "ipv6"
	}
	if j.Replied {
		e.Result, e.RTTNs = "reply", j.RTT.Nanoseconds()
	}
	for i, h := range j.Hops {
		e.Hops = append(e.Hops, jsonHop{
			TNs:     j.Since(i).Nanoseconds(),
			Netns:   h.Netns,
			Ifname:  h.IfName(),
			Ifindex: h.Ifindex,
			Probe:   h.Probe.String(),
			Type:    echoType(&h),
			Src:     h.Src.String(),
			Dst:     h.Dst.String(),
			Dir:     h.Probe.Direction().String(),
			KtimeNs: h.Time,
			CPU:     h.CPU,
			Len:     h.Len,
		})
	}
	return w.enc.Encode(e)
}
