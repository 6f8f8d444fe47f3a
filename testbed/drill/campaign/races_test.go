package campaign

import (
	"reflect"
	"testing"
	"time"
)

// raceHistory is a small three-region history: r1 handled in us-east only
// (eu-west saw the claim first), r2 in both with a conflict, r3 in both
// without one, r4 acked and handled nowhere, r5 dead-lettered in eu-west
// and handled in ap-south.
func raceHistory() RaceInput {
	pub := func(id string) Publish { return Publish{ID: id, Token: id, Kind: KindRace} }
	run := func(id string) HandlerRun { return HandlerRun{ID: id} }
	return RaceInput{
		Sent: map[string][]Publish{
			"us-east":  {pub("r1"), pub("r2"), pub("r3"), pub("r4")},
			"eu-west":  {pub("r1"), pub("r2"), pub("r3"), pub("r5")},
			"ap-south": {pub("r5")},
		},
		Runs: map[string][]HandlerRun{
			"us-east":  {run("r1"), run("r2"), run("r3"), run("own-1")},
			"eu-west":  {run("r2"), run("r3"), run("own-2")},
			"ap-south": {run("r5")},
		},
		DeadLetters: map[string][]DeadLetter{"eu-west": {{Reason: "handler failed", EventID: "r5"}}},
		Conflicts:   map[string]bool{raceHash("r2"): true, raceHash("r5"): true},
	}
}

func TestCheckRacesFindsEachBrokenPromise(t *testing.T) {
	in := raceHistory()
	v := CheckRaces(in)
	if v.Raced != 5 || v.AckedBoth != 4 || v.TrueRaces != 3 || v.Conflicts != 2 {
		t.Fatalf("raced %d (want 5), acked by both %d (4), true races %d (3), conflicts %d (2)", v.Raced, v.AckedBoth, v.TrueRaces, v.Conflicts)
	}
	got := map[string][]string{}
	for _, x := range v.Violations {
		got[x.Kind] = x.Items
	}
	want := map[string][]string{
		RaceLost:       {"r4 (acked in us-east)"},
		RaceUnreported: {"r3 (handled in eu-west, us-east)"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("violations %v, want %v", got, want)
	}
	if exp := ExpectedConflicts(in); len(exp) != 3 || !exp[raceHash("r3")] || !exp[raceHash("r5")] || exp[raceHash("r1")] {
		t.Fatalf("expected conflicts %v: want r2, r3, r5", exp)
	}
}

func TestCheckRacesClean(t *testing.T) {
	in := raceHistory()
	in.Conflicts[raceHash("r3")] = true
	in.Runs["ap-south"] = append(in.Runs["ap-south"], HandlerRun{ID: "r4"})
	if v := CheckRaces(in); !v.OK() {
		t.Fatalf("a clean history: %v", v.Violations)
	}
	// A conflict on an ID only one region handled, both having claimed it,
	// is counted, not a violation; one on an ID sent to one region is.
	in.Conflicts[raceHash("r1")] = true
	in.Conflicts[raceHash("own-1")] = true
	v := CheckRaces(in)
	if v.OneEffect != 1 || len(v.Violations) != 1 || v.Violations[0].Kind != ConflictWithoutRace || v.Violations[0].Items[0] != raceHash("own-1") {
		t.Fatalf("one effect %d, violations %v: want 1 and a conflict without race", v.OneEffect, v.Violations)
	}
}

func TestPlanWAN(t *testing.T) {
	o := WANPlanOptions{Duration: 10 * time.Minute, Warmup: 5 * time.Second, MeanGap: 10 * time.Second, Regions: multiRegions}
	a, b := PlanWAN(7, o), PlanWAN(7, o)
	if len(a) < 10 || !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 7 gave %d and %d link faults", len(a), len(b))
	}
	pairs, oneway := map[[2]string]bool{}, 0
	for i, f := range a {
		if f.From == f.To || f.Hold < 0 || f.Hold > 20*time.Second || f.At < o.Warmup || f.At+f.Hold > o.Duration {
			t.Fatalf("bad fault %s", f)
		}
		if i > 0 && f.At < a[i-1].At+a[i-1].Hold {
			t.Fatalf("%s starts before %s ends: one cut at a time", f, a[i-1])
		}
		pairs[[2]string{f.From, f.To}] = true
		if f.Oneway {
			oneway++
		}
	}
	if len(pairs) < 5 || oneway == 0 || oneway == len(a) {
		t.Fatalf("%d directed pairs, %d of %d one way: the schedule does not vary", len(pairs), oneway, len(a))
	}
	offs := RegionOffsets(7, multiRegions)
	if !reflect.DeepEqual(offs, RegionOffsets(7, multiRegions)) || offs["us-east"] == offs["eu-west"] {
		t.Fatalf("offsets %v", offs)
	}
	for _, d := range offs {
		if d < -6*time.Hour || d > 6*time.Hour || d%time.Minute != 0 {
			t.Fatalf("offset %v", d)
		}
	}
}
