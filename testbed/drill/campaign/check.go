package campaign

import (
	"fmt"
	"slices"
	"strings"

	"github.com/onceplane/onceplane/event"
)

// Violation kinds. Each is a broken promise, not a statistic.
const (
	// LostAcked: an acked event with a valid ID, in a partition that drained
	// (every event acknowledged), was never handled nor dead-lettered: an
	// acknowledgement passed an event that was never handled.
	LostAcked = "lost-acked"
	// LostStalled: the same, in a partition that never drained.
	LostStalled = "lost-stalled"
	// InvalidLost: an acked invalid event in a drained partition is not in
	// the DLQ and was not handled either.
	InvalidLost = "invalid-lost"
	// InvalidHandled: an event that must be dead-lettered reached the handler.
	InvalidHandled = "invalid-handled"
	// DeadLetterNoReason: a dead letter without Onceplane-Reason.
	DeadLetterNoReason = "dlq-no-reason"
	// UnflaggedDuplicate: an ID handled more than once, an extra run not
	// flagged uncertain.
	UnflaggedDuplicate = "unflagged-duplicate"
	// UncertainOverBound: more uncertain runs than the faults can explain.
	UncertainOverBound = "uncertain-over-bound"
	// StalledPartition: a partition that did not drain once faults stopped.
	StalledPartition = "stalled-partition"
	// EdgeNotReady: an edge whose /readyz was not OK once faults stopped.
	EdgeNotReady = "edge-not-ready"
	// UnownedPartition: a partition no running edge owned (or two did)
	// once faults stopped.
	UnownedPartition = "unowned-partition"
	// ProcessCrash: a process exited without being told to.
	ProcessCrash = "process-crash"
)

// Violation is one kind of broken promise, with how often and examples.
type Violation struct {
	Kind  string
	Count int
	// Examples are a few of the IDs, partitions or edges concerned; Items
	// all of them, sorted.
	Examples, Items []string
	// Detail explains the count (bounds, partitions).
	Detail string
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s %d", v.Kind, v.Count)
	if v.Detail != "" {
		s += " (" + v.Detail + ")"
	}
	if len(v.Examples) > 0 {
		s += ": " + strings.Join(v.Examples, ", ")
	}
	return s
}

// Verdict is the checker's account of a history.
type Verdict struct {
	Violations []Violation
	// Runs counts handler runs; UncertainRuns those flagged uncertain;
	// ExtraRuns the runs beyond one per ID.
	Runs, UncertainRuns, ExtraRuns int
	// Bound is the most uncertain runs the faults explain, and InFlight the
	// sum over faults of the partitions each could leave a batch in flight in.
	Bound, InFlight int
	// Handled counts distinct IDs handled.
	Handled int
}

// OK reports whether no promise was broken.
func (v Verdict) OK() bool { return len(v.Violations) == 0 }

// Count returns the count of violations of kind.
func (v Verdict) Count(kind string) int {
	for _, x := range v.Violations {
		if x.Kind == kind {
			return x.Count
		}
	}
	return 0
}

// maxExamples bounds the examples per violation.
const maxExamples = 5

type tally struct {
	n  int
	ex []string
}

func (t *tally) add(example string) {
	t.n++
	t.ex = append(t.ex, example)
}

func (t *tally) violation(kind, detail string) (Violation, bool) {
	if t.n == 0 {
		return Violation{}, false
	}
	all := slices.Clone(t.ex)
	slices.Sort(all)
	all = slices.Compact(all)
	ex := all[:min(len(all), maxExamples)]
	return Violation{Kind: kind, Count: t.n, Examples: ex, Items: all, Detail: detail}, true
}

