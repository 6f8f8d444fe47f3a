package campaign

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/onceplane/onceplane/event"
)

// Cross-region violation kinds (three regions).
const (
	// RaceLost: an ID sent to two regions, acked by at least one, was
	// handled in none and dead-lettered in none.
	RaceLost = "race-lost"
	// RaceUnreported: an ID handled in two regions with no conflict
	// recorded in any region: a duplicate effect nobody was told about.
	RaceUnreported = "race-unreported"
	// ConflictWithoutRace: a conflict recorded for an ID that was never
	// sent to two regions: a false alarm.
	ConflictWithoutRace = "conflict-without-race"
)

// RaceInput is what the cross-region check reads. Region names key every map.
type RaceInput struct {
	// Sent holds the raced IDs each region acked.
	Sent map[string][]Publish
	// Runs and DeadLetters are each region's handler runs and dead letters.
	Runs        map[string][]HandlerRun
	DeadLetters map[string][]DeadLetter
	// Conflicts are the ID hashes (edge.HashHex) recorded in any region's
	// conflicts stream.
	Conflicts map[string]bool
}

// RaceVerdict is the cross-region account of a three-region campaign.
type RaceVerdict struct {
	Violations []Violation
	// Raced counts IDs sent to two regions and acked by at least one;
	// AckedBoth those both regions acked.
	Raced, AckedBoth int
	// TrueRaces counts raced IDs handled (or dead-lettered) in two regions:
	// each must be a conflict. Conflicts counts the conflicts recorded.
	TrueRaces, Conflicts int
	// OneEffect counts conflicts of raced IDs handled in one region only:
	// both regions claimed the ID, and one of them, taking an uncertain
	// claim over, found the other region's claim done and did not run it.
	OneEffect int
}

// OK reports whether no cross-region promise was broken.
func (v RaceVerdict) OK() bool { return len(v.Violations) == 0 }

// raceHash is the hash a conflict record names an ID by.
func raceHash(id string) string { return event.HashID(id).Hex() }

// regionsHandling maps each raced ID to the regions that handled it or
// dead-lettered it (a dead letter follows a claim, so a conflict may name it).
func regionsHandling(in RaceInput) map[string]map[string]bool {
	raced := map[string]bool{}
	for _, pubs := range in.Sent {
		for _, p := range pubs {
			raced[p.ID] = true
		}
	}
	out := map[string]map[string]bool{}
	mark := func(region, id string) {
		if !raced[id] {
			return
		}
		if out[id] == nil {
			out[id] = map[string]bool{}
		}
		out[id][region] = true
	}
	for region, runs := range in.Runs {
		for _, r := range runs {
			mark(region, r.ID)
		}
	}
	for region, dls := range in.DeadLetters {
		for _, d := range dls {
			mark(region, d.EventID)
		}
	}
	return out
}

// ExpectedConflicts returns the hashes of the raced IDs two or more regions
// handled: each must be recorded as a conflict.
func ExpectedConflicts(in RaceInput) map[string]bool {
	out := map[string]bool{}
	for id, regions := range regionsHandling(in) {
		if len(regions) >= 2 {
			out[raceHash(id)] = true
		}
	}
	return out
}

