package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
)

// journeyWriter prints journeys as they complete; live runs and replays share it.
type journeyWriter interface {
	Journey(j *decode.Journey) error
}

// newJourneyWriter returns the table or the JSON writer.
func newJourneyWriter(jsonOut bool, w io.Writer, rc *renderContext) journeyWriter {
	if jsonOut {
		return jsonWriter{json.NewEncoder(w), rc}
	}
	return &tableWriter{w: w, rc: rc, table: newPlainTable()}
}

// tableWriter prints one table per echo, then a summary line; a blank line
// separates echoes. The run's notes follow the first summary.
type tableWriter struct {
	w       io.Writer
	rc      *renderContext
	table   *plainTable
	buf     []byte // what one echo prints, kept for the next
	written bool
}

func (t *tableWriter) Journey(j *decode.Journey) error {
	out := t.buf[:0]
	if t.written {
		out = append(out, '\n')
	}
	withNF := len(j.Netfilter) > 0
	withCT := showsCT(j.Netfilter)
	withTunnel := len(j.Tunnels()) > 0
	header := []string{"NETWORK NS", "INTERFACE", "DIR", "TYPE", "ADDRESSES"}
	if withTunnel {
		header = append(header, "TUNNEL")
	}
	header = append(header, "+TIME", "+HOP")
	if withNF {
		header = append(header, "NETFILTER")
		if withCT {
			header = append(header, "CT")
		}
		header = append(header, "VERDICT", "RULE")
	}
	if j.Drop != nil {
		header = append(header, "DROP")
	}
	t.table.start(header)
	rows := j.Rows()
	for _, v := range viewsOf(t.rc, j, rows) {
		cells := []string{t.rc.netnsCell(v.netns), v.ifname, v.dir, v.typ, v.src + " -> " + v.dst}
		if withTunnel {
			cells = append(cells, v.tunnel)
		}
		cells = append(cells, v.since, v.delta)
		if withNF {
			cells = append(cells, v.chain)
			if withCT {
				cells = append(cells, v.ct)
			}
			cells = append(cells, v.verdict, v.rule)
		}
		if j.Drop != nil {
			cells = append(cells, v.drop)
		}
		if err := t.table.row(cells); err != nil {
			return err
		}
	}
	if len(rows) > 0 {
		var err error
		if out, err = t.table.appendTo(out); err != nil {
			return err
		}
	}
	out = append(append(out, summary(j, t.rc)...), '\n')
	if !t.written {
		for _, n := range t.rc.notes {
			out = append(append(out, n...), '\n')
		}
	}
	t.written, t.buf = true, out
	_, err := t.w.Write(out)
	return err
}

func familyOf(a netip.Addr) uint8 {
	if a.Is4() {
		return 4
	}
	return 6
}

// rowView is one row as both renderers show it.
type rowView struct {
	netns                            uint32
	ifname                           string
	ifindex                          uint32
	dir, typ, src, dst, since, delta string
	sport, dport                     uint16 // of a TCP packet
	tunnel                           string // the outer headers of a packet in a tunnel
	encap                            *decode.Encap
	tNs, dtNs                        int64
	timed                            bool
	chain, ct, verdict, rule, drop   string
	nf                               *decode.NetfilterEvent
	hop                              *decode.Record
}

// viewsOf makes the rows' views, with their times counted from the first
// timed row of any kind and from the timed row before them.
func viewsOf(rc *renderContext, j *decode.Journey, rows []decode.Row) []rowView {
	start := j.Start()
	views := make([]rowView, len(rows))
	var prev uint64
	for i, r := range rows {
		v := viewOf(rc, j, r, start)
		if v.timed {
			if prev != 0 {
				v.dtNs = int64(r.Time - prev)
				v.delta = sinceFirst(time.Duration(v.dtNs))
			}
			prev = r.Time
		}
		views[i] = v
	}
	return views
}

