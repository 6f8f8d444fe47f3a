package edge

import (
	"context"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/telemetry"
)

// process runs one batch of partition p through its steps, in order:
//
//	validate   decode each event; the invalid ones become dead letters
//	decide     dedupe.State.Decide: classify, and the claim record of the
//	           events to run, appended conditionally on the log's tail
//	           (fenced otherwise); dedupe.State.Committed
//	handle     run the handler on the events to run; those it gives up on
//	           become dead letters
//	dead       store every dead letter
//	ack        AckAll the batch's last message
//	finish     dedupe.State.Finished: the next record carries it to the log
//
// A stop between two steps leaves the batch's claimed IDs uncertain for the
// next owner; nothing is acknowledged before its claim is durable.
func (pt *partition) process(ctx context.Context, batch []inMsg) error {
	c, p, st, w := pt.c, pt.p, pt.st, pt.w
	started := c.now()
	c.c.in.add(int64(len(batch)))
	v := pt.validate(batch)
	// The batch, its claim append and the other regions' merges of that
	// claim join the trace of the batch's first traced event (the others'
	// decide spans link to the batch): one trace then shows an event from
	// its publish to its claim replicated elsewhere.
	bctx := ctx
	if v.parent.IsValid() {
		bctx = trace.ContextWithRemoteSpanContext(ctx, v.parent)
	}
	ctx, span := c.tracer.Start(bctx, "onceplane.batch", trace.WithTimestamp(started),
		trace.WithAttributes(append(c.attrs(p), attribute.Int("onceplane.batch_size", len(batch)))...))
	defer span.End()
	if err := c.awaitConnected(ctx, p); err != nil {
		return err
	}
	if err := pt.decide(ctx, v.at); err != nil {
		span.RecordError(err)
		return err
	}
	pt.account(ctx, v.traced, started, c.now())
	if err := pt.handle(ctx); err != nil {
		return err
	}
	if len(w.dead) > 0 {
		dctx, ds := c.tracer.Start(ctx, "onceplane.dlq", trace.WithAttributes(attribute.Int("onceplane.dead", len(w.dead))))
		c.busy(p, "dead-lettering")
		err := pt.deadLetter(dctx)
		ds.End()
		if err != nil {
			return err
		}
	}
	_, ack := c.tracer.Start(ctx, "onceplane.ack")
	if v.last != nil {
		_ = v.last.Ack() // AckAll: covers the whole batch; a lost ack only causes a redelivery, decided as a duplicate
	}
	ack.End()
	st.Finished(&w.batch, v.maxSeq)
	c.idle(p)
	c.c.done.add(int64(len(batch)))
	pt.gaugeTracked()
	return nil
}

// validated is what validate learns of a batch beyond its events.
type validated struct {
	maxSeq uint64            // the newest ingest sequence
	last   jetstream.Msg     // its message: acknowledging it acknowledges the batch
	at     time.Time         // the newest ingest time: the dedupe clock
	traced int               // events that carry a sampled producer's trace context (at most maxTracedPerBatch)
	parent trace.SpanContext // the first of them: the batch joins its trace
}

