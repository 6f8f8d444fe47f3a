// Package telemetry wires onceplane's observability: Prometheus metrics, the
// OpenTelemetry tracer chosen by the standard OTEL_* variables, trace-context
// propagation through NATS headers, and the admin HTTP endpoints.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the counters and histograms an edge exports. Build one per
// process with NewMetrics and share it (edge.Options.Metrics; nil there
// means a registry of the edge's own).
type Metrics struct {
	Registry *prometheus.Registry

	EventsIn         *prometheus.CounterVec   // region
	Decisions        *prometheus.CounterVec   // region, path
	Uncertain        *prometheus.CounterVec   // region: IDs found uncertain at takeover
	UncertainReruns  *prometheus.CounterVec   // region
	DLQ              *prometheus.CounterVec   // region, reason
	ClaimAppends     *prometheus.CounterVec   // region, kind
	ClaimAppendSec   *prometheus.HistogramVec // region
	HandlerSec       *prometheus.HistogramVec // region
	DecisionSec      *prometheus.HistogramVec // region: batch start to claim durable
	HandlerRetries   *prometheus.CounterVec   // region
	OwnershipChanges *prometheus.CounterVec   // region, change (acquired, fenced, released, failed)
	TakeoverSec      *prometheus.HistogramVec // region
	TakeoverPhaseSec *prometheus.HistogramVec // region, phase (rebuild, fence, resume)
	Members          *prometheus.GaugeVec     // region: live edges in the gossip view
	MembershipEvents *prometheus.CounterVec   // region, kind (joined, left, failed, updated)
	Rewinds          *prometheus.CounterVec   // region: consumer rewinds after a delivery gap
	OwnedPartitions  *prometheus.GaugeVec     // region
	StuckPartitions  *prometheus.GaugeVec     // region, edge: partitions whose batch has not moved for Options.StuckAfter
	TrackedIDs       *prometheus.GaugeVec     // region, partition
	TrackedBytes     *prometheus.GaugeVec     // region, partition
	ReplicationLag   *prometheus.HistogramVec // from, to: a claim's append in one region to its merge by the owner in another
	Conflicts        *prometheus.CounterVec   // region, peer: races of an ID claimed in both regions (recorded once per race)
	RemoteMerged     *prometheus.CounterVec   // region, peer: remote claim records merged by owners
	TailMerged       *prometheus.CounterVec   // region, peer: of those, read from the peer's claim log by the tail
	DedupeLatency    *prometheus.HistogramVec // from, to: publish in region from to the decision in region to
	ForeignRecords   *prometheus.CounterVec   // region, stream (claims, xclaims, conflicts): messages no edge wrote, skipped
}

var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// wanBuckets resolve round trips between regions (tens to hundreds of ms).
var wanBuckets = []float64{.005, .01, .025, .05, .075, .1, .15, .2, .25, .3, .4, .5, .75, 1, 2, 5, 10}

// NewMetrics registers onceplane's metrics (and Go runtime metrics) in a new registry.
func NewMetrics() *Metrics {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { r.MustRegister(c) }
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "onceplane", Name: name, Help: help}, labels)
		f(c)
		return c
	}
	hv := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "onceplane", Name: name, Help: help, Buckets: latencyBuckets}, labels)
		f(h)
		return h
	}
	wv := func(name, help string, labels ...string) *prometheus.HistogramVec {
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "onceplane", Name: name, Help: help, Buckets: wanBuckets}, labels)
		f(h)
		return h
	}
	gv := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "onceplane", Name: name, Help: help}, labels)
		f(g)
		return g
	}
	return &Metrics{
		Registry:         r,
		EventsIn:         cv("events_in_total", "Events consumed from the ingest stream.", "region"),
		Decisions:        cv("decisions_total", "Dedupe decisions by path (bloom-negative, exact-miss, uncertain-rerun: first time; exact-hit, in-batch, uncertain-skip, remote-claim: duplicate).", "region", "path"),
		Uncertain:        cv("uncertain_total", "IDs found uncertain (claimed, not known done) when taking a partition over.", "region"),
		UncertainReruns:  cv("uncertain_reruns_total", "Uncertain IDs delivered again and handled again under the rerun policy.", "region"),
		DLQ:              cv("dlq_total", "Events sent to the dead-letter stream, by reason.", "region", "reason"),
		ClaimAppends:     cv("claim_appends_total", "Conditional appends to claim logs, by record kind.", "region", "kind"),
		ClaimAppendSec:   hv("claim_append_seconds", "Latency of one conditional claim append.", "region"),
		HandlerSec:       hv("handler_seconds", "Latency of one handler call for a batch.", "region"),
		DecisionSec:      hv("decision_seconds", "Latency of deciding one batch: from its start to its claim being durable.", "region"),
		HandlerRetries:   cv("handler_retries_total", "Handler retries after an error or panic.", "region"),
		OwnershipChanges: cv("ownership_changes_total", "Partition ownership changes seen by this edge.", "region", "change"),
		TakeoverSec:      hv("takeover_seconds", "Time from starting to own a partition to consuming it (replay + fence).", "region"),
		Rewinds:          cv("rewinds_total", "Consumer rewinds to the done position after the client missed a delivery.", "region"),
		TakeoverPhaseSec: hv("takeover_phase_seconds", "Takeover phases: rebuild (claim-log replay), fence (takeover record), resume (consumer).", "region", "phase"),
		Members:          gv("members", "Live edges in this edge's gossip view.", "region"),
		MembershipEvents: cv("membership_events_total", "Gossip membership events seen by this edge.", "region", "kind"),
		OwnedPartitions:  gv("owned_partitions", "Partitions this edge currently owns.", "region"),
		StuckPartitions:  gv("stuck_partitions", "Owned partitions whose current step (claim append, handler, dead letter, rewind) has not finished for the stuck threshold; /readyz fails while any is.", "region", "edge"),
		TrackedIDs:       gv("tracked_ids", "IDs in the exact set of an owned partition.", "region", "partition"),
		TrackedBytes:     gv("tracked_bytes", "Bytes held by the exact set and Bloom filter of an owned partition.", "region", "partition"),
		ReplicationLag:   wv("replication_lag_seconds", "From a claimed batch's ingest in region from to its claim record being stored in region to (servers' clocks; skew between the regions adds to it).", "from", "to"),
		Conflicts:        cv("conflicts_total", "IDs claimed both in this region and in peer inside the replication lag (asynchronous mode), recorded once per race (an ID that races again a window later counts again).", "region", "peer"),
		RemoteMerged:     cv("remote_claims_merged_total", "Claim records of other regions merged into owners' pre-check state.", "region", "peer"),
		TailMerged:       cv("remote_claims_tailed_total", "Of the merged claim records, those read from the other region's claim log directly (the tail, while replication recovers from a WAN fault) before the xclaims stream brought them.", "region", "peer"),
		DedupeLatency:    wv("dedupe_latency_seconds", "From an event's publish in region from to its decision in region to (strict mode crosses the WAN).", "from", "to"),
		ForeignRecords:   cv("foreign_records_total", "Messages on claim or conflict subjects that no edge wrote (not a record: e.g. a JetStream acknowledgement sent there through a publisher's reply subject), skipped. Any is an alarm: something other than an edge can write there.", "region", "stream"),
	}
}
