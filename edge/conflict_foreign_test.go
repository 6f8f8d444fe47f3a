package edge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

type nopHandler struct{}

func (nopHandler) Handle(context.Context, []event.Event) []error { return nil }

// conflictRegion is a one-partition region with peer "other" on a server
// of its own, and an edge of it (not running: tests call its partitions).
func conflictRegion(t *testing.T) (jetstream.JetStream, streams.Config, *Consumer) {
	t.Helper()
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	other := streams.Config{Names: streams.Names{Region: "other"}, Partitions: 1, Memory: true}
	cfg := streams.Config{Partitions: 1, Memory: true, Peers: []string{"other"}}
	for _, c := range []streams.Config{other, cfg} {
		if err := streams.Provision(context.Background(), js, c); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(js, nopHandler{}, Options{Name: "e", Peers: []string{"other"}, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	return js, cfg, c
}

// TestConflictSubjectHeldByForeignBytes: a conflicts stream keeps one
// message per subject, so bytes a producer put on a conflict's subject (a
// JetStream acknowledgement through its reply subject) used to pass for the
// record and hide a real cross-region race. The edge now tells them apart,
// counts them, and records the conflict on another subject.
func TestConflictSubjectHeldByForeignBytes(t *testing.T) {
	ctx := context.Background()
	js, cfg, c := conflictRegion(t)
	h := event.HashID("raced-id")
	now := time.Now()
	race := func() *dedupe.State {
		st := dedupe.New(dedupe.Options{Window: time.Hour})
		st.Classify([]event.Hash{h}, now, nil)
		st.Apply(1, st.Claim([]event.Hash{h}, "e"), now)
		st.MergeRemote("other", 1, dedupe.Record{Kind: dedupe.KindClaim, Writer: "o", Epoch: 1, Time: now, IDs: []event.Hash{h}}, now)
		return st
	}
	gen := race().Conflicts()[0].ClaimGen
	if _, err := js.Publish(ctx, cfg.Conflict(h.Hex(), "other", gen), []byte(`{"stream":"onceplane-local-in","seq":3}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := dedupe.DecodeConflict([]byte(`{"stream":"onceplane-local-in","seq":3}`)); !errors.Is(err, dedupe.ErrForeignConflict) {
		t.Fatalf("a JetStream ack decoded as a conflict: %v", err)
	}
	for range 2 { // found again after a rebuild: recorded once
		if err := (&partition{c: c, p: 0, st: race()}).recordConflicts(ctx); err != nil {
			t.Fatal(err)
		}
	}
	msgs, recs := conflictRecords(t, js, cfg.ConflictStream())
	if msgs != 2 || len(recs) != 1 || recs[0].Hash != h.Hex() || recs[0].Remote.Region != "other" {
		t.Fatalf("conflicts stream: %d messages, records %+v: want the foreign one and one record of the race", msgs, recs)
	}
	if got := c.Stats().Conflicts; got != 1 {
		t.Errorf("conflicts counted %d, want 1", got)
	}
	if got := testutil.ToFloat64(c.o.Metrics.ForeignRecords.WithLabelValues("local", "conflicts")); got < 1 {
		t.Errorf("foreign conflict messages counted %v", got)
	}
}

// conflictRecords reads a conflicts stream: how many messages it holds and
// the conflict records among them.
func conflictRecords(t *testing.T, js jetstream.JetStream, stream string) (uint64, []dedupe.ConflictRecord) {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recs []dedupe.ConflictRecord
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := dedupe.DecodeConflict(m.Data); err == nil {
			recs = append(recs, r)
		}
	}
	return info.State.Msgs, recs
}

// TestSecondRaceRecorded: a conflict's subject used to be the ID and the
// peer only, so an ID that raced again a window later (a daily recurring
// ID) was refused as "already recorded": one record for every race of the
// ID. Each race is recorded now, in either order of the two claims, and a
// race found again by a rebuild is still recorded once.
func TestSecondRaceRecorded(t *testing.T) {
	ctx := context.Background()
	js, cfg, c := conflictRegion(t)
	h := event.HashID("daily-id")
	day1 := time.Now().Add(-25 * time.Hour)
	day2 := day1.Add(24 * time.Hour)
	remote := func(at time.Time) dedupe.Record {
		return dedupe.Record{Kind: dedupe.KindClaim, Writer: "o", Epoch: 1, Time: at, IDs: []event.Hash{h}}
	}
	// Day 1: claimed here first, the other region's claim arrives later.
	localFirst := func() *dedupe.State {
		st := dedupe.New(dedupe.Options{Window: time.Hour})
		st.Classify([]event.Hash{h}, day1, nil)
		st.Apply(1, st.Claim([]event.Hash{h}, "e"), day1)
		st.MergeRemote("other", 1, remote(day1), day1)
		return st
	}
	// Day 2: the other region's claim is merged first, this region's
	// claim (by an owner that had not seen it yet) is read back after.
	remoteFirst := func() *dedupe.State {
		st := dedupe.New(dedupe.Options{Window: time.Hour})
		st.MergeRemote("other", 2, remote(day2), day2)
		st.Apply(2, dedupe.Record{Kind: dedupe.KindClaim, Writer: "e", Epoch: 1, Time: day2, IDs: []event.Hash{h}}, day2)
		return st
	}
	for range 2 { // each found again after a rebuild
		for _, race := range []func() *dedupe.State{localFirst, remoteFirst} {
			if err := (&partition{c: c, p: 0, st: race()}).recordConflicts(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	msgs, recs := conflictRecords(t, js, cfg.ConflictStream())
	if msgs != 2 || len(recs) != 2 || recs[0].ClaimGen == recs[1].ClaimGen {
		t.Fatalf("conflicts stream: %d messages, records %+v: want one record per race", msgs, recs)
	}
	if got := c.Stats().Conflicts; got != 2 {
		t.Errorf("conflicts counted %d, want 2", got)
	}
}

// TestSkewedReplayRecordsTheRaceOnce: a claim applied live is timed by its
// record; read back, by the time the claim stream stored it when that is
// earlier (the ingest leader's clock ahead of the claim leader's). Across
// a slice boundary the two tag the claim with different generations, and
// the race was recorded twice, once by the live owner and once by the
// owner that rebuilt the partition. Either order records it once.
func TestSkewedReplayRecordsTheRaceOnce(t *testing.T) {
	ctx := context.Background()
	const window = time.Hour // 8 slices of 7.5 minutes
	slice := window / 8
	boundary := time.Now().Add(-time.Minute).Truncate(slice)
	claimed, stored := boundary.Add(time.Second), boundary.Add(-time.Second)
	for _, order := range []string{"live first", "replay first"} {
		js, cfg, c := conflictRegion(t)
		h := event.HashID("skewed-" + order)
		claim := dedupe.Record{Kind: dedupe.KindClaim, Writer: "e", Epoch: 1, Time: claimed, IDs: []event.Hash{h}}
		race := func(storedAt time.Time) *dedupe.State {
			st := dedupe.New(dedupe.Options{Window: window})
			st.Apply(1, claim, storedAt) // zero: the owner's own append
			st.MergeRemote("other", 1, dedupe.Record{Kind: dedupe.KindClaim, Writer: "o", Epoch: 1, Time: claimed, IDs: []event.Hash{h}}, claimed)
			return st
		}
		live, replay := race(time.Time{}), race(stored)
		if order == "replay first" {
			live, replay = replay, live
		}
		for _, st := range []*dedupe.State{live, replay} {
			if err := (&partition{c: c, p: 0, st: st}).recordConflicts(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if msgs, recs := conflictRecords(t, js, cfg.ConflictStream()); msgs != 1 || len(recs) != 1 {
			t.Errorf("%s: %d messages, records %+v: want the race recorded once", order, msgs, recs)
		}
		if got := c.Stats().Conflicts; got != 1 {
			t.Errorf("%s: conflicts counted %d, want 1", order, got)
		}
	}
}