// validate decodes and checks each event of batch into w.valid and
// w.hashes; the invalid ones go to w.dead with their reason.
func (pt *partition) validate(batch []inMsg) validated {
	c, p, w := pt.c, pt.p, pt.w
	w.valid, w.hashes, w.seqs, w.dead = w.valid[:0], w.hashes[:0], w.seqs[:0], w.dead[:0]
	var v validated
	for _, in := range batch {
		var seq uint64
		var stored time.Time
		if md, err := in.m.Metadata(); err == nil {
			seq, stored = md.Sequence.Stream, md.Timestamp
		}
		if seq >= v.maxSeq {
			v.maxSeq, v.last = seq, in.m
		}
		if stored.After(v.at) {
			v.at = stored
		}
		hdr := in.m.Headers()
		// The tenant from the stored subject (the producer's permissions
		// pinned it); the ID from the producer's header. Nats-Msg-Id is
		// read only for the default tenant, whose producers sent their
		// IDs there before tenants.
		tenant := streams.TenantOf(in.m.Subject())
		var id string
		if hdr != nil {
			if id = hdr.Get(event.HeaderID); id == "" && tenant == event.DefaultTenant {
				id = hdr.Get(event.HeaderMsgID)
			}
		}
		h, err := event.Check(tenant, id, len(in.m.Data()), p, c.nparts, c.o.Limits)
		if err != nil {
			detail := err.Error()
			if hdr == nil {
				detail = "no headers (absent or undecodable): " + detail
			}
			w.dead = append(w.dead, deadMsg{m: in.m, id: id, tenant: tenant, seq: seq, reason: event.Reason(err), detail: detail})
			continue
		}
		vm := validMsg{in: in, id: id, tenant: tenant, h: h, seq: seq, at: stored, origin: c.o.Region}
		if c.o.Strict { // the home stream holds every region's events
			vm.origin = streams.RegionOf(in.m.Subject())
		}
		if ps := hdr.Get(event.HeaderPublished); ps != "" {
			if ns, err := strconv.ParseInt(ps, 10, 64); err == nil {
				vm.pub = time.Unix(0, ns)
			}
		}
		if v.traced < maxTracedPerBatch && hasTraceParent(hdr) {
			// Only a sampled producer's span gets decide spans (a parent-based
			// sampler would drop the others'): unsampled events cost nothing
			// here and do not crowd sampled ones out of the batch's quota.
			sc := trace.SpanContextFromContext(telemetry.Propagator().Extract(context.Background(), telemetry.HeaderCarrier(hdr)))
			if sc.IsValid() && sc.IsSampled() {
				vm.traced = sc
				if v.traced == 0 {
					v.parent = sc
				}
				v.traced++
			}
		}
		w.valid = append(w.valid, vm)
		w.hashes = append(w.hashes, h)
		w.seqs = append(w.seqs, seq)
	}
	return v
}

// decide takes the batch's decisions (dedupe.State.Decide), builds the
// events to run into w.evs, and makes their claim durable: the conditional
// append, then dedupe.State.Committed. An append the log refuses is a fence.
func (pt *partition) decide(ctx context.Context, at time.Time) error {
	c, p, st, w := pt.c, pt.p, pt.st, pt.w
	_, pre := c.tracer.Start(ctx, "onceplane.precheck")
	// Claims carry their batch's ingest sequence (a version-2 record) only
	// for a transactional sink: an edge without one writes records every
	// earlier edge reads.
	seqs := w.seqs
	if c.tx == nil {
		seqs = nil
	}
	st.Decide(w.hashes, seqs, at, c.o.Name, &w.batch)
	pre.End()
	w.evs = w.evs[:0]
	// A failover edge runs what the lost region accepted: it may have run
	// any of it and died before its claim reached the standby, so every
	// run is flagged (and counted) as uncertain.
	failover := c.o.Host != ""
	for _, i := range w.batch.Run {
		v := w.valid[i]
		w.evs = append(w.evs, event.Event{ID: v.id, Tenant: v.tenant, Hash: v.h, Partition: p, Data: v.in.m.Data(), Headers: v.in.m.Headers(), StreamSeq: v.seq,
			Uncertain: failover || w.batch.Paths[i] == dedupe.PathUncertainRerun, Epoch: st.Epoch(), Source: pt.source})
	}
	if !w.batch.Claims {
		return nil
	}
	actx, as := c.tracer.Start(ctx, "onceplane.claim_append", trace.WithAttributes(attribute.Int("onceplane.claimed", len(w.batch.Run))))
	t0 := time.Now()
	c.busy(p, "appending a claim")
	seq, err := c.log.Append(actx, p, st.LastSeq(), w.batch.Claim)
	c.o.Metrics.ClaimAppendSec.WithLabelValues(c.o.Region).Observe(time.Since(t0).Seconds())
	as.End()
	if err != nil {
		return err
	}
	st.Committed(&w.batch, seq)
	c.c.appends.addBy("claim", 1)
	if pt.remote != nil {
		return pt.recordConflicts(ctx)
	}
	return nil
}

