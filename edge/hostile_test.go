package edge_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/failover"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
)

// TestHostileHeadersCannotStopAPartition: an event without an ID carrying
// Nats-Expected-Stream (true at ingest, false for the DLQ) and one whose
// payload and headers come within a few bytes of the stream's largest
// message are dead-lettered, and the events behind them are handled. The
// letters carry none of the producer's headers as headers.
func TestHostileHeadersCannotStopAPartition(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	c := r.startEdge(t, edge.Options{Name: "edge-h", BatchSize: 8}, filepath.Join(t.TempDir(), "l.jsonl"))
	ctx := context.Background()
	subj := r.cfg.Ingest("x")
	m := nats.NewMsg(subj)
	m.Header.Set("Nats-Expected-Stream", r.cfg.IngestStream())
	m.Header.Set("Nats-Expected-Last-Subject-Sequence", "0")
	m.Data = []byte("no id, control headers")
	if _, err := r.js.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	big := nats.NewMsg(subj)
	big.Header.Set("X-Pad", strings.Repeat("h", 2000))
	big.Data = make([]byte, 1<<20-4096)
	if _, err := r.js.PublishMsg(ctx, big); err != nil {
		t.Fatal(err)
	}
	if _, err := producer.New(r.js, "local").Publish(ctx, "after", []byte("ok")); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 20*time.Second, "both dead-lettered and the next event handled", func() bool {
		return c.Stats().DLQ == 2 && c.Stats().Done == 3
	})
	dead, err := verify.ReadStream(ctx, r.js, r.cfg.DLQStream())
	if err != nil || len(dead) != 2 {
		t.Fatalf("dlq %d letters, %v", len(dead), err)
	}
	for _, d := range dead {
		h := nats.Header(d.Header)
		for k := range h {
			if !strings.HasPrefix(k, "Onceplane-") && k != event.HeaderMsgID {
				t.Errorf("dead letter carries the producer's header %q", k)
			}
		}
		if h.Get(event.HeaderReason) != "missing-id" {
			t.Errorf("reason %q", h.Get(event.HeaderReason))
		}
	}
	if !strings.Contains(nats.Header(dead[0].Header).Get(edge.HeaderOrigHeaders), "Nats-Expected-Stream") {
		t.Errorf("the producer's headers are not kept as data: %v", dead[0].Header)
	}
	if nats.Header(dead[1].Header).Get(edge.HeaderTruncated) != "true" {
		t.Errorf("near-limit letter not marked truncated: %v", nats.Header(dead[1].Header))
	}
	r.checkOnce(t, []string{"after"})
	if err := c.Ready(); err != nil {
		t.Fatalf("not ready: %v", err)
	}
}

// TestStuckPartitionFailsReadiness: a dead letter the DLQ cannot store
// (its stream is gone) holds the partition; readiness says so, and the
// partition moves on once the stream is back.
func TestStuckPartitionFailsReadiness(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	c := r.startEdge(t, edge.Options{Name: "edge-s", StuckAfter: time.Second}, filepath.Join(t.TempDir(), "l.jsonl"))
	coretest.Eventually(t, 10*time.Second, "owned", func() bool { return c.Ready() == nil })
	ctx := context.Background()
	if err := r.js.DeleteStream(ctx, r.cfg.DLQStream()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: r.cfg.Ingest("x"), Data: []byte("no id")}); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 15*time.Second, "readiness to report the stuck partition", func() bool {
		err := c.Ready()
		return err != nil && strings.Contains(err.Error(), "stuck")
	})
	if err := streams.Provision(ctx, r.js, r.cfg); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 15*time.Second, "the letter stored and the partition ready", func() bool {
		return c.Stats().DLQ == 1 && c.Ready() == nil
	})
}

// effectThenPanic records the batch's effects in its ledger, then panics
// the first time it meets an event whose ID starts with "panic-" (alone or
// not: whatever batch the edge makes of the events, the panic happens after
// an effect, and the re-runs that follow do not panic again).
type effectThenPanic struct {
	l        *sink.Ledger
	panicked *atomic.Bool
}

