// Package edge is the onceplane consumer library: it owns partitions of a
// region's ingest stream, decides per event "first time or duplicate" with the
// dedupe core, claims first-time IDs in the fenced claim log with one
// conditional append per batch, runs the handler, dead-letters what cannot
// be processed, and acknowledges.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// ErrFenced matches (errors.Is) every FencedError: a partition whose claim
// log another owner took over.
var ErrFenced = claimlog.ErrFenced

// ErrConsumerDeleted is the Cause of a FencedError found by the partition's
// consumer disappearing (a newer owner deletes older owners' consumers
// after its takeover record), with the claim log moved on.
var ErrConsumerDeleted = errors.New("consumer deleted and the claim log moved on")

// FencedError reports a partition this edge stopped owning because another
// owner's record follows its own in the claim log.
type FencedError struct {
	Partition int
	// Cause is how it was found: an append refused by the claim log's
	// compare-and-set (wrapping claimlog.ErrFenced), or ErrConsumerDeleted.
	Cause error
}

func (e *FencedError) Error() string { return fmt.Sprintf("p%d fenced: %v", e.Partition, e.Cause) }

// Unwrap returns the cause.
func (e *FencedError) Unwrap() error { return e.Cause }

// Is makes every FencedError match ErrFenced, whatever its cause.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// Stats are a Consumer's running totals.
type Stats struct {
	In, First, Duplicates, DLQ           int64
	Done                                 int64                  // events whose batch finished: handled or dead-lettered, and acked
	ByPath                               [dedupe.NumPaths]int64 // indexed by dedupe.Path
	Uncertain, UncertainReruns           int64
	ClaimAppends, HandlerRetries, Fenced int64
	Owned                                int64
	// RemoteMerged counts other regions' claim records merged; Conflicts the
	// IDs this edge recorded as claimed here and in another region.
	RemoteMerged, Conflicts int64
}

// Add adds x's totals to s (summing several edges).
func (s *Stats) Add(x Stats) {
	s.In += x.In
	s.First += x.First
	s.Duplicates += x.Duplicates
	s.DLQ += x.DLQ
	s.Done += x.Done
	for i := range s.ByPath {
		s.ByPath[i] += x.ByPath[i]
	}
	s.Uncertain += x.Uncertain
	s.UncertainReruns += x.UncertainReruns
	s.ClaimAppends += x.ClaimAppends
	s.HandlerRetries += x.HandlerRetries
	s.Fenced += x.Fenced
	s.Owned += x.Owned
	s.RemoteMerged += x.RemoteMerged
	s.Conflicts += x.Conflicts
}

type counters struct {
	in, first, dup, dlq, done atomic.Int64
	byPath                    [dedupe.NumPaths]atomic.Int64
	uncertain, reruns         atomic.Int64
	appends, retries, fenced  atomic.Int64
	owned                     atomic.Int64
	remoteMerged, conflicts   atomic.Int64
}

// Consumer runs the edge data path for its partitions.
type Consumer struct {
	js     jetstream.JetStream
	h      Handler
	o      Options
	names  streams.Names
	log    *claimlog.Log
	nparts int
	maxMsg int // the streams' largest message
	tracer trace.Tracer
	lg     *slog.Logger
	c      counters

	decisionSec prometheus.Observer

	mu     sync.Mutex
	state  map[int]partState
	runs   map[int]*partRun
	fenced map[int]time.Time
	steps  map[int]step // partition -> the blocking step it is in, if any
}

// step is a blocking step of a partition (claim append, handler, dead
// letter, rewind) and when it began, for readiness.
type step struct {
	what  string
	since time.Time
}

// busy marks p as in a blocking step; idle ends it.
func (c *Consumer) busy(p int, what string) {
	c.mu.Lock()
	c.steps[p] = step{what, time.Now()}
	c.mu.Unlock()
}

func (c *Consumer) idle(p int) {
	c.mu.Lock()
	delete(c.steps, p)
	c.mu.Unlock()
}

