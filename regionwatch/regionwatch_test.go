package regionwatch

import (
	"testing"
	"time"
)

func TestLost(t *testing.T) {
	const after = 10 * time.Second
	silent := func(o string, d time.Duration) View { return View{Observer: o, Answered: true, Silent: d} }
	for _, c := range []struct {
		name      string
		views     []View
		observers int
		want      bool
	}{
		{"standby and the third region agree", []View{silent("s", 11*time.Second), silent("t", 10*time.Second)}, 2, true},
		{"cut from its standby only: the third region hears it", []View{silent("s", time.Minute), silent("t", time.Second)}, 2, false},
		{"the third region does not answer", []View{silent("s", time.Minute), {Observer: "t"}}, 2, false},
		{"the standby hears it", []View{silent("s", time.Second), silent("t", time.Minute)}, 2, false},
		{"the standby cannot read its mirror", []View{{Observer: "s"}, silent("t", time.Minute)}, 2, false},
		{"not long enough", []View{silent("s", 9*time.Second), silent("t", time.Minute)}, 2, false},
		{"two regions: the standby alone is all", []View{silent("s", after)}, 1, true},
		{"four observers: three agree", []View{silent("s", after), silent("t", after), silent("u", after), silent("v", 0)}, 4, true},
		{"four observers: two agree is no majority", []View{silent("s", after), silent("t", after), silent("u", 0), silent("v", 0)}, 4, false},
	} {
		if got := Lost(c.views, "s", c.observers, after); got != c.want {
			t.Errorf("%s: Lost = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestUnheard: an observer whose replication never heard from the region
// since it restarted (the drill's eu-west core, restarted as ap-south went)
// counts as silent from when the watcher first saw it so. Before, such a
// view did not answer, so no majority ever formed and the region was never
// declared lost (compose drill, region-loss step).
func TestUnheard(t *testing.T) {
	const after = 10 * time.Second
	t0 := time.Unix(1_000_000, 0)
	never := func(o string) View { return View{Observer: o, Answered: true, Never: true} }
	heard := func(o string, d time.Duration) View { return View{Observer: o, Answered: true, Silent: d} }
	first := map[string]time.Time{}
	lost := func(at time.Duration, vs ...View) bool {
		return Lost(Unheard(vs, first, t0.Add(at)), "s", 2, after)
	}
	if lost(0, heard("s", time.Minute), never("t")) {
		t.Fatal("declared at once on a view that never heard the region: its silence is unknown, counted from now")
	}
	if lost(9*time.Second, heard("s", time.Minute), never("t")) {
		t.Fatal("declared after 9 s of a never-heard view, want 10 s")
	}
	if !lost(10*time.Second, heard("s", time.Minute), never("t")) {
		t.Fatal("not declared after 10 s of a never-heard view and the standby silent a minute")
	}
	// t hears the region again: forgotten, and a later restart counts anew.
	if lost(11*time.Second, heard("s", time.Minute), heard("t", time.Second)) {
		t.Fatal("declared although t hears the region")
	}
	if lost(12*time.Second, heard("s", time.Minute), never("t")) {
		t.Fatal("a never-heard view counted from its first time, not from now after hearing again")
	}
	// A view that does not answer is forgotten too, and never agrees.
	if lost(30*time.Second, heard("s", time.Minute), View{Observer: "t"}) {
		t.Fatal("declared on a region that did not answer")
	}
	if _, ok := first["t"]; ok {
		t.Fatal("an observer that did not answer kept its first never-heard time")
	}
	// The standby's own mirror never heard the region (its core restarted).
	first = map[string]time.Time{}
	if lost(0, never("s"), heard("t", time.Minute)) || !lost(after, never("s"), heard("t", time.Minute)) {
		t.Fatal("the standby's never-heard mirror is not counted from when it was first seen")
	}
}

func TestIsolated(t *testing.T) {
	const after = 5 * time.Second
	heard := func(o string, d time.Duration) View { return View{Observer: o, Answered: true, Silent: d} }
	for _, c := range []struct {
		name    string
		views   []View
		regions int
		want    bool
	}{
		{"hears both", []View{heard("a", 0), heard("b", time.Second)}, 3, false},
		{"hears one of two: a majority with itself", []View{heard("a", 0), heard("b", time.Minute)}, 3, false},
		{"hears none of two", []View{heard("a", after), heard("b", time.Minute)}, 3, true},
		{"silent, but not yet long enough", []View{heard("a", after-time.Millisecond), heard("b", time.Minute)}, 3, false},
		{"its own xclaims does not answer: cannot tell", []View{{Observer: "a"}, {Observer: "b"}}, 3, false},
		{"five regions: hears one of four", []View{heard("a", 0), heard("b", after), heard("c", after), heard("d", after)}, 5, true},
		{"five regions: hears two of four", []View{heard("a", 0), heard("b", 0), heard("c", after), heard("d", after)}, 5, false},
		{"two regions: alone is never a majority", []View{heard("a", after)}, 2, true},
	} {
		if got := Isolated(c.views, c.regions, after); got != c.want {
			t.Errorf("%s: Isolated = %v, want %v", c.name, got, c.want)
		}
	}
}