func (h effectThenPanic) Handle(ctx context.Context, evs []event.Event) []error {
	h.l.Handle(ctx, evs)
	for _, ev := range evs {
		if strings.HasPrefix(ev.ID, "panic-") && h.panicked.CompareAndSwap(false, true) {
			panic("boom")
		}
	}
	return nil
}

// TestPanicReRunsAreFlagged: a handler that panics after some of its
// effects happened; re-running each event alone must flag them uncertain, so
// that no extra run is silent.
func TestPanicReRunsAreFlagged(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	ledger := filepath.Join(t.TempDir(), "l.jsonl")
	o := edge.Options{Name: "edge-p", BatchSize: 50, IdleFlush: time.Second}
	// Publish first, so the batch holds them all.
	ctx := context.Background()
	pr := producer.New(r.js, "local")
	ids := []string{"a", "b", "panic-1", "c"}
	for _, id := range ids {
		if _, err := pr.Publish(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	c := r.run(t, o, effectThenPanic{l: r.ledger(t, ledger, o.Name), panicked: new(atomic.Bool)})
	coretest.Eventually(t, 10*time.Second, "all decided", func() bool { return c.Stats().Done == 4 })
	extra := r.checkRuns(t, ids)
	if extra == 0 {
		t.Fatal("no re-run after the panic: the test did not exercise the path")
	}
	if s := c.Stats(); s.UncertainReruns < int64(extra) {
		t.Fatalf("%d flagged re-runs in the ledger, %d counted", extra, s.UncertainReruns)
	}
}

// TestConsumerLostNotFenced: a consumer that disappears while the claim log
// is still this owner's (a core that lost it) is made again, not treated as
// a fence that would stop the partition for good.
func TestConsumerLostNotFenced(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	c := r.startEdge(t, edge.Options{Name: "edge-l"}, filepath.Join(t.TempDir(), "l.jsonl"))
	coretest.Eventually(t, 10*time.Second, "owned", func() bool { return c.Ready() == nil })
	ctx := context.Background()
	s, err := r.js.Stream(ctx, r.cfg.IngestStream())
	if err != nil {
		t.Fatal(err)
	}
	names := s.ConsumerNames(ctx)
	var deleted []string
	for n := range names.Name() {
		deleted = append(deleted, n)
	}
	for _, n := range deleted {
		if err := s.DeleteConsumer(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	if len(deleted) != 1 {
		t.Fatalf("consumers %v", deleted)
	}
	if _, err := producer.New(r.js, "local").Publish(ctx, "later", nil); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 20*time.Second, "the event after the loss handled", func() bool { return c.Stats().Done == 1 })
	if f := c.Stats().Fenced; f != 0 {
		t.Fatalf("fenced %d times by its own lost consumer", f)
	}
	r.checkOnce(t, []string{"later"})
}

// TestConsumerNamesNeverRepeat: once an idle partition's claim log has aged
// out entirely, the next takeover must not reuse an earlier ownership's
// consumer (epochs restarted at 1 did, and two owners could share it).
func TestConsumerNamesNeverRepeat(t *testing.T) {
	window := time.Second
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1, Window: window, IngestMaxAge: window})
	ctx := context.Background()
	consumers := func() []string {
		s, err := r.js.Stream(ctx, r.cfg.IngestStream())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		names := s.ConsumerNames(ctx)
		for n := range names.Name() {
			out = append(out, n)
		}
		return out
	}
	l, err := claimlog.Open(ctx, r.js, r.cfg.Names)
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for round := range 2 {
		o := edge.Options{Name: fmt.Sprintf("edge-%d", round), Window: window}
		c := newEdge(t, r.js, edge.HandlerFunc(func(context.Context, event.Event) error { return nil }), o)
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = c.Run(cctx) }()
		coretest.Eventually(t, 10*time.Second, "owned", func() bool { return slices.Equal(c.Owned(), []int{0}) })
		names := consumers()
		if len(names) != 1 {
			t.Fatalf("round %d: consumers %v", round, names)
		}
		if slices.Contains(seen, names[0]) {
			t.Fatalf("round %d reuses consumer %s after the claim log aged out", round, names[0])
		}
		seen = append(seen, names[0])
		cancel()
		<-done
		coretest.Eventually(t, 30*time.Second, "the claim log to age out", func() bool {
			last, err := l.LastSeq(ctx, 0)
			return err == nil && last == 0
		})
	}
}

