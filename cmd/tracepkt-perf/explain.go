package main

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tracepkt/tracepkt-perf/decode"
	"github.com/tracepkt/tracepkt-perf/decode/stats"
	"github.com/tracepkt/tracepkt-perf/probes"
	"github.com/tracepkt/tracepkt-perf/probes/hint"
)

// notDrop says which frees are never an echo's drop, by the name the kernel
// gives their reason: a socket's queue purged as it closes.
func (s *session) notDrop(r *decode.Record) bool {
	return s.reasons[uint64(r.Reason)] == "QUEUE_PURGE"
}

// reasonName names a drop reason as the kernel's format does. Subsystem
// reasons (6.4+: the subsystem in the high 16 bits) are not in its list, and
// are named by their numbers; a kernel without reasons gives "".
func (s *session) reasonName(r uint32) string {
	const subsysShift = 16 // SKB_DROP_REASON_SUBSYS_SHIFT
	switch name, ok := s.reasons[uint64(r)]; {
	case ok:
		return name
	case len(s.reasons) == 0:
		return ""
	case r>>subsysShift != 0:
		return fmt.Sprintf("subsystem %d reason %d", r>>subsysShift, r&(1<<subsysShift-1))
	}
	return fmt.Sprintf("reason %d", r)
}

// explain finds why a journey without a reply ended: the free that was its
// drop, named (reason, location), and the state that explains the loss, read
// now in the namespace where it happened. A live run only: a recording keeps
// the result.
func (s *session) explain(j *decode.Journey) error {
	if j.Replied || j.Closed() {
		return nil // a TCP probe's RST says it all
	}
	// /proc/kallsyms is read once, for every free the journey holds.
	var locs map[uint64]string
	if len(j.Frees) > 0 {
		addrs := make([]uint64, len(j.Frees))
		for i := range j.Frees {
			addrs[i] = j.Frees[i].Location
		}
		var err error
		if locs, err = probes.KernelSymbols(addrs); err != nil {
			return err
		}
	}
	if note, ok := s.lateReply(j, locs); ok {
		j.Notes = append(j.Notes, note)
		return nil
	}
	var loss hint.Loss
	var inode uint32
	if f, ok := j.DropRecord(s.notDrop); ok {
		d := j.NewDrop(f, s.reasonName(f.Reason), locs[f.Location])
		j.Drop = &d
		if nf, byRule := j.NetfilterDrop(); byRule || d.Reason == "NETFILTER_DROP" || byHook(d) || j.Error != nil && j.Error.Result() == "ttl-exceeded" {
			if byRule {
				j.Hint = s.bypassHint(j, nf)
			}
			return nil // the rule, or the error, says why (a kernel without reasons names no NETFILTER_DROP)
		}
		inode = d.Netns
		loss = hint.Loss{Src: f.Src, Dst: f.Dst, Ifindex: d.Ifindex, In: d.In, Reason: d.Reason, Len: f.IPLen(), Request: d.IsRequest() && j.Proto == 0}
		loss.Encap, _ = f.Encap()
	} else if len(j.Hops) > 0 {
		h := &j.Hops[len(j.Hops)-1]
		inode = h.Netns
		loss = hint.Loss{Src: h.Src, Dst: h.Dst, Ifindex: h.Ifindex, In: h.Probe.Direction() == decode.In, Request: h.IsRequest() && j.Proto == 0}
	} else if s.from != nil {
		// It never reached a device: the namespace it was sent from holds why.
		inode = s.from.Inode
		loss = hint.Loss{Dst: j.Target}
	} else if len(s.ns.all) > 0 {
		// Likewise, from this one (listed first).
		inode = s.ns.all[0].Inode
		loss = hint.Loss{Dst: j.Target}
	}
	if inode == 0 || j.Error != nil && j.Drop == nil {
		return nil // an ICMP error says it all
	}
	ns, ok := s.ns.get(inode)
	if !ok {
		return nil // gone, or not reachable from here
	}
	loss.Netns = strconv.FormatUint(uint64(inode), 10)
	if name := s.rc.names[inode]; name != "" {
		loss.Netns = name
	}
	f, err := ns.Open()
	if err != nil {
		return nil // the namespace went away since
	}
	defer f.Close()
	if j.Hint, err = hint.Explain(f, loss); err != nil {
		return fmt.Errorf("read the state of %v: %w", ns, err)
	}
	return nil
}