// stuck returns, in order, the owned partitions whose step has lasted
// StuckAfter or more, described.
func (c *Consumer) stuck() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for p, s := range c.steps {
		if d := time.Since(s.since); d >= c.o.StuckAfter && c.state[p].phase == owned {
			out = append(out, fmt.Sprintf("p%d stuck for %s %s", p, d.Round(time.Second), s.what))
		}
	}
	slices.Sort(out)
	return out
}

// New prepares a consumer on js. Run starts it.
func New(js jetstream.JetStream, h Handler, o Options) *Consumer {
	o = o.withDefaults()
	tp := o.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Consumer{
		js: js, h: h, o: o, names: streams.Names{Region: o.Region},
		decisionSec: o.Metrics.DecisionSec.WithLabelValues(o.Region),
		tracer:      tp.Tracer("github.com/onceplane/onceplane/edge"),
		lg:          o.Logger.With("edge", o.Name, "region", o.Region),
		state:       map[int]partState{},
		runs:        map[int]*partRun{},
		fenced:      map[int]time.Time{},
		steps:       map[int]step{},
	}
}

// now is the edge's wall clock (Options.Clock): timestamps for metrics,
// traces and reports. No decision reads it.
func (c *Consumer) now() time.Time {
	if c.o.Clock != nil {
		return c.o.Clock()
	}
	return time.Now()
}

// Name is the edge's writer name.
func (c *Consumer) Name() string { return c.o.Name }

// Stats returns the running totals.
func (c *Consumer) Stats() Stats {
	s := Stats{
		In: c.c.in.Load(), Done: c.c.done.Load(), First: c.c.first.Load(), Duplicates: c.c.dup.Load(), DLQ: c.c.dlq.Load(),
		Uncertain: c.c.uncertain.Load(), UncertainReruns: c.c.reruns.Load(),
		ClaimAppends: c.c.appends.Load(), HandlerRetries: c.c.retries.Load(), Fenced: c.c.fenced.Load(),
		Owned: c.c.owned.Load(), RemoteMerged: c.c.remoteMerged.Load(), Conflicts: c.c.conflicts.Load(),
	}
	for i := range s.ByPath {
		s.ByPath[i] = c.c.byPath[i].Load()
	}
	return s
}

