package edge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

type nopHandler struct{}

func (nopHandler) Handle(context.Context, []event.Event) []error { return nil }

// TestConflictSubjectHeldByForeignBytes: a conflicts stream keeps one
// message per subject, so bytes a producer put on a conflict's subject (a
// JetStream acknowledgement through its reply subject) used to pass for the
// record and hide a real cross-region race. The edge now tells them apart,
// counts them, and records the conflict on another subject.
func TestConflictSubjectHeldByForeignBytes(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx := context.Background()
	other := streams.Config{Names: streams.Names{Region: "other"}, Partitions: 1, Memory: true}
	cfg := streams.Config{Partitions: 1, Memory: true, Peers: []string{"other"}}
	for _, c := range []streams.Config{other, cfg} {
		if err := streams.Provision(ctx, js, c); err != nil {
			t.Fatal(err)
		}
	}
	c, err := New(js, nopHandler{}, Options{Name: "e", Peers: []string{"other"}, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	h := event.HashID("raced-id")
	if _, err := js.Publish(ctx, cfg.Conflict(h.Hex(), "other"), []byte(`{"stream":"onceplane-local-in","seq":3}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := dedupe.DecodeConflict([]byte(`{"stream":"onceplane-local-in","seq":3}`)); !errors.Is(err, dedupe.ErrForeignConflict) {
		t.Fatalf("a JetStream ack decoded as a conflict: %v", err)
	}
	now := time.Now()
	race := func() *dedupe.State {
		st := dedupe.New(dedupe.Options{Window: time.Hour})
		st.Classify([]event.Hash{h}, now, nil)
		st.Apply(1, st.Claim([]event.Hash{h}, "e"), now)
		st.MergeRemote("other", 1, dedupe.Record{Kind: dedupe.KindClaim, Writer: "o", Epoch: 1, Time: now, IDs: []event.Hash{h}}, now)
		return st
	}
	for range 2 { // found again after a rebuild: recorded once
		if err := (&partition{c: c, p: 0, st: race()}).recordConflicts(ctx); err != nil {
			t.Fatal(err)
		}
	}
	s, err := js.Stream(ctx, cfg.ConflictStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var recs []dedupe.ConflictRecord
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if r, err := dedupe.DecodeConflict(m.Data); err == nil {
			recs = append(recs, r)
		}
	}
	if info.State.Msgs != 2 || len(recs) != 1 || recs[0].Hash != h.Hex() || recs[0].Remote.Region != "other" {
		t.Fatalf("conflicts stream: %d messages, records %+v: want the foreign one and one record of the race", info.State.Msgs, recs)
	}
	if got := c.Stats().Conflicts; got != 1 {
		t.Errorf("conflicts counted %d, want 1", got)
	}
	if got := testutil.ToFloat64(c.o.Metrics.ForeignRecords.WithLabelValues("local", "conflicts")); got < 1 {
		t.Errorf("foreign conflict messages counted %v", got)
	}
}