func viewOf(rc *renderContext, j *decode.Journey, r decode.Row, start uint64) rowView {
	var v rowView
	if r.Time != 0 && r.Time >= start {
		v.tNs = int64(r.Time - start)
	}
	if h := r.Hop; h != nil {
		v.hop, v.timed = h, true
		v.netns, v.ifname, v.ifindex = h.Netns, h.IfName(), h.Ifindex
		v.dir, v.typ = h.Probe.Direction().String(), h.PacketType()
		v.src, v.dst = h.Src.String(), h.Dst.String()
		if sport, dport, ok := h.Ports(); ok {
			v.sport, v.dport = sport, dport
			v.src, v.dst = netip.AddrPortFrom(h.Src, sport).String(), netip.AddrPortFrom(h.Dst, dport).String()
		}
		if e, ok := h.Encap(); ok {
			v.encap, v.tunnel = &e, e.String()
		}
		v.since = sinceFirst(time.Duration(v.tNs))
		return v
	}
	if d := r.Drop; d != nil {
		v.timed = true
		v.netns, v.ifname, v.ifindex = d.Netns, d.Ifname, d.Ifindex
		v.dir, v.typ = decode.Freed.String(), d.PacketType()
		v.since = sinceFirst(time.Duration(v.tNs))
		v.drop = dropText(d)
		v.src, v.dst = d.Src.String(), d.Dst.String()
		return v
	}
	e := r.NF
	v.nf = e
	v.netns, v.typ = e.Netns, e.PacketType()
	v.src, v.dst = e.Src.String(), e.Dst.String()
	if e.Sport != 0 || e.Dport != 0 {
		v.sport, v.dport = e.Sport, e.Dport
		v.src, v.dst = netip.AddrPortFrom(e.Src, e.Sport).String(), netip.AddrPortFrom(e.Dst, e.Dport).String()
	}
	v.ct = ctText(e)
	v.ifindex = e.Oif
	if e.Hook != decode.HookOutput && e.Hook != decode.HookPostrouting || e.Oif == 0 {
		v.ifindex = e.Iif
	}
	v.ifname = rc.ifName(j, e.Netns, v.ifindex)
	if e.Time != 0 {
		v.timed = true
		v.since = sinceFirst(time.Duration(v.tNs))
	}
	v.chain = e.Table + "." + e.Chain
	v.verdict = e.Verdict
	if e.Target != "" {
		v.verdict += " " + e.Target
	}
	v.rule = e.RuleText()
	return v
}

// showsCT reports whether any of events has a conntrack state: the
// netfilter source shows states (nftables tracing, Linux 6.16 and later).
func showsCT(events []decode.NetfilterEvent) bool {
	for i := range events {
		if events[i].CT != 0 {
			return true
		}
	}
	return false
}

// ctText is the CT cell of a netfilter row: the packet's conntrack state,
// "new", "established reply", or "none" where the packet has no conntrack
// entry (conntrack is not active in the namespace yet, or took the packet
// for invalid): a kernel that shows states says nothing of those.
func ctText(e *decode.NetfilterEvent) string {
	switch {
	case e.CT == 0:
		return "none"
	case e.CTReply:
		return e.CT.String() + " reply"
	}
	return e.CT.String()
}

