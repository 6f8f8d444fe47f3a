package dedupe

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

// TestWriterClockAheadDoesNotMoveTheWindow: a previous owner whose record
// carries a time hours ahead (an older edge stamped its own wall clock)
// must not make the next owner forget what it claims: records are timed by
// the claim stream, never later than it stored them.
func TestWriterClockAheadDoesNotMoveTheWindow(t *testing.T) {
	for _, noBloom := range []bool{false, true} {
		t.Run(fmt.Sprintf("noBloom=%v", noBloom), func(t *testing.T) {
			o := Options{Window: time.Hour, NoBloom: noBloom}
			t0 := time.Unix(1_700_000_000, 0)
			a := New(o)
			a.Classify([]event.Hash{hid(1)}, t0, nil)
			claim := a.Claim([]event.Hash{hid(1)}, "a")
			a.Apply(1, claim, time.Time{})
			a.MarkDone(1, 1)
			done, _ := a.Done("a")
			// What the log holds: both records stamped 3 hours ahead.
			claim.Time, done.Time = t0.Add(3*time.Hour), t0.Add(3*time.Hour)
			b := New(o)
			b.Apply(1, claim, t0)
			b.Apply(2, done, t0)
			b.Apply(3, b.Takeover("b"), time.Time{})
			if !b.Clock().Equal(t0) {
				t.Fatalf("clock %v after replay, want the claim stream's %v", b.Clock(), t0)
			}
			if p := b.Classify([]event.Hash{hid(1)}, t0.Add(time.Second), nil); p[0] != PathExactHit {
				t.Fatalf("re-send 1 s later: %v, want exact-hit", p[0])
			}
			// b's own claim is remembered for the window, not expired at once.
			b.Classify([]event.Hash{hid(2)}, t0.Add(2*time.Second), nil)
			b.Apply(4, b.Claim([]event.Hash{hid(2)}, "b"), time.Time{})
			for _, later := range []time.Duration{3 * time.Second, 59 * time.Minute} {
				if p := b.Classify([]event.Hash{hid(2)}, t0.Add(later), nil); p[0] != PathExactHit {
					t.Fatalf("own claim re-sent %v later: %v, want exact-hit", later, p[0])
				}
			}
			// And forgotten after the window and a slice, on stored time.
			if p := b.Classify([]event.Hash{hid(2)}, t0.Add(time.Hour+16*time.Minute), nil); !p[0].First() {
				t.Fatalf("after the window: %v, want first time", p[0])
			}
		})
	}
}

// TestRecordTimeClamped: a record's time is its own (its batch's ingest
// time) within the window before the claim stream stored it, and never later.
func TestRecordTimeClamped(t *testing.T) {
	s := New(Options{Window: time.Hour})
	stored := time.Unix(1_700_000_000, 0)
	for _, c := range []struct {
		rec, want time.Time
	}{
		{stored.Add(-time.Minute), stored.Add(-time.Minute)},
		{stored.Add(3 * time.Hour), stored},
		{stored.Add(-3 * time.Hour), stored.Add(-time.Hour)},
		{time.Time{}, stored.Add(-time.Hour)},
	} {
		if got := s.RecordTime(Record{Time: c.rec}, stored); !got.Equal(c.want) {
			t.Errorf("record at %v stored at %v: %v, want %v", c.rec, stored, got, c.want)
		}
	}
	if got := s.RecordTime(Record{Time: stored}, time.Time{}); !got.Equal(stored) {
		t.Errorf("own record: %v", got)
	}
}

// TestSkewedClocksDecideTheSame drives one partition with local batches,
// takeovers and other regions' claims, twice: once with every writer's
// record time honest, once with the times other regions' records carry and
// the times the log's records carry skewed by hours ahead (other regions'
// clocks either way; a log writer's ahead). Every decision must be the same,
// Bloom on and off.
func TestSkewedClocksDecideTheSame(t *testing.T) {
	for seed := range uint64(30) {
		for _, noBloom := range []bool{false, true} {
			runSkewModel(t, seed, noBloom)
		}
	}
}

func FuzzSkewedClocks(f *testing.F) {
	f.Add(uint64(3), false)
	f.Fuzz(func(t *testing.T, seed uint64, noBloom bool) { runSkewModel(t, seed, noBloom) })
}