// TestInvalidOptionsRefused: options no region could honour are refused by
// New, each naming its field.
func TestInvalidOptionsRefused(t *testing.T) {
	h := edge.HandlerFunc(func(context.Context, event.Event) error { return nil })
	for _, c := range []struct {
		o     edge.Options
		field string
	}{
		{edge.Options{Region: "US"}, "Region"},
		{edge.Options{Region: "us.east"}, "Region"},
		{edge.Options{Name: strings.Repeat("n", 256)}, "Name"},
		{edge.Options{Region: "a", Peers: []string{"a"}}, "Peers"},
		{edge.Options{Peers: []string{"local"}}, "Peers"}, // the zero Region is "local"
		{edge.Options{Region: "a", Peers: []string{"b", "b"}}, "Peers"},
		{edge.Options{Peers: []string{"b>"}}, "Peers"},
		{edge.Options{Partitions: []int{0, 1, 0}}, "Partitions"},
		{edge.Options{Partitions: []int{-1}}, "Partitions"},
		{edge.Options{BatchSize: -1}, "BatchSize"},
		{edge.Options{Window: -time.Hour}, "Window"},
		{edge.Options{StuckAfter: -time.Second}, "StuckAfter"},
		{edge.Options{ExpectedIDs: -5}, "ExpectedIDs"},
		{edge.Options{Region: "a", Peers: []string{"b"}, Host: "c"}, "Host"},
		{edge.Options{Region: "a", Peers: []string{"b"}, Host: "b", Strict: true, IsolatedAfter: time.Second, Standby: "b"}, "IsolatedAfter"},
	} {
		c0, err := edge.New(nil, h, c.o)
		if err == nil || c0 != nil {
			t.Errorf("%+v accepted", c.o)
			continue
		}
		if !strings.Contains(err.Error(), c.field+":") {
			t.Errorf("%+v: %v does not name %s", c.o, err, c.field)
		}
	}
	if _, err := edge.New(nil, h, edge.Options{Region: "us-east", Peers: []string{"eu-west"}, Partitions: []int{0, 3}}); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
}

// TestOptionsTheStreamsCannotHonourRefused: an edge window other than the
// streams' (a longer one lets records age out before their IDs) and a batch
// whose claim record would exceed the claim stream's largest message are
// refused at start.
func TestOptionsTheStreamsCannotHonourRefused(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1})
	h := edge.HandlerFunc(func(context.Context, event.Event) error { return nil })
	for _, o := range []edge.Options{{Window: 72 * time.Hour}, {BatchSize: 70_000}} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := newEdge(t, r.js, h, o).Run(ctx)
		cancel()
		if err == nil {
			t.Fatalf("%+v started", o)
		}
		t.Logf("refused: %v", err)
	}
}