// sinceFirst formats a hop's time since the first hop: "0", "+850ns", "+3.1µs".
func sinceFirst(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return "+" + stats.FormatDuration(d)
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// summary is the line under each table: the outcome; for a lost echo,
// what explains it (an ICMP error, the drop with its reason and place, or
// where the request or the reply was last seen) and the state that
// explains it.
func summary(j *decode.Journey, rc *renderContext) string {
	if rc.listen {
		return listenSummary(j, rc)
	}
	var b strings.Builder
	if j.Replied || j.Closed() {
		nss, ifs := j.Crossed()
		if j.Proto != 0 {
			b.WriteString(portAnswer(j, rc))
		} else {
			fmt.Fprintf(&b, "reply from %s in %s", j.Target, stats.FormatDuration(j.RTT))
		}
		fmt.Fprintf(&b, ": crossed %s, %s", plural(nss, "network namespace", "network namespaces"), plural(ifs, "interface", "interfaces"))
		if req, target, rep, ok := j.Split(); ok {
			fmt.Fprintf(&b, "; request path %s, in the target %s, reply path %s", stats.FormatDuration(req), stats.FormatDuration(target), stats.FormatDuration(rep))
		}
	} else {
		// " within" the timeout, " after" a part of it for an echo a signal
		// cut short, nothing for a request the kernel refused to send.
		waited := " within " + stats.FormatDuration(j.Timeout)
		switch {
		case j.Interrupted:
			b.WriteString("interrupted: ")
			waited = " after " + stats.FormatDuration(j.Timeout)
		case j.Timeout == 0:
			waited = ""
		}
		switch {
		case j.NoSocket():
			fmt.Fprintf(&b, "closed: no socket on %s (seq %d)", netip.AddrPortFrom(j.Target, j.Port), j.Seq)
		case j.Proto != 0:
			fmt.Fprintf(&b, "no answer from %s (seq %d)", netip.AddrPortFrom(j.Target, j.Port), j.Seq)
		default:
			fmt.Fprintf(&b, "no reply from %s (seq %d)", j.Target, j.Seq)
		}
		nfDrop, byRule := j.NetfilterDrop()
		switch {
		case j.Error != nil && !j.Error.From.IsValid():
			fmt.Fprintf(&b, ": not sent, it is larger than the path MTU this host learnt (mtu %d)", j.Error.MTU)
		case j.Error != nil:
			fmt.Fprintf(&b, ": %s answered %q", j.Error.From, j.Error.Text())
			switch {
			case j.Error.MTU != 0:
				fmt.Fprintf(&b, " (mtu %d)", j.Error.MTU)
			case j.NoSocket():
				b.WriteString(sentFrom(j, rc))
			case j.Error.Rejected():
				b.WriteString(" (REJECT?)")
			}
			if j.Drop != nil && j.Drop.Reason != "NETFILTER_DROP" {
				b.WriteString("\n  " + dropLine(j.Drop, rc))
			}
		case byRule:
			fmt.Fprintf(&b, "%s: the %s was dropped by %s.%s (%s) in network namespace %s", waited,
				nfDrop.PacketType(), nfDrop.Table, nfDrop.Chain, nfDrop.RuleText(), rc.netnsCell(nfDrop.Netns))
		case j.Drop != nil:
			b.WriteString(": " + dropLine(j.Drop, rc))
		default:
			b.WriteString(waited)
			if last, ok := j.LastRequest(); ok {
				// The reply, once there is one, went further.
				if n := len(j.Hops); !j.Hops[n-1].IsRequest() && !j.Hops[n-1].IsError() {
					last = j.Hops[n-1]
				}
				verb := "leaving"
				if last.Probe.Direction() == decode.In {
					verb = "entering"
				}
				fmt.Fprintf(&b, ": the %s was last seen %s %s in network namespace %s", last.PacketType(), verb, last.IfName(), rc.netnsCell(last.Netns))
				if j.Proto == decode.ProtoUDP && last.IsRequest() && verb == "entering" {
					// A datagram no socket takes is answered with a port
					// unreachable, and one the stack drops is freed where
					// the drop probe sees it.
					b.WriteString(", no drop seen there: a socket took it and did not answer")
				}
			} else {
				b.WriteString(": the request never reached a network device")
			}
		}
		if j.Hint != "" {
			b.WriteString("\n  " + j.Hint)
		}
	}
	for _, t := range j.Translations() {
		b.WriteString("\n  " + translationLine(t, rc))
	}
	for _, c := range j.Tunnels() {
		b.WriteString("\n  " + tunnelLine(c, rc))
	}
	if ring := j.Lost - j.NetfilterLost; ring > 0 {
		fmt.Fprintf(&b, "\n%s lost: the kernel's rings overflowed, rows may be missing", plural(int(ring), "event", "events"))
	}
	if j.NetfilterLost > 0 {
		fmt.Fprintf(&b, "\nnetfilter: %s lost (trace socket overflowed, or unparsable), netfilter rows may be missing", plural(int(j.NetfilterLost), "trace message batch", "trace message batches"))
	}
	for _, n := range j.Notes {
		b.WriteString("\n" + n)
	}
	return b.String()
}

// dropLine says where and why a packet was dropped: "dropped in netns
// router (4026532411) after west: IP_INNOROUTES (ip_error+0x5c)".
func dropLine(d *decode.Drop, rc *renderContext) string {
	var b strings.Builder
	if typ := d.PacketType(); typ != "request" && typ != "syn" {
		b.WriteString("the " + typ + " was ")
	}
	b.WriteString("dropped in netns " + rc.netnsCell(d.Netns))
	if d.Ifname != "" {
		b.WriteString(" after " + d.Ifname)
	}
	b.WriteString(": " + dropText(d))
	return b.String()
}

// dropText is the reason with the location, "IP_INNOROUTES (ip_error+0x5c)",
// or the location alone where the kernel gives no reason.
func dropText(d *decode.Drop) string {
	if d.Reason == "" {
		return "freed at " + d.Location
	}
	return d.Reason + " (" + d.Location + ")"
}

// jsonWriter prints one JSON object per echo, each on its own line.
type jsonWriter struct {
	enc *json.Encoder
	rc  *renderContext
}

// jsonEcho is the --json schema; its field names are a contract with users' scripts.
type jsonEcho struct {
	Target      string `json:"target"`
	Family      string `json:"family"`
	EchoID      uint16 `json:"echo_id"`
	Seq         uint16 `json:"seq"`
	Result      string `json:"result"`
	RTTNs       int64  `json:"rtt_ns"`
	LostSamples uint64 `json:"lost_samples"`
	// NetfilterLost is the part of LostSamples that netfilter trace
	// messages make up.
	NetfilterLost uint64    `json:"netfilter_lost,omitempty"`
	Hops          []jsonHop `json:"hops"`
	jsonRunNotes
	// Drop and ICMPError say what ended an echo without a reply; Hint is
	// the state that explains a loss without a drop.
	Drop      *jsonEchoDrop  `json:"drop,omitempty"`
	ICMPError *jsonICMPError `json:"icmp_error,omitempty"`
	Hint      string         `json:"hint,omitempty"`
	// Split is the round trip of a reply, split at the target.
	Split *jsonSplit `json:"split,omitempty"`
	// Protocol is "tcp" for a TCP probe to Port ("icmp" is left out);
	// AnswerFrom is the address its answer came from.
	Protocol   string `json:"protocol,omitempty"`
	Port       uint16 `json:"port,omitempty"`
	AnswerFrom string `json:"answer_from,omitempty"`
}

// jsonRunNotes say how the run traced netfilter, and what it could not see.
type jsonRunNotes struct {
	// NetfilterSource is "nftrace", "kprobe" or "off".
	NetfilterSource string   `json:"netfilter_source,omitempty"`
	Notes           []string `json:"notes,omitempty"`
}

func (rc *renderContext) jsonNotes() jsonRunNotes {
	return jsonRunNotes{NetfilterSource: rc.netfilter.String(), Notes: rc.notes}
}

type jsonEchoDrop struct {
	Reason    string `json:"reason"`
	Location  string `json:"location"`
	Netns     uint32 `json:"netns"`
	Host      string `json:"host,omitempty"`
	NetnsName string `json:"netns_name,omitempty"`
	Ifname    string `json:"ifname"`
	Hint      string `json:"hint"`
	Type      string `json:"type"`
	KtimeNs   uint64 `json:"ktime_ns"`
}

type jsonICMPError struct {
	Type uint8  `json:"type"`
	Code uint8  `json:"code"`
	Text string `json:"text"`
	From string `json:"from"`
	MTU  uint32 `json:"mtu"`
}

type jsonSplit struct {
	RequestNs int64 `json:"request_ns"`
	TargetNs  int64 `json:"target_ns"`
	ReplyNs   int64 `json:"reply_ns"`
}

type jsonHop struct {
	TNs int64 `json:"t_ns"`
	// DtNs is the time since the timed row before, 0 for the first.
	DtNs       int64      `json:"dt_ns"`
	Netns      uint32     `json:"netns"`
	NetnsName  string     `json:"netns_name,omitempty"`
	NetnsOwner *jsonOwner `json:"netns_owner,omitempty"`
	// Host is the machine of the row's namespace, in a merge (--merge).
	Host    string `json:"host,omitempty"`
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
	// Netfilter is set on rows with probe "netfilter".
	Netfilter *jsonNetfilter `json:"netfilter,omitempty"`
	// Sport and Dport are a TCP packet's ports; NAT are the translations
	// first seen on this hop (a DNAT and a masquerade can both be).
	Sport uint16     `json:"sport,omitempty"`
	Dport uint16     `json:"dport,omitempty"`
	NAT   []*jsonNAT `json:"nat,omitempty"`
	// Tunnel: the outer headers of a packet seen in a tunnel.
	Tunnel *jsonTunnel `json:"tunnel,omitempty"`
}

// jsonNAT is a decode.Translation.
type jsonNAT struct {
	Kind   string `json:"kind"`
	Before string `json:"before"`
	After  string `json:"after"`
	Netns  uint32 `json:"netns"`
	Table  string `json:"table,omitempty"`
	Chain  string `json:"chain,omitempty"`
	Rule   string `json:"rule,omitempty"`
}

// jsonOwner is the owner of a namespace, nil when unknown.
func (rc *renderContext) jsonOwner(inode uint32) *jsonOwner {
	o, ok := rc.owners[inode]
	if !ok {
		return nil
	}
	return &jsonOwner{Kind: o.Kind, ID: o.ID, Name: o.Name, Pid: o.Pid, Comm: o.Comm}
}

// jsonOwner is who a hop's namespace belongs to (decode.Owner).
type jsonOwner struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
	Pid  int    `json:"pid"`
	Comm string `json:"comm"`
}

