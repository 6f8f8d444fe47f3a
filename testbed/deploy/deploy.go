// Package deploy runs a whole topology on one machine: the supercluster's
// core nodes and every region's edges in-process, publishing through
// per-region producers and keeping an effect ledger per region, so that
// simulations, drills and tests can count exactly what happened where.
package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/failover"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/supercluster"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
	"github.com/onceplane/onceplane/topology"
)

// Options configures Start. The zero value is usable.
type Options struct {
	// Cluster configures the core nodes (data dir, memory streams, logger).
	Cluster supercluster.Options
	// BatchSize per edge. Zero means the edge default (500).
	BatchSize int
	// NoBloom turns the edges' Bloom pre-check off.
	NoBloom bool
	// Handler, when set, makes each edge's handler from its region and its
	// JetStream connection (an output sink, say). Nil means the Effects
	// ledger; a Handler replaces it, and Effects stays empty.
	Handler func(region string, js jetstream.JetStream) edge.Handler
	// IdleFlush per edge. Zero means the edge default.
	IdleFlush time.Duration
	// TracerProvider for edges and producers. Nil means the global provider.
	TracerProvider trace.TracerProvider
	// Tracer, when set, gives each region's edges and producer a provider
	// of their own (a service per region and role: "edge" or "producer"),
	// in place of TracerProvider.
	Tracer func(region, role string) trace.TracerProvider
	// OnDecision is called for every decision of every edge (must be fast).
	OnDecision func(region string, d edge.Decision)
	// OnOwnership is called for every ownership change of every edge.
	OnOwnership func(region, edge string, e edge.OwnershipEvent)
	// NoReplication runs the edges without merging other regions' claims
	// (the streams still replicate): a baseline for what merging costs.
	NoReplication bool
	// OnReplicated is called for every live remote claim record merged, with
	// its replication lag from region from to region to (must be fast).
	OnReplicated func(from, to string, lag time.Duration)
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
}

// tracer returns the provider of region's role.
func (o Options) tracer(region, role string) trace.TracerProvider {
	if o.Tracer != nil {
		return o.Tracer(region, role)
	}
	return o.TracerProvider
}

// Ledger counts effects per region and ID. It is safe for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	counts  map[string]map[string]int // region -> ID -> handler runs
	flagged map[string]map[string]int // region -> ID -> runs flagged uncertain
	claimed map[string]map[string]int // region -> ID -> first-time decisions (claims)
	total   int
}

func newLedger() *Ledger {
	return &Ledger{counts: map[string]map[string]int{}, flagged: map[string]map[string]int{}, claimed: map[string]map[string]int{}}
}

func (l *Ledger) add(region, id string, uncertain bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total++
	bump(l.counts, region, id)
	if uncertain {
		bump(l.flagged, region, id)
	}
}

func (l *Ledger) claim(region, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bump(l.claimed, region, id)
}

// Claimed returns region -> hashes (event.Hash.Hex) of the IDs its edges
// claimed as first-time decisions (uncertain re-runs included), whether or
// not their handler ran.
func (l *Ledger) Claimed() map[string]map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]map[string]bool, len(l.claimed))
	for r, ids := range l.claimed {
		m := make(map[string]bool, len(ids))
		for id := range ids {
			m[event.HashID(id).Hex()] = true
		}
		out[r] = m
	}
	return out
}

func bump(m map[string]map[string]int, region, id string) {
	r := m[region]
	if r == nil {
		r = map[string]int{}
		m[region] = r
	}
	r[id]++
}

// Total is the number of effects in every region.
func (l *Ledger) Total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// Distinct is the number of IDs with an effect in some region.
func (l *Ledger) Distinct() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	seen := map[string]bool{}
	for _, m := range l.counts {
		for id := range m {
			seen[id] = true
		}
	}
	return len(seen)
}

// Counts returns a copy of region -> ID -> effects.
func (l *Ledger) Counts() map[string]map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return clone(l.counts)
}

// Flagged returns a copy of region -> ID -> effects whose handler was told
// they might repeat an earlier one (Event.Uncertain).
func (l *Ledger) Flagged() map[string]map[string]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return clone(l.flagged)
}

func clone(m map[string]map[string]int) map[string]map[string]int {
	out := make(map[string]map[string]int, len(m))
	for r, ids := range m {
		out[r] = maps.Clone(ids)
	}
	return out
}

