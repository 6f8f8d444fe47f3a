package campaign

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

const testParts = 4

// clean is a history that breaks no promise: three events handled, one
// re-sent (decided a duplicate, not run again), one re-run flagged
// uncertain after a kill, one invalid event dead-lettered, one valid event
// that gave up in the handler and was dead-lettered.
func clean() History {
	return History{
		Partitions: testParts, Batch: 10,
		Publishes: []Publish{
			{ID: "a", Token: "a", Seq: 1, Kind: KindUnique},
			{ID: "b", Token: "b", Seq: 2, Kind: KindUnique},
			{ID: "c", Token: "c", Seq: 3, Kind: KindUnique},
			{ID: "a", Token: "a", Seq: 4, Kind: KindResend},
			{ID: "", Token: "noid-1", Seq: 5, Kind: KindInvalid, Hostile: "missing-id", DeadLetter: true},
			{ID: "d", Token: "d", Seq: 6, Kind: KindHostileValid, Hostile: "ctrl-headers"},
		},
		Runs: []HandlerRun{
			{ID: "a", Seq: 1, Edge: "e0"},
			{ID: "b", Seq: 2, Edge: "e0"},
			{ID: "b", Seq: 2, Edge: "e1", Uncertain: true},
			{ID: "c", Seq: 3, Edge: "e1", Uncertain: true}, // its first owner died before running it
		},
		DeadLetters: []DeadLetter{
			{Reason: "missing-id", StreamSeq: 5},
			{Reason: "handler-gave-up", EventID: "d", StreamSeq: 6},
		},
		Faults: []Injected{{Kind: FaultKill, Target: "e0", Affected: 1, Strikes: 1}},
	}
}

func kinds(v Verdict) []string {
	var out []string
	for _, x := range v.Violations {
		out = append(out, x.Kind)
	}
	return out
}

func TestCleanHistoryPasses(t *testing.T) {
	v := Check(clean())
	if !v.OK() {
		t.Fatalf("violations in a clean history: %v", v.Violations)
	}
	if v.Runs != 4 || v.UncertainRuns != 2 || v.ExtraRuns != 1 || v.Handled != 3 || v.Bound != 10 {
		t.Fatalf("verdict %+v", v)
	}
}

// TestEachViolationIsSeen feeds the checker histories that each break one
// promise: the checker must name exactly that one, with its count.
func TestEachViolationIsSeen(t *testing.T) {
	// A partition other than a's, for the stalled case.
	pa := event.Partition("a", testParts)
	cases := []struct {
		name  string
		spoil func(*History)
		kind  string
		count int
		also  []string // other violations the same break causes
	}{
		{"lost after an ack in a drained partition", func(h *History) {
			h.Runs = slices.DeleteFunc(h.Runs, func(r HandlerRun) bool { return r.ID == "a" })
		}, LostAcked, 1, nil},
		{"lost in a stalled partition", func(h *History) {
			h.Runs = slices.DeleteFunc(h.Runs, func(r HandlerRun) bool { return r.ID == "a" })
			h.Settle.Undrained = []int{pa}
		}, LostStalled, 1, []string{StalledPartition}},
		{"a re-send is counted once", func(h *History) {
			h.Publishes = append(h.Publishes, Publish{ID: "e", Token: "e", Seq: 7, Kind: KindUnique}, Publish{ID: "e", Token: "e", Seq: 8, Kind: KindResend})
		}, LostAcked, 1, nil},
		{"an invalid event not dead-lettered", func(h *History) {
			h.DeadLetters = h.DeadLetters[1:]
		}, InvalidLost, 1, nil},
		{"a dead letter matched by sequence, not by a reason elsewhere", func(h *History) {
			h.DeadLetters[0].StreamSeq = 99
		}, InvalidLost, 1, nil},
		{"an invalid event handled", func(h *History) {
			h.Publishes = append(h.Publishes, Publish{ID: "m", Token: "other", Seq: 9, Kind: KindInvalid, Hostile: "misrouted", DeadLetter: true})
			h.Runs = append(h.Runs, HandlerRun{ID: "m", Seq: 9, Edge: "e0"})
		}, InvalidHandled, 1, nil},
		{"a dead letter without a reason", func(h *History) {
			h.DeadLetters = append(h.DeadLetters, DeadLetter{StreamSeq: 42})
		}, DeadLetterNoReason, 1, nil},
		{"a dead letter without a reason does not excuse a loss", func(h *History) {
			h.Runs = slices.DeleteFunc(h.Runs, func(r HandlerRun) bool { return r.ID == "c" })
			h.DeadLetters = append(h.DeadLetters, DeadLetter{EventID: "c", StreamSeq: 3})
		}, LostAcked, 1, []string{DeadLetterNoReason}},
		{"two unflagged runs", func(h *History) {
			h.Runs = append(h.Runs, HandlerRun{ID: "a", Seq: 4, Edge: "e1"})
		}, UnflaggedDuplicate, 1, nil},
		{"an unflagged run after an uncertain one", func(h *History) {
			h.Runs = append(h.Runs, HandlerRun{ID: "c", Seq: 3, Edge: "e2"}, HandlerRun{ID: "c", Seq: 3, Edge: "e0"})
		}, UnflaggedDuplicate, 1, nil},
		{"a run the sink failed after recording excuses one more, not two", func(h *History) {
			h.Excused = map[string]int{"a": 1}
			h.Runs = append(h.Runs, HandlerRun{ID: "a", Edge: "e0"}, HandlerRun{ID: "a", Edge: "e0"})
		}, UnflaggedDuplicate, 1, nil},
		{"three unflagged runs are two duplicates", func(h *History) {
			h.Runs = append(h.Runs, HandlerRun{ID: "a", Edge: "e1"}, HandlerRun{ID: "a", Edge: "e2"})
		}, UnflaggedDuplicate, 2, nil},
		{"uncertain runs over the bound", func(h *History) {
			for i := range 9 {
				h.Runs = append(h.Runs, HandlerRun{ID: fmt.Sprintf("u%d", i), Uncertain: true})
			}
		}, UncertainOverBound, 1, nil},
		{"a fault that leaves nothing in flight raises no bound", func(h *History) {
			h.Faults = append(h.Faults, Injected{Kind: FaultHostile, Affected: 100}, Injected{Kind: FaultChaosFail, Affected: 100})
			for i := range 9 {
				h.Runs = append(h.Runs, HandlerRun{ID: fmt.Sprintf("u%d", i), Uncertain: true})
			}
		}, UncertainOverBound, 1, nil},
		{"a stalled partition", func(h *History) {
			h.Settle.Undrained = []int{(pa + 1) % testParts}
		}, StalledPartition, 1, nil},
		{"an edge not ready", func(h *History) {
			h.Settle.NotReady = map[string]string{"e1": "p3 released"}
		}, EdgeNotReady, 1, nil},
		{"a crash", func(h *History) {
			h.Crashes = []Crash{{Process: "e1", At: time.Second}}
		}, ProcessCrash, 1, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := clean()
			c.spoil(&h)
			v := Check(h)
			if v.OK() {
				t.Fatalf("the checker passed a history with %s", c.kind)
			}
			got := kinds(v)
			want := append([]string{c.kind}, c.also...)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("violations %v, want %v", v.Violations, want)
			}
			if n := v.Count(c.kind); n != c.count {
				t.Fatalf("%s counted %d, want %d", c.kind, n, c.count)
			}
		})
	}
}