type jsonNetfilter struct {
	Family     string `json:"family"`
	Table      string `json:"table"`
	Chain      string `json:"chain"`
	Hook       string `json:"hook"`
	Verdict    string `json:"verdict"`
	Target     string `json:"target,omitempty"`
	RuleHandle uint64 `json:"rule_handle"`
	Rule       string `json:"rule"`
	Policy     bool   `json:"policy"`
	Source     string `json:"source"`
	// CT is the packet's conntrack state (ct state: new, established,
	// related, untracked) where the source shows it, and CTDirection its
	// direction (original, reply).
	CT          string `json:"ct,omitempty"`
	CTDirection string `json:"ct_direction,omitempty"`
}

type jsonTunnel struct {
	Kind       string  `json:"kind"`
	VNI        *uint32 `json:"vni,omitempty"`
	Key        *uint32 `json:"key,omitempty"`
	OuterSrc   string  `json:"outer_src,omitempty"`
	OuterDst   string  `json:"outer_dst,omitempty"`
	OuterSport uint16  `json:"outer_sport,omitempty"`
	OuterDport uint16  `json:"outer_dport,omitempty"`
}

func tunnelJSON(e *decode.Encap) *jsonTunnel {
	if e == nil {
		return nil
	}
	t := &jsonTunnel{Kind: e.Kind.String(), OuterSport: e.Sport, OuterDport: e.Dport}
	if e.Kind == decode.TunnelVXLAN || e.Kind == decode.TunnelGeneve {
		t.VNI = &e.VNI
	}
	if e.HasKey {
		t.Key = &e.Key
	}
	if e.Src.IsValid() {
		t.OuterSrc, t.OuterDst = e.Src.String(), e.Dst.String()
	}
	return t
}

