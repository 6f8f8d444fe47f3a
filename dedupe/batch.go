package dedupe

import (
	"slices"
	"time"

	"github.com/onceplane/onceplane/event"
)

// Batch is one batch's way through an owner, in the three steps every owner
// takes in order (the edge, and the model tests that check it):
//
//	Decide     classify the batch; when an event is to run, the claim record
//	           to append, conditionally on LastSeq, before running any
//	Committed  the claim record landed at a claim-log sequence
//	Finished   every event handled or dead-lettered, and acknowledged
//
// An owner that stops between two steps (a crash, a fence) leaves the
// batch's claimed IDs to the next owner as uncertain.
type Batch struct {
	// Paths are the decisions, one per event, in order.
	Paths []Path
	// Run are the indexes (into Paths) of the events to hand to the
	// handler: first-time events and uncertain re-runs.
	Run []int
	// Claim is the record to append before running them, when Claims.
	Claim  Record
	Claims bool
	// seq is the claim-log sequence Committed gave the claim (0 when none).
	seq uint64
	ids []event.Hash
}

// Decide is a batch's first step: it classifies hs (the batch's events'
// ID hashes, in order; at is the newest ingest time among them) and, when
// any event is to run, builds the claim record writer must append, whose
// Seq is the highest of seqs (the events' ingest sequences, in the same
// order; nil when unknown) among the events to run. b's slices are reused.
func (s *State) Decide(hs []event.Hash, seqs []uint64, at time.Time, writer string, b *Batch) {
	b.Paths = s.Classify(hs, at, b.Paths[:0])
	b.Run, b.ids, b.seq = b.Run[:0], b.ids[:0], 0
	var last uint64
	reruns := 0
	for i, p := range b.Paths {
		if p.First() {
			b.Run = append(b.Run, i)
			if p == PathUncertainRerun {
				reruns++
			}
			if i < len(seqs) {
				last = max(last, seqs[i])
			}
		}
	}
	// The claim's IDs: uncertain re-runs first (Record.Reruns), then the
	// others, each group in batch order.
	for _, i := range b.Run {
		if b.Paths[i] == PathUncertainRerun {
			b.ids = append(b.ids, hs[i])
		}
	}
	for _, i := range b.Run {
		if b.Paths[i] != PathUncertainRerun {
			b.ids = append(b.ids, hs[i])
		}
	}
	b.Claims = len(b.ids) > 0
	b.Claim = Record{}
	if b.Claims {
		// Its own copy of the IDs: Committed keeps them as the batch's
		// pending claim until a later record says it is done, while b.ids
		// is reused by the next batch.
		b.Claim = s.Claim(slices.Clone(b.ids), writer)
		if seqs != nil {
			b.Claim.Seq, b.Claim.Reruns = last, reruns
		}
	}
}

// Committed is a batch's second step: its claim record landed at claim-log
// sequence seq.
func (s *State) Committed(b *Batch, seq uint64) {
	s.Apply(seq, b.Claim, time.Time{})
	b.seq = seq
}

// Finished is a batch's last step: every event of it is handled (or
// dead-lettered) and acknowledged, through ingest sequence through. The
// next record this owner appends carries it to the log.
func (s *State) Finished(b *Batch, through uint64) { s.MarkDone(b.seq, through) }