// bypassHint explains an answer netfilter dropped (drop) in a namespace its
// request never crossed. Where the rule tests conntrack's state, it says why:
// conntrack there holds no connection for the answer, so a TCP or ICMP
// answer is invalid to it and a UDP one new.
func (s *session) bypassHint(j *decode.Journey, drop decode.NetfilterEvent) string {
	path, ok := j.Bypassed(drop)
	if !ok {
		return ""
	}
	went := make([]string, len(path))
	for i, ns := range path {
		went[i] = s.rc.netnsCell(ns)
	}
	typ, at := drop.PacketType(), s.rc.netnsCell(drop.Netns)
	if !conntrackRule.MatchString(drop.RuleText()) {
		return fmt.Sprintf("asymmetric routes: the request went %s, never through %s, where the %s was dropped", strings.Join(went, " -> "), at, typ)
	}
	state := "invalid (ct state invalid)"
	if j.Proto == decode.ProtoUDP {
		state = "new, not established (ct state new)"
	}
	return fmt.Sprintf("asymmetric routes: the request went %s, never through %s, so conntrack there has no connection for the %s: to it the %s is %s",
		strings.Join(went, " -> "), at, typ, typ, state)
}

// conntrackRule matches the text of a rule that tests conntrack's state, as
// nft prints it: nftables' own, and iptables-nft's conntrack and state
// matches.
var conntrackRule = regexp.MustCompile(`(?i)\bct state\b|ctstate|--state\b|\bconntrack\b`)

// byHook says whether a kernel without drop reasons freed the packet in
// nf_hook_slow: a hook's NF_DROP verdict, where no trace rule saw the packet
// (an outer tunnel header hides the probe from the trace rules). The route,
// forwarding and neighbour state cannot explain it.
func byHook(d decode.Drop) bool {
	return d.Reason == "" && strings.HasPrefix(d.Location, "nf_hook_slow+")
}

// lateReply says, of a journey without a reply, whether the reply reached
// the sender after the pinger stopped waiting: the kernel delivered it to
// the raw socket, then freed the copy for a ping socket there is none of
// (NO_SOCKET, KERNEL-FACTS.md; in ping_rcv on 6.18, in icmp_rcv or
// icmpv6_rcv on 6.1, without a reason before 5.17). That is a late reply,
// not a drop; the note says how late, by the kernel's clock, from the
// request's first hop.
// unclaimedReplyFrees are the functions that free an echo reply's copy no
// ping socket claimed.
var unclaimedReplyFrees = []string{"ping_rcv", "icmp_rcv", "icmpv6_rcv"}

// locs names the frees' locations.
func (s *session) lateReply(j *decode.Journey, locs map[uint64]string) (string, bool) {
	if j.Error != nil || j.Interrupted || len(j.Hops) == 0 || !j.Hops[0].IsRequest() {
		return "", false
	}
	first := &j.Hops[0]
	for i := range j.Frees {
		f := &j.Frees[i]
		if reason := s.reasonName(f.Reason); f.IsRequest() || f.IsError() || f.Netns != first.Netns || f.Time < first.Time || reason != "NO_SOCKET" && reason != "" {
			continue
		}
		if fn, _, _ := strings.Cut(locs[f.Location], "+"); !slices.Contains(unclaimedReplyFrees, fn) {
			continue
		}
		took := time.Duration(f.Time - first.Time)
		if took <= j.Timeout {
			// Within the timeout by the kernel's clock, after it by the pinger's.
			return fmt.Sprintf("the reply came as the %s timeout (-W) ran out: delivered %s after the request left; not a drop",
				stats.FormatDuration(j.Timeout), stats.FormatDuration(took)), true
		}
		return fmt.Sprintf("the reply came %s late: delivered %s after the request left, past the %s timeout (-W); not a drop",
			stats.FormatDuration(took-j.Timeout), stats.FormatDuration(took), stats.FormatDuration(j.Timeout)), true
	}
	return "", false
}