func runSkewModel(t *testing.T, seed uint64, noBloom bool) {
	rng := rand.New(rand.NewPCG(seed, 11))
	o := Options{Window: time.Hour, NoBloom: noBloom}
	type stored struct {
		rec Record
		at  time.Time
	}
	var log []stored
	honest, skewed := New(o), New(o)
	skew := func() time.Duration {
		return time.Duration(rng.IntN(12)-6)*time.Hour + time.Duration(rng.IntN(3600))*time.Second
	}
	now := time.Unix(1_700_000_000, 0)
	for step := range 400 {
		now = now.Add(time.Duration(rng.IntN(30)) * time.Second)
		if rng.IntN(50) == 0 {
			now = now.Add(time.Duration(rng.IntN(3)) * time.Hour)
		}
		switch k := rng.IntN(10); {
		case k == 0:
			// Takeover: both replay the log; the skewed side reads records
			// whose times were skewed when written.
			honest, skewed = New(o), New(o)
			for i, s := range log {
				honest.Apply(uint64(i+1), s.rec, s.at)
				// A writer's clock ahead by any amount. (Behind, within the
				// window, a record's time is indistinguishable from an
				// honest batch's ingest time in a backlog; writers no longer
				// stamp their own clocks, so only a forged record can be.)
				r := s.rec
				r.Time = r.Time.Add(skew().Abs())
				skewed.Apply(uint64(i+1), r, s.at)
			}
		case k <= 2:
			// Another region's claim, stored here now; its own time skewed.
			var ids []event.Hash
			for range 1 + rng.IntN(4) {
				ids = append(ids, hid(rng.IntN(80)))
			}
			r := Record{Kind: KindClaim, Writer: "r", Epoch: 1, Time: now.Add(-time.Second), IDs: ids}
			honest.MergeRemote("eu", uint64(step), r, now)
			r.Time = r.Time.Add(skew())
			skewed.MergeRemote("eu", uint64(step), r, now)
		default:
			var hs []event.Hash
			for range 1 + rng.IntN(8) {
				hs = append(hs, hid(rng.IntN(80)))
			}
			ph := honest.Classify(hs, now, nil)
			ps := skewed.Classify(hs, now, nil)
			var first []event.Hash
			for i := range ph {
				if ph[i].First() != ps[i].First() || (ph[i] == PathRemoteHit) != (ps[i] == PathRemoteHit) {
					t.Fatalf("seed %d noBloom=%v step %d: id decided %v honest, %v skewed", seed, noBloom, step, ph[i], ps[i])
				}
				if ph[i].First() {
					first = append(first, hs[i])
				}
			}
			if len(first) > 0 {
				rec := honest.Claim(first, "me")
				honest.Apply(uint64(len(log)+1), rec, time.Time{})
				skewed.Apply(uint64(len(log)+1), skewed.Claim(first, "me"), time.Time{})
				log = append(log, stored{rec, now})
			}
		}
	}
}