func TestExcusedRunsPass(t *testing.T) {
	h := clean()
	h.Excused = map[string]int{"a": 2}
	h.Runs = append(h.Runs, HandlerRun{ID: "a", Edge: "e0"}, HandlerRun{ID: "a", Edge: "e0"})
	if v := Check(h); !v.OK() {
		t.Fatalf("two runs the sink failed after recording, each run again: %v", v.Violations)
	}
}

func TestUncertainBoundIsBatchTimesAffected(t *testing.T) {
	h := clean()
	h.Faults = []Injected{
		{Kind: FaultKill, Affected: 2}, {Kind: FaultFlap, Affected: 6, Strikes: 3}, {Kind: FaultCore, Affected: testParts},
		{Kind: FaultHostile, Affected: 0}, {Kind: FaultChaosPanic, Affected: 5},
	}
	v := Check(h)
	if v.InFlight != 2+6+testParts+5 || v.Bound != v.InFlight*h.Batch {
		t.Fatalf("in flight %d bound %d", v.InFlight, v.Bound)
	}
	if !v.OK() {
		t.Fatal(v.Violations)
	}
	// Exactly at the bound passes; one more does not.
	h.Faults = []Injected{{Kind: FaultKill, Affected: 1}}
	h.Batch = 3
	h.Runs = h.Runs[:2] // a, b unflagged
	for i := range 3 {
		h.Runs = append(h.Runs, HandlerRun{ID: fmt.Sprintf("u%d", i), Uncertain: true})
	}
	h.Publishes = h.Publishes[:2]
	h.DeadLetters = nil
	if v := Check(h); !v.OK() {
		t.Fatalf("at the bound: %v", v.Violations)
	}
	h.Runs = append(h.Runs, HandlerRun{ID: "u3", Uncertain: true})
	if v := Check(h); v.Count(UncertainOverBound) != 1 {
		t.Fatalf("over the bound by one: %v", v.Violations)
	}
}

func TestViolationExamplesAreBounded(t *testing.T) {
	h := History{Partitions: testParts, Batch: 1}
	for i := range 50 {
		id := fmt.Sprintf("x%02d", i)
		h.Publishes = append(h.Publishes, Publish{ID: id, Token: id, Seq: uint64(i + 1), Kind: KindUnique})
	}
	v := Check(h)
	if v.Count(LostAcked) != 50 {
		t.Fatalf("lost %d", v.Count(LostAcked))
	}
	x := v.Violations[0]
	if len(x.Examples) != maxExamples || !strings.HasPrefix(x.Examples[0], "x00 ") {
		t.Fatalf("examples %v", x.Examples)
	}
	if s := x.String(); !strings.Contains(s, "lost-acked 50") {
		t.Fatalf("string %q", s)
	}
}
