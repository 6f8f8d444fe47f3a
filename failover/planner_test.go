package failover

import (
	"slices"
	"testing"
	"time"
)

// The ownership policy, step by step without gossip or time passing by
// itself: a new edge hands everything over, a dead member's partitions are
// taken at once, a live one's handed over, a joiner's share released, and a
// partition fenced under an unchanged view is taken back only after a
// delay that doubles with each fence, and at once after a view change.
func TestPlannerHandoffTakeRelease(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const n = 16
	ab, abc := []string{"a", "b"}, []string{"a", "b", "c"}
	pl := &Planner{Self: "a", N: n}

	// First step: this edge just started; whoever had its share may be
	// alive: everything is handed over, nothing taken at once.
	s := pl.Step(Observed{Now: t0, Members: ab})
	if want := OwnedSome(ab, n, nil, "a"); !slices.Equal(s.Handoff, want) || len(s.Take) != 0 || len(s.Release) != 0 || !slices.Equal(s.Want, want) {
		t.Fatalf("first step: %+v, want all of %v handed over", s, want)
	}
	have := s.Want
	if s := pl.Step(Observed{Now: t0.Add(time.Second), Members: []string{"b", "a"}, Have: have}); len(s.Take)+len(s.Handoff)+len(s.Release)+len(s.Retake) != 0 {
		t.Fatalf("same view, any order: %+v, want nothing to do", s)
	}

	// c joins: what moves to c is released; nothing is taken.
	s = pl.Step(Observed{Now: t0.Add(2 * time.Second), Members: abc, Have: have})
	wantABC := OwnedSome(abc, n, nil, "a")
	if rel := Diff(have, wantABC).Release; !slices.Equal(s.Release, rel) || len(rel) == 0 || len(s.Take)+len(s.Handoff) != 0 {
		t.Fatalf("c joins: %+v, want release %v only", s, rel)
	}
	have = wantABC

	// b dies: its partitions that come here are taken at once (no live
	// previous owner to wait for).
	s = pl.Step(Observed{Now: t0.Add(3 * time.Second), Members: []string{"a", "c"}, Have: have})
	fromB := []int{}
	for _, p := range OwnedSome([]string{"a", "c"}, n, nil, "a") {
		if Owner(abc, p) == "b" {
			fromB = append(fromB, p)
		}
	}
	if !slices.Equal(s.Take, fromB) || len(s.Handoff) != 0 {
		t.Fatalf("b dies: %+v, want %v taken at once", s, fromB)
	}

	// Any change of view: an acquired partition is handed over when its
	// previous owner is in the new view, taken at once when it is not.
	for _, views := range [][2][]string{{{"a", "c"}, {"a", "b", "c"}}, {{"a", "c"}, {"a", "b"}}, {{"a", "b", "c", "d"}, {"a", "c", "e"}}} {
		pl := &Planner{Self: "a", N: 64}
		pl.Step(Observed{Now: t0, Members: views[0]})
		before := OwnedSome(views[0], 64, nil, "a")
		s := pl.Step(Observed{Now: t0.Add(time.Second), Members: views[1], Have: before})
		prev := AssignSome(views[0], 64, nil)
		for _, p := range Diff(before, OwnedSome(views[1], 64, nil, "a")).Acquire {
			alive := slices.Contains(views[1], prev[p])
			if alive != slices.Contains(s.Handoff, p) || alive == slices.Contains(s.Take, p) {
				t.Fatalf("%v -> %v: p%d from %s (alive %v): %+v", views[0], views[1], p, prev[p], alive, s)
			}
		}
	}
}

func TestPlannerRefence(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const n = 8
	ab := []string{"a", "b"}
	pl := &Planner{Self: "a", N: n, RefenceDelay: time.Second}
	mine := OwnedSome(ab, n, nil, "a")
	pl.Step(Observed{Now: t0, Members: ab})
	p := mine[0]
	rest := mine[1:]
	at := t0.Add(time.Second)
	// Fenced from p under the same view (a split view: another edge
	// believes it owns p).
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second} {
		fenced := map[int]time.Time{p: at}
		if s := pl.Step(Observed{Now: at, Members: ab, Have: rest, Fenced: fenced}); len(s.Retake)+len(s.Take)+len(s.Handoff) != 0 {
			t.Fatalf("fence %d: %+v, want p%d left alone", i+1, s, p)
		}
		if s := pl.Step(Observed{Now: at.Add(wait - time.Millisecond), Members: ab, Have: rest}); len(s.Retake) != 0 {
			t.Fatalf("fence %d: retaken after %v, before %v", i+1, wait-time.Millisecond, wait)
		}
		s := pl.Step(Observed{Now: at.Add(wait), Members: ab, Have: rest})
		if !slices.Equal(s.Retake, []int{p}) || len(s.Take)+len(s.Handoff) != 0 {
			t.Fatalf("fence %d: %+v after %v, want p%d retaken", i+1, s, wait, p)
		}
		at = at.Add(wait + time.Second)
	}
	// The wait never exceeds a minute.
	for i := 0; i < 20; i++ {
		pl.Step(Observed{Now: at, Members: ab, Have: rest, Fenced: map[int]time.Time{p: at}})
	}
	if s := pl.Step(Observed{Now: at.Add(time.Minute), Members: ab, Have: rest}); !slices.Equal(s.Retake, []int{p}) {
		t.Fatalf("after many fences: %+v a minute later, want p%d retaken", s, p)
	}
	// A new view forgets the fences: p goes back to the ordinary rules.
	pl.Step(Observed{Now: at, Members: ab, Have: rest, Fenced: map[int]time.Time{p: at}})
	abc := []string{"a", "b", "c"}
	s := pl.Step(Observed{Now: at, Members: abc, Have: rest})
	if slices.Contains(s.Retake, p) {
		t.Fatalf("after a view change: %+v, p%d still waits out an old fence", s, p)
	}
	if slices.Contains(OwnedSome(abc, n, nil, "a"), p) && !slices.Contains(s.Take, p) && !slices.Contains(s.Handoff, p) {
		t.Fatalf("after a view change: %+v, p%d not taken", s, p)
	}
}
