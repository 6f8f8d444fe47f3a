package failover

import (
	"slices"
	"time"
)

// Planner is one edge's ownership policy: view by view, what to take at
// once, what to take after its live previous owner lets go, what to take
// back after a fence, and what to let go. It is pure and driven by the
// caller's clock (Observed.Now): the edge feeds it what it sees and carries
// out its Steps. Its zero value is not usable: set Self and N.
type Planner struct {
	// Self is this edge's member name.
	Self string
	// N is the partition count; Parts, when non-nil, the partitions shared
	// (AssignSome), else all of 0..N-1. Parts may change between steps (a
	// strict-mode home move): a partition that joins has no previous owner
	// here and is taken at once, one that leaves is released.
	N     int
	Parts []int
	// RefenceDelay is how long a partition this edge was fenced from waits
	// before it is taken back while the view that assigns it here stays
	// the same; it doubles with each further fence, up to a minute. Zero
	// means 2 s.
	RefenceDelay time.Duration
	// HandoffWait is how long a partition handed off (Steps.Handoff) is
	// left to the caller's handover before the planner plans it again (as
	// a Take): under any view in between, it is neither handed off again
	// nor taken, so a handover in progress is never cut short. Zero means
	// 10 s.
	HandoffWait time.Duration

	prev     []string          // the previous view; nil before the first step
	prevPart []int             // Parts at the previous step
	fences   map[int]streak    // partitions fenced under this view: when last, how often
	failures map[int]streak    // partitions whose run failed: when last, how often in a row
	handing  map[int]time.Time // handed off, not yet had: since when
	stepped  bool
}

// streak is a run of fences or failures of one partition: the last one and
// how many.
type streak struct {
	last  time.Time
	count int
}

// doubling is base after the first of count events, doubling with each
// further one, at most most.
func doubling(base time.Duration, count int, most time.Duration) time.Duration {
	return min(base<<min(count-1, 10), most)
}

// Observed is what the edge sees at a step.
type Observed struct {
	Now time.Time
	// Members is the live membership (any order).
	Members []string
	// Have are the partitions this edge runs and is not handing over.
	Have []int
	// Fenced are the partitions fenced since the last step, with when.
	Fenced map[int]time.Time
	// Handed are the partitions whose handover (a Steps.Handoff) ended
	// since the last step, taken or not: they are planned again.
	Handed []int
	// Failed are the partitions whose run failed since the last step (a
	// core unreachable or too slow to answer), with when: each is taken
	// again after a second, doubling with each failure in a row up to
	// 8 s, so that an overloaded core is not met with every partition's
	// retry every second. A failure more than failureMemory after the
	// previous one starts over. (Not "once it runs again": a run that
	// will fail runs for a while first.)
	Failed map[int]time.Time
}

// Steps is what the edge does at a step.
type Steps struct {
	// Want is this edge's share of the view.
	Want []int
	// Release: hand over now (finish the batch in hand, record it done).
	Release []int
	// Take: own at once (no live previous owner).
	Take []int
	// Handoff: own once the live previous owner has let go (or its
	// release time has passed); this edge just started, or the partition
	// moved here from a live member. The caller reports the handover's end
	// (Observed.Handed); until then, or HandoffWait, the partition is left
	// to it.
	Handoff []int
	// Retake: fenced under this same view and due again: own at once
	// unless its other owner is consuming (the caller asks).
	Retake []int
}

// Step takes one look at the world and returns what to do.
func (pl *Planner) Step(o Observed) Steps {
	if pl.fences == nil {
		pl.fences, pl.handing, pl.failures = map[int]streak{}, map[int]time.Time{}, map[int]streak{}
	}
	for p, f := range pl.failures {
		if o.Now.Sub(f.last) > failureMemory {
			delete(pl.failures, p) // not failed for a good while: start over
		}
	}
	for p, at := range o.Failed {
		f := pl.failures[p]
		pl.failures[p] = streak{last: at, count: f.count + 1}
	}
	members := slices.Clone(o.Members)
	slices.Sort(members)
	want := OwnedSome(members, pl.N, pl.Parts, pl.Self)
	var prevOwner []string
	if pl.stepped {
		prevOwner = AssignSome(pl.prev, pl.N, pl.prevPart)
	}
	plan := Diff(o.Have, want)
	s := Steps{Want: want, Release: plan.Release}
	for _, p := range o.Handed {
		delete(pl.handing, p)
	}
	for p, since := range pl.handing {
		// Done (had), no longer this edge's, or given up on.
		if !slices.Contains(plan.Acquire, p) || o.Now.Sub(since) >= pl.handoffWait() {
			delete(pl.handing, p)
		}
	}
	if pl.stepped && !slices.Equal(members, pl.prev) {
		clear(pl.fences) // a new view: a fence under the old one says nothing
	}
	for p, at := range o.Fenced {
		delete(pl.handing, p) // it was had, and lost
		f := pl.fences[p]
		pl.fences[p] = streak{last: at, count: f.count + 1}
	}
	for _, p := range plan.Acquire {
		if _, ok := pl.handing[p]; ok {
			continue // its handover is still under way
		}
		if f, ok := pl.failures[p]; ok && o.Now.Sub(f.last) < doubling(time.Second, f.count, maxFailureWait) {
			continue // failed lately: not yet again
		}
		if f, ok := pl.fences[p]; ok {
			if o.Now.Sub(f.last) >= pl.refenceWait(f.count) {
				s.Retake = append(s.Retake, p)
			}
			continue
		}
		// A partition whose previous owner is alive (or unknown: this edge
		// just started) is handed over; a dead owner's is taken at once.
		if prevOwner == nil || (prevOwner[p] != "" && prevOwner[p] != pl.Self && slices.Contains(members, prevOwner[p])) {
			s.Handoff = append(s.Handoff, p)
			pl.handing[p] = o.Now
			continue
		}
		s.Take = append(s.Take, p)
	}
	pl.prev, pl.prevPart, pl.stepped = members, slices.Clone(pl.Parts), true
	return s
}

// failureMemory is how long a partition's failures in a row are counted:
// twice the longest backoff. maxFailureWait bounds the backoff: it is
// also how late a partition may come back after its core does (a fault
// campaign's core restarts drained 46 s after the faults with 30 s).
const (
	maxFailureWait = 8 * time.Second
	failureMemory  = 2 * maxFailureWait
)

func (pl *Planner) handoffWait() time.Duration {
	if pl.HandoffWait <= 0 {
		return 10 * time.Second
	}
	return pl.HandoffWait
}

// refenceWait is how long after its count-th fence under one view a
// partition waits before it is taken back: RefenceDelay, doubling, at most
// a minute. Under a persistent split view two edges would otherwise take
// it from each other every delay, replaying it each time.
func (pl *Planner) refenceWait(count int) time.Duration {
	d := pl.RefenceDelay
	if d <= 0 {
		d = 2 * time.Second
	}
	return doubling(d, count, time.Minute)
}