// TestShutdownBoundedWithoutCore: an edge whose core is gone returns from
// Run within its shutdown grace, twice over at most, whatever the core does.
func TestShutdownBoundedWithoutCore(t *testing.T) {
	n := coretest.Start(t)
	nc, js := coretest.Connect(t, n.ClientURL())
	_ = nc
	ctx := context.Background()
	cfg := streams.Config{Partitions: 4, IngestDuplicates: -1}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	slow := edge.HandlerFunc(func(ctx context.Context, ev event.Event) error {
		<-ctx.Done()
		return ctx.Err()
	})
	c := newEdge(t, js, slow, edge.Options{Name: "edge-x", ShutdownGrace: time.Second, Logger: coretest.Quiet})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	coretest.Eventually(t, 10*time.Second, "owned", func() bool { return len(c.Owned()) == 4 })
	for i := range 8 {
		if _, err := producer.New(js, "local").Publish(ctx, fmt.Sprintf("hang-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	n.Shutdown()
	cancel()
	t0 := time.Now()
	select {
	case <-done:
		t.Logf("returned %v after the cancel", time.Since(t0))
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not return within twice the shutdown grace after its core went away")
	}
}

// fakeMembership is a membership view the test sets by hand.
type fakeMembership struct {
	mu      sync.Mutex
	names   []string
	changes chan struct{}
}

func (f *fakeMembership) Names() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.names)
}

func (f *fakeMembership) Changes() <-chan struct{} { return f.changes }

func (f *fakeMembership) set(names ...string) {
	f.mu.Lock()
	f.names = names
	f.mu.Unlock()
	select {
	case f.changes <- struct{}{}:
	default:
	}
}

// TestReleaseThenRetake: a member joins (taking p0 by assignment) and dies
// 100 ms later while this edge still finishes its batch in hand. The edge
// must not run the partition twice at once, and must end up owning it,
// ready, with every event handled once.
func TestReleaseThenRetake(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	other := ""
	for i := 0; other == ""; i++ {
		if n := fmt.Sprintf("z%d", i); failover.AssignSome([]string{"edge-r", n}, 1, nil)[0] == n {
			other = n
		}
	}
	m := &fakeMembership{names: []string{"edge-r"}, changes: make(chan struct{}, 1)}
	var mu sync.Mutex
	inFlight, overlap, blocked := 0, false, false
	gate := make(chan struct{}) // holds the first handler call: the batch in hand during the flip
	slowSink := edge.HandlerFunc(func(ctx context.Context, ev event.Event) error {
		mu.Lock()
		inFlight++
		if inFlight > 1 {
			overlap = true
		}
		first := !blocked
		blocked = true
		mu.Unlock()
		if first {
			<-gate
		}
		mu.Lock()
		inFlight--
		mu.Unlock()
		return nil
	})
	c := r.startEdgeChain(t, edge.Options{Name: "edge-r", Membership: m, BatchSize: 20, HandoffDelay: 10 * time.Millisecond, ShutdownGrace: time.Minute}, filepath.Join(t.TempDir(), "l.jsonl"), slowSink)
	coretest.Eventually(t, 10*time.Second, "owned", func() bool { return slices.Equal(c.Owned(), []int{0}) })
	ctx := context.Background()
	pr := producer.New(r.js, "local")
	var ids []string
	for i := range 200 {
		id := fmt.Sprintf("r-%d", i)
		ids = append(ids, id)
		if _, err := pr.Publish(ctx, id, nil); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, 10*time.Second, "a batch in hand", func() bool { mu.Lock(); defer mu.Unlock(); return blocked })
	m.set("edge-r", other)
	coretest.Eventually(t, 5*time.Second, "the release to start", func() bool { return len(c.Owned()) == 0 })
	m.set("edge-r")
	// The old run still holds its batch: no second run may start handling.
	coretest.Never(t, 3*time.Second, "a second run of the partition handling events", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return overlap
	})
	close(gate)
	coretest.Eventually(t, 30*time.Second, "owned, ready, every event handled", func() bool {
		return slices.Equal(c.Owned(), []int{0}) && c.Ready() == nil && c.Stats().Done >= 200
	})
	mu.Lock()
	defer mu.Unlock()
	if overlap {
		t.Fatal("two runs of the partition handled events at once")
	}
	r.checkRuns(t, ids)
}

var _ = errors.New

