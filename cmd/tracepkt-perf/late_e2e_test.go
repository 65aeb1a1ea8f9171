package main

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"
)

// lateNote is the note under an echo whose reply came after its timeout;
// edgeNote, after the pinger's but within the kernel's clock, which starts
// at the request's first hop, a little after the send.
var (
	lateNote = regexp.MustCompile(`^the reply came ([0-9.]+[µmn]?s) late: delivered ([0-9.]+[µmn]?s) after the request left, past the ([0-9.]+[µmn]?s) timeout \(-W\); not a drop$`)
	edgeNote = regexp.MustCompile(`^the reply came as the 100µs timeout \(-W\) ran out: delivered ([0-9.]+[µn]?s) after the request left; not a drop$`)
)

// TestE2ELateReply: with a timeout far below the round trip (-W 0.0001), the
// replies through a veth pair are delivered after the pinger stopped
// waiting. The kernel then frees the copy meant for a ping socket (there is
// none: NO_SOCKET at ping_rcv, or icmp_rcv and icmpv6_rcv on 6.1, KERNEL-FACTS.md) after it delivered the reply
// to the raw socket: a late reply, result timeout with a note saying how
// late, never a drop.
func TestE2ELateReply(t *testing.T) {
	topo, n := vethPair(t)
	families(t, n.Target4, n.Target6, func(t *testing.T, target netip.Addr) {
		if err := topo.CheckOwnRoute(n.Source, target); err != nil {
			t.Fatal(err)
		}
		args := []string{"-W", "0.0001", "-c3", "-i0.05", target.String()}
		res := runTool(t, n.Source, append([]string{"--json"}, args...)...)
		late := 0
		for _, e := range decodeEchoes(t, res.stdout) {
			if e.Result == "reply" {
				continue // it made it within the 100µs
			}
			var note []string
			edge := false
			for _, s := range e.Notes {
				if m := lateNote.FindStringSubmatch(s); m != nil {
					note = m
				} else if edgeNote.MatchString(s) {
					edge = true
				}
			}
			if e.Result != "timeout" || e.Drop != nil || note == nil && !edge {
				t.Errorf("seq %d: result %q, drop %+v, notes %q; want a timeout with a late note and no drop", e.Seq, e.Result, e.Drop, e.Notes)
				continue
			}
			late++
			if note == nil {
				continue
			}
			by, _ := time.ParseDuration(strings.Replace(note[1], "µ", "u", 1))
			after, _ := time.ParseDuration(strings.Replace(note[2], "µ", "u", 1))
			// Rounded to three digits: 100.4µs shows as 100µs.
			if note[3] != "100µs" || after < 100*time.Microsecond || by <= 0 || by > after {
				t.Errorf("seq %d: %q: want a delivery past the 100µs timeout, late by the difference", e.Seq, note[0])
			}
		}
		if late == 0 {
			t.Fatalf("no echo came late:\n%s", res.stdout)
		}
		text := runTool(t, n.Source, args...)
		if text.code != 1 || strings.Contains(text.stdout, "dropped") || !strings.Contains(text.stdout, "\nthe reply came ") || !strings.Contains(text.stdout, "; not a drop\n") {
			t.Errorf("table: exit %d, want 1, the late note and no drop:\n%s", text.code, text.stdout)
		}
	})
}
