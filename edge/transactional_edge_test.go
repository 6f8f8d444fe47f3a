package edge_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
)

// refusingTx is a transactional handler that refuses "bad-*" events for
// good and, like pgsink, commits nothing of a call that holds one. Each
// committed call notes how many dead letters were stored before it.
type refusingTx struct {
	dlq func() int

	mu        sync.Mutex
	committed [][]string
	dlqBefore []int
}

func (h *refusingTx) Handle(_ context.Context, evs []event.Event) []error {
	var errs []error
	for i, ev := range evs {
		if len(ev.ID) > 4 && ev.ID[:4] == "bad-" {
			if errs == nil {
				errs = make([]error, len(evs))
			}
			errs[i] = errors.New("refused")
		}
	}
	if errs != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = edge.ErrUnavailable
			}
		}
		return errs
	}
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	n := h.dlq()
	h.mu.Lock()
	h.committed, h.dlqBefore = append(h.committed, ids), append(h.dlqBefore, n)
	h.mu.Unlock()
	return nil
}

func (h *refusingTx) Fence(context.Context, string, int, uint64) (edge.Position, error) {
	return edge.Position{}, nil
}

// TestTransactionalRefusalDeadLetteredBeforeTheRest: an event a
// transactional sink refuses for good is dead-lettered before the rest of
// its batch commits (that commit moves the sink's position past it: a kill
// between the two must not lose it).
func TestTransactionalRefusalDeadLetteredBeforeTheRest(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	ctx := context.Background()
	pr := producer.New(r.js, "local")
	for _, id := range []string{"a", "bad-1", "b"} {
		if _, err := pr.Publish(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	dlq := func() int {
		n, _ := verify.StreamMsgs(ctx, r.js, r.cfg.DLQStream())
		return int(n)
	}
	h := &refusingTx{dlq: dlq}
	c := r.run(t, edge.Options{Name: "edge-r", BatchSize: 10, Retry: edge.Retry{Attempts: 2, Initial: time.Millisecond, Max: 5 * time.Millisecond}}, h)
	coretest.Eventually(t, 20*time.Second, "all done", func() bool { return c.Stats().Done == 3 })
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.committed) != 1 || len(h.committed[0]) != 2 || h.dlqBefore[0] != 1 {
		t.Fatalf("committed %v with %v dead letters stored before", h.committed, h.dlqBefore)
	}
	if s := c.Stats(); s.DLQ != 1 {
		t.Fatalf("dead letters counted %d", s.DLQ)
	}
}