// CheckRaces accounts for the IDs sent to two regions. It does no I/O.
//
//  1. Every raced ID some region acked is handled (or dead-lettered) in at
//     least one region: the other region's claim may stop a region from
//     handling its copy, never both.
//  2. Every raced ID handled in two regions is recorded as a conflict.
//  3. Every conflict names a raced ID: a conflict for an ID sent to one
//     region only is a false alarm.
//
// Each region's own history (duplicates within a region, losses of its
// own IDs) is Check's.
func CheckRaces(in RaceInput) RaceVerdict {
	var v RaceVerdict
	ackedBy := map[string]map[string]bool{}
	byHash := map[string]string{}
	for region, pubs := range in.Sent {
		for _, p := range pubs {
			if ackedBy[p.ID] == nil {
				ackedBy[p.ID] = map[string]bool{}
			}
			ackedBy[p.ID][region] = true
			byHash[raceHash(p.ID)] = p.ID
		}
	}
	handling := regionsHandling(in)
	var lost, unreported, spurious tally
	for _, id := range slices.Sorted(maps.Keys(ackedBy)) {
		v.Raced++
		if len(ackedBy[id]) >= 2 {
			v.AckedBoth++
		}
		n := len(handling[id])
		switch {
		case n == 0:
			lost.add(fmt.Sprintf("%s (acked in %s)", id, strings.Join(slices.Sorted(maps.Keys(ackedBy[id])), ", ")))
		case n >= 2:
			v.TrueRaces++
			if !in.Conflicts[raceHash(id)] {
				unreported.add(fmt.Sprintf("%s (handled in %s)", id, strings.Join(slices.Sorted(maps.Keys(handling[id])), ", ")))
			}
		}
	}
	for h := range in.Conflicts {
		v.Conflicts++
		id, ok := byHash[h]
		if !ok {
			spurious.add(h)
			continue
		}
		if len(handling[id]) == 1 {
			v.OneEffect++
		}
	}
	v.Violations = violations([]named{
		{&lost, RaceLost, "IDs sent to two regions, acked, handled in neither"},
		{&unreported, RaceUnreported, "IDs handled in two regions with no conflict recorded"},
		{&spurious, ConflictWithoutRace, "conflicts recorded for IDs never sent to two regions"},
	})
	return v
}

// Print writes the three-region summary: the replay command, each region's
// own summary, the link faults and the cross-region account.
func (m *MultiReport) Print(w io.Writer) {
	c := m.Config
	fmt.Fprintf(w, "\n=== three-region campaign seed %d: %v of faults; per region 1 core, %d edges, %d partitions, %d events/s; %d IDs/s sent to two regions ===\n",
		m.Seed, c.Duration, c.Edges, c.Partitions, c.Rate, c.RaceRate)
	fmt.Fprintf(w, "replay      go run ./testbed/cmd/drill campaign -regions 3 -seed %d -duration %v -edges %d -partitions %d -batch %d -rate %d -race-rate %d -wan-every %v -every %v\n",
		m.Seed, c.Duration, c.Edges, c.Partitions, c.Batch, c.Rate, c.RaceRate, c.WANGap, c.MeanGap)
	var offs []string
	for _, name := range multiRegions {
		offs = append(offs, fmt.Sprintf("%s %+v", name, m.Offsets[name]))
	}
	fmt.Fprintf(w, "clocks      edges start with offsets %s\n", strings.Join(offs, ", "))
	for _, r := range m.Regions {
		r.Print(w)
	}
	oneway := 0
	var held time.Duration
	for _, f := range m.WANSchedule {
		if f.Oneway {
			oneway++
		}
		held += f.Hold
	}
	fmt.Fprintf(w, "\n--- across regions ---\n")
	fmt.Fprintf(w, "wan         %d link cuts scheduled (%d one way), %d injected, %v cut in all\n", len(m.WANSchedule), oneway, len(m.WAN), held.Round(time.Second))
	v := m.Races
	fmt.Fprintf(w, "races       %d IDs sent to two regions (%d acked by both); %d handled in two regions; %d conflicts recorded (%d with one effect: the other claim found done); waited %v for them\n",
		v.Raced, v.AckedBoth, v.TrueRaces, v.Conflicts, v.OneEffect, m.ConflictsWait.Round(time.Second))
	for _, e := range m.Errors {
		fmt.Fprintf(w, "error       %v\n", e)
	}
	for i, r := range m.Replication {
		label := "replication"
		if i > 0 {
			label = ""
		}
		fmt.Fprintf(w, "%-11s %s\n", label, r)
	}
	printViolations(w, v.Violations, " across regions")
	printEnd(w, m.Elapsed, m.Dir, m.OK(), fmt.Sprintf("seed %d, three regions", m.Seed))
}