// Owned returns the partitions this edge owns and consumes now, in order.
func (c *Consumer) Owned() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []int
	for p, s := range c.state {
		if s.phase == owned {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// Ready returns nil when every partition this edge holds is owned and
// consuming, and none is stuck (its current step, such as a dead letter the
// stream refuses or a sink that stays unavailable, has lasted StuckAfter).
func (c *Consumer) Ready() error {
	bad := c.stuck()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.nparts == 0 {
		return errors.New("not started")
	}
	for p, s := range c.state {
		if s.phase != owned {
			bad = append(bad, fmt.Sprintf("p%d %s", p, s))
		}
	}
	if len(bad) > 0 {
		slices.Sort(bad)
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

func (c *Consumer) setState(p int, s partState) {
	c.mu.Lock()
	c.state[p] = s
	c.mu.Unlock()
}

// phase is where a partition this edge holds is in its life.
type phase int

const (
	takingOver phase = iota // replay, fence, merge, resume
	owned                   // consuming
	releasing               // handed over: finishing its batch in hand
	fenced                  // another owner took it over; not run here now
	failed                  // stopped on an error; taken again a second later
)

func (p phase) String() string {
	return [...]string{"taking-over", "owned", "releasing", "fenced", "failed"}[p]
}

// partState is a held partition's phase and, when failed, why.
type partState struct {
	phase phase
	err   error
}

func (s partState) String() string {
	if s.err != nil {
		return s.phase.String() + ": " + s.err.Error()
	}
	return s.phase.String()
}

// own takes partition p over and consumes it until ctx ends, release is
// closed (graceful handoff: finish the batch in hand, record it done), or it
// is fenced.
func (c *Consumer) own(ctx context.Context, p int, release <-chan struct{}) error {
	start := time.Now()
	ctx, span := c.tracer.Start(ctx, "onceplane.takeover", trace.WithAttributes(c.attrs(p)...))
	defer span.End()
	// phase times one takeover phase as a child span and a histogram.
	var phases []TakeoverPhase
	phase := func(name string, f func(context.Context) error) error {
		pctx, ps := c.tracer.Start(ctx, "onceplane.takeover."+name)
		t0 := time.Now()
		err := f(pctx)
		phases = append(phases, TakeoverPhase{Name: name, Start: t0, End: time.Now()})
		c.o.Metrics.TakeoverPhaseSec.WithLabelValues(c.o.Region, name).Observe(time.Since(t0).Seconds())
		if err != nil {
			ps.RecordError(err)
		}
		ps.End()
		return err
	}
	st := dedupe.New(dedupe.Options{Window: c.o.Window, ExpectedIDs: c.o.ExpectedIDs, NoBloom: c.o.NoBloom, Policy: c.o.Policy})
	takeoverSeq, err := c.fence(p, st, phase)
	if err != nil {
		return err
	}
	// Merge: other regions' claims for p, up to now; then live (asynchronous mode).
	var remote <-chan remoteRec
	liveSince := c.now()
	if len(c.o.Peers) > 0 && !c.o.Strict {
		if err := phase("merge", func(pctx context.Context) (err error) {
			remote, err = c.catchUp(ctx, pctx, p, st, liveSince)
			return err
		}); err != nil {
			return fmt.Errorf("p%d merge remote claims: %w", p, err)
		}
	}
	if err := c.recordConflicts(ctx, p, st); err != nil {
		return fmt.Errorf("p%d conflicts: %w", p, err)
	}
	if u := st.Uncertain(); u > 0 {
		c.c.uncertain.Add(int64(u))
		c.o.Metrics.Uncertain.WithLabelValues(c.o.Region).Add(float64(u))
	}
	// Resume: this epoch's consumer, after the recorded position.
	pt := &part{p: p, st: st, name: streams.ConsumerName(p, takeoverSeq)}
	var cons jetstream.Consumer
	if err := phase("resume", func(ctx context.Context) (err error) {
		cons, err = c.consumer(ctx, pt)
		return err
	}); err != nil {
		return err
	}
	took := time.Since(start)
	span.SetAttributes(attribute.Int("onceplane.uncertain", st.Uncertain()), attribute.Int("onceplane.tracked", st.Tracked()),
		attribute.Int64("onceplane.epoch", int64(st.Epoch())))
	span.End()
	c.o.Metrics.TakeoverSec.WithLabelValues(c.o.Region).Observe(took.Seconds())
	c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "acquired").Inc()
	c.lg.Info("partition owned", "partition", p, "epoch", st.Epoch(), "tracked", st.Tracked(),
		"uncertain", st.Uncertain(), "resume_after", st.Through(), "took", took)
	c.setState(p, partState{phase: owned})
	c.notify(OwnershipEvent{Partition: p, Change: "acquired", At: time.Now(), Took: took, Epoch: st.Epoch(), Uncertain: st.Uncertain(), Tracked: st.Tracked(), Phases: phases})
	c.c.owned.Add(1)
	c.o.Metrics.OwnedPartitions.WithLabelValues(c.o.Region).Inc()
	c.gaugeTracked(p, st)
	defer func() {
		c.c.owned.Add(-1)
		c.o.Metrics.OwnedPartitions.WithLabelValues(c.o.Region).Dec()
		c.o.Metrics.TrackedIDs.DeleteLabelValues(c.o.Region, strconv.Itoa(p))
		c.o.Metrics.TrackedBytes.DeleteLabelValues(c.o.Region, strconv.Itoa(p))
	}()
	return c.consume(ctx, pt, cons, release, remote, liveSince)
}

// fence takes p's claim log over for this ownership: it replays the log
// into st (rebuild), then appends the takeover record conditionally on the
// replayed tail (fence), again from the new tail when another writer
// appended meanwhile (up to ten times). It returns the takeover record's
// sequence, which names this ownership's consumer.
func (c *Consumer) fence(p int, st *dedupe.State, phase func(string, func(context.Context) error) error) (uint64, error) {
	for attempt := 0; ; attempt++ {
		// Rebuild: replay the claim log (from the start, then only the tail).
		if err := phase("rebuild", func(ctx context.Context) error {
			last, err := c.log.Replay(ctx, p, st.LastSeq(), st.Apply)
			st.Foreign(last) // a foreign tail: the next append is conditional on it
			return err
		}); err != nil {
			return 0, fmt.Errorf("p%d rebuild: %w", p, err)
		}
		// Fence: the takeover record, conditional on the replayed tail.
		rec := st.Takeover(c.o.Name)
		var seq uint64
		err := phase("fence", func(ctx context.Context) (err error) {
			seq, err = c.log.Append(ctx, p, st.LastSeq(), rec)
			return err
		})
		if errors.Is(err, ErrFenced) && attempt < 10 {
			continue // another writer appended meanwhile: read the tail and try again
		}
		if err != nil {
			return 0, fmt.Errorf("p%d takeover: %w", p, err)
		}
		st.Apply(seq, rec, time.Time{})
		c.o.Metrics.ClaimAppends.WithLabelValues(c.o.Region, "takeover").Inc()
		return seq, nil
	}
}

// catchUp merges into st every other region's claim of p stored so far
// (asynchronous mode) and returns the live follower that keeps them coming
// for the partition's run (ctx bounds it; pctx bounds the catching up).
func (c *Consumer) catchUp(ctx, pctx context.Context, p int, st *dedupe.State, liveSince time.Time) (<-chan remoteRec, error) {
	ch, caughtUp, err := c.followRemote(ctx, p)
	if err != nil {
		return nil, err
	}
	for {
		select {
		case r := <-ch:
			if err := c.mergeRemote(pctx, p, st, r, liveSince); err != nil {
				return ch, err
			}
		case <-caughtUp:
			// Everything stored when following began has been sent;
			// merge what is still buffered before deciding anything,
			// or an ID replicated before the takeover could be
			// handled again here.
			return ch, c.mergeBuffered(pctx, p, st, ch, liveSince, -1)
		case <-pctx.Done():
			return ch, pctx.Err()
		}
	}
}

// part is what an owner run knows of its partition beyond the dedupe state.
type part struct {
	p    int
	st   *dedupe.State
	name string // this ownership's ingest consumer
}

// isPartitionConsumer reports whether name is an ingest consumer of
// partition p (of this scheme or the earlier per-epoch one), and its
// takeover sequence (0 for the earlier scheme).
func isPartitionConsumer(p int, name string) (uint64, bool) {
	cp, seq, _, ok := streams.ParseConsumer(name)
	return seq, ok && cp == p
}

// consumer creates this ownership's ingest consumer for p, starting after the
// position recorded in the claim log, and deletes every older ownership's
// consumer so that a stale owner's pulls and acks reach nothing. A consumer
// it creates is fresh: its first delivery is consumer sequence 1.
func (c *Consumer) consumer(ctx context.Context, pt *part) (jetstream.Consumer, error) {
	p := pt.p
	cfg := jetstream.ConsumerConfig{
		Durable: pt.name, FilterSubjects: c.inputFilters(p),
		AckPolicy: jetstream.AckAllPolicy, AckWait: c.o.AckWait, MaxDeliver: -1,
		MaxAckPending: 8 * c.o.BatchSize, InactiveThreshold: time.Hour,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if t := pt.st.Through(); t > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, t+1
	}
	cons, err := c.js.CreateConsumer(ctx, c.inputStream(), cfg)
	if err != nil {
		return nil, fmt.Errorf("p%d consumer %s: %w", p, pt.name, err)
	}
	if info := cons.CachedInfo(); info != nil && info.Delivered.Consumer != 0 {
		// Not ours alone (a create whose reply was lost, then deliveries to
		// someone): start it again.
		if err := c.js.DeleteConsumer(ctx, c.inputStream(), pt.name); err != nil {
			return nil, fmt.Errorf("p%d consumer %s not fresh: %w", p, pt.name, err)
		}
		if cons, err = c.js.CreateConsumer(ctx, c.inputStream(), cfg); err != nil {
			return nil, fmt.Errorf("p%d consumer %s: %w", p, pt.name, err)
		}
	}
	mine, _ := isPartitionConsumer(p, pt.name)
	s, err := c.js.Stream(ctx, c.inputStream())
	if err != nil {
		return cons, nil
	}
	lister := s.ConsumerNames(ctx)
	for old := range lister.Name() {
		seq, ok := isPartitionConsumer(p, old)
		if !ok || old == pt.name || seq > mine {
			continue // another partition's, or a newer ownership's (this one is about to be fenced)
		}
		_ = s.DeleteConsumer(ctx, old)
	}
	return cons, nil
}

// ownerActive reports whether another ownership of p is consuming now: its
// consumer has pull requests waiting (a paused or dead owner's expire).
func (c *Consumer) ownerActive(ctx context.Context, p int) bool {
	s, err := c.js.Stream(ctx, c.inputStream())
	if err != nil {
		return true // cannot tell: do not fight for it
	}
	lister := s.ListConsumers(ctx)
	for info := range lister.Info() {
		if _, ok := isPartitionConsumer(p, info.Name); ok && info.NumWaiting > 0 {
			return true
		}
	}
	return lister.Err() != nil
}

// inputStream is the stream partitions are consumed from: the region's
// ingest, or in strict mode its home stream (every region's events for the
// partitions homed here).
func (c *Consumer) inputStream() string {
	if c.o.Strict {
		return c.names.HomeStream()
	}
	return c.names.IngestStream()
}

func (c *Consumer) inputFilters(p int) []string {
	if c.o.Strict {
		return c.names.AnyPartitionFilters(p)
	}
	return c.names.PartitionFilters(p)
}

func (c *Consumer) attrs(p int) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("onceplane.region", c.o.Region), attribute.Int("onceplane.partition", p), attribute.String("onceplane.edge", c.o.Name)}
}

// consume runs p's batches. When the client misses a delivery (a slow
// consumer drop, a pull answered to an inbox lost in a reconnect, a first
// pull's answer lost), acking past it with AckAll would lose it, so the
// partition rewinds its consumer to the done position and carries on; what
// was already decided comes back as duplicates.
func (c *Consumer) consume(ctx context.Context, pt *part, cons jetstream.Consumer, release <-chan struct{}, remote <-chan remoteRec, liveSince time.Time) error {
	p := pt.p
	w := newWork(c.o.BatchSize)
	w.remote, w.liveSince = remote, liveSince
	for {
		err := c.consumeUntilGap(ctx, pt, cons, w, release)
		switch {
		case errors.Is(err, errConsumerGone):
			// Fenced only if the claim log says so: a newer owner appends
			// its takeover record before it deletes older consumers.
			lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			moved, last, lerr := c.log.MovedOn(lctx, p, pt.st.LastSeq())
			cancel()
			if lerr == nil && moved {
				return &FencedError{Partition: p, Cause: fmt.Errorf("consumer %s: %w (%d -> %d)", pt.name, ErrConsumerDeleted, pt.st.LastSeq(), last)}
			}
			c.lg.Warn("consumer gone while the claim log is still ours; making it again", "partition", p, "consumer", pt.name, "err", err, "log_err", lerr)
		case errors.Is(err, errGap):
			c.lg.Warn("delivery gap; rewinding the consumer to the done position", "partition", p, "through", pt.st.Through(), "err", err)
		case errors.Is(err, claimlog.ErrFenced):
			return &FencedError{Partition: p, Cause: err}
		default:
			return err
		}
		c.o.Metrics.Rewinds.WithLabelValues(c.o.Region).Inc()
		c.busy(p, "rewinding the consumer")
		for b := poll.Backoff(50*time.Millisecond, 2*time.Second); ; {
			if cons, err = c.rewind(ctx, pt); err == nil {
				break
			}
			c.lg.Warn("rewind failed; retrying", "partition", p, "err", err)
			if poll.Sleep(ctx, b.NextBackOff()) != nil {
				return nil
			}
		}
		c.idle(p)
	}
}

// rewind makes this ownership's consumer again, starting after st.Through().
func (c *Consumer) rewind(ctx context.Context, pt *part) (jetstream.Consumer, error) {
	if err := c.js.DeleteConsumer(ctx, c.inputStream(), pt.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("p%d rewind: %w", pt.p, err)
	}
	return c.consumer(ctx, pt)
}

func (c *Consumer) consumeUntilGap(ctx context.Context, pt *part, cons jetstream.Consumer, w *work, release <-chan struct{}) error {
	p, st := pt.p, pt.st
	it, err := cons.Messages(jetstream.PullMaxMessages(c.o.BatchSize))
	if err != nil {
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
			return fmt.Errorf("p%d messages: %w: %w", p, errConsumerGone, err)
		}
		return fmt.Errorf("p%d messages: %w", p, err)
	}
	defer it.Stop()
	msgs := make(chan inMsg, c.o.BatchSize)
	lost := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop)
	go c.pull(p, it, msgs, lost, stop)
	idle := time.NewTimer(c.o.IdleFlush)
	defer idle.Stop()
	lastCheck := time.Now()
	batch := make([]inMsg, 0, c.o.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case <-release:
			// Graceful handoff: the batch in hand is done; record it so the
			// next owner starts with nothing uncertain.
			return c.flushDone(ctx, p, st)
		case err := <-lost:
			return err
		case <-idle.C:
			if err := c.flushDone(ctx, p, st); err != nil {
				return err
			}
			if time.Since(lastCheck) >= consumerCheckEvery {
				lastCheck = time.Now()
				if err := c.checkConsumer(ctx, p, cons); err != nil {
					return err
				}
			}
			idle.Reset(c.o.IdleFlush)
			continue
		case r := <-w.remote:
			// Merge what has arrived in one go, so that replication traffic
			// costs the partition one loop turn, not one per record.
			err := c.mergeRemote(ctx, p, st, r, w.liveSince)
			if err == nil {
				err = c.mergeBuffered(ctx, p, st, w.remote, w.liveSince, 1024)
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		case m := <-msgs:
			batch = append(batch, m)
		}
	drain:
		for len(batch) < c.o.BatchSize {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if err := c.process(ctx, p, st, batch, w); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		idle.Reset(c.o.IdleFlush)
	}
}

