package verify_test

import (
	"testing"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/testbed/verify"
)

func TestTally(t *testing.T) {
	h := func(id string) string { return event.HashID(id).Hex() }
	ids := []string{"a", "b", "c", "d", "e"}
	effects := map[string]map[string]int{
		"us": {"a": 1, "b": 1, "c": 2},
		"eu": {"b": 1, "d": 1, "x": 1}, // x was not sent by this run: not lost, not counted
	}
	// b raced and is reported; d is reported but did not race.
	got := verify.Tally(ids, effects, map[string]bool{h("b"): true, h("d"): true})
	want := verify.Account{Lost: 1, DupEffects: map[string]int{"us": 1, "eu": 0}, TrueRaces: 1, Reported: 2, Spurious: 1}
	if got.Lost != want.Lost || got.TrueRaces != want.TrueRaces || got.Reported != want.Reported ||
		got.Missed != want.Missed || got.Spurious != want.Spurious || got.DupEffects["us"] != 1 || got.DupEffects["eu"] != 0 {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if got.OK() {
		t.Fatal("an account with a loss, a duplicate effect and a spurious conflict is OK")
	}
	// The race unreported is missed.
	if a := verify.Tally([]string{"b"}, map[string]map[string]int{"us": {"b": 1}, "eu": {"b": 1}}, nil); a.Missed != 1 || a.OK() {
		t.Fatalf("unreported race: %+v", a)
	}
	if a := verify.Tally([]string{"b"}, map[string]map[string]int{"us": {"b": 1}, "eu": {"b": 1}}, map[string]bool{h("b"): true}); !a.OK() {
		t.Fatalf("reported race: %+v", a)
	}
}

func TestRuns(t *testing.T) {
	r := verify.NewRuns()
	for _, run := range []struct {
		id  string
		unc bool
	}{{"a", false}, {"b", false}, {"b", true}, {"c", false}, {"c", false}, {"d", true}, {"e", false}, {"e", true}, {"e", false}} {
		r.Add(run.id, run.unc)
	}
	a := r.Account([]string{"a", "b", "c", "d", "e", "f", "a"})
	// a once; b again flagged; c again unflagged; d only as a flagged re-run;
	// e three times, one flagged: one extra run unexplained; f never.
	want := verify.RunAccount{IDs: 6, Runs: 9, Lost: 1, Extra: 4, Flagged: 2, Unflagged: 2}
	if a.IDs != want.IDs || a.Runs != want.Runs || a.Lost != want.Lost || a.Extra != want.Extra || a.Flagged != want.Flagged || a.Unflagged != want.Unflagged {
		t.Fatalf("got %v, want %v", a, want)
	}
	if a.Check(-1) == nil {
		t.Fatal("a lost ID and unflagged re-runs pass the check")
	}
	ok := r.Account([]string{"a", "b", "d"})
	if err := ok.Check(1); err != nil {
		t.Fatalf("one flagged re-run within a bound of 1: %v", err)
	}
	if ok.Check(0) == nil {
		t.Fatal("a flagged re-run beyond a bound of 0 passes the check")
	}
	eff := r.Effects()
	if eff["a"] != 1 || eff["b"] != 1 || eff["c"] != 2 || eff["d"] != 1 || eff["e"] != 2 {
		t.Fatalf("effects %v", eff)
	}
}
