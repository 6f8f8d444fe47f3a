package pgsink_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/sink/pgsink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/pgtest"
)

const src = "onceplane-local-ingest@1"

func open(t *testing.T, db *pgtest.Server, o pgsink.Options) *pgsink.Sink {
	t.Helper()
	o.URL = db.URL
	s, err := pgsink.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// batch is events id-<from>..id-<from+n-1> at sequences from..from+n-1.
func batch(from, n int, epoch uint64) []event.Event {
	var evs []event.Event
	for i := range n {
		seq := from + i
		evs = append(evs, event.Event{ID: fmt.Sprintf("id-%d", seq), Tenant: event.DefaultTenant, Partition: 0, StreamSeq: uint64(seq),
			Epoch: epoch, Source: src, Data: []byte(fmt.Sprintf(`{"n":%d}`, seq)), Headers: map[string][]string{"X": {"y"}}})
	}
	return evs
}

// applies returns each ID's apply counter in the default table.
func applies(t *testing.T, db *pgtest.Server) map[string]int {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, "SELECT id, applies FROM onceplane_events")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for rows.Next() {
		var id string
		var n int
		if err := rows.Scan(&id, &n); err != nil {
			t.Fatal(err)
		}
		out[id] = n
	}
	return out
}

func allNil(errs []error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// TestFenceRefusesAStaleOwner: after a takeover's fence, the last owner's
// batches are refused (ErrSinkFenced, nothing applied), the new owner's
// applied; the position is the highest sequence applied.
func TestFenceRefusesAStaleOwner(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db, pgsink.Options{})
	ctx := context.Background()
	if _, err := s.Fence(ctx, src, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := allNil(s.Handle(ctx, batch(1, 3, 1))); err != nil {
		t.Fatal(err)
	}
	pos, err := s.Fence(ctx, src, 0, 2)
	if err != nil || pos != (edge.Position{Epoch: 2, Applied: 3}) {
		t.Fatalf("fence: %+v %v", pos, err)
	}
	errs := s.Handle(ctx, batch(4, 2, 1))
	for _, e := range errs {
		if !errors.Is(e, edge.ErrSinkFenced) {
			t.Fatalf("stale owner's batch: %v", errs)
		}
	}
	if _, err := s.Fence(ctx, src, 0, 1); !errors.Is(err, edge.ErrSinkFenced) {
		t.Fatalf("a stale fence: %v", err)
	}
	if err := allNil(s.Handle(ctx, batch(4, 2, 2))); err != nil {
		t.Fatal(err)
	}
	got := applies(t, db)
	if len(got) != 5 {
		t.Fatalf("applied %v", got)
	}
	if p, _ := s.Position(ctx, src, 0); p != (edge.Position{Epoch: 2, Applied: 5}) {
		t.Fatalf("position %+v", p)
	}
}

// TestRetryAfterALostCommitAppliesOnce: a batch handed again (its commit's
// reply lost) is not applied again.
func TestRetryAfterALostCommitAppliesOnce(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db, pgsink.Options{})
	ctx := context.Background()
	if _, err := s.Fence(ctx, src, 0, 1); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := allNil(s.Handle(ctx, batch(1, 10, 1))); err != nil {
			t.Fatal(err)
		}
	}
	// A batch that overlaps the applied position applies only what is new.
	if err := allNil(s.Handle(ctx, batch(5, 10, 1))); err != nil {
		t.Fatal(err)
	}
	got := applies(t, db)
	if len(got) != 14 {
		t.Fatalf("%d rows", len(got))
	}
	for id, n := range got {
		if n != 1 {
			t.Fatalf("%s applied %d times", id, n)
		}
	}
}