// TestEdgeClocksSkewedByHours: owners whose clocks are hours ahead and
// behind take a partition over from each other inside a one-hour window;
// every re-send is still a duplicate, with the Bloom pre-check on and off.
func TestEdgeClocksSkewedByHours(t *testing.T) {
	for _, noBloom := range []bool{false, true} {
		t.Run(fmt.Sprintf("noBloom=%v", noBloom), func(t *testing.T) {
			window := time.Hour
			r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1, Window: window})
			ctx := context.Background()
			pr := producer.New(r.js, "local")
			var last time.Time
			send := func(ids ...string) {
				// Past the ingest layer's 100 ms Nats-Msg-Id window, so each
				// copy reaches the edge.
				coretest.Eventually(t, time.Second, "ingest window to pass", func() bool { return time.Since(last) > 200*time.Millisecond })
				defer func() { last = time.Now() }()
				for _, id := range ids {
					if _, err := pr.Publish(ctx, id, nil); err != nil {
						t.Fatal(err)
					}
				}
			}
			var ids []string
			for round, skew := range []time.Duration{3 * time.Hour, -3 * time.Hour, 7 * time.Hour, -30 * time.Hour} {
				dir := t.TempDir()
				o := edge.Options{Name: fmt.Sprintf("edge-%d", round), Window: window, NoBloom: noBloom,
					Clock: func() time.Time { return time.Now().Add(skew) }}
				c := r.startEdge(t, o, filepath.Join(dir, "l.jsonl"))
				id := fmt.Sprintf("id-%d", round)
				ids = append(ids, id)
				send(ids...) // the new one, and every earlier one again
				coretest.Eventually(t, 10*time.Second, "decided", func() bool { return c.Stats().Done == int64(len(ids)) })
				if s := c.Stats(); s.First != 1 {
					t.Fatalf("round %d (clock %v): %d first-time decisions, want 1 (paths %v)", round, skew, s.First, s.ByPath)
				}
				send(id)
				coretest.Eventually(t, 10*time.Second, "re-send decided", func() bool { return c.Stats().Done == int64(len(ids))+1 })
				if s := c.Stats(); s.First != 1 {
					t.Fatalf("round %d (clock %v): own claim forgotten at once (paths %v)", round, skew, s.ByPath)
				}
				r.stopEdges(t)
			}
			r.checkRuns(t, ids)
		})
	}
}

// TestSplitViewDoesNotFlap: two edges whose views never meet (each sees only
// itself) both want p0. One fences the other; the fenced one must not take
// it back every RefenceDelay while the winner is consuming (each take is a
// full replay and fences the other in turn).
func TestSplitViewDoesNotFlap(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	var mu sync.Mutex
	acquired := 0
	count := func(e edge.OwnershipEvent) {
		if e.Change == "acquired" {
			mu.Lock()
			acquired++
			mu.Unlock()
		}
	}
	dir := t.TempDir()
	for _, name := range []string{"edge-a", "edge-b"} {
		m := &fakeMembership{names: []string{name}, changes: make(chan struct{}, 1)}
		r.startEdge(t, edge.Options{Name: name, Membership: m, RefenceDelay: 500 * time.Millisecond, OnOwnership: count}, filepath.Join(dir, name+".jsonl"))
	}
	coretest.Eventually(t, 10*time.Second, "an owner", func() bool { mu.Lock(); defer mu.Unlock(); return acquired >= 1 })
	coretest.Never(t, 8*time.Second, "ownership flapping between split views", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return acquired > 3
	})
	pr := producer.New(r.js, "local")
	for i := range 20 {
		if _, err := pr.Publish(context.Background(), fmt.Sprintf("s-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	var ids []string
	for i := range 20 {
		ids = append(ids, fmt.Sprintf("s-%d", i))
	}
	coretest.Eventually(t, 20*time.Second, "every event handled", func() bool {
		n, _ := verify.StreamMsgs(context.Background(), r.js, r.cfg.OutputStream())
		return n >= 20
	})
	r.checkRuns(t, ids)
}

// TestReadyAfterHandingOver: a partition this edge was fenced from and that
// membership now gives another edge does not hold its readiness down.
func TestReadyAfterHandingOver(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 2, IngestDuplicates: -1})
	m := &fakeMembership{names: []string{"edge-y"}, changes: make(chan struct{}, 1)}
	c := r.startEdge(t, edge.Options{Name: "edge-y", Membership: m, HandoffDelay: 10 * time.Millisecond}, filepath.Join(t.TempDir(), "l.jsonl"))
	coretest.Eventually(t, 10*time.Second, "both owned", func() bool { return len(c.Owned()) == 2 })
	// Another owner takes p0 over behind this edge's back (a split view): p0 is fenced here.
	other := newEdge(t, r.js, edge.HandlerFunc(func(context.Context, event.Event) error { return nil }),
		edge.Options{Name: "edge-z", Partitions: []int{0}, Logger: coretest.Quiet})
	octx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = other.Run(octx) }()
	defer func() { cancel(); <-done }()
	coretest.Eventually(t, 10*time.Second, "p0 taken by the other owner", func() bool { return slices.Equal(other.Owned(), []int{0}) })
	coretest.Eventually(t, 10*time.Second, "p0 fenced here", func() bool {
		err := c.Ready()
		return err != nil && strings.Contains(err.Error(), "p0 fenced")
	})
	// Membership now agrees: p0 belongs to edge-z.
	name := ""
	for i := 0; name == ""; i++ {
		n := fmt.Sprintf("edge-z%d", i)
		if a := failover.AssignSome([]string{"edge-y", n}, 2, nil); a[0] == n && a[1] == "edge-y" {
			name = n
		}
	}
	m.set("edge-y", name)
	coretest.Eventually(t, 15*time.Second, "ready with p1 only", func() bool {
		return c.Ready() == nil && slices.Equal(c.Owned(), []int{1})
	})
}