// account counts a decided batch (totals, metrics, latency, traces) and
// tells Options.OnDecision of each decision.
func (pt *partition) account(ctx context.Context, traced int, started, committed time.Time) {
	c, p, w := pt.c, pt.p, pt.w
	reruns := 0
	for _, e := range w.evs {
		if e.Uncertain {
			reruns++
		}
	}
	nFirst := int64(len(w.evs))
	c.c.first.add(nFirst)
	c.c.dup.add(int64(len(w.batch.Paths)) - nFirst)
	c.c.reruns.add(int64(reruns))
	c.c.countPaths(w.batch.Paths)
	c.decisionSec.Observe(committed.Sub(started).Seconds())
	c.observeDedupeLatency(w, committed)
	if traced > 0 {
		pt.traceDecisions(ctx, started, committed)
	}
	if c.o.OnDecision != nil {
		for i, v := range w.valid {
			c.o.OnDecision(Decision{Partition: p, ID: v.id, Tenant: v.tenant, Path: w.batch.Paths[i], Origin: v.origin, Published: v.pub, Stored: v.at, Received: v.in.at, Started: started, Committed: committed})
		}
	}
}

// handle runs the handler on w.evs (retries, panics isolated); the events
// it gives up on join w.dead.
func (pt *partition) handle(ctx context.Context) error {
	c, p, w := pt.c, pt.p, pt.w
	if len(w.evs) == 0 {
		return nil
	}
	hctx, hs := c.tracer.Start(ctx, "onceplane.handler", trace.WithAttributes(attribute.Int("onceplane.events", len(w.evs))))
	t0 := time.Now()
	c.busy(p, "running the handler")
	// A transactional handler's later call moves its position past an
	// event that gave up: its dead letter goes first.
	var gaveUp func(int, error) error
	var early map[int]bool
	if c.tx != nil {
		early = map[int]bool{}
		gaveUp = func(i int, e error) error {
			ev := w.evs[i]
			d := deadMsg{m: w.valid[w.batch.Run[i]].in.m, id: ev.ID, tenant: ev.Tenant, seq: ev.StreamSeq, reason: event.ErrHandlerFail.Error(), detail: e.Error()}
			if err := pt.deadLetterOne(ctx, d); err != nil {
				return err
			}
			early[i] = true
			return nil
		}
	}
	final, res, err := runHandler(hctx, c.h, w.evs, c.o.Retry, gaveUp)
	c.o.Metrics.HandlerSec.WithLabelValues(c.o.Region).Observe(time.Since(t0).Seconds())
	hs.End()
	c.c.retries.add(int64(res.retries))
	// Events of a batch whose handler panicked: each ran again alone,
	// flagged uncertain (the panic may have come after their effect).
	c.c.reruns.add(int64(res.flagged))
	if err != nil {
		return err
	}
	for i, e := range final {
		if e != nil && !early[i] {
			ev := w.evs[i]
			w.dead = append(w.dead, deadMsg{m: w.valid[w.batch.Run[i]].in.m, id: ev.ID, tenant: ev.Tenant, seq: ev.StreamSeq, reason: event.ErrHandlerFail.Error(), detail: e.Error()})
		}
	}
	return nil
}

// work holds a batch's scratch buffers, reused across batches.
type work struct {
	valid  []validMsg
	hashes []event.Hash
	seqs   []uint64      // the valid events' ingest sequences
	batch  dedupe.Batch  // the decisions; batch.Run[i] is the index in valid of evs[i]
	evs    []event.Event // the events the handler runs
	dead   []deadMsg
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
	return &work{valid: make([]validMsg, 0, n), hashes: make([]event.Hash, 0, n), seqs: make([]uint64, 0, n), evs: make([]event.Event, 0, n)}
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
func (pt *partition) traceDecisions(ctx context.Context, started, committed time.Time) {
	c, p, w := pt.c, pt.p, pt.w
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