func (w jsonWriter) Journey(j *decode.Journey) error {
	e := jsonEcho{
		Target:        j.Target.String(),
		Family:        family(j.Target),
		EchoID:        j.EchoID,
		Seq:           j.Seq,
		Result:        journeyResult(j, w.rc),
		LostSamples:   j.Lost,
		NetfilterLost: j.NetfilterLost,
		Hops:          []jsonHop{},
		jsonRunNotes:  w.rc.jsonNotes(),
	}
	e.Notes = slices.Concat(e.Notes, j.Notes)
	if j.Replied || j.Closed() {
		e.RTTNs = j.RTT.Nanoseconds()
	}
	if j.Proto != 0 {
		e.Protocol, e.Port = decode.ProtoName(j.Proto), j.Port
		if j.From.IsValid() {
			e.AnswerFrom = j.From.String()
		}
	}
	nat := map[*decode.Record][]*jsonNAT{}
	for _, t := range j.Translations() {
		n := &jsonNAT{Kind: t.Kind, Before: t.Before.String(), After: t.After.String(), Netns: t.Netns}
		if r := t.Rule; r != nil {
			n.Table, n.Chain, n.Rule = r.Table, r.Chain, r.Rule
		}
		nat[&j.Hops[t.Hop]] = append(nat[&j.Hops[t.Hop]], n)
	}
	if req, target, rep, ok := j.Split(); ok && j.Replied {
		e.Split = &jsonSplit{req.Nanoseconds(), target.Nanoseconds(), rep.Nanoseconds()}
	}
	if x := j.Error; x != nil {
		e.ICMPError = &jsonICMPError{Type: x.Type, Code: x.Code, Text: x.Text(), MTU: x.MTU}
		if x.From.IsValid() {
			e.ICMPError.From = x.From.String() // empty when this host refused to send it
		}
	}
	if d := j.Drop; d != nil {
		e.Drop = &jsonEchoDrop{Reason: d.Reason, Location: d.Location, Netns: w.rc.inode(d.Netns), Host: w.rc.hosts[d.Netns], NetnsName: w.rc.names[d.Netns],
			Ifname: d.Ifname, Hint: j.Hint, Type: d.PacketType(), KtimeNs: d.Time}
	} else {
		e.Hint = j.Hint
	}
	rows := j.Rows()
	for i, v := range viewsOf(w.rc, j, rows) {
		r := rows[i]
		h := jsonHop{
			TNs: v.tNs, DtNs: v.dtNs, Netns: w.rc.inode(v.netns), Host: w.rc.hosts[v.netns], NetnsName: w.rc.names[v.netns], Ifname: v.ifname, Ifindex: v.ifindex,
			Type: v.typ, Src: v.src, Dst: v.dst, Dir: v.dir, KtimeNs: r.Time,
		}
		h.NetnsOwner = w.rc.jsonOwner(v.netns)
		switch {
		case v.hop != nil:
			h.Probe, h.CPU, h.Len = v.hop.Probe.String(), v.hop.CPU, v.hop.Len
			h.Sport, h.Dport, h.NAT = v.sport, v.dport, nat[v.hop]
			h.Tunnel = tunnelJSON(v.encap)
		case r.Drop != nil:
			h.Probe = decode.ProbeKfreeSkb.String()
		default:
			nf := v.nf
			h.Probe, h.KtimeNs = "netfilter", nf.Time // t_ns places an nftrace row; ktime_ns is its own time, if known
			h.Netfilter = &jsonNetfilter{
				Family: nf.Family, Table: nf.Table, Chain: nf.Chain, Hook: nf.Hook.String(), Verdict: nf.Verdict,
				Target: nf.Target, RuleHandle: nf.RuleHandle, Rule: nf.Rule, Policy: nf.Type == decode.TracePolicy, Source: nf.Source,
				CT: nf.CT.String(),
			}
			if nf.CT != 0 {
				h.Netfilter.CTDirection = "original"
				if nf.CTReply {
					h.Netfilter.CTDirection = "reply"
				}
			}
			h.Sport, h.Dport = v.sport, v.dport
		}
		e.Hops = append(e.Hops, h)
	}
	return w.enc.Encode(e)
}