// Check accounts for a campaign's history. It does no I/O.
//
//  1. Every acked event with a valid ID is handled at least once or
//     dead-lettered with a reason; every acked event that must be
//     dead-lettered is, with a reason, and never handled. A loss in a
//     partition that drained means an acknowledgement passed the event.
//  2. No ID is handled twice unless every extra run is flagged uncertain:
//     at most one unflagged run per ID, plus one for each time a sink that
//     runs after the ledger failed on it on purpose (History.Excused).
//  3. Uncertain runs are bounded: a fault can leave at most one batch in
//     flight in each partition its target owned (an edge's claim record
//     carries the done mark of its previous batch, so an owner that dies
//     leaves only its last claimed batch undone), so uncertain runs are at
//     most Batch × Σ Affected over the faults that can leave work in flight.
//  4. Once faults stop, every partition drains, is owned by exactly one
//     edge, every edge is ready, and no process exited by itself after it
//     had started (an edge that cannot reach the core at start exits, and
//     is started again, as a supervisor would).
func Check(h History) Verdict {
	var v Verdict
	undrained := map[int]bool{}
	for _, p := range h.Settle.Undrained {
		undrained[p] = true
	}
	runs := map[string]int{}
	unflagged := map[string]int{}
	for _, r := range h.Runs {
		runs[r.ID]++
		if r.Uncertain {
			v.UncertainRuns++
		} else {
			unflagged[r.ID]++
		}
	}
	v.Runs, v.Handled = len(h.Runs), len(runs)
	v.ExtraRuns = v.Runs - v.Handled

	dlqByID := map[string]bool{}
	dlqBySeq := map[uint64]bool{}
	var noReason tally
	for _, d := range h.DeadLetters {
		if d.Reason == "" {
			noReason.add(fmt.Sprintf("seq %d", d.StreamSeq))
			continue
		}
		if d.EventID != "" {
			dlqByID[d.EventID] = true
		}
		dlqBySeq[d.StreamSeq] = true
	}

	// 1. Nothing acked is lost.
	var lostAcked, lostStalled, invalidLost, invalidHandled tally
	checkedID := map[string]bool{}
	for _, p := range h.Publishes {
		part := event.Partition(p.Token, h.Partitions)
		if !p.DeadLetter {
			if checkedID[p.ID] {
				continue
			}
			checkedID[p.ID] = true
			if runs[p.ID] > 0 || dlqByID[p.ID] {
				continue
			}
			ex := fmt.Sprintf("%s (p%d seq %d %s)", p.ID, part, p.Seq, p.Kind)
			if undrained[part] {
				lostStalled.add(ex)
			} else {
				lostAcked.add(ex)
			}
			continue
		}
		ex := fmt.Sprintf("%s %q (p%d seq %d)", p.Hostile, clip(p.ID), part, p.Seq)
		if p.ID != "" && runs[p.ID] > 0 {
			invalidHandled.add(ex)
			continue
		}
		if dlqBySeq[p.Seq] {
			continue
		}
		if undrained[part] {
			lostStalled.add(ex)
		} else {
			invalidLost.add(ex)
		}
	}

	// 2. At most one unflagged run per ID (plus one per run the sink failed
	// on purpose after recording it).
	var dups tally
	for id, n := range unflagged {
		for i := 1 + h.Excused[id]; i < n; i++ {
			dups.add(id)
		}
	}

	// 3. Uncertain runs bounded by the batches the faults left in flight.
	for _, f := range h.Faults {
		if f.Kind.LeavesWorkInFlight() {
			v.InFlight += f.Affected
		}
	}
	v.Bound = v.InFlight * h.Batch
	var over tally
	if v.UncertainRuns > v.Bound {
		over.n = v.UncertainRuns - v.Bound
	}

	// 4. Settled, ready, no crash.
	var stalled, notReady, unowned, crashed tally
	for _, p := range h.Settle.Undrained {
		stalled.add(fmt.Sprintf("p%d", p))
	}
	for _, p := range h.Settle.Unowned {
		unowned.add(fmt.Sprintf("p%d", p))
	}
	for e, why := range h.Settle.NotReady {
		notReady.add(fmt.Sprintf("%s: %s", e, clip(why)))
	}
	for _, c := range h.Crashes {
		crashed.add(fmt.Sprintf("%s at %v", c.Process, c.At.Round(1e6)))
	}

	v.Violations = violations([]named{
		{&lostAcked, LostAcked, "acked valid events never handled nor dead-lettered, in partitions that drained"},
		{&lostStalled, LostStalled, "acked events never handled nor dead-lettered, in partitions that did not drain"},
		{&invalidLost, InvalidLost, "acked invalid events neither dead-lettered nor handled, in partitions that drained"},
		{&invalidHandled, InvalidHandled, "events that must be dead-lettered reached the handler"},
		{&noReason, DeadLetterNoReason, ""},
		{&dups, UnflaggedDuplicate, "extra handler runs not flagged uncertain"},
		{&over, UncertainOverBound, fmt.Sprintf("%d uncertain runs > bound %d = batch %d × %d partitions with work in flight at faults", v.UncertainRuns, v.Bound, h.Batch, v.InFlight)},
		{&stalled, StalledPartition, fmt.Sprintf("not drained within %v of the faults stopping", h.Settle.Within)},
		{&notReady, EdgeNotReady, ""},
		{&unowned, UnownedPartition, "owned by no running edge, or by two"},
		{&crashed, ProcessCrash, ""},
	})
	return v
}

// named is a tally with its violation kind and what its count means.
type named struct {
	t            *tally
	kind, detail string
}

// violations returns the violations of the tallies that counted something, in order.
func violations(ts []named) []Violation {
	var out []Violation
	for _, x := range ts {
		if viol, ok := x.t.violation(x.kind, x.detail); ok {
			out = append(out, viol)
		}
	}
	return out
}

// clip shortens a long ID or answer for an example.
func clip(s string) string {
	if len(s) > 48 {
		return s[:45] + "..."
	}
	return s
}
