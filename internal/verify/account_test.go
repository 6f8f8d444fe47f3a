package verify_test

import (
	"testing"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/verify"
)

func TestTally(t *testing.T) {
	h := func(id string) string { return edge.HashHex(event.HashID(id)) }
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
