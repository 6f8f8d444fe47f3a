package edge

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/telemetry"
)

// Options configures a Consumer. The zero value consumes every partition of
// region "local" with the defaults below.
type Options struct {
	// Region names the streams to consume (see streams.Names). Zero means "local".
	Region string
	// Name identifies this edge in claim records (at most dedupe.MaxWriter bytes). Zero
	// means hostname-pid.
	Name string
	// Peers are the other regions of a multi-region deployment. Non-empty
	// makes every owned partition merge their claims (replicated into this
	// region's xclaims stream) into its pre-check state, skip IDs claimed
	// elsewhere, and record conflicts (asynchronous mode, G2). Ignored with
	// Strict: every ID is decided in its home region, nothing to merge.
	Peers []string
	// Host, when set, is the region whose core nodes this edge talks to,
	// when that is not Region: a standby deciding Region's partitions after
	// a region failover (streams.Promote). It consumes Region's ingest as
	// Host mirrors it (same sequences), continues Region's claim log on
	// Host's promoted standby claim streams, merges the other regions'
	// claims (Host's own among them) and records conflicts and dead letters
	// in Host's streams. With Strict it consumes Host's promoted copy of
	// Region's home stream instead (Partitions: Region's home partitions),
	// and merges nothing. Host must be among Peers. Zero means Region.
	Host string
	// Standby is the region standing by for this one (its core nodes run
	// -standby-for this region). Before it owns anything, the edge asks it
	// whether this region was failed over (core region-failover) and owns
	// nothing until the region fails back; it waits for the answer. The
	// region's core nodes fence its claim log too, once they know. Zero
	// means none.
	Standby string
	// IsolatedAfter, when set, stops the edge claiming while its region has
	// heard nothing from a majority of the regions (itself included) for
	// this long (regionwatch.Isolated, from its xclaims stream's sources):
	// the side of a cut the others may declare lost. Set it below the
	// standby's -failover-after, so that the region has stopped by the time
	// the standby takes its partitions over. Claims resume when it hears a
	// majority again, unless its standby (Standby) failed it over
	// meanwhile: then it owns nothing until the failback. Asynchronous mode
	// with a Standby only. Zero means never.
	IsolatedAfter time.Duration
	// NoTail turns the tail off: while another region's replication into
	// this one is silent, and for 10 s after, owned partitions read that
	// region's claims from its claim log directly (batch direct gets across
	// the gateway), so claims made over there during a WAN cut are known
	// here within a second of the heal rather than when JetStream's sources
	// recover (tail.go). Asynchronous mode, everyday edges. Zero (false)
	// means on.
	NoTail bool
	// Strict consumes the region's home stream (every region's events for
	// the partitions homed here) instead of its ingest: strict mode, G3.
	// With Partitions nil, the edge owns the home partitions the region's
	// home stream records (streams.ReadHomes), following a home moved by
	// command (rehome.Move); a partition moved away is never taken back.
	Strict bool
	// Partitions lists the partitions this edge owns. Nil means all of them
	// (strict mode: the region's recorded homes).
	// With Membership, it lists the partitions the region's edges share
	// (strict mode: the region's home partitions).
	Partitions []int
	// Membership, when set, makes ownership follow the live members:
	// failover.Assign decides who should own each partition; the claim log's
	// fencing decides who may write. Name must be this edge's member name.
	Membership Membership
	// HandoffDelay is how long an edge waits before taking a partition whose
	// previous owner is alive, so that owner can release it gracefully. Zero
	// means 300 ms.
	HandoffDelay time.Duration
	// RefenceDelay is how long an edge leaves a partition it was fenced from
	// before taking it back if membership still assigns it. Zero means 2 s.
	RefenceDelay time.Duration
	// ShutdownGrace bounds a graceful release, and Run's return after its
	// context ends, whatever the core does. Zero means 5 s.
	ShutdownGrace time.Duration
	// StuckAfter is how long one step of a batch (claim append, handler, dead
	// letter, rewind) may last before the partition counts as stuck: Ready
	// fails and the stuck_partitions gauge counts it. Zero means 30 s.
	StuckAfter time.Duration
	// BatchSize is the most events decided, claimed and acknowledged together.
	// Zero means 500.
	BatchSize int
	// AckWait is the ingest consumer's redelivery timeout. Zero means 30 s.
	AckWait time.Duration
	// IdleFlush is how long a partition waits without events before it writes
	// a done record, shrinking the uncertain set of a crash. Zero means 200 ms.
	IdleFlush time.Duration

	// Window is how long a claimed ID is remembered. It must equal the
	// window the region's streams were made for (Run refuses otherwise).
	// Zero means 24 h.
	Window time.Duration
	// ExpectedIDs pre-sizes each partition's exact set and Bloom filter for that
	// many IDs per window. Zero means grow as needed.
	ExpectedIDs int
	// RemoteExpectedIDs pre-sizes, in asynchronous mode, each partition's
	// set of another region's claims for that many IDs per window, made at
	// that region's first record (dedupe.Options.RemoteExpectedIDs). Zero
	// means ExpectedIDs; negative means grow as needed.
	RemoteExpectedIDs int
	// NoBloom turns the Bloom pre-check off. Decisions are the same either way.
	NoBloom bool
	// Policy applies to uncertain IDs delivered again. Zero means dedupe.PolicyRerun.
	Policy dedupe.Policy

	// Limits bounds accepted events. Zero means event defaults (64 KiB payload).
	Limits event.Limits
	// Retry configures handler retries before dead-lettering.
	Retry Retry

	// Metrics receives counters and histograms. Nil means a private registry.
	Metrics *telemetry.Metrics
	// TracerProvider creates spans. Nil means the global provider.
	TracerProvider trace.TracerProvider
	// Clock, when set, replaces time.Now for this edge's wall clock (drills
	// skew it; decisions must not depend on it). Zero means time.Now.
	Clock func() time.Time
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
	// OnOwnership, when set, is called on every ownership change of this edge.
	OnOwnership func(OwnershipEvent)
	// OnReplicated, when set, is called for each live claim record merged
	// from another region with its replication lag (its batch's ingest
	// there to its store here, on servers' clocks). It must be fast.
	OnReplicated func(from string, lag time.Duration)
	// OnDecision, when set, is called once per decided event after its claim
	// is committed (simulation reports, tests). It must be fast.
	OnDecision func(Decision)
}

