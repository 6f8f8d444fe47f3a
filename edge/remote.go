package edge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/telemetry"
)

// remoteRec is one claim record of another region, read from this region's
// xclaims stream (the other regions' claim logs, sourced over the gateways).
type remoteRec struct {
	region string
	seq    uint64 // position in the xclaims stream (the tail: in the region's claim log)
	origin uint64 // position in the region's claim log
	tail   bool   // read by the tail (tail.go), not from the xclaims stream
	rec    dedupe.Record
	stored time.Time // when the xclaims stream stored it (the tail: this region's server time when read)
	sc     trace.SpanContext
}

// followRemote streams partition p's claims from the other regions, from the
// start of the window and then live, until ctx ends. caughtUp is closed once
// every record stored when it started has been delivered. Records that do not
// decode are logged and skipped: a bad record from elsewhere must not stop
// this region (the other region still sees its own claims and reports any
// conflict). Each region's records come from one stream, in its order.
func (c *Consumer) followRemote(ctx context.Context, p int, out chan<- remoteRec) (<-chan struct{}, error) {
	caughtUp := make(chan struct{})
	srcs := c.remoteSources(p)
	var behind sync.WaitGroup
	behind.Add(len(srcs))
	for _, src := range srcs {
		if err := c.followOne(ctx, p, src, out, behind.Done); err != nil {
			return nil, err
		}
	}
	go func() {
		behind.Wait()
		close(caughtUp)
	}()
	return caughtUp, nil
}

// remoteSource is a stream holding other regions' claims of a partition,
// and the subjects to follow in it.
type remoteSource struct {
	stream  string
	filters []string
}

// remoteSources are where partition p's claims from the other regions are:
// this region's xclaims stream; after a failover, the host's own claim
// stream and the host's xclaims stream without the failed-over region's
// (which are this edge's own history).
func (c *Consumer) remoteSources(p int) []remoteSource {
	if c.o.Host == "" {
		return []remoteSource{{c.names.XClaimStreamOf(p), []string{c.names.RemoteClaims(p)}}}
	}
	srcs := []remoteSource{{c.here.ClaimStreamOf(p), []string{c.here.Claims(p)}}}
	var others []string
	for _, peer := range c.o.Peers {
		if peer != c.o.Host {
			others = append(others, streams.Names{Region: peer}.Claims(p))
		}
	}
	if len(others) > 0 {
		srcs = append(srcs, remoteSource{c.here.XClaimStreamOf(p), others})
	}
	return srcs
}

// followOne follows one remote source into out; caught is called once
// every record stored when it started has been delivered.
func (c *Consumer) followOne(ctx context.Context, p int, src remoteSource, out chan<- remoteRec, caught func()) error {
	cons, err := c.js.OrderedConsumer(ctx, src.stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: src.filters, DeliverPolicy: jetstream.DeliverAllPolicy,
		InactiveThreshold: streams.ReaderInactive,
	})
	if err != nil {
		return fmt.Errorf("p%d remote claims in %s: %w", p, src.stream, err)
	}
	var once sync.Once
	if info := cons.CachedInfo(); info == nil || info.NumPending == 0 {
		once.Do(caught)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(1024))
	if err != nil {
		return fmt.Errorf("p%d remote claims in %s: %w", p, src.stream, err)
	}
	context.AfterFunc(ctx, func() {
		it.Stop()
		streams.DropConsumer(c.js, src.stream, cons)
	})
	go func() {
		for {
			m, err := it.Next()
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
					return
				}
				c.lg.Debug("remote claims", "partition", p, "stream", src.stream, "err", err)
				continue
			}
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			rec, err := dedupe.Decode(m.Data())
			if errors.Is(err, dedupe.ErrForeign) {
				c.foreign("xclaims", p, md.Sequence.Stream)
			} else if err != nil {
				c.lg.Error("undecodable remote claim record skipped", "partition", p, "subject", m.Subject(), "seq", md.Sequence.Stream, "err", err)
			} else {
				r := remoteRec{region: streams.RegionOf(m.Subject()), seq: md.Sequence.Stream, origin: originSeq(m.Headers(), md.Sequence.Stream), rec: rec, stored: md.Timestamp}
				if h := m.Headers(); hasTraceParent(h) {
					r.sc = trace.SpanContextFromContext(telemetry.Propagator().Extract(context.Background(), telemetry.HeaderCarrier(h)))
				}
				select {
				case out <- r:
				case <-ctx.Done():
					return
				}
			}
			if md.NumPending == 0 {
				once.Do(caught)
			}
		}
	}()
	return nil
}

