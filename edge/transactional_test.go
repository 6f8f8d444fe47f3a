package edge

import (
	"context"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

// panickyTx is a transactional handler whose first call panics.
type panickyTx struct{ calls [][]event.Event }

func (h *panickyTx) Handle(_ context.Context, evs []event.Event) []error {
	h.calls = append(h.calls, append([]event.Event(nil), evs...))
	if len(h.calls) == 1 {
		panic("boom")
	}
	return nil
}

func (h *panickyTx) Fence(context.Context, string, int, uint64) (Position, error) {
	return Position{}, nil
}

// TestTransactionalPanicRetriesTheWholeCall: a transactional handler is
// never called one event at a time after a panic (its position is a
// high-water mark: a later event alone would cover an earlier one that
// never ran), and nothing is flagged.
func TestTransactionalPanicRetriesTheWholeCall(t *testing.T) {
	h := &panickyTx{}
	evs := []event.Event{{ID: "a", StreamSeq: 10}, {ID: "b", StreamSeq: 11}, {ID: "c", StreamSeq: 12}}
	final, res, err := runHandler(context.Background(), h, evs, Retry{Attempts: 5, Initial: time.Millisecond, Max: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range final {
		if e != nil {
			t.Fatalf("event %d failed: %v", i, e)
		}
	}
	if len(h.calls) != 2 || len(h.calls[1]) != 3 {
		t.Fatalf("calls %v", h.calls)
	}
	if res.flagged != 0 || evs[0].Uncertain || h.calls[1][0].Uncertain {
		t.Fatalf("flagged %d", res.flagged)
	}
}