// journeyResult is JSON's result of j: a listener's fragment is "seen" or
// "dropped" (listenResult), not an answer it never waited for.
func journeyResult(j *decode.Journey, rc *renderContext) string {
	if rc.listen {
		return listenResult(j)
	}
	return j.Result()
}

// portAnswer says what answered a TCP or UDP probe: "open: 10.96.0.10:80
// answered SYN-ACK in 1.2ms", or "closed: ... answered RST", where the RST
// was born (the namespace the answer was first seen in), "reply:
// 10.96.0.10:53 answered in 1.2ms", and an answer from another address than
// the one probed, which the prober's side does not take as an answer to
// its SYN.
func portAnswer(j *decode.Journey, rc *renderContext) string {
	var b strings.Builder
	to := netip.AddrPortFrom(j.Target, j.Port)
	switch {
	case j.Proto == decode.ProtoUDP:
		fmt.Fprintf(&b, "reply: %s answered in %s", to, stats.FormatDuration(j.RTT))
	case j.Replied:
		fmt.Fprintf(&b, "open: %s answered SYN-ACK in %s", to, stats.FormatDuration(j.RTT))
	default:
		fmt.Fprintf(&b, "closed: %s answered RST in %s", to, stats.FormatDuration(j.RTT))
		b.WriteString(sentFrom(j, rc))
	}
	if j.From.IsValid() && j.From != j.Target {
		fmt.Fprintf(&b, "; the answer came from %s, not %s: it was not translated back", j.From, j.Target)
	}
	return b.String()
}

