package edge

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// partition is one ownership of a partition by this edge, from its takeover
// to its release or fencing, and what lives that long: the dedupe state,
// this ownership's consumer, the other regions' claims coming in, the batch
// scratch. Its methods are the ownership's steps: takeover (rebuild, fence,
// merge, resume), run (pull, batches, merges, rewinds).
type partition struct {
	c       *Consumer
	p       int
	release <-chan struct{} // closed on a graceful handoff

	st   *dedupe.State
	name string // this ownership's ingest consumer (streams.ConsumerName of the takeover record)
	cons jetstream.Consumer

	remote    <-chan remoteRec         // other regions' claims (nil in one region or strict mode)
	cursors   map[string]*remoteCursor // by region: what of its claims was merged (the partition's goroutine's)
	tailMu    sync.Mutex
	tailNext  map[string]uint64 // by region: where the tail reads from (cursors' next)
	liveSince time.Time         // remote records stored after this are live (their lag is measured)

	w *work // one batch's scratch, reused across batches

	source   string         // the input's name for a transactional sink's positions (inputSource)
	resolved resolvedCounts // what the takeover settled against the sink's position
}

// own takes partition p over and consumes it until ctx ends, release is
// closed (graceful handoff: finish the batch in hand, record it done), or it
// is fenced.
func (c *Consumer) own(ctx context.Context, p int, release <-chan struct{}) error {
	pt := &partition{c: c, p: p, release: release, w: newWork(c.o.BatchSize)}
	took, phases, err := pt.takeover(ctx)
	if err != nil {
		return err
	}
	st := pt.st
	c.o.Metrics.TakeoverSec.WithLabelValues(c.o.Region).Observe(took.Seconds())
	c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "acquired").Inc()
	c.lg.Info("partition owned", "partition", p, "epoch", st.Epoch(), "tracked", st.Tracked(),
		"uncertain", st.Uncertain(), "owed", st.Owed(), "resolved_done", pt.resolved.Done, "resume_after", st.Through(), "took", took)
	c.setState(p, partState{phase: owned})
	c.notify(OwnershipEvent{Partition: p, Change: "acquired", At: time.Now(), Took: took, Epoch: st.Epoch(), Uncertain: st.Uncertain(), Tracked: st.Tracked(), Phases: phases})
	c.c.owned.add(1)
	pt.gaugeTracked()
	defer func() {
		c.c.owned.add(-1)
		c.o.Metrics.TrackedIDs.DeleteLabelValues(c.o.Region, strconv.Itoa(p))
		c.o.Metrics.TrackedBytes.DeleteLabelValues(c.o.Region, strconv.Itoa(p))
	}()
	return pt.run(ctx)
}

// takeover makes the partition this ownership's: rebuild and fence (the
// takeover record), merge other regions' claims (asynchronous mode), record
// the conflicts found, and resume on a consumer of this ownership. Each
// phase is a child span and a histogram.
func (pt *partition) takeover(ctx context.Context) (time.Duration, []TakeoverPhase, error) {
	c, p := pt.c, pt.p
	start := time.Now()
	ctx, span := c.tracer.Start(ctx, "onceplane.takeover", trace.WithAttributes(c.attrs(p)...))
	defer span.End()
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
	st := dedupe.New(dedupe.Options{Window: c.o.Window, ExpectedIDs: c.o.ExpectedIDs, RemoteExpectedIDs: c.o.RemoteExpectedIDs, NoBloom: c.o.NoBloom, Policy: c.o.Policy})
	pt.st = st
	takeoverSeq, err := pt.fence(phase)
	if err != nil {
		return 0, nil, err
	}
	// Merge: other regions' claims for p, up to now; then live (asynchronous mode).
	pt.liveSince = c.now()
	if len(c.o.Peers) > 0 && !c.o.Strict {
		if err := phase("merge", pt.catchUp(ctx)); err != nil {
			return 0, nil, fmt.Errorf("p%d merge remote claims: %w", p, err)
		}
	}
	if err := pt.recordConflicts(ctx); err != nil {
		return 0, nil, fmt.Errorf("p%d conflicts: %w", p, err)
	}
	c.c.uncertain.add(int64(st.Uncertain()))
	// Resume: this ownership's consumer, after the recorded position.
	pt.name = streams.ConsumerName(p, takeoverSeq)
	if err := phase("resume", func(ctx context.Context) (err error) {
		pt.cons, err = pt.consumer(ctx)
		return err
	}); err != nil {
		return 0, nil, err
	}
	span.SetAttributes(attribute.Int("onceplane.uncertain", st.Uncertain()), attribute.Int("onceplane.tracked", st.Tracked()),
		attribute.Int64("onceplane.epoch", int64(st.Epoch())))
	return time.Since(start), phases, nil
}