// Decision describes one event's dedupe decision, for OnDecision.
type Decision struct {
	Partition int
	// ID and Tenant are the event's; event.Key(Tenant, ID) is what was
	// decided.
	ID     string
	Tenant string
	Path   dedupe.Path
	// Origin is the region the event was published in; Published the
	// producer's publish time when it stamped one (event.HeaderPublished).
	Origin    string
	Published time.Time
	// Stored is when the ingest stream stored the event; Received is when
	// the edge received it; Started is when its batch started being decided;
	// Committed is when its claim was durable (or the duplicate verdict was
	// reached). Committed-Started is the dedupe cost; Committed-Stored
	// includes queueing.
	Stored, Received, Started, Committed time.Time
}

// DefaultOptions returns what Options' zero fields stand for (those
// without a process-wide meaning: not Name, Metrics or Logger), for
// commands to use as their flag defaults.
func DefaultOptions() Options {
	return Options{
		Region: "local", BatchSize: 500, Window: 24 * time.Hour, AckWait: 30 * time.Second,
		IdleFlush: 200 * time.Millisecond, HandoffDelay: 300 * time.Millisecond, RefenceDelay: 2 * time.Second,
		ShutdownGrace: 5 * time.Second, StuckAfter: 30 * time.Second,
		Retry:  Retry{}.withDefaults(),
		Limits: event.Limits{MaxPayload: event.DefaultMaxPayload},
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.Region == "" {
		o.Region = d.Region
	}
	if o.Name == "" {
		h, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if o.BatchSize <= 0 {
		o.BatchSize = d.BatchSize
	}
	if o.Window <= 0 {
		o.Window = d.Window
	}
	if o.AckWait <= 0 {
		o.AckWait = d.AckWait
	}
	if o.IdleFlush <= 0 {
		o.IdleFlush = d.IdleFlush
	}
	if o.HandoffDelay <= 0 {
		o.HandoffDelay = d.HandoffDelay
	}
	if o.RefenceDelay <= 0 {
		o.RefenceDelay = d.RefenceDelay
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = d.ShutdownGrace
	}
	if o.StuckAfter <= 0 {
		o.StuckAfter = d.StuckAfter
	}
	if o.Metrics == nil {
		o.Metrics = telemetry.NewMetrics()
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Retry = o.Retry.withDefaults()
	return o
}

// Validate refuses options that no region's streams could honour, naming
// the field: a region or peer that is not a region name, an edge name too
// long for a claim record, a partition listed twice or negative, negative
// durations and sizes (zero is the default; a negative value is a mistake,
// not a default). Run checks the rest against the streams themselves.
func (o Options) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if o.Region != "" {
		if err := streams.ValidateRegion(o.Region); err != nil {
			bad("Region", "%v", err)
		}
	}
	if len(o.Name) > dedupe.MaxWriter {
		bad("Name", "%d bytes, at most %d (it is written in every claim record)", len(o.Name), dedupe.MaxWriter)
	}
	seen := map[string]bool{}
	own := cmp.Or(o.Region, DefaultOptions().Region)
	for _, p := range o.Peers {
		if err := streams.ValidateRegion(p); err != nil {
			bad("Peers", "%v", err)
		}
		if p == own {
			bad("Peers", "%q is this edge's own region", p)
		}
		if seen[p] {
			bad("Peers", "%q listed twice", p)
		}
		seen[p] = true
	}
	if o.IsolatedAfter < 0 {
		bad("IsolatedAfter", "negative")
	}
	if o.IsolatedAfter > 0 && (o.Strict || o.Host != "" || o.Standby == "") {
		// Without a standby nobody takes the region over: in asynchronous
		// mode a cut-off region goes on deciding its own events.
		bad("IsolatedAfter", "an everyday edge of a region with a Standby, in asynchronous mode only")
	}
	if o.Standby != "" && !seen[o.Standby] {
		bad("Standby", "%q is not among Peers", o.Standby)
	}
	if o.Host != "" && !seen[o.Host] {
		bad("Host", "%q is not among Peers", o.Host)
	}
	parts := map[int]bool{}
	for _, p := range o.Partitions {
		if p < 0 {
			bad("Partitions", "%d is negative", p)
		}
		if parts[p] {
			bad("Partitions", "%d listed twice", p)
		}
		parts[p] = true
	}
	for _, d := range []struct {
		field string
		v     time.Duration
	}{
		{"HandoffDelay", o.HandoffDelay}, {"RefenceDelay", o.RefenceDelay}, {"ShutdownGrace", o.ShutdownGrace},
		{"StuckAfter", o.StuckAfter}, {"AckWait", o.AckWait}, {"IdleFlush", o.IdleFlush}, {"Window", o.Window},
	} {
		if d.v < 0 {
			bad(d.field, "%v is negative", d.v)
		}
	}
	if o.BatchSize < 0 {
		bad("BatchSize", "%d is negative", o.BatchSize)
	}
	if o.ExpectedIDs < 0 {
		bad("ExpectedIDs", "%d is negative", o.ExpectedIDs)
	}
	return errors.Join(errs...)
}
