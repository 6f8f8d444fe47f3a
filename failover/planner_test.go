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

// A handover under way is left alone: the steps after a Handoff neither
// hand the partition off again nor take it (even when the view changes
// and this edge now looks like its previous owner), until HandoffWait has
// passed; then it is taken. A partition that leaves this edge's share
// forgets its handover.
func TestPlannerHandoffNotCutShort(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const n = 16
	ab, abc := []string{"a", "b"}, []string{"a", "b", "c"}
	pl := &Planner{Self: "a", N: n, HandoffWait: 10 * time.Second}
	s := pl.Step(Observed{Now: t0, Members: ab})
	handing := s.Handoff
	if len(handing) == 0 {
		t.Fatal("first step hands nothing off")
	}
	for _, at := range []time.Duration{time.Second, 5 * time.Second, 9*time.Second + 999*time.Millisecond} {
		if s := pl.Step(Observed{Now: t0.Add(at), Members: ab}); len(s.Take)+len(s.Handoff)+len(s.Retake) != 0 {
			t.Fatalf("%v into the handover: %+v, want it left to the handover", at, s)
		}
	}
	// c joins while the handovers run: those still this edge's stay
	// pending; one that moved to c is forgotten.
	s = pl.Step(Observed{Now: t0.Add(9*time.Second + 999*time.Millisecond), Members: abc})
	if len(s.Take)+len(s.Handoff)+len(s.Retake) != 0 {
		t.Fatalf("view change during the handovers: %+v, want them left alone", s)
	}
	wantABC := OwnedSome(abc, n, nil, "a")
	s = pl.Step(Observed{Now: t0.Add(10 * time.Second), Members: abc})
	if !slices.Equal(s.Take, wantABC) || len(s.Handoff) != 0 {
		t.Fatalf("HandoffWait over: %+v, want %v taken", s, wantABC)
	}
	// A handover that ended without owning it (its acquire failed): the
	// next step plans it again, at once.
	pl = &Planner{Self: "a", N: n, HandoffWait: time.Hour}
	s = pl.Step(Observed{Now: t0, Members: ab})
	s2 := pl.Step(Observed{Now: t0.Add(time.Second), Members: ab, Handed: s.Handoff[:1], Have: s.Handoff[1:]})
	if !slices.Equal(s2.Take, s.Handoff[:1]) {
		t.Fatalf("handover ended unowned: %+v, want p%d taken", s2, s.Handoff[0])
	}
	// Had: nothing pending; given away and back: handed off again.
	pl = &Planner{Self: "a", N: n}
	s = pl.Step(Observed{Now: t0, Members: ab})
	pl.Step(Observed{Now: t0.Add(time.Second), Members: ab, Have: s.Handoff})
	s = pl.Step(Observed{Now: t0.Add(2 * time.Second), Members: []string{"a"}, Have: OwnedSome(ab, n, nil, "a")})
	if len(s.Take) != n-len(OwnedSome(ab, n, nil, "a")) || len(s.Handoff) != 0 {
		t.Fatalf("b dies: %+v, want b's share taken at once", s)
	}
	if len(handing) == 0 || pl.handing == nil || len(pl.handing) != 0 {
		t.Fatalf("pending handovers left: %v", pl.handing)
	}
}

