package idset

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

func h(i int) event.Hash { return event.HashID(fmt.Sprintf("id-%d", i)) }

func TestAddContains(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := New(Options{})
	for i := 0; i < 100_000; i++ {
		if !s.Add(h(i), now) {
			t.Fatalf("Add(%d) reported present", i)
		}
	}
	for i := 0; i < 100_000; i++ {
		if !s.Contains(h(i), now) {
			t.Fatalf("lost %d", i)
		}
		if s.Add(h(i), now) {
			t.Fatalf("re-Add(%d) reported new", i)
		}
	}
	for i := 100_000; i < 200_000; i++ {
		if s.Contains(h(i), now) {
			t.Fatalf("false positive %d", i)
		}
	}
	if s.Len() != 100_000 {
		t.Fatalf("Len = %d", s.Len())
	}
}

func TestWindowExpiry(t *testing.T) {
	w := 8 * time.Second
	s := New(Options{Window: w, Slices: 8})
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < 5000; i++ {
		s.Add(h(i), t0)
	}
	// Still remembered at exactly the window.
	if !s.Contains(h(1), t0.Add(w)) {
		t.Fatal("forgot before the window ended")
	}
	// Forgotten after window + one slice.
	later := t0.Add(w + 2*time.Second)
	for i := 0; i < 5000; i++ {
		if s.Contains(h(i), later) {
			t.Fatalf("remembered %d after the window", i)
		}
	}
	if s.Len() != 0 {
		t.Fatalf("Len after expiry = %d", s.Len())
	}
	// Re-adding an expired ID counts as new.
	if !s.Add(h(3), later) {
		t.Fatal("re-add after expiry not new")
	}
	// Adding with a claim time already outside the window is a no-op.
	if s.Add(h(9999), t0) || s.Contains(h(9999), later) {
		t.Fatal("stored an already-expired claim")
	}
}

// TestRollingWindowModel checks the set against a map model under random
// adds and clock steps, including compaction.
func TestRollingWindowModel(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	w := 10 * time.Second
	s := New(Options{Window: w, Slices: 5})
	model := map[int]time.Time{}
	now := time.Unix(1_700_000_000, 0)
	gen := func(t time.Time) int64 { return t.UnixNano() / int64(2*time.Second) }
	for step := 0; step < 200_000; step++ {
		if r.IntN(100) == 0 {
			now = now.Add(time.Duration(r.IntN(1500)) * time.Millisecond)
		}
		k := r.IntN(20_000)
		at, ok := model[k]
		liveModel := ok && gen(now)-gen(at) <= 5
		if got := s.Contains(h(k), now); got != liveModel {
			t.Fatalf("step %d: Contains(%d)=%v model=%v", step, k, got, liveModel)
		}
		if !liveModel {
			model[k] = now
		}
		if added := s.Add(h(k), now); added != !liveModel {
			t.Fatalf("step %d: Add(%d)=%v", step, k, added)
		}
	}
}

func TestBytesPerIDPresized(t *testing.T) {
	const n = 1_000_000
	s := New(Options{ExpectedIDs: n})
	now := time.Unix(1_700_000_000, 0)
	before := s.Bytes()
	for i := 0; i < n; i++ {
		s.Add(h(i), now)
	}
	if s.Bytes() != before {
		t.Fatalf("presized set grew: %d -> %d", before, s.Bytes())
	}
	if per := float64(s.Bytes()) / n; per > 24 {
		t.Fatalf("%.1f bytes per ID", per)
	}
}

// TestSteadyStateDoesNotGrow adds ExpectedIDs per window, evenly, for many
// windows: the live set spans a window and a slice (9/8 of ExpectedIDs), and
// the table sized for it must never grow.
func TestSteadyStateDoesNotGrow(t *testing.T) {
	const perWindow = 80_000
	w := time.Hour
	s := New(Options{Window: w, ExpectedIDs: perWindow})
	before := s.Bytes()
	now := time.Unix(1_700_000_000, 0)
	step := w / perWindow
	maxLive := 0
	for i := 0; i < 6*perWindow; i++ {
		now = now.Add(step)
		s.Add(h(i), now)
		maxLive = max(maxLive, s.Len())
	}
	if s.Bytes() != before {
		t.Fatalf("steady state grew the table: %d -> %d bytes (max live %d)", before, s.Bytes(), maxLive)
	}
	if maxLive < perWindow {
		t.Fatalf("max live %d < %d per window: the test does not reach steady state", maxLive, perWindow)
	}
	t.Logf("steady state: %.1f bytes per expected ID, %.1f per live ID at peak", float64(s.Bytes())/perWindow, float64(s.Bytes())/float64(maxLive))
}

func BenchmarkContains10M(b *testing.B) {
	const n = 10_000_000
	s := New(Options{ExpectedIDs: n})
	now := time.Unix(1_700_000_000, 0)
	for i := 0; i < n; i++ {
		s.Add(h(i), now)
	}
	hs := make([]event.Hash, 1<<16)
	for i := range hs {
		hs[i] = h(i * 151)
	}
	b.ReportMetric(float64(s.Bytes())/n, "B/id")
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.Contains(hs[i&(1<<16-1)], now)
	}
}