// originSeq is a sourced record's sequence in its origin stream (its
// Nats-Stream-Source header), or seq for a record read where it was
// appended.
func originSeq(h nats.Header, seq uint64) uint64 {
	if _, n := streams.SourceHeader(h.Get(streams.StreamSourceHeader)); n > 0 {
		return n
	}
	return seq
}

// mergeRemote folds one remote claim record into p's state, measures the
// replication lag of live records, and records any conflict it reveals. A
// record both the xclaims stream and the tail bring is merged once.
func (pt *partition) mergeRemote(ctx context.Context, r remoteRec) error {
	c, p, st := pt.c, pt.p, pt.st
	cur := pt.cursors[r.region]
	if cur == nil {
		cur = &remoteCursor{}
		pt.cursors[r.region] = cur
	}
	merge := cur.fromXClaims
	if r.tail {
		merge = cur.fromTail
	}
	ok := merge(r.origin)
	pt.tailMu.Lock()
	pt.tailNext[r.region] = cur.next()
	pt.tailMu.Unlock()
	if !ok {
		return nil
	}
	if r.tail {
		c.c.tailMerged.addBy(r.region, 1)
	}
	st.MergeRemote(r.region, r.seq, r.rec, r.stored)
	c.c.remoteMerged.addBy(r.region, 1)
	live := r.stored.After(pt.liveSince)
	// The lag is read on servers' clocks, not this edge's: from the claimed
	// batch's ingest in the other region (the record's time) to this
	// region's xclaims stream storing the record. Skew between the regions'
	// servers adds to it; it decides nothing.
	lag := r.stored.Sub(r.rec.Time)
	if live && r.rec.Kind == dedupe.KindClaim {
		c.o.Metrics.ReplicationLag.WithLabelValues(r.region, c.o.Region).Observe(lag.Seconds())
		if c.o.OnReplicated != nil {
			c.o.OnReplicated(r.region, lag)
		}
	}
	if r.sc.IsValid() && live {
		// Continue the remote claim append's trace into this region.
		pctx := trace.ContextWithRemoteSpanContext(ctx, r.sc)
		_, sp := c.tracer.Start(pctx, "onceplane.merge_remote", trace.WithAttributes(append(c.attrs(p),
			attribute.String("onceplane.from_region", r.region), attribute.Int("onceplane.ids", len(r.rec.IDs)),
			attribute.Float64("onceplane.replication_lag_ms", float64(lag.Microseconds())/1000),
			attribute.Int("onceplane.conflicts", st.PendingConflicts()))...))
		if st.PendingConflicts() > 0 {
			sp.SetAttributes(attribute.String("onceplane.path", "conflict"))
		}
		defer sp.End()
	}
	return pt.recordConflicts(ctx)
}

// mergeBuffered merges the remote records already waiting, without
// blocking: at most limit of them (negative: until none is waiting).
func (pt *partition) mergeBuffered(ctx context.Context, limit int) error {
	for n := 0; limit < 0 || n < limit; n++ {
		select {
		case r := <-pt.remote:
			if err := pt.mergeRemote(ctx, r); err != nil {
				return err
			}
		default:
			return nil
		}
	}
	return nil
}