// notePaused marks p stuck while its consumer is paused, and idle again
// once it is not.
func (c *Consumer) notePaused(p int, info *jetstream.ConsumerInfo) {
	c.mu.Lock()
	s, marked := c.steps[p]
	marked = marked && strings.HasPrefix(s.what, pausedStep)
	c.mu.Unlock()
	switch {
	case info.Paused && !marked:
		c.o.Logger.Warn("consumer paused: partition stopped until it is resumed", "partition", p, "consumer", info.Name, "until", info.Config.PauseUntil, "pending", info.NumPending)
		c.busy(p, fmt.Sprintf("%s (consumer %s paused until %v, %d pending)", pausedStep, info.Name, info.Config.PauseUntil, info.NumPending))
	case !info.Paused && marked:
		c.o.Logger.Info("consumer resumed", "partition", p, "consumer", info.Name)
		c.idle(p)
	}
}

const pausedStep = "waiting on a paused consumer"

// consumerCheckEvery is how often an idle partition checks that its
// consumer still exists and is not paused.
const consumerCheckEvery = 2 * time.Second

// flushDone writes a done record when the partition is idle and the log lags.
func (c *Consumer) flushDone(ctx context.Context, p int, st *dedupe.State) error {
	rec, ok := st.Done(c.o.Name)
	if !ok {
		return nil
	}
	seq, err := c.log.Append(ctx, p, st.LastSeq(), rec)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	st.Apply(seq, rec, time.Time{})
	c.c.appends.Add(1)
	c.o.Metrics.ClaimAppends.WithLabelValues(c.o.Region, "done").Inc()
	return nil
}

