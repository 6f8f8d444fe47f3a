// Package edge is the onceplane consumer library: it owns partitions of a
// region's ingest stream, decides per event "first time or duplicate" with the
// dedupe core, claims first-time IDs in the fenced claim log with one
// conditional append per batch, runs the handler, dead-letters what cannot
// be processed, and acknowledges.
package edge

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

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

// ErrMoved is returned for a partition whose home was moved to another
// region (rehome.Move): its claim log's last takeover is the move's, and
// no edge of this region takes it back.
var ErrMoved = errors.New("partition's home moved to another region")

// Consumer runs the edge data path for its partitions.
type Consumer struct {
	js    jetstream.JetStream
	h     Handler
	tx    Transactional // h, when it keeps positions; nil otherwise
	o     Options
	names streams.Names
	// here names the region whose streams this edge writes its conflicts
	// and dead letters to: names, or Options.Host's after a failover.
	here streams.Names
	log  *claimlog.Log
	// promoted is, for a strict failover edge, where Host's copies of the
	// region's claim log and home stream stopped mirroring
	// (streams.PromotedLast); nil otherwise.
	promoted *promotedCopies
	peers    peerWatch // replication from each peer, for the tail
	nparts   int
	maxMsg   int // the streams' largest message
	tracer   trace.Tracer
	lg       *slog.Logger
	c        *counters

	decisionSec prometheus.Observer

	mu     sync.Mutex
	state  map[int]partState
	runs   map[int]*partRun
	fenced map[int]time.Time
	steps  map[int]step      // partition -> the blocking step it is in, if any
	handed []int             // partitions whose handover ended since the planner's last step
	failed map[int]time.Time // partitions whose run failed since the planner's last step
	homes  []int             // the region's recorded homes, when the edge follows them (homes.go)
	// reopen, while the region is isolated from a majority of the regions
	// (Options.IsolatedAfter), is closed when it no longer is: batches wait
	// for it before their claim.
	reopen chan struct{}

	consumers consumerNames // the input streams' consumer names, listed at most every namesTTL
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

// New prepares a consumer on js, refusing invalid options (Options.Validate).
// Run starts it.
func New(js jetstream.JetStream, h Handler, o Options) (*Consumer, error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("edge options: %w", err)
	}
	o = o.withDefaults()
	tp := o.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	names := streams.Names{Region: o.Region}
	here := names
	if o.Host != "" {
		here = streams.Names{Region: o.Host}
	}
	tx, _ := h.(Transactional)
	return &Consumer{
		js: js, h: h, tx: tx, o: o, names: names, here: here, c: newCounters(o.Metrics, o.Region),
		decisionSec: o.Metrics.DecisionSec.WithLabelValues(o.Region),
		tracer:      tp.Tracer("github.com/onceplane/onceplane/edge"),
		lg:          o.Logger.With("edge", o.Name, "region", o.Region),
		state:       map[int]partState{},
		runs:        map[int]*partRun{},
		fenced:      map[int]time.Time{},
		failed:      map[int]time.Time{},
		steps:       map[int]step{},
		peers:       peerWatch{suspect: map[string]time.Time{}},
	}, nil
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
func (c *Consumer) Stats() Stats { return c.c.stats() }

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

// isPartitionConsumer reports whether name is an ingest consumer of
// partition p (of this scheme or the earlier per-epoch one), and its
// takeover sequence (0 for the earlier scheme).
func isPartitionConsumer(p int, name string) (uint64, bool) {
	cp, seq, _, ok := streams.ParseConsumer(name)
	return seq, ok && cp == p
}

// inputStream is the stream partition p is consumed from: its shard's
// ingest, or in strict mode its shard's home stream (every region's events
// for the partitions homed here).
func (c *Consumer) inputStream(p int) string {
	switch {
	case c.o.Strict && c.o.Host != "":
		return c.here.StandbyHomeShard(c.o.Region, c.names.ShardOf(p))
	case c.o.Strict:
		return c.names.HomeStreamOf(p)
	case c.o.Host != "":
		return c.here.StandbyShard(c.o.Region, c.names.ShardOf(p))
	}
	return c.names.IngestStreamOf(p)
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