// Deployment is a running topology.
type Deployment struct {
	*supercluster.Cluster
	top     topology.Topology
	o       Options
	Metrics *telemetry.Metrics
	Effects *Ledger

	mu    sync.Mutex
	edges map[string][]*runningEdge
	// retired are the totals of region's stopped edges (restarts included),
	// so that a region's counts survive its edges' restarts.
	retired map[string]edge.Stats
	prods   map[string]*producer.Producer
	conns   []*nats.Conn
	cancel  context.CancelFunc
	ctx     context.Context
	wg      sync.WaitGroup
}

type runningEdge struct {
	c      *edge.Consumer
	nc     *nats.Conn
	host   string // a failover edge's host region; "" for the region's own
	cancel context.CancelFunc
	done   chan struct{}
}

// Start brings up the supercluster and every edge of every region. In
// asynchronous mode each region's edges share all partitions and merge the
// other regions' claims; in strict mode they share their home partitions.
func Start(ctx context.Context, top topology.Topology, o Options) (*Deployment, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Cluster.Logger == nil {
		o.Cluster.Logger = o.Logger
	}
	sc, err := supercluster.Start(ctx, top, o.Cluster)
	if err != nil {
		return nil, err
	}
	top = sc.Topology()
	rctx, cancel := context.WithCancel(context.Background())
	d := &Deployment{Cluster: sc, top: top, o: o, Metrics: telemetry.NewMetrics(), Effects: newLedger(), retired: map[string]edge.Stats{},
		edges: map[string][]*runningEdge{}, prods: map[string]*producer.Producer{}, cancel: cancel, ctx: rctx}
	for _, r := range top.Regions {
		nc, js, err := sc.ConnectAs(r.Name, auth.Producer)
		if err != nil {
			d.Close()
			return nil, err
		}
		d.conns = append(d.conns, nc)
		d.prods[r.Name] = producer.NewWith(js, r.Name, producer.Options{TracerProvider: o.tracer(r.Name, "producer")})
		for _, e := range r.Edges {
			if err := d.StartEdge(r.Name, e.Name); err != nil {
				d.Close()
				return nil, err
			}
		}
	}
	return d, nil
}

// Topology returns the running topology.
func (d *Deployment) Topology() topology.Topology { return d.top }

// Names are region's stream names under the topology (its shards).
func (d *Deployment) Names(region string) streams.Names {
	r, _ := d.top.Region(region)
	return streams.Names{Region: region, Shards: d.top.ShardCount(r)}
}

// StartEdge starts (or restarts) the named edge of region.
func (d *Deployment) StartEdge(region, name string) error {
	r, ok := d.top.Region(region)
	if !ok {
		return fmt.Errorf("deploy: unknown region %q", region)
	}
	var names []string
	for _, e := range r.Edges {
		names = append(names, e.Name)
	}
	var home []int
	strict := d.top.Mode == topology.Strict
	if strict {
		home = d.top.HomePartitions(region)
		if home == nil {
			home = []int{}
		}
	}
	o := edge.Options{Region: region, Name: name, Partitions: failover.OwnedSome(names, d.top.Partitions, home, name), Strict: strict}
	if !strict && !d.o.NoReplication {
		o.Peers, o.Standby = d.others(region), r.Standby
	}
	return d.run(region, "", o)
}

// others are the regions of the topology but region.
func (d *Deployment) others(region string) []string {
	return slices.DeleteFunc(d.top.RegionNames(), func(r string) bool { return r == region })
}

// StartFailover starts host's failover edges for region of, one per edge of
// host's sharing of's partitions (edge -failover-of): of's standby claim
// streams in host must be promoted (streams.Promote) first. Their effects
// count as of's, and so do their stats.
func (d *Deployment) StartFailover(host, of string) error {
	r, ok := d.top.Region(host)
	if !ok {
		return fmt.Errorf("deploy: unknown region %q", host)
	}
	var names []string
	for _, e := range r.Edges {
		names = append(names, e.Name+"-for-"+of)
	}
	strict := d.top.Mode == topology.Strict
	var home []int
	if strict {
		home = d.top.HomePartitions(of)
	}
	for _, name := range names {
		o := edge.Options{Region: of, Host: host, Name: name, Partitions: failover.OwnedSome(names, d.top.Partitions, home, name), Peers: d.others(of), Strict: strict}
		if err := d.run(of, host, o); err != nil {
			return err
		}
	}
	return nil
}