// fence takes the claim log over for this ownership: it replays the log
// into the state (rebuild), then appends the takeover record conditionally
// on the replayed tail (fence), again from the new tail when another writer
// appended meanwhile (up to ten times). It returns the takeover record's
// sequence, which names this ownership's consumer.
func (pt *partition) fence(phase func(string, func(context.Context) error) error) (uint64, error) {
	c, p, st := pt.c, pt.p, pt.st
	for attempt := 0; ; attempt++ {
		// Rebuild: replay the claim log (from the start, then only the tail).
		if err := phase("rebuild", func(ctx context.Context) error {
			last, err := c.log.Replay(ctx, p, st.LastSeq(), st.Apply)
			st.Foreign(last) // a foreign tail: the next append is conditional on it
			return err
		}); err != nil {
			return 0, fmt.Errorf("p%d rebuild: %w", p, err)
		}
		c.promoted.rebase(st, c.names.ShardOf(p))
		if to := st.MovedTo(); to != "" {
			return 0, fmt.Errorf("p%d: %w: to %s", p, ErrMoved, to)
		}
		// A transactional sink: fenced with the coming epoch, and what
		// earlier owners claimed settled against its position.
		if c.tx != nil {
			if err := phase("sink", pt.fenceSink); err != nil {
				return 0, err
			}
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
		c.c.takeovers.add(1)
		return seq, nil
	}
}

// promotedCopies are where a strict failover's copies of the lost region's
// claim log and home stream stopped mirroring, per shard.
type promotedCopies struct{ claims, homes []uint64 }

// rebase moves a partition of shard t whose last record is the lost
// region's (at or below where the claim copy stopped) back to where the
// home copy stopped, when the record's position is beyond it: the region's
// home stream had messages there that never reached the copy, and the copy
// holds other messages at those sequences now (sourced by the promotion).
// Its events come again from their origins: repeats where the region's
// claim reached the copy, flagged runs otherwise. A nil p does nothing.
func (p *promotedCopies) rebase(st *dedupe.State, t int) {
	if p == nil || t >= len(p.claims) || t >= len(p.homes) {
		return
	}
	if st.LastSeq() <= p.claims[t] {
		st.Rebase(p.homes[t])
	}
}

// catchUp returns the merge phase: it merges every other region's claim of
// the partition stored so far, and leaves pt.remote following them live for
// the ownership (ctx bounds the follower; the phase's context the catching
// up).
func (pt *partition) catchUp(ctx context.Context) func(context.Context) error {
	return func(pctx context.Context) error {
		ch := make(chan remoteRec, 256)
		pt.cursors, pt.tailNext = map[string]*remoteCursor{}, map[string]uint64{}
		caughtUp, err := pt.c.followRemote(ctx, pt.p, ch)
		if err != nil {
			return err
		}
		pt.remote = ch
		for {
			select {
			case r := <-ch:
				if err := pt.mergeRemote(pctx, r); err != nil {
					return err
				}
			case <-caughtUp:
				// Everything stored when following began has been sent;
				// merge what is still buffered before deciding anything,
				// or an ID replicated before the takeover could be
				// handled again here.
				if pt.c.tailOn() {
					// Only now: the tail reads what lies beyond the
					// xclaims stream's records, merged at this region's
					// current time, as the xclaims stream would store
					// them now; older records keep their stored times.
					go pt.tail(ctx, ch)
				}
				return pt.mergeBuffered(pctx, -1)
			case <-pctx.Done():
				return pctx.Err()
			}
		}
	}
}

// consumer creates this ownership's ingest consumer, starting after the
// position recorded in the claim log, and deletes every older ownership's
// consumer so that a stale owner's pulls and acks reach nothing. A consumer
// it creates is fresh: its first delivery is consumer sequence 1.
func (pt *partition) consumer(ctx context.Context) (jetstream.Consumer, error) {
	c, p := pt.c, pt.p
	cfg := jetstream.ConsumerConfig{
		Durable: pt.name, FilterSubjects: c.inputFilters(p),
		AckPolicy: jetstream.AckAllPolicy, AckWait: c.o.AckWait, MaxDeliver: -1,
		MaxAckPending: 8 * c.o.BatchSize, InactiveThreshold: time.Hour,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	if t := pt.st.Through(); t > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, t+1
	}
	cons, err := c.js.CreateConsumer(ctx, c.inputStream(pt.p), cfg)
	if err != nil {
		return nil, fmt.Errorf("p%d consumer %s: %w", p, pt.name, err)
	}
	if info := cons.CachedInfo(); info != nil && info.Delivered.Consumer != 0 {
		// Not ours alone (a create whose reply was lost, then deliveries to
		// someone): start it again.
		if err := c.js.DeleteConsumer(ctx, c.inputStream(pt.p), pt.name); err != nil {
			return nil, fmt.Errorf("p%d consumer %s not fresh: %w", p, pt.name, err)
		}
		if cons, err = c.js.CreateConsumer(ctx, c.inputStream(pt.p), cfg); err != nil {
			return nil, fmt.Errorf("p%d consumer %s: %w", p, pt.name, err)
		}
	}
	mine, _ := isPartitionConsumer(p, pt.name)
	s, err := c.js.Stream(ctx, c.inputStream(pt.p))
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

// run consumes the partition's batches. When the client misses a delivery
// (a slow consumer drop, a pull answered to an inbox lost in a reconnect, a
// first pull's answer lost), acking past it with AckAll would lose it, so
// the partition rewinds its consumer to the done position and carries on;
// what was already decided comes back as duplicates.
func (pt *partition) run(ctx context.Context) error {
	c, p := pt.c, pt.p
	for {
		err := pt.consumeUntilGap(ctx)
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
		case errors.Is(err, claimlog.ErrFenced), errors.Is(err, ErrSinkFenced):
			return &FencedError{Partition: p, Cause: err}
		default:
			return err
		}
		c.o.Metrics.Rewinds.WithLabelValues(c.o.Region).Inc()
		c.busy(p, "rewinding the consumer")
		for b := poll.Backoff(50*time.Millisecond, 2*time.Second); ; {
			if err = pt.rewind(ctx); err == nil {
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

// rewind makes this ownership's consumer again, starting after the done
// position.
func (pt *partition) rewind(ctx context.Context) error {
	c := pt.c
	if err := c.js.DeleteConsumer(ctx, c.inputStream(pt.p), pt.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("p%d rewind: %w", pt.p, err)
	}
	cons, err := pt.consumer(ctx)
	if err != nil {
		return err
	}
	pt.cons = cons
	return nil
}

// consumeUntilGap pulls and processes batches, merges other regions' claims
// as they come, and flushes the done position when idle, until ctx ends,
// a release, or something the partition must rewind or stop for.
func (pt *partition) consumeUntilGap(ctx context.Context) error {
	c, p := pt.c, pt.p
	it, err := pt.cons.Messages(jetstream.PullMaxMessages(c.o.BatchSize))
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
	go pt.pull(it, msgs, lost, stop)
	idle := time.NewTimer(c.o.IdleFlush)
	defer idle.Stop()
	lastCheck := time.Now()
	batch := make([]inMsg, 0, c.o.BatchSize)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return nil
		case <-pt.release:
			// Graceful handoff: the batch in hand is done; record it so the
			// next owner starts with nothing uncertain, then delete this
			// ownership's consumer: its pull requests would otherwise stay
			// waiting on the server until they expire, and the next owner
			// waits for none to be left (ownerActive) before taking over.
			if err := pt.flushDone(ctx); err != nil {
				return err
			}
			it.Stop()
			dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			if err := c.js.DeleteConsumer(dctx, c.inputStream(p), pt.name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
				c.lg.Debug("released consumer not deleted (its pulls expire)", "partition", p, "consumer", pt.name, "err", err)
			}
			return nil
		case err := <-lost:
			return err
		case <-idle.C:
			if err := pt.flushDone(ctx); err != nil {
				return err
			}
			if time.Since(lastCheck) >= consumerCheckEvery {
				lastCheck = time.Now()
				if err := pt.checkConsumer(ctx); err != nil {
					return err
				}
			}
			idle.Reset(c.o.IdleFlush)
			continue
		case r := <-pt.remote:
			// Merge what has arrived in one go, so that replication traffic
			// costs the partition one loop turn, not one per record.
			err := pt.mergeRemote(ctx, r)
			if err == nil {
				err = pt.mergeBuffered(ctx, 1024)
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
		if err := pt.process(ctx, batch); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		idle.Reset(c.o.IdleFlush)
	}
}

// consumerCheckEvery is how often an idle partition checks that its
// consumer still exists and is not paused.
const consumerCheckEvery = 2 * time.Second

// flushDone writes a done record when the partition is idle and the log lags.
func (pt *partition) flushDone(ctx context.Context) error {
	c, st := pt.c, pt.st
	rec, ok := st.Done(c.o.Name)
	if !ok {
		return nil
	}
	seq, err := c.log.Append(ctx, pt.p, st.LastSeq(), rec)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	st.Apply(seq, rec, time.Time{})
	c.c.appends.addBy("done", 1)
	return nil
}

// gaugeTracked sets the partition's tracked-ID and tracked-byte gauges.
func (pt *partition) gaugeTracked() {
	c, st := pt.c, pt.st
	ps := strconv.Itoa(pt.p)
	exact, bloom := st.Bytes()
	c.o.Metrics.TrackedIDs.WithLabelValues(c.o.Region, ps).Set(float64(st.Tracked()))
	c.o.Metrics.TrackedBytes.WithLabelValues(c.o.Region, ps).Set(float64(exact + bloom))
}