// work holds a batch's scratch buffers, reused across batches.
type work struct {
	valid  []validMsg
	hashes []event.Hash
	batch  dedupe.Batch  // the decisions; batch.Run[i] is the index in valid of evs[i]
	evs    []event.Event // the events the handler runs
	dead   []deadMsg

	remote    <-chan remoteRec // other regions' claims (nil in one region or strict mode)
	liveSince time.Time        // remote records stored after this are live (lag is measured)
}

type validMsg struct {
	in     inMsg
	id     string
	tenant string
	h      event.Hash
	seq    uint64
	at     time.Time
	traced trace.SpanContext // the producer's span, when the event carries one
	origin string            // the region the event was published in
	pub    time.Time         // the producer's publish time (HeaderPublished), else zero
}

// maxTracedPerBatch bounds per-event spans in one batch.
const maxTracedPerBatch = 64

type deadMsg struct {
	m      jetstream.Msg
	id     string
	tenant string
	seq    uint64
	reason string
	detail string
}

func newWork(n int) *work {
	return &work{valid: make([]validMsg, 0, n), hashes: make([]event.Hash, 0, n), evs: make([]event.Event, 0, n)}
}

// gaugeTracked sets p's tracked-ID and tracked-byte gauges from st.
func (c *Consumer) gaugeTracked(p int, st *dedupe.State) {
	ps := strconv.Itoa(p)
	exact, bloom := st.Bytes()
	c.o.Metrics.TrackedIDs.WithLabelValues(c.o.Region, ps).Set(float64(st.Tracked()))
	c.o.Metrics.TrackedBytes.WithLabelValues(c.o.Region, ps).Set(float64(exact + bloom))
}