// TestStartsBeforeItsCore: an edge started while its core is down (or still
// provisioning) waits for it and owns its partitions once the streams exist,
// instead of exiting.
func TestStartsBeforeItsCore(t *testing.T) {
	port := coretest.FreePorts(t, 1)[0]
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	nc, err := nats.Connect(url, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c := newEdge(t, js, edge.HandlerFunc(func(context.Context, event.Event) error { return nil }), edge.Options{Name: "edge-early", Logger: coretest.Quiet})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	coretest.Never(t, time.Second, "Run to give up without a core", func() bool { return len(done) > 0 })
	n := coretest.StartIn(t, t.TempDir(), port)
	_, ajs := coretest.Connect(t, n.ClientURL())
	pctx, pcancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer pcancel()
	if err := streams.Provision(pctx, ajs, streams.Config{Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 30*time.Second, "partitions owned once the core is up", func() bool { return len(c.Owned()) == 2 })
}

// TestPausedConsumerFailsReadiness is issue 11's finding 2, last part: a
// probe paused an edge's consumer and the edge did not notice while its
// pending grew. Edges can no longer pause consumers, but an operator can:
// the partition now reports itself stuck until the consumer is resumed.
func TestPausedConsumerFailsReadiness(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 1, IngestDuplicates: -1})
	c := r.startEdge(t, edge.Options{Name: "edge-p", StuckAfter: time.Second, IdleFlush: 100 * time.Millisecond}, filepath.Join(t.TempDir(), "l.jsonl"))
	coretest.Eventually(t, 10*time.Second, "owned", func() bool { return c.Ready() == nil })
	ctx := context.Background()
	var name string
	coretest.Eventually(t, 10*time.Second, "the partition's consumer", func() bool {
		s, err := r.js.Stream(ctx, r.cfg.IngestStream())
		if err != nil {
			return false
		}
		names := s.ConsumerNames(ctx)
		for n := range names.Name() {
			name = n
		}
		return name != ""
	})
	if _, err := r.js.PauseConsumer(ctx, r.cfg.IngestStream(), name, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.js.Publish(ctx, r.cfg.Ingest("held"), nil, jetstream.WithMsgID("held")); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 15*time.Second, "readiness to report the paused consumer", func() bool {
		err := c.Ready()
		return err != nil && strings.Contains(err.Error(), "paused")
	})
	if _, err := r.js.ResumeConsumer(ctx, r.cfg.IngestStream(), name); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 15*time.Second, "the event handled and the partition ready", func() bool {
		return c.Stats().Done == 1 && c.Ready() == nil
	})
}
