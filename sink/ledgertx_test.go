package sink_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/sink"
)

func ledgerBatch(from, n int, epoch uint64) []event.Event {
	var evs []event.Event
	for i := range n {
		evs = append(evs, event.Event{ID: fmt.Sprintf("id-%d", from+i), Partition: 3, StreamSeq: uint64(from + i), Epoch: epoch, Source: "in@1"})
	}
	return evs
}

// effects counts, per ID, the runs of committed batches.
func effects(t *testing.T, path string) (map[string]int, int) {
	t.Helper()
	lines, _, err := sink.ScanLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := sink.CommittedBatches(path)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range lines {
		if committed[l.Batch] {
			out[l.ID]++
		}
	}
	return out, len(lines)
}

// TestPositionedLedgerFencesAndCommits: two processes' worth of ledgers on
// one file; the second fences the first, whose later batch is refused; a
// batch handed again is not written again; a batch torn by a kill (lines,
// no commit) runs but takes no effect, and the next writer ends its torn
// line before its own.
func TestPositionedLedgerFencesAndCommits(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "l.jsonl")
	a, err := sink.OpenPositionedLedger(path, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Fence(ctx, "in@1", 3, 1); err != nil {
		t.Fatal(err)
	}
	if errs := a.Handle(ctx, ledgerBatch(1, 3, 1)); errs != nil {
		t.Fatal(errs)
	}
	if errs := a.Handle(ctx, ledgerBatch(1, 3, 1)); errs != nil { // a lost reply, handed again
		t.Fatal(errs)
	}
	// A kill tore the next batch: lines, no commit, the last line cut.
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, `{"id":"id-4","partition":3,"seq":4,"edge":"a","time":"2026-01-01T00:00:00Z","batch":"torn.1"}`+"\n"+`{"id":"id-5","parti`)
	f.Close()
	b, err := sink.OpenPositionedLedger(path, "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	pos, err := b.Fence(ctx, "in@1", 3, 2)
	if err != nil || pos != (edge.Position{Epoch: 2, Applied: 3}) {
		t.Fatalf("fence: %+v %v", pos, err)
	}
	for _, e := range a.Handle(ctx, ledgerBatch(4, 2, 1)) {
		if !errors.Is(e, edge.ErrSinkFenced) {
			t.Fatalf("the fenced writer: %v", e)
		}
	}
	if errs := b.Handle(ctx, ledgerBatch(4, 2, 2)); errs != nil {
		t.Fatal(errs)
	}
	got, runs := effects(t, path)
	if len(got) != 5 || runs != 6 {
		t.Fatalf("effects %v from %d runs", got, runs)
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("%s took effect %d times", id, n)
		}
	}
}