// TestUncertainOnBothSidesRunsAgain: two regions claim x in a race and both
// owners die before their handlers run. Neither new owner may skip x because
// the other region claimed it; each skips only when the other side's claim is
// known done.
func TestUncertainOnBothSidesRunsAgain(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	x := hid(1)
	local := func() *State {
		s := New(Options{})
		s.Apply(1, Record{Kind: KindTakeover, Epoch: 1, Writer: "a1", Time: t0}, t0)
		s.Apply(2, Record{Kind: KindClaim, Epoch: 1, Writer: "a1", Time: t0, IDs: []event.Hash{x}}, t0)
		s.Apply(3, s.Takeover("a2"), time.Time{}) // a1 died: x uncertain here
		if !s.IsUncertain(x) {
			t.Fatal("x not uncertain after the takeover")
		}
		return s
	}
	remoteClaim := Record{Kind: KindClaim, Epoch: 1, Writer: "b1", Time: t0, IDs: []event.Hash{x}}

	// The other region's owner died too: its takeover lists x.
	s := local()
	s.MergeRemote("eu", 1, remoteClaim, t0)
	s.MergeRemote("eu", 2, Record{Kind: KindTakeover, Epoch: 2, Writer: "b2", Time: t0, IDs: []event.Hash{x}}, t0)
	if p := s.Classify([]event.Hash{x}, t0.Add(time.Second), nil); p[0] != PathUncertainRerun {
		t.Fatalf("uncertain on both sides: %v, want uncertain-rerun", p[0])
	}
	// Its claim is the last record it wrote (its owner may still be running it): not known done.
	s = local()
	s.MergeRemote("eu", 1, remoteClaim, t0)
	if p := s.Classify([]event.Hash{x}, t0.Add(time.Second), nil); p[0] != PathUncertainRerun {
		t.Fatalf("remote claim still open: %v, want uncertain-rerun", p[0])
	}
	// Its owner went on (a later record of its own): known done there, skip here.
	s = local()
	s.MergeRemote("eu", 1, remoteClaim, t0)
	s.MergeRemote("eu", 2, Record{Kind: KindDone, Epoch: 1, Writer: "b1", Time: t0, DoneThrough: 1}, t0)
	if p := s.Classify([]event.Hash{x}, t0.Add(time.Second), nil); p[0] != PathRemoteHit {
		t.Fatalf("remote claim done: %v, want remote-claim", p[0])
	}
	// The other region's new owner ran it again and finished: skip here.
	s = local()
	s.MergeRemote("eu", 1, remoteClaim, t0)
	s.MergeRemote("eu", 2, Record{Kind: KindTakeover, Epoch: 2, Writer: "b2", Time: t0, IDs: []event.Hash{x}}, t0)
	s.MergeRemote("eu", 3, Record{Kind: KindClaim, Epoch: 2, Writer: "b2", Time: t0, IDs: []event.Hash{x}}, t0)
	s.MergeRemote("eu", 4, Record{Kind: KindClaim, Epoch: 2, Writer: "b2", Time: t0, IDs: []event.Hash{hid(2)}}, t0)
	if p := s.Classify([]event.Hash{x}, t0.Add(time.Second), nil); p[0] != PathRemoteHit {
		t.Fatalf("re-run and done remotely: %v, want remote-claim", p[0])
	}
}

// TestSameClaim: generations less than a window apart (modulo 2^16) may
// tag one claim; a window apart or more, they are different races.
func TestSameClaim(t *testing.T) {
	st := New(Options{Window: time.Hour}) // 8 slices
	for _, tc := range []struct {
		a, b uint16
		want bool
	}{{5, 5, true}, {5, 6, true}, {6, 5, true}, {5, 12, true}, {5, 13, false}, {13, 5, false}, {65535, 2, true}, {2, 65535, true}, {65530, 2, false}} {
		if got := st.SameClaim(tc.a, tc.b); got != tc.want {
			t.Errorf("SameClaim(%d, %d) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestRemoteSetsPreSized: another region's merged claims go into a set
// made for ExpectedIDs (or RemoteExpectedIDs) at its first record, so
// merging a window of them does not grow it; it used to start at the
// minimum and rehash all the way up (a takeover merging a million IDs per
// peer at the top tier).
func TestRemoteSetsPreSized(t *testing.T) {
	const n = 50_000
	now := time.Now()
	merge := func(st *State) (first, last int) {
		ids := make([]event.Hash, 1000)
		for k := 0; k < n; k += len(ids) {
			for j := range ids {
				ids[j] = event.HashID(fmt.Sprintf("remote-%d", k+j))
			}
			st.MergeRemote("other", uint64(k/len(ids)+1), Record{Kind: KindClaim, Writer: "o", Epoch: 1, Time: now, IDs: ids}, now)
			if k == 0 {
				first, _ = st.Bytes()
			}
		}
		last, _ = st.Bytes()
		return first, last
	}
	for _, o := range []Options{{ExpectedIDs: n}, {ExpectedIDs: 10, RemoteExpectedIDs: n}} {
		if first, last := merge(New(o)); first != last || first == 0 {
			t.Errorf("%+v: exact bytes %d after the first record, %d after %d IDs: want no growth", o, first, last, n)
		}
	}
	if first, last := merge(New(Options{ExpectedIDs: n, RemoteExpectedIDs: -1})); last <= first {
		t.Errorf("grow as needed: exact bytes %d then %d, want growth", first, last)
	}
}