// observeDedupeLatency records, per origin region, the time from each
// event's publish (when the producer stamped it) to its decision.
func (c *Consumer) observeDedupeLatency(w *work, committed time.Time) {
	var last string
	var obs prometheus.Observer
	for _, v := range w.valid {
		if v.pub.IsZero() {
			continue
		}
		if obs == nil || v.origin != last {
			last, obs = v.origin, c.o.Metrics.DedupeLatency.WithLabelValues(v.origin, c.o.Region)
		}
		obs.Observe(committed.Sub(v.pub).Seconds())
	}
}

// traceDecisions records one onceplane.decide span per traced event, a child
// of the producer's span, so a trace follows the event into the edge.
func (c *Consumer) traceDecisions(ctx context.Context, p int, w *work, started, committed time.Time) {
	batchLink := trace.LinkFromContext(ctx)
	for i, v := range w.valid {
		if !v.traced.IsValid() {
			continue
		}
		pctx := trace.ContextWithRemoteSpanContext(context.Background(), v.traced)
		_, sp := c.tracer.Start(pctx, "onceplane.decide", trace.WithTimestamp(started), trace.WithLinks(batchLink),
			trace.WithAttributes(append(c.attrs(p), attribute.String("onceplane.event_id", v.id),
				attribute.String("onceplane.path", w.batch.Paths[i].String()), attribute.Int64("onceplane.stream_seq", int64(v.seq)),
				attribute.String("onceplane.origin_region", v.origin))...))
		sp.End(trace.WithTimestamp(committed))
	}
}

func hasTraceParent(h nats.Header) bool {
	if h == nil {
		return false
	}
	if _, ok := h["traceparent"]; ok {
		return true
	}
	_, ok := h["Traceparent"]
	return ok
}

// countPaths adds a batch's decisions to the totals and the metrics, once
// per path rather than once per event.
func (c *Consumer) countPaths(paths []dedupe.Path) {
	var n [dedupe.NumPaths]int
	for _, p := range paths {
		n[p]++
	}
	for p, k := range n {
		if k > 0 {
			c.c.byPath[p].Add(int64(k))
			c.o.Metrics.Decisions.WithLabelValues(c.o.Region, dedupe.Path(p).String()).Add(float64(k))
		}
	}
}