// sentFrom names where the answer to a probe was born: " (sent from
// network namespace pod-3)", the namespace its first hop was seen in; ""
// when no hop of it was seen.
func sentFrom(j *decode.Journey, rc *renderContext) string {
	for _, h := range j.Hops {
		if !h.IsRequest() {
			return fmt.Sprintf(" (sent from network namespace %s)", rc.netnsCell(h.Netns))
		}
	}
	return ""
}

// tunnelLine says which tunnel a packet crossed, between which nodes: "the
// request crossed a vxlan tunnel (vni 42, 192.168.0.1 -> 192.168.0.2:4789)
// from network namespace node-a to network namespace node-b"; "in" one
// namespace when it was not seen leaving the tunnel.
func tunnelLine(c decode.TunnelCrossing, rc *renderContext) string {
	line := fmt.Sprintf("the %s crossed a %s tunnel", c.Packet, c.Kind)
	if about := c.Details(); len(about) > 0 {
		line += " (" + strings.Join(about, ", ") + ")"
	}
	if c.From == c.To {
		return line + " in network namespace " + rc.netnsCell(c.From) + ", not seen leaving it"
	}
	return line + fmt.Sprintf(" from network namespace %s to network namespace %s", rc.netnsCell(c.From), rc.netnsCell(c.To))
}

// translationLine says what NAT changed and where: "DNAT 10.96.0.10:80 ->
// 10.244.1.5:8080 in network namespace node (nat.KUBE-SEP-XYZ rule 3: ...)".
func translationLine(t decode.Translation, rc *renderContext) string {
	line := fmt.Sprintf("%s %s -> %s in network namespace %s", t.Kind, t.Before, t.After, rc.netnsCell(t.Netns))
	if e := t.Rule; e != nil {
		if rule := e.RuleText(); rule != "" {
			return line + fmt.Sprintf(" (%s.%s %s)", e.Table, e.Chain, rule)
		}
		return line + fmt.Sprintf(" (%s.%s)", e.Table, e.Chain)
	}
	return line
}
