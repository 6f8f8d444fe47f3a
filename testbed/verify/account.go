package verify

import (
	"cmp"
	"slices"

	"github.com/onceplane/onceplane/event"
)

// Account is the exactly-once account of a multi-region run: what every
// region's effects and the conflicts streams say about the IDs sent.
type Account struct {
	// Lost counts IDs with no effect in any region.
	Lost int
	// DupEffects counts, per region, IDs with more than one effect there,
	// one of them at least not flagged uncertain (G1 allows none).
	DupEffects map[string]int
	// Repeated counts, per region, IDs with more than one effect there,
	// every repeat flagged uncertain (G1 allows them, counted): a
	// takeover's uncertain set, a region failover's runs.
	Repeated map[string]int
	// TrueRaces counts IDs with effects in two or more regions.
	TrueRaces int
	// Reported counts distinct IDs in the conflicts streams.
	Reported int
	// Missed counts races no conflict record reports; Spurious conflict
	// records of IDs that did not race. G2 allows neither.
	Missed, Spurious int
	// MissedIDs and SpuriousIDs name a few of each (IDs as sent).
	MissedIDs, SpuriousIDs []string
	// CutShort counts conflict records of IDs claimed in two regions but
	// handled in one: a claim whose run was cut short (its edge killed
	// between the claim and the handler) and never repeated, because the
	// other region's claim was known done. Reported rightly, not races.
	CutShort int
}

// Evidence is what a multi-region run leaves to account for.
type Evidence struct {
	// Effects maps region → ID → handler runs there.
	Effects map[string]map[string]int
	// Flagged maps region → ID → runs whose handler was told they might
	// repeat an earlier one (Event.Uncertain): an ID's repeats in a region
	// are allowed when at least as many of its runs there were flagged.
	// Nil: none was.
	Flagged map[string]map[string]int
	// Claimed maps region → hashes (event.Hash.Hex) of the IDs claimed
	// there, whether or not their handler ran. Nil means claims are known
	// only by their effects.
	Claimed map[string]map[string]bool
	// Conflicts holds the ID hashes (event.Hash.Hex) in the conflicts streams.
	Conflicts map[string]bool
}

// Tally accounts for ids (each unique ID once): effects maps region → ID →
// number of effects there, conflicts holds the ID hashes (edge.HashHex)
// found in the conflicts streams.
func Tally(ids []string, effects map[string]map[string]int, conflicts map[string]bool) Account {
	return TallyEvidence(ids, Evidence{Effects: effects, Conflicts: conflicts})
}

// TallyEvidence accounts for ids (each unique ID once) from e.
func TallyEvidence(ids []string, e Evidence) Account {
	effects, flagged, conflicts := e.Effects, e.Flagged, e.Conflicts
	a := Account{DupEffects: map[string]int{}, Repeated: map[string]int{}, Reported: len(conflicts)}
	where := map[string][]string{} // ID hash -> regions with an effect
	regions := make([]string, 0, len(effects))
	for r := range effects {
		regions = append(regions, r)
	}
	slices.Sort(regions)
	for _, r := range regions {
		a.DupEffects[r] += 0
		for id, n := range effects[r] {
			switch {
			case n > 1 && flagged[r][id] >= n-1:
				a.Repeated[r]++
			case n > 1:
				a.DupEffects[r]++
			}
			h := event.HashID(id).Hex()
			where[h] = append(where[h], r)
		}
	}
	name := map[string]string{}
	for _, id := range ids {
		h := event.HashID(id).Hex()
		name[h] = id
		if len(where[h]) == 0 {
			a.Lost++
		}
	}
	some := func(xs *[]string, h string) {
		if len(*xs) < 5 {
			*xs = append(*xs, cmp.Or(name[h], h))
		}
	}
	for h, rs := range where {
		if len(rs) > 1 {
			a.TrueRaces++
			if !conflicts[h] {
				a.Missed++
				some(&a.MissedIDs, h)
			}
		}
	}
	claimedIn := map[string]int{}
	for _, hs := range e.Claimed {
		for h := range hs {
			claimedIn[h]++
		}
	}
	for h := range conflicts {
		switch {
		case len(where[h]) >= 2:
		case len(where[h]) == 1 && claimedIn[h] >= 2:
			a.CutShort++
		default:
			a.Spurious++
			some(&a.SpuriousIDs, h)
		}
	}
	slices.Sort(a.MissedIDs)
	slices.Sort(a.SpuriousIDs)
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