// TestRefusedEventRollsBackItsBatch: an event the user's statement refuses
// (a CHECK constraint) fails for good, the rest of its batch fails as
// unavailable, and nothing of the batch commits: the position never covers
// an event that was not applied. Handed again without it (the edge
// dead-letters it first), the others are applied.
func TestRefusedEventRollsBackItsBatch(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `CREATE TABLE charges (id text PRIMARY KEY, amount int NOT NULL CONSTRAINT positive CHECK (amount > 0))`); err != nil {
		t.Fatal(err)
	}
	s := open(t, db, pgsink.Options{Statement: `INSERT INTO charges (id, amount) VALUES (@id, (convert_from(@payload, 'UTF8')::jsonb->>'amount')::int)`})
	if _, err := s.Fence(ctx, src, 0, 1); err != nil {
		t.Fatal(err)
	}
	evs := batch(1, 3, 1)
	for i := range evs {
		evs[i].Data = []byte(`{"amount": 5}`)
	}
	evs[1].Data = []byte(`{"amount": -5}`)
	errs := s.Handle(ctx, evs)
	if errs == nil || errs[1] == nil || errors.Is(errs[1], edge.ErrUnavailable) ||
		!errors.Is(errs[0], edge.ErrUnavailable) || !errors.Is(errs[2], edge.ErrUnavailable) {
		t.Fatalf("errors %v", errs)
	}
	var charges int
	c.QueryRow(ctx, "SELECT count(*) FROM charges").Scan(&charges)
	if p, _ := s.Position(ctx, src, 0); charges != 0 || p.Applied != 0 {
		t.Fatalf("a batch with a refused event committed: %d charges, position %+v", charges, p)
	}
	if err := allNil(s.Handle(ctx, []event.Event{evs[0], evs[2]})); err != nil {
		t.Fatal(err)
	}
	c.QueryRow(ctx, "SELECT count(*) FROM charges").Scan(&charges)
	if p, _ := s.Position(ctx, src, 0); charges != 2 || p.Applied != 3 {
		t.Fatalf("%d charges, position %+v", charges, p)
	}
}

// TestPausedOwnerIsRefusedAfterATakeover: an owner paused inside its
// batch's transaction (after its effects, before its commit) holds the
// position row; the next owner's fence waits until PostgreSQL ends the
// idle transaction, then reads a position without the paused batch, whose
// commit then fails and whose retry is refused. Nothing of it lands.
func TestPausedOwnerIsRefusedAfterATakeover(t *testing.T) {
	db := pgtest.Start(t)
	ctx := context.Background()
	old := open(t, db, pgsink.Options{IdleInTransaction: 500 * time.Millisecond})
	next := open(t, db, pgsink.Options{IdleInTransaction: 500 * time.Millisecond})
	if _, err := old.Fence(ctx, src, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := allNil(old.Handle(ctx, batch(1, 2, 1))); err != nil {
		t.Fatal(err)
	}
	paused, resume := make(chan struct{}), make(chan struct{})
	old.SetBeforeCommit(func() { close(paused); <-resume })
	done := make(chan []error, 1)
	go func() { done <- old.Handle(ctx, batch(3, 2, 1)) }()
	<-paused
	old.SetBeforeCommit(nil)
	t0 := time.Now()
	pos, err := next.Fence(ctx, src, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the fence waited %s for the paused transaction", time.Since(t0).Round(time.Millisecond))
	if pos.Applied != 2 {
		t.Fatalf("the fence read %+v: the paused batch landed", pos)
	}
	close(resume)
	errs := <-done
	if errs == nil || !errors.Is(errs[0], edge.ErrUnavailable) {
		t.Fatalf("the paused commit: %v", errs)
	}
	// The edge retries it: refused for good.
	if errs := old.Handle(ctx, batch(3, 2, 1)); errs == nil || !errors.Is(errs[0], edge.ErrSinkFenced) {
		t.Fatalf("the retry: %v", errs)
	}
	if got := applies(t, db); len(got) != 2 {
		t.Fatalf("applied %v", got)
	}
}

// TestDatabaseDownThenBack: with the database stopped, batches and fences
// fail as unavailable (retried by the edge, never dead-lettered); once it
// is back, the same sink applies them.
func TestDatabaseDownThenBack(t *testing.T) {
	db := pgtest.Start(t)
	s := open(t, db, pgsink.Options{Timeout: 2 * time.Second})
	ctx := context.Background()
	if _, err := s.Fence(ctx, src, 0, 1); err != nil {
		t.Fatal(err)
	}
	db.Stop()
	for _, e := range s.Handle(ctx, batch(1, 3, 1)) {
		if !errors.Is(e, edge.ErrUnavailable) {
			t.Fatalf("with the database down: %v", e)
		}
	}
	if _, err := s.Fence(ctx, src, 0, 2); !errors.Is(err, edge.ErrUnavailable) {
		t.Fatalf("fence with the database down: %v", err)
	}
	if err := db.Start(); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 30*time.Second, "the batch applied once the database is back", func() bool {
		return allNil(s.Handle(ctx, batch(1, 3, 1))) == nil
	})
	if got := applies(t, db); len(got) != 3 {
		t.Fatalf("applied %v", got)
	}
}

// TestOpenedByManyAtOnce: edges starting together all open the sink (a
// CREATE TABLE IF NOT EXISTS racing another fails in PostgreSQL).
func TestOpenedByManyAtOnce(t *testing.T) {
	db := pgtest.Start(t)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			s, err := pgsink.Open(context.Background(), pgsink.Options{URL: db.URL})
			if err == nil {
				s.Close()
			}
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}
