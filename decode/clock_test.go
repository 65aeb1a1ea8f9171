package decode

import "testing"

// B's clock is 1,000,000 ns ahead of A's. Probe 1 crossed fast both ways
// (its bounds are the tightest alone) but its reply left B early in its
// window; probe 2 says the offset is at least 1,000,000 - 0: the middle of
// probe 1's bounds alone would put probe 2's reply on B after it reached A.
// The estimate is the middle of what all the probes allow, and it keeps
// every probe's rows on B between its request leaving A and its reply
// reaching A.
func TestEstimateOffsetAllProbes(t *testing.T) {
	const off = 1_000_000
	crossings := map[uint16]Crossing{
		// Offset <= B1-A1 = off+100, Offset >= B2-A2 = off-900.
		1: {A1: 10_000, B1: 10_000 + off + 100, B2: 10_000 + off + 200, A2: 10_000 + 1_100},
		// Offset <= off+3_000, Offset >= off.
		2: {A1: 50_000, B1: 50_000 + off + 3_000, B2: 50_000 + off + 4_000, A2: 50_000 + 4_000},
		// One-way: bounds nothing on its own side.
		3: {A1: 90_000, B1: 90_000 + off + 50},
	}
	got, ok := EstimateOffset(crossings)
	want := ClockOffset{Offset: off + 50, Uncertainty: 50, TwoWay: true, Seq: 1, Probes: 2}
	if !ok || got != want {
		t.Fatalf("EstimateOffset = %+v, %v; want %+v", got, ok, want)
	}
	for seq, c := range crossings {
		if c.A2 == 0 {
			continue
		}
		if b1, b2 := int64(c.B1)-got.Offset, int64(c.B2)-got.Offset; b1 < int64(c.A1) || b2 > int64(c.A2) {
			t.Errorf("seq %d: on A's clock, B saw the request at %d (left A at %d) and sent the reply at %d (reached A at %d)", seq, b1, c.A1, b2, c.A2)
		}
	}

	// One crossing: NTP's estimate, as before.
	one := map[uint16]Crossing{7: crossings[1]}
	if got, ok := EstimateOffset(one); !ok || got != (ClockOffset{Offset: off - 400, Uncertainty: 500, TwoWay: true, Seq: 7, Probes: 1}) {
		t.Errorf("one crossing: %+v, %v", got, ok)
	}
	// Bounds that allow nothing together (clocks that drifted): the
	// tightest crossing alone.
	drift := map[uint16]Crossing{1: crossings[1], 2: {A1: 50_000, B1: 50_000 + off + 9_000, B2: 50_000 + off + 9_500, A2: 50_000 + 3_000}}
	if got, ok := EstimateOffset(drift); !ok || got.Seq != 1 || got.Probes != 1 || got.Offset != off-400 {
		t.Errorf("drifted clocks: %+v, %v; want seq 1's estimate alone", got, ok)
	}
	if _, ok := EstimateOffset(nil); ok {
		t.Error("no crossings: ok")
	}
}
