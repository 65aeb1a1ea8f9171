package decode

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
	// Seq is the probe whose crossings gave the estimate.
	Seq uint16
}

// EstimateOffset takes, of the crossings of probes by sequence, the one
// that bounds B's clock the tightest: the least time on the wire both ways,
// a two-way crossing over a one-way one. ok is false without crossings.
func EstimateOffset(crossings map[uint16]Crossing) (best ClockOffset, ok bool) {
	for seq, c := range crossings {
		if c.A1 == 0 || c.B1 == 0 {
			continue
		}
		e := ClockOffset{Offset: int64(c.B1 - c.A1), Seq: seq}
		if c.B2 != 0 && c.A2 != 0 && c.A2 >= c.A1 && c.B2 >= c.B1 {
			// NTP: offset ((B1 - A1) + (B2 - A2)) / 2, within half of the
			// round trip less the time spent in B.
			out, back := int64(c.B1-c.A1), int64(c.B2-c.A2)
			e = ClockOffset{Offset: (out + back) / 2, Uncertainty: (int64(c.A2-c.A1) - int64(c.B2-c.B1)) / 2, TwoWay: true, Seq: seq}
			if e.Uncertainty < 0 {
				e.Uncertainty = -e.Uncertainty
			}
		}
		if !ok || better(e, best) {
			best, ok = e, true
		}
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