// run starts an edge of region with o (its region's, or, with host set,
// a failover edge connected to host), filling what the deployment decides.
func (d *Deployment) run(region, host string, o edge.Options) error {
	if o.Partitions == nil {
		o.Partitions = []int{}
	}
	o.Window, o.BatchSize, o.IdleFlush, o.NoBloom = time.Duration(d.top.Window), d.o.BatchSize, d.o.IdleFlush, d.o.NoBloom
	o.Metrics, o.TracerProvider, o.Logger = d.Metrics, d.o.tracer(region, "edge"), d.o.Logger
	connectTo, role := region, auth.Edge
	if host != "" {
		connectTo, role = host, auth.FailoverEdge
	}
	nc, js, err := d.ConnectAs(connectTo, role)
	if err != nil {
		return err
	}
	name := o.Name
	o.OnDecision = func(dec edge.Decision) {
		if dec.Path.First() {
			d.Effects.claim(region, dec.ID)
		}
		if d.o.OnDecision != nil {
			d.o.OnDecision(region, dec)
		}
	}
	if d.o.OnOwnership != nil {
		o.OnOwnership = func(e edge.OwnershipEvent) { d.o.OnOwnership(region, name, e) }
	}
	if d.o.OnReplicated != nil {
		o.OnReplicated = func(from string, lag time.Duration) { d.o.OnReplicated(from, region, lag) }
	}
	var h edge.Handler = edge.HandlerFunc(func(_ context.Context, ev event.Event) error {
		d.Effects.add(region, ev.ID, ev.Uncertain)
		return nil
	})
	if d.o.Handler != nil {
		h = d.o.Handler(region, js)
	}
	c, err := edge.New(js, h, o)
	if err != nil {
		nc.Close()
		return err
	}
	ctx, cancel := context.WithCancel(d.ctx)
	re := &runningEdge{c: c, nc: nc, host: host, cancel: cancel, done: make(chan struct{})}
	d.mu.Lock()
	d.edges[region] = append(d.edges[region], re)
	d.mu.Unlock()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		defer close(re.done)
		if err := c.Run(ctx); err != nil && ctx.Err() == nil {
			d.o.Logger.Error("edge stopped", "edge", name, "region", region, "err", err)
		}
	}()
	return nil
}

// Edges returns region's running edges.
func (d *Deployment) Edges(region string) []*edge.Consumer {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*edge.Consumer
	for _, e := range d.edges[region] {
		out = append(out, e.c)
	}
	return out
}

// Stats sums the stats of region's edges, those stopped or restarted
// included (their partitions owned and remote records merged excepted:
// those describe the current owners).
func (d *Deployment) Stats(region string) edge.Stats {
	d.mu.Lock()
	s, es := d.retired[region], slices.Clone(d.edges[region])
	d.mu.Unlock()
	for _, e := range es {
		s.Add(e.c.Stats())
	}
	return s
}

// Ready reports whether every edge owns its partitions.
func (d *Deployment) Ready() error {
	var errs []error
	for _, r := range d.top.RegionNames() {
		for _, c := range d.Edges(r) {
			if err := c.Ready(); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", c.Name(), err))
			}
		}
	}
	return errors.Join(errs...)
}

