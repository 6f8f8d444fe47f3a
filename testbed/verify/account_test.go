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

// TestTallyFlagged: repeats in a region are allowed when flagged, at least
// one flag per repeat; an unflagged repeat is a duplicate effect.
func TestTallyFlagged(t *testing.T) {
	effects := map[string]map[string]int{"us": {"a": 2, "b": 3, "c": 2, "d": 1}}
	flagged := map[string]map[string]int{"us": {"a": 1, "b": 1, "d": 1}}
	a := verify.TallyEvidence([]string{"a", "b", "c", "d"}, verify.Evidence{Effects: effects, Flagged: flagged})
	// a: one repeat, flagged; b: two repeats, one flagged; c: unflagged; d: once.
	if a.Repeated["us"] != 1 || a.DupEffects["us"] != 2 || a.OK() {
		t.Fatalf("got %+v, want 1 repeated, 2 duplicate effects", a)
	}
	delete(effects["us"], "b")
	delete(effects["us"], "c")
	if b := verify.TallyEvidence([]string{"a", "d"}, verify.Evidence{Effects: effects, Flagged: flagged}); !b.OK() || b.Repeated["us"] != 1 {
		t.Fatalf("flagged repeats only: %+v", b)
	}
}

// TestTallyCutShort: a conflict on an ID handled in one region is spurious,
// unless the ID was claimed in two (one claim's run cut short).
func TestTallyCutShort(t *testing.T) {
	h := func(id string) string { return event.HashID(id).Hex() }
	ev := verify.Evidence{
		Effects:   map[string]map[string]int{"us": {"a": 1, "b": 1}},
		Claimed:   map[string]map[string]bool{"us": {h("a"): true, h("b"): true}, "eu": {h("a"): true}},
		Conflicts: map[string]bool{h("a"): true, h("b"): true},
	}
	a := verify.TallyEvidence([]string{"a", "b"}, ev)
	if a.CutShort != 1 || a.Spurious != 1 || len(a.SpuriousIDs) != 1 || a.SpuriousIDs[0] != "b" || a.OK() {
		t.Fatalf("got %+v, want a cut short, b spurious", a)
	}
}