// A partition whose run failed is taken again after a second, then two,
// four... at most 8 s while it keeps failing, even if it ran in between;
// a failure 16 s after the last starts over.
func TestPlannerFailureBackoff(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const n = 4
	pl := &Planner{Self: "a", N: n}
	s := pl.Step(Observed{Now: t0, Members: []string{"a"}})
	all := s.Handoff
	at := t0
	for i, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second} {
		at = at.Add(time.Second)
		if s := pl.Step(Observed{Now: at, Members: []string{"a"}, Have: all[1:], Handed: all[:1], Failed: map[int]time.Time{all[0]: at}}); len(s.Take) != 0 {
			t.Fatalf("failure %d: %+v, want no retry at once", i+1, s)
		}
		if s := pl.Step(Observed{Now: at.Add(wait - time.Millisecond), Members: []string{"a"}, Have: all[1:]}); len(s.Take) != 0 {
			t.Fatalf("failure %d: retried after %v, before %v", i+1, wait-time.Millisecond, wait)
		}
		at = at.Add(wait)
		if s := pl.Step(Observed{Now: at, Members: []string{"a"}, Have: all[1:]}); !slices.Equal(s.Take, all[:1]) {
			t.Fatalf("failure %d: %+v after %v, want p%d retried", i+1, s, wait, all[0])
		}
	}
	// Running again does not reset the count (a run that will fail runs
	// for a while first); a failure more than 16 s after the last one
	// starts over.
	pl.Step(Observed{Now: at, Members: []string{"a"}, Have: all})
	at = at.Add(time.Second)
	pl.Step(Observed{Now: at, Members: []string{"a"}, Have: all[1:], Failed: map[int]time.Time{all[0]: at}})
	if s := pl.Step(Observed{Now: at.Add(7 * time.Second), Members: []string{"a"}, Have: all[1:]}); len(s.Take) != 0 {
		t.Fatalf("failing again after running: %+v, want the 8 s backoff", s)
	}
	at = at.Add(17 * time.Second)
	pl.Step(Observed{Now: at, Members: []string{"a"}, Have: all[1:], Failed: map[int]time.Time{all[0]: at}})
	if s := pl.Step(Observed{Now: at.Add(time.Second), Members: []string{"a"}, Have: all[1:]}); !slices.Equal(s.Take, all[:1]) {
		t.Fatalf("a failure 17 s later: %+v, want p%d retried after a second", s, all[0])
	}
}

// A home moved by command changes Parts between steps: a partition that
// leaves is released, one that joins is taken at once (nobody in the
// region had it), and a partition that changes owner only because the
// share was recomputed is handed over from its live owner, never taken.
func TestPlannerPartsChange(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	const n = 64
	ab := []string{"a", "b"}
	before := []int{0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30}
	reshuffled := 0
	for _, gone := range before {
		for _, joined := range []int{40, 41, 42, 43, 44} {
			pl := &Planner{Self: "a", N: n, Parts: before}
			pl.Step(Observed{Now: t0, Members: ab})
			have := OwnedSome(ab, n, before, "a")
			after := append(slices.DeleteFunc(slices.Clone(before), func(p int) bool { return p == gone }), joined)
			pl.Parts = after
			s := pl.Step(Observed{Now: t0.Add(time.Second), Members: ab, Have: have})
			if want := OwnedSome(ab, n, after, "a"); !slices.Equal(s.Want, want) {
				t.Fatalf("want %v, planned %v", want, s.Want)
			}
			prev := AssignSome(ab, n, before)
			for _, p := range Diff(have, s.Want).Acquire {
				switch {
				case p == joined:
					if !slices.Contains(s.Take, p) {
						t.Errorf("-p%d +p%d: p%d joined the homes: %+v, want it taken at once", gone, joined, p, s)
					}
				case prev[p] == "b":
					reshuffled++
					if !slices.Contains(s.Handoff, p) {
						t.Errorf("-p%d +p%d: p%d moved from live b by the new share: %+v, want a handover", gone, joined, p, s)
					}
				}
			}
			if slices.Contains(have, gone) && !slices.Contains(s.Release, gone) {
				t.Errorf("-p%d +p%d: p%d left the homes: %+v, want it released", gone, joined, gone, s)
			}
			if slices.Contains(s.Want, gone) {
				t.Errorf("-p%d +p%d: p%d left the homes but is still wanted: %+v", gone, joined, gone, s)
			}
		}
	}
	if reshuffled == 0 {
		t.Fatal("no move reshuffled the share: the handover case went untested")
	}
}
