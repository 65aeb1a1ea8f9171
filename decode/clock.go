package decode

import "math"

// Crossing is one probe seen by two machines, each on its own kernel clock
// (CLOCK_MONOTONIC, ns): on the machine that sent it (A) the request's last
// row there and the reply's first row after, on the other (B) the request's
// first row there and the reply's last row. Where B saw no reply, B2 and A2
// are 0.
type Crossing struct {
	A1, B1, B2, A2 uint64
}

// ClockOffset is B's kernel clock less A's, as the crossings of probes
// tell it: B's time t is A's t - Offset. Within ±Uncertainty when TwoWay
// (the request's and the reply's crossings bound it, as NTP's exchange
// does); a one-way estimate takes the request's transit for 0.
type ClockOffset struct {
	Offset, Uncertainty int64
	TwoWay              bool
	// Seq is the probe whose crossings gave the estimate; when Probes is
	// more than 1, the first of the probes whose crossings bound it.
	Seq    uint16
	Probes int
}

// EstimateOffset estimates B's clock from the crossings of probes by
// sequence. Each two-way crossing bounds the offset: the request reached
// B after it left A (Offset <= B1 - A1), the reply left B before it
// reached A (Offset >= B2 - A2). The estimate is the middle of what all of
// them allow together, so that no probe's rows on B come before their
// cause or after their effect on A. Where they allow nothing together
// (the clocks drifted apart during the run), or no crossing is two-way, it
// is the one crossing that bounds B's clock the tightest: the least time
// on the wire both ways, a two-way crossing over a one-way one. ok is
// false without crossings.
func EstimateOffset(crossings map[uint16]Crossing) (best ClockOffset, ok bool) {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	all := ClockOffset{TwoWay: true}
	for seq, c := range crossings {
		if c.A1 == 0 || c.B1 == 0 {
			continue
		}
		e := ClockOffset{Offset: int64(c.B1 - c.A1), Seq: seq, Probes: 1}
		if c.B2 != 0 && c.A2 != 0 && c.A2 >= c.A1 && c.B2 >= c.B1 {
			// NTP: offset ((B1 - A1) + (B2 - A2)) / 2, within half of the
			// round trip less the time spent in B.
			out, back := int64(c.B1-c.A1), int64(c.B2-c.A2)
			e = ClockOffset{Offset: (out + back) / 2, Uncertainty: (int64(c.A2-c.A1) - int64(c.B2-c.B1)) / 2, TwoWay: true, Seq: seq, Probes: 1}
			if e.Uncertainty < 0 {
				e.Uncertainty = -e.Uncertainty
			}
			lo, hi = max(lo, min(out, back)), min(hi, max(out, back))
			if all.Probes == 0 || seq < all.Seq {
				all.Seq = seq
			}
			all.Probes++
		}
		if !ok || better(e, best) {
			best, ok = e, true
		}
	}
	if all.Probes > 1 && lo <= hi {
		all.Offset, all.Uncertainty = lo+(hi-lo)/2, (hi-lo)/2
		return all, true
	}
	return best, ok
}

func better(e, than ClockOffset) bool {
	switch {
	case e.TwoWay != than.TwoWay:
		return e.TwoWay
	case e.Uncertainty != than.Uncertainty:
		return e.Uncertainty < than.Uncertainty
	}
	return e.Seq < than.Seq
}