// recordConflicts writes the conflicts the state found to the conflicts stream,
// once per race (the stream refuses a second record on the same subject), and
// counts the new ones. It retries until stored: a conflict is never silent.
func (pt *partition) recordConflicts(ctx context.Context) error {
	c, p := pt.c, pt.p
	var conflicts jetstream.Stream // looked up at the first conflict
	for _, cf := range pt.st.Conflicts() {
		rec := dedupe.ConflictRecord{Hash: cf.Hash.Hex(), Partition: p, Region: c.o.Region, Edge: c.o.Name, DetectedAt: c.now(), ClaimGen: cf.ClaimGen}
		rec.Remote.Region, rec.Remote.Writer, rec.Remote.Epoch, rec.Remote.Time, rec.Remote.Seq = cf.Region, cf.Writer, cf.Epoch, cf.Time, cf.Seq
		data, _ := json.Marshal(rec)
		peer := c.conflictPeer(cf.Region)
		msg := &nats.Msg{Subject: c.here.Conflict(rec.Hash, peer, cf.ClaimGen), Data: data}
		counted := func() {
			c.c.conflicts.addBy(cf.Region, 1)
			c.lg.Warn("cross-region conflict", "partition", p, "id_hash", rec.Hash, "peer", cf.Region, "peer_writer", cf.Writer)
		}
		if conflicts == nil {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			conflicts, _ = c.js.Stream(sctx, c.here.ConflictStream())
			cancel()
		}
		if conflicts != nil {
			if near, err := c.raceOnRecord(ctx, conflicts, pt.st, cf); err == nil && near {
				continue // recorded by the other of live apply and replay
			}
		}
		ambiguous := false // an earlier attempt may have landed without its ack
		for b, alt := poll.Backoff(20*time.Millisecond, time.Second), 0; ; {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			// Only onto an empty subject: one record per race. (The
			// stream holds one message per subject as well; the expected
			// sequence makes the refusal a typed error.)
			_, err := c.js.PublishMsg(pctx, msg, jetstream.WithExpectLastSequencePerSubject(0))
			cancel()
			if err == nil {
				counted()
				break
			}
			if claimlog.IsWrongLast(err) {
				// Recorded already (by a rebuild that found it again, or by
				// this loop's earlier attempt whose ack was lost) — unless
				// what holds the subject is not a conflict record: then no
				// edge wrote it, and the conflict goes on another subject.
				// What cannot be read yet is asked again, never assumed.
				seq, held, herr := c.conflictHeld(ctx, msg.Subject, rec.Hash)
				if herr == nil && held {
					if ambiguous {
						counted()
					}
					break
				}
				if herr == nil {
					c.foreign("conflicts", p, seq)
					if alt++; alt > maxConflictSubjects {
						c.lg.Error("conflict not recorded: every subject it may go on holds foreign bytes", "partition", p, "id_hash", rec.Hash, "peer", cf.Region)
						break
					}
					msg.Subject = c.here.Conflict(rec.Hash, fmt.Sprintf("%s~%d", peer, alt), cf.ClaimGen)
					continue
				}
				err = fmt.Errorf("read what holds %s: %w", msg.Subject, herr)
			} else {
				ambiguous = true
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.lg.Warn("conflict record failed; retrying", "partition", p, "err", err)
			if poll.Sleep(ctx, b.NextBackOff()) != nil {
				return ctx.Err()
			}
		}
	}
	return nil
}

// raceOnRecord reports whether cf's race is recorded under a neighbouring
// claim generation (dedupe.State.SameClaim): the live apply and a replay
// can tag the same claim differently under clock skew, and the conflicts
// stream's one-record-per-subject cannot see that. One look at the
// subjects of the ID and peer answers it; a record under cf's own
// generation is left to the conditional write, and a subject holding
// foreign bytes does not count. An error means "not known": the record is
// written (at worst twice), never skipped on a guess.
func (c *Consumer) raceOnRecord(ctx context.Context, conflicts jetstream.Stream, st *dedupe.State, cf dedupe.Conflict) (bool, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	hash := cf.Hash.Hex()
	peer := c.conflictPeer(cf.Region)
	info, err := conflicts.Info(gctx, jetstream.WithSubjectFilter(c.here.Conflicts(hash, peer)))
	if err != nil {
		return false, err
	}
	if _, own := info.State.Subjects[c.here.Conflict(hash, peer, cf.ClaimGen)]; own {
		return false, nil
	}
	for subject := range info.State.Subjects {
		gen, err := strconv.ParseUint(subject[strings.LastIndexByte(subject, '.')+1:], 10, 16)
		if err != nil || !st.SameClaim(uint16(gen), cf.ClaimGen) {
			continue
		}
		if _, held, err := c.conflictHeld(ctx, subject, hash); err != nil || held {
			return held, err
		}
	}
	return false, nil
}

// conflictPeer is the peer token of a conflict with region peer in its
// record's subject: the peer, or after a failover "<peer>~<region>" (the
// race is the failed-over region's, recorded among the host's own races).
func (c *Consumer) conflictPeer(peer string) string {
	if c.o.Host == "" {
		return peer
	}
	return peer + "~" + c.o.Region
}

// maxConflictSubjects bounds the other subjects (peer~1, peer~2, ...) a
// conflict goes on when foreign bytes hold its own.
const maxConflictSubjects = 8

// conflictHeld reports whether the message on subject is a conflict record
// of the ID hashed hash (true), or foreign bytes (false), with its sequence.
func (c *Consumer) conflictHeld(ctx context.Context, subject, hash string) (uint64, bool, error) {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := c.js.Stream(gctx, c.here.ConflictStream())
	if err != nil {
		return 0, false, err
	}
	m, err := s.GetLastMsgForSubject(gctx, subject)
	if err != nil {
		return 0, false, err
	}
	r, err := dedupe.DecodeConflict(m.Data)
	return m.Sequence, err == nil && r.Hash == hash, nil
}

// foreign reports a message no edge wrote on one of stream's subjects (an
// alarm: something other than an edge can write there), skipped.
func (c *Consumer) foreign(stream string, p int, seq uint64) {
	c.o.Metrics.ForeignRecords.WithLabelValues(c.o.Region, stream).Inc()
	c.lg.Error("foreign message skipped: no edge wrote it (check who can publish, or set reply subjects, on this stream's subjects)",
		"stream", stream, "partition", p, "seq", seq)
}
