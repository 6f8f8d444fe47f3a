package sink_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// outputs counts, per ID, the messages on the output subjects (not the
// positions).
func outputs(t *testing.T, js jetstream.JetStream, names streams.Names) map[string]int {
	t.Helper()
	ctx := context.Background()
	c, err := js.OrderedConsumer(ctx, names.OutputStream(), jetstream.OrderedConsumerConfig{FilterSubjects: []string{names.Output(0)[:len(names.Output(0))-1] + "*"}})
	if err != nil {
		t.Fatal(err)
	}
	st, _ := js.Stream(ctx, names.OutputStream())
	info, _ := st.Info(ctx)
	out := map[string]int{}
	if info.State.Msgs == 0 {
		return out
	}
	for {
		m, err := c.Next(jetstream.FetchMaxWait(500 * time.Millisecond))
		if err != nil {
			return out
		}
		out[m.Headers().Get(event.HeaderID)]++
		if m.Headers().Get(event.HeaderMsgID) != "" {
			t.Fatal("an output with Nats-Msg-Id: a repeat in the window would refuse the whole batch")
		}
	}
}

func natsBatch(from, n int, epoch uint64) []event.Event {
	var evs []event.Event
	for i := range n {
		evs = append(evs, event.Event{ID: fmt.Sprintf("id-%d", from+i), Partition: 2, StreamSeq: uint64(from + i), Epoch: epoch, Source: "in@1", Data: []byte("x")})
	}
	return evs
}

// TestPositionedNATSFencesAndCommits: outputs and their position land
// together; a batch handed again (or whose reply was lost) lands once; a
// newer owner's fence refuses the older owner's next batch; a batch larger
// than an atomic batch is committed in several, in order.
func TestPositionedNATSFencesAndCommits(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx := context.Background()
	cfg := streams.Config{Partitions: 4}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	a := &sink.PositionedNATS{JS: js, Names: cfg.Names, MaxBatch: 10}
	if _, err := a.Fence(ctx, "in@1", 2, 1); err != nil {
		t.Fatal(err)
	}
	if errs := a.Handle(ctx, natsBatch(1, 25, 1)); errs != nil {
		t.Fatal(errs)
	}
	if errs := a.Handle(ctx, natsBatch(1, 25, 1)); errs != nil {
		t.Fatal(errs)
	}
	a.ForgetPositions() // as after a lost reply
	if errs := a.Handle(ctx, natsBatch(20, 10, 1)); errs != nil {
		t.Fatal(errs)
	}
	b := &sink.PositionedNATS{JS: js, Names: cfg.Names}
	pos, err := b.Fence(ctx, "in@1", 2, 2)
	if err != nil || pos != (edge.Position{Epoch: 2, Applied: 29}) {
		t.Fatalf("fence %+v %v", pos, err)
	}
	for _, e := range a.Handle(ctx, natsBatch(30, 3, 1)) {
		if !errors.Is(e, edge.ErrSinkFenced) {
			t.Fatalf("the fenced owner: %v", e)
		}
	}
	if errs := b.Handle(ctx, natsBatch(30, 3, 2)); errs != nil {
		t.Fatal(errs)
	}
	// Each position replaces the last (rollup): one message on its subject.
	st, err := js.Stream(ctx, cfg.OutputStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(cfg.OutputPosition("in@1", 2)))
	if n := info.State.Subjects[cfg.OutputPosition("in@1", 2)]; err != nil || n != 1 {
		t.Fatalf("position subject holds %d messages (%v), want 1", n, err)
	}
	got := outputs(t, js, cfg.Names)
	if len(got) != 32 {
		t.Fatalf("%d outputs: %v", len(got), got)
	}
	for id, k := range got {
		if k != 1 {
			t.Fatalf("%s output %d times", id, k)
		}
	}
}

// TestPositionedNATSOversizedOutputHeldBack: an output the stream would
// refuse (a payload at the limit plus the output's headers) fails for good
// and nothing of its call commits (the edge dead-letters it, then hands the
// rest again); the rest then commits without it.
func TestPositionedNATSOversizedOutputHeldBack(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx := context.Background()
	cfg := streams.Config{Partitions: 4, MaxMsgSize: 4096}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	s := &sink.PositionedNATS{JS: js, Names: cfg.Names}
	if _, err := s.Fence(ctx, "in@1", 2, 1); err != nil {
		t.Fatal(err)
	}
	evs := natsBatch(1, 3, 1)
	evs[1].Data = make([]byte, 4000)
	errs := s.Handle(ctx, evs)
	if errs == nil || errs[1] == nil || errors.Is(errs[1], edge.ErrUnavailable) ||
		!errors.Is(errs[0], edge.ErrUnavailable) || !errors.Is(errs[2], edge.ErrUnavailable) {
		t.Fatalf("errors %v", errs)
	}
	if got := outputs(t, js, cfg.Names); len(got) != 0 {
		t.Fatalf("outputs of a held-back call: %v", got)
	}
	if errs := s.Handle(ctx, []event.Event{evs[0], evs[2]}); errs != nil {
		t.Fatal(errs)
	}
	if got := outputs(t, js, cfg.Names); len(got) != 2 {
		t.Fatalf("outputs %v", got)
	}
}