// WaitReady polls Ready until it holds or ctx ends.
func (d *Deployment) WaitReady(ctx context.Context) error {
	for {
		err := d.Ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("deploy: not ready: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Producer returns region's producer.
func (d *Deployment) Producer(region string) *producer.Producer { return d.prods[region] }

// Conflicts reads every region's conflicts stream: region -> records. A
// strict-mode deployment has none (nothing is decided in two regions).
func (d *Deployment) Conflicts(ctx context.Context) (map[string][]dedupe.ConflictRecord, error) {
	out := map[string][]dedupe.ConflictRecord{}
	if d.top.Mode == topology.Strict {
		return out, nil
	}
	for _, r := range d.top.RegionNames() {
		nc, js, err := d.Connect(r)
		if err != nil {
			return nil, err
		}
		recs, err := ReadConflicts(ctx, js, streams.Names{Region: r})
		nc.Close()
		if err != nil {
			return nil, err
		}
		out[r] = recs
	}
	return out, nil
}

// ReadConflicts reads every record of the conflicts stream of n's region,
// skipping messages that are not conflict records (no edge wrote them).
func ReadConflicts(ctx context.Context, js jetstream.JetStream, n streams.Names) ([]dedupe.ConflictRecord, error) {
	msgs, err := verify.ReadStream(ctx, js, n.ConflictStream())
	if err != nil {
		return nil, fmt.Errorf("conflicts %s: %w", n.Region, err)
	}
	out := make([]dedupe.ConflictRecord, 0, len(msgs))
	for _, m := range msgs {
		rec, err := dedupe.DecodeConflict(m.Data)
		if err != nil {
			continue // foreign bytes (no edge wrote them; the edges count them)
		}
		out = append(out, rec)
	}
	return out, nil
}

// Replicated reports whether every region's owners have merged every claim
// record the other regions have written so far (asynchronous mode).
func (d *Deployment) Replicated(ctx context.Context) (bool, error) {
	behind, err := d.Unreplicated(ctx)
	return err == nil && len(behind) == 0, err
}

// Unreplicated lists the regions whose owners have not merged every claim
// record the other regions have written so far, with the counts: a region
// whose xclaims sources still lag, or whose owners merged fewer records
// than the other regions' claim logs hold. (More is not behind: a claim
// log remade by a failback is sourced again from its start, as nats-server
// sources a recreated stream anew.)
func (d *Deployment) Unreplicated(ctx context.Context) ([]string, error) {
	claims := map[string]uint64{}
	for _, r := range d.top.RegionNames() {
		nc, js, err := d.Connect(r)
		if err != nil {
			return nil, err
		}
		rn := d.Names(r)
		n, err := verify.StreamsMsgs(ctx, js, rn.EveryShard(rn.ClaimShard))
		nc.Close()
		if err != nil {
			return nil, err
		}
		claims[r] = n
	}
	var behind []string
	for _, r := range d.top.RegionNames() {
		var want uint64
		for q, n := range claims {
			if q != r {
				want += n
			}
		}
		if got := uint64(d.Stats(r).RemoteMerged); got < want {
			behind = append(behind, fmt.Sprintf("%s merged %d of %d", r, got, want))
			continue
		}
		nc, js, err := d.Connect(r)
		if err != nil {
			return nil, err
		}
		for _, x := range d.Names(r).EveryShard(d.Names(r).XClaimShard) {
			if ok, err := sourcesCaughtUp(ctx, js, x); err != nil || !ok {
				behind = append(behind, fmt.Sprintf("%s sources lag (%v)", x, err))
			}
		}
		nc.Close()
	}
	return behind, nil
}

// Drained reports whether every region's input consumers have nothing
// pending or unacknowledged.
func (d *Deployment) Drained(ctx context.Context) (bool, error) {
	for _, r := range d.top.RegionNames() {
		nc, js, err := d.Connect(r)
		if err != nil {
			return false, err
		}
		n := d.Names(r)
		var homes []int // the ingest stream's partitions, all of them
		if d.top.Mode == topology.Strict {
			homes = append([]int{}, d.top.HomePartitions(r)...)
		}
		ok, err := verify.Drained(ctx, js, n, d.top.Partitions, homes)
		if err == nil && ok && d.top.Mode == topology.Strict {
			for _, h := range n.EveryShard(n.HomeShard) {
				if ok, err = sourcesCaughtUp(ctx, js, h); err != nil || !ok {
					break
				}
			}
		}
		nc.Close()
		if err != nil || !ok {
			return false, err
		}
	}
	return true, nil
}

// sourcesCaughtUp reports whether stream's sources have nothing left to copy.
func sourcesCaughtUp(ctx context.Context, js jetstream.JetStream, stream string) (bool, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return false, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return false, err
	}
	for _, src := range info.Sources {
		if src.Lag > 0 || src.Error != nil {
			return false, nil
		}
	}
	return true, nil
}

// RestartEdge stops the named edge of region gracefully (its batches in
// hand finish and are recorded done) and starts it again: its partitions are
// taken over anew (rebuild, merge, fence, resume).
func (d *Deployment) RestartEdge(region, name string) error {
	d.mu.Lock()
	var stop *runningEdge
	for _, e := range d.edges[region] {
		if e.c.Name() == name {
			stop = e
			break
		}
	}
	d.mu.Unlock()
	if stop == nil {
		return fmt.Errorf("deploy: no edge %q in %s", name, region)
	}
	d.stop(region, stop)
	return d.StartEdge(region, name)
}

// StopEdges stops region's edges (gracefully: batches in hand finish).
func (d *Deployment) StopEdges(region string) {
	d.stopSome(region, func(*runningEdge) bool { return true })
}

// StopFailover stops the failover edges running region's partitions
// elsewhere (gracefully).
func (d *Deployment) StopFailover(region string) {
	d.stopSome(region, func(e *runningEdge) bool { return e.host != "" })
}

// KillRegion loses region at once: its WAN links are cut first (what its
// core nodes had not sent yet, claims and events for its standby's mirrors
// included, never leaves), then its edges' connections (a batch in hand
// may have run its handler without recording it done, as after kill -9),
// then its core nodes shut down (their storage stays, as on machines that
// died). ReturnRegion brings it back.
func (d *Deployment) KillRegion(region string) {
	for _, other := range d.others(region) {
		d.Cut(region, other)
	}
	es := d.selectEdges(region, func(e *runningEdge) bool { return e.host == "" })
	for _, e := range es {
		e.nc.Close()
		e.cancel()
	}
	d.StopRegion(region)
	for _, e := range es {
		d.stop(region, e)
	}
}

// ReturnRegion brings a region KillRegion lost back: its core nodes on
// their storage, its links healed, its streams provisioned as a core
// binary does at start (a region failed over is fenced then). Its edges
// are not started.
func (d *Deployment) ReturnRegion(ctx context.Context, region string) error {
	if err := d.StartRegion(ctx, region); err != nil {
		return err
	}
	for _, other := range d.others(region) {
		d.Heal(region, other)
	}
	return d.ProvisionRegion(ctx, region)
}

// stopSome stops region's edges that which selects, all at once.
func (d *Deployment) stopSome(region string, which func(*runningEdge) bool) {
	es := d.selectEdges(region, which)
	for _, e := range es {
		e.cancel()
	}
	for _, e := range es {
		d.stop(region, e)
	}
}

// selectEdges returns region's running edges that which selects.
func (d *Deployment) selectEdges(region string, which func(*runningEdge) bool) []*runningEdge {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(d.edges[region]), func(e *runningEdge) bool { return !which(e) })
}

// Publishers are the producers publishing for region, in order of
// preference: region's own, then its standby's (if it has one), as a
// producer.Failover would use them.
func (d *Deployment) Publishers(region string) []*producer.Producer {
	to := map[string][]string{}
	if r, ok := d.top.Region(region); ok && r.Standby != "" {
		to[region] = []string{r.Standby}
	}
	return workload.Fallbacks(d.prods, to)(region)
}

// stop stops a running edge, then removes it from region's edges and adds
// its totals to the region's retired ones in one step, so that Stats never
// drops.
func (d *Deployment) stop(region string, e *runningEdge) {
	e.cancel()
	<-e.done
	e.nc.Close()
	x := e.c.Stats()
	// What describes the current owners, not the region's history: the
	// partitions owned, and the remote records merged (a new owner merges
	// them again; Replicated compares that with the other claim logs).
	x.Owned, x.RemoteMerged = 0, 0
	d.mu.Lock()
	defer d.mu.Unlock()
	n := len(d.edges[region])
	d.edges[region] = slices.DeleteFunc(d.edges[region], func(o *runningEdge) bool { return o == e })
	if len(d.edges[region]) == n {
		return // stopped by a concurrent call, which counted it
	}
	if len(d.edges[region]) == 0 {
		delete(d.edges, region)
	}
	s := d.retired[region]
	s.Add(x)
	d.retired[region] = s
}

// Close stops every edge and core node.
func (d *Deployment) Close() {
	regions := d.top.RegionNames()
	slices.Reverse(regions)
	for _, r := range regions {
		d.StopEdges(r)
	}
	d.cancel()
	d.wg.Wait()
	for _, nc := range d.conns {
		nc.Close()
	}
	d.Cluster.Close()
}
