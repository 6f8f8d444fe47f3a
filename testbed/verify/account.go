package verify

import (
	"slices"

	"github.com/onceplane/onceplane/event"
)

// Account is the exactly-once account of a multi-region run: what every
// region's effects and the conflicts streams say about the IDs sent.
type Account struct {
	// Lost counts IDs with no effect in any region.
	Lost int
	// DupEffects counts, per region, IDs with more than one effect there
	// (G1 allows none).
	DupEffects map[string]int
	// TrueRaces counts IDs with effects in two or more regions.
	TrueRaces int
	// Reported counts distinct IDs in the conflicts streams.
	Reported int
	// Missed counts races no conflict record reports; Spurious conflict
	// records of IDs that did not race. G2 allows neither.
	Missed, Spurious int
}

// Tally accounts for ids (each unique ID once): effects maps region → ID →
// number of effects there, conflicts holds the ID hashes (edge.HashHex)
// found in the conflicts streams.
func Tally(ids []string, effects map[string]map[string]int, conflicts map[string]bool) Account {
	a := Account{DupEffects: map[string]int{}, Reported: len(conflicts)}
	where := map[string][]string{} // ID hash -> regions with an effect
	regions := make([]string, 0, len(effects))
	for r := range effects {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	for _, r := range regions {
		a.DupEffects[r] += 0
		for id, n := range effects[r] {
			if n > 1 {
				a.DupEffects[r]++
			}
			h := event.HashID(id).Hex()
			where[h] = append(where[h], r)
		}
	}
	for _, id := range ids {
		if len(where[event.HashID(id).Hex()]) == 0 {
			a.Lost++
		}
	}
	for h, rs := range where {
		if len(rs) > 1 {
			a.TrueRaces++
			if !conflicts[h] {
				a.Missed++
			}
		}
	}
	for h := range conflicts {
		if len(where[h]) < 2 {
			a.Spurious++
		}
	}
	return a
}

// OK reports whether the account shows no loss, no duplicate effect in a
// region and every race reported, nothing else.
func (a Account) OK() bool {
	for _, n := range a.DupEffects {
		if n > 0 {
			return false
		}
	}
	return a.Lost == 0 && a.Missed == 0 && a.Spurious == 0
}
