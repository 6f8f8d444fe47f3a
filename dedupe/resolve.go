package dedupe

import "github.com/onceplane/onceplane/event"

// A transactional sink applies each batch's effects and the partition's
// position (the highest ingest sequence it has applied) in one transaction,
// fenced by the owner's epoch. Before a takeover, the new owner fences the
// sink with its epoch (no earlier owner's transaction commits after that)
// and reads the position; Resolve then settles what earlier owners claimed
// and did not finish, instead of leaving it uncertain:
//
//   - a claim whose batch's highest sequence (Record.Seq) is at or below
//     the position was applied: its IDs are done, and arrive again only as
//     duplicates;
//   - a claim above it was not applied (a batch is one transaction, and a
//     partition's batches are applied in order): its IDs are owed, and run
//     again as first runs (PathOwed), not flagged; except its uncertain
//     re-runs (Record.Reruns), which an owner before it may have applied:
//     they stay uncertain;
//   - a claim whose sequences count another input (Record.Source of its
//     epoch's takeover differs: a failover's mirror, a promoted copy, a
//     recreated stream) or that carries no Seq (an owner without the
//     contract, a carried or moved claim) stays uncertain, and so does every
//     ID already uncertain: these run again flagged, as without the contract.
//
// An ID both uncertain and owed is uncertain; both owed and done, owed.

// pendingClaim is a claim record whose batch no later record marked done.
type pendingClaim struct {
	ids    []event.Hash
	seq    uint64 // Record.Seq
	reruns int    // Record.Reruns
	epoch  uint64
}

// Resolution counts the IDs one Resolve settled.
type Resolution struct {
	// Done were applied by the sink: not run again.
	Done int
	// Owed were not applied: run again as first runs.
	Owed int
	// Uncertain could not be settled: run again flagged.
	Uncertain int
}

// Resolve settles the pending claims against applied, the position a
// transactional sink holds for source (the input this owner consumes,
// named so that another input's sequences never count as its), read while
// fencing the sink with the coming takeover's epoch. The next Takeover
// record carries the result (uncertain and owed sets, source) unless a
// record is applied first. Resolve changes nothing else.
func (s *State) Resolve(source string, applied uint64) Resolution {
	unsure := map[event.Hash]struct{}{}
	done := map[event.Hash]struct{}{}
	owed := map[event.Hash]struct{}{}
	for _, c := range s.pending {
		known := source != "" && c.seq != 0 && s.sources[c.epoch] == source
		for i, h := range c.ids {
			switch {
			case !known:
				unsure[h] = struct{}{}
			case c.seq <= applied:
				done[h] = struct{}{}
			case i < c.reruns:
				// A re-run the sink did not apply: an earlier owner may have.
				unsure[h] = struct{}{}
			default:
				owed[h] = struct{}{}
			}
		}
	}
	for h := range s.uncertain {
		unsure[h] = struct{}{}
	}
	for h := range s.owed {
		if _, u := unsure[h]; !u {
			owed[h] = struct{}{}
		}
	}
	for h := range unsure {
		delete(owed, h)
		delete(done, h)
	}
	for h := range owed {
		delete(done, h)
	}
	// Kept aside for the takeover record: a record applied before it (the
	// fence lost a race and the tail is replayed) drops it, and the next
	// Resolve starts from the log again.
	s.resolved = &resolution{source: source, unsure: unsure, owed: owed}
	return Resolution{Done: len(done), Owed: len(owed), Uncertain: len(unsure)}
}

// resolution is what the last Resolve settled, for the next Takeover.
type resolution struct {
	source       string
	unsure, owed map[event.Hash]struct{}
}

// RaiseEpoch makes e the highest epoch seen, when it is higher: a sink
// that holds a later epoch than the claim log shows (a log that aged out
// entirely restarts at epoch 1) must see the next takeover's as newer.
func (s *State) RaiseEpoch(e uint64) {
	if e > s.epoch {
		s.epoch = e
	}
}

// Owed returns the number of IDs currently owed (see Resolve).
func (s *State) Owed() int { return len(s.owed) }
