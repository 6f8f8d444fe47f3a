package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/deploy"
	"github.com/onceplane/onceplane/testbed/report"
	"github.com/onceplane/onceplane/testbed/supercluster"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
	"github.com/onceplane/onceplane/topology"
)

// MultiConfig describes a multi-region simulation. The zero value runs the
// default: three regions, 60,000 events at 10,000 events/s, asynchronous
// mode, and a 3-second cut of the us-east/eu-west link mid-load.
type MultiConfig struct {
	// Topology is the deployment. Zero (no regions) means topology.Default().
	Topology topology.Topology
	// Events is the number of unique IDs. Zero means 60,000.
	Events int
	// Rate is the publish rate across the simulation, events/s. Zero means 10,000.
	Rate int
	// DupRate is the share of IDs re-sent to the same region later. Zero means 0.2; negative none.
	DupRate float64
	// RetryRate is the share of IDs a producer re-sends at once, as after a
	// lost ack. Zero means 0.05; negative none.
	RetryRate float64
	// CrossRate is the share of IDs re-sent to another region 1.5 s later
	// (after their claims replicated). Zero means 0.1; negative none.
	CrossRate float64
	// RaceRate is the share of IDs sent to two regions at the same moment:
	// races inside the replication lag. Zero means 0.005; negative none.
	RaceRate float64
	// Drill is "cut" (the first two regions' link, default), "core" (the
	// last region's core nodes stopped and restarted), "region-loss" (the
	// last region's core nodes and edges killed at once; its standby, the
	// first region unless the topology names one, takes its partitions over
	// once its mirror has been silent for 2 s; the region returns, fenced,
	// and fails back; asynchronous mode) or "none".
	Drill string
	// DrillFor is how long the drill lasts (region-loss: how long the
	// region stays failed over). Zero means 3 s.
	DrillFor time.Duration
	// NoReplication runs the edges without merging other regions' claims,
	// to measure what replication costs the in-region decision path.
	NoReplication bool
	// Dir holds core data. Empty means a temporary directory removed afterwards.
	Dir string
	// Seed makes the load reproducible.
	Seed uint64
	// TraceSample is the share of events traced from their publish (their
	// decisions, claims and merges follow). Zero means 0.01; negative none.
	TraceSample float64
	// TraceFile, when set, also writes the traces there as OTLP JSON lines;
	// the OTEL_* variables can send them to a collector as well. Every
	// region's edges and producer are a service of their own
	// (onceplane-edge-<region>, onceplane-producer-<region>).
	TraceFile string
	// OTLPEndpoint, when set, sends the traces over OTLP/HTTP there (a
	// Collector, Jaeger: http://127.0.0.1:4318), in place of the endpoint
	// OTEL_EXPORTER_OTLP_ENDPOINT names; the trace file is written as well.
	OTLPEndpoint string
	// Logger receives component logs. Nil means discard.
	Logger *slog.Logger
}

func (c MultiConfig) withDefaults() MultiConfig {
	if len(c.Topology.Regions) == 0 {
		c.Topology = topology.Default()
	}
	c.Topology = c.Topology.Defaults()
	if c.Events <= 0 {
		c.Events = 60_000
	}
	if c.Rate <= 0 {
		c.Rate = 10_000
	}
	rate := func(v *float64, def float64) {
		switch {
		case *v == 0:
			*v = def
		case *v < 0:
			*v = 0
		}
	}
	rate(&c.DupRate, 0.2)
	rate(&c.RetryRate, 0.05)
	rate(&c.CrossRate, 0.1)
	rate(&c.RaceRate, 0.005)
	rate(&c.TraceSample, 0.01)
	if c.Drill == "" {
		c.Drill = "cut"
	}
	if c.DrillFor <= 0 {
		c.DrillFor = 3 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// mix is the configuration's load.
func (c MultiConfig) mix() workload.Mix {
	return workload.Mix{Regions: c.Topology.RegionNames(), Events: c.Events, Rate: c.Rate, DupRate: c.DupRate,
		RetryRate: c.RetryRate, CrossRate: c.CrossRate, RaceRate: c.RaceRate, Seed: c.Seed}
}

// PairStats are latency quantiles between two regions.
type PairStats struct {
	From, To string
	Lat      Quantiles
}

// RegionStats are one region's totals.
type RegionStats struct {
	Region                       string
	Sent                         int
	Decided, First, Dups         int64
	ByPath                       map[string]int64
	Conflicts                    int64
	Effects                      int
	DupEffects                   int // IDs handled more than once in this region, a repeat unflagged (must be 0)
	Repeated                     int // IDs handled more than once in this region, every repeat flagged uncertain
	Decision                     Quantiles
	DecidedDuringDrill           int64
	Uncertain, DLQ, ClaimAppends int64
}

// DrillMark is a drill event on the timeline.
type DrillMark struct {
	At   time.Duration
	What string
}

// MultiReport is what a multi-region simulation measured.
type MultiReport struct {
	Mode              topology.Mode
	Regions           []RegionStats
	Replication       []PairStats // claim append -> merged by the owner in the other region
	Dedupe            []PairStats // publish -> decision, by origin and deciding region
	Sent              map[string]int
	Unique            int
	Lost              int      // IDs with no effect anywhere
	TrueRaces         int      // IDs with effects in two or more regions
	ConflictsReported int      // distinct IDs in the conflicts streams
	Spurious, Missed  int      // conflicts that are not races; races not reported
	SpuriousIDs       []string // a few of them
	MissedIDs         []string
	CutShort          int         // conflicts of IDs claimed in two regions, handled in one (a run cut short by a kill)
	Drill             []DrillMark // at: since the load started, the origin of every time here
	RegionLoss        *RegionLoss // the region-loss drill's account
	Elapsed           time.Duration
	OK                bool
	Inconsistent      []string // what in the report does not add up (fails OK)

	LoadStart  time.Duration             // when the load began, since the cluster started
	Throughput map[string][]report.Point // since the load started
	Takeovers  []report.Phase            // since the load started (the cluster's first ownership is not one)
	// Traced counts the event journeys recorded (TraceSample of the events);
	// Traces are those worth drawing (PickTraces).
	Traced      int
	Traces      []EventTrace
	TraceSample float64
	TraceFile   string
	decision    map[string]*Latency
	repl, dd    map[[2]string]*Latency
}

func (rep *MultiReport) addSample(region string, t, v float64) {
	if rep.Throughput == nil {
		rep.Throughput = map[string][]report.Point{}
	}
	rep.Throughput[region] = append(rep.Throughput[region], report.Point{T: t, V: v})
}

// RunMulti runs the multi-region simulation, printing progress to progress.
func RunMulti(ctx context.Context, cfg MultiConfig, progress io.Writer) (*MultiReport, error) {
	cfg = cfg.withDefaults()
	if progress == nil {
		progress = io.Discard
	}
	dir, cleanup, err := dataDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	top := cfg.Topology
	regions := top.RegionNames()
	var loss *RegionLoss
	if cfg.Drill == "region-loss" {
		if len(regions) < 2 {
			return nil, fmt.Errorf("the region-loss drill needs two regions or more")
		}
		top.Regions = slices.Clone(top.Regions)
		lost := &top.Regions[len(top.Regions)-1]
		if lost.Standby == "" {
			lost.Standby = regions[0]
		}
		loss = &RegionLoss{Region: lost.Name, Standby: lost.Standby}
		cfg.Topology = top
	}
	decision := map[string]*Latency{}
	for _, r := range regions {
		decision[r] = NewLatency()
	}
	var pmu sync.Mutex
	repl, dd := map[[2]string]*Latency{}, map[[2]string]*Latency{}
	pair := func(m map[[2]string]*Latency, a, b string) *Latency {
		pmu.Lock()
		defer pmu.Unlock()
		l := m[[2]string{a, b}]
		if l == nil {
			l = NewLatency()
			m[[2]string{a, b}] = l
		}
		return l
	}
	var omu sync.Mutex
	var takeovers []report.Phase
	var runStart atomic.Pointer[time.Time]
	onOwnership := func(region, name string, e edge.OwnershipEvent) {
		t0 := runStart.Load()
		if e.Change != "acquired" || t0 == nil {
			return
		}
		omu.Lock()
		defer omu.Unlock()
		row := fmt.Sprintf("%s p%d (%s)", region, e.Partition, name)
		for _, ph := range e.Phases {
			takeovers = append(takeovers, report.Phase{Row: row, Name: ph.Name, Start: ph.Start.Sub(*t0).Seconds(), End: ph.End.Sub(*t0).Seconds()})
		}
	}
	var drilling atomic.Bool
	var duringDrill sync.Map // region -> *atomic.Int64
	for _, r := range regions {
		duringDrill.Store(r, new(atomic.Int64))
	}
	collector := newTraceCollector(500_000)
	tracing, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{File: cfg.TraceFile, OTLPEndpoint: cfg.OTLPEndpoint, Sample: cfg.TraceSample, Processors: []sdktrace.SpanProcessor{collector}})
	if err != nil {
		return nil, err
	}
	defer tracing.Shutdown(context.Background())
	// A service per region and role: in a trace store, a journey reads as
	// the regions it crossed.
	providers := map[[2]string]trace.TracerProvider{}
	for _, r := range regions {
		for _, role := range []string{"edge", "producer"} {
			var tp trace.TracerProvider = noop.NewTracerProvider()
			if cfg.TraceSample > 0 {
				if tp, err = tracing.Provider(ctx, "onceplane-"+role+"-"+r); err != nil {
					return nil, err
				}
			}
			providers[[2]string{r, role}] = tp
		}
	}
	tracer := func(region, role string) trace.TracerProvider { return providers[[2]string{region, role}] }
	// The drill's own steps, every one recorded (a region loss's spans).
	drillTracer, err := tracing.EveryProvider(ctx, "onceplane-drill")
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "starting %d regions (%s), %d partitions, %s mode...\n", len(regions), joinRTT(top), top.Partitions, top.Mode)
	t0 := time.Now()
	d, err := deploy.Start(ctx, top, deploy.Options{
		Tracer:        tracer,
		Cluster:       supercluster.Options{DataDir: dir, IngestDuplicates: -1, Logger: cfg.Logger},
		Logger:        cfg.Logger,
		NoReplication: cfg.NoReplication,
		OnDecision: func(region string, dec edge.Decision) {
			decision[region].Record(dec.Committed.Sub(dec.Started))
			if !dec.Published.IsZero() && dec.Path.First() {
				pair(dd, dec.Origin, region).Record(dec.Committed.Sub(dec.Published))
			}
			if drilling.Load() {
				v, _ := duringDrill.Load(region)
				v.(*atomic.Int64).Add(1)
			}
		},
		OnReplicated: func(from, to string, lag time.Duration) { pair(repl, from, to).Record(lag) },
		OnOwnership:  onOwnership,
	})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	wctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = d.WaitReady(wctx)
	cancel()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "cluster ready in %.1fs\n", time.Since(t0).Seconds())

	sends, kinds := cfg.mix().Schedule()
	rep := &MultiReport{Mode: top.Mode, Sent: kinds, Unique: cfg.Events, LoadStart: time.Since(t0), RegionLoss: loss}
	loadFor := sends[len(sends)-1].At
	// One origin for every time the run reports (live lines, drill marks,
	// charts, takeovers): the start of the load. Takeovers before it (the
	// cluster's first ownership) are not the run's.
	start := time.Now()
	runStart.Store(&start)
	// Throughput per region, sampled every 250 ms.
	sampleDone := make(chan struct{})
	stopSampling := make(chan struct{})
	go func() {
		defer close(sampleDone)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		last := map[string]int64{}
		prev := time.Now()
		for {
			select {
			case <-stopSampling:
				return
			case now := <-tick.C:
				dt := now.Sub(prev).Seconds()
				prev = now
				for _, r := range regions {
					in := d.Stats(r).In
					rep.addSample(r, now.Sub(start).Seconds(), float64(in-last[r])/dt)
					last[r] = in
				}
			}
		}
	}()
	// The drill, at 40 % of the load.
	drillDone := make(chan struct{})
	go func() {
		defer close(drillDone)
		if cfg.Drill == "none" || len(regions) < 2 {
			return
		}
		select {
		case <-time.After(loadFor * 4 / 10):
		case <-ctx.Done():
			return
		}
		markAt := func(at time.Duration, what string) {
			rep.Drill = append(rep.Drill, DrillMark{at, what})
			fmt.Fprintf(progress, "  [%5.1fs] drill: %s\n", at.Seconds(), what)
		}
		mark := func(what string) { markAt(time.Since(start), what) }
		drilling.Store(true)
		switch cfg.Drill {
		case "cut":
			a, b := regions[0], regions[1]
			d.Cut(a, b)
			mark(fmt.Sprintf("cut %s <-> %s", a, b))
			_ = poll.Sleep(ctx, cfg.DrillFor)
			d.Heal(a, b)
			mark(fmt.Sprintf("healed %s <-> %s", a, b))
		case "region-loss":
			err := loseRegion(ctx, d, loss, cfg.DrillFor, start, markAt)
			loss.spans(drillTracer.Tracer("onceplane/sim"), start)
			if err != nil {
				loss.Err = err.Error()
				mark("region-loss drill stopped: " + err.Error())
			}
			omu.Lock()
			if loss.Detected > 0 {
				row := loss.Region + " lost"
				takeovers = append(takeovers, report.Phase{Row: row, Name: "detect", Start: loss.Killed.Seconds(), End: loss.Detected.Seconds()})
				if loss.Declared > 0 {
					takeovers = append(takeovers, report.Phase{Row: row, Name: "declare", Start: loss.Detected.Seconds(), End: loss.Declared.Seconds()})
				}
			}
			omu.Unlock()
		case "core":
			r := regions[len(regions)-1]
			d.StopRegion(r)
			mark("stopped the core nodes of " + r)
			_ = poll.Sleep(ctx, cfg.DrillFor)
			if err := d.StartRegion(ctx, r); err != nil {
				mark("restart failed: " + err.Error())
			} else {
				mark("restarted the core nodes of " + r)
			}
		}
		drilling.Store(false)
		// And one edge restarted, so the report shows a takeover under load.
		{
			r := regions[0]
			if rr, ok := top.Region(r); ok && len(rr.Edges) > 0 {
				name := rr.Edges[0].Name
				if err := d.RestartEdge(r, name); err != nil {
					mark("edge restart failed: " + err.Error())
				} else {
					mark("restarted edge " + name)
					// The load may be handled already: wait for the takeover
					// itself, or the settle below can end before it and the
					// report has no takeover to show.
					if n, err := awaitTakeover(ctx, d, r, name, 30*time.Second); err != nil {
						mark(fmt.Sprintf("edge %s took nothing over: %v", name, err))
					} else {
						mark(fmt.Sprintf("edge %s took over %d partitions", name, n))
					}
				}
			}
		}
	}()
	// One publisher per region, paced on the schedule.
	var published atomic.Int64
	errs := make(chan error, 1)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		if err := workload.PublishPaced(ctx, sends, d.Publishers, func(n int) { published.Add(int64(n)) }); err != nil {
			errs <- err
		}
	}()
	ticker := time.NewTicker(time.Second)
	var lastDecided int64
	report := func() {
		var decided, conflicts int64
		for _, r := range regions {
			s := d.Stats(r)
			decided += s.In
			conflicts += s.Conflicts
		}
		el := time.Since(start)
		fmt.Fprintf(progress, "  [%5.1fs] published %d/%d  decided %d (%d/s)  conflicts %d  remaining ~%.0fs\n",
			el.Seconds(), published.Load(), len(sends), decided, decided-lastDecided, conflicts, max(0, (loadFor-el).Seconds()))
		lastDecided = decided
	}
wait:
	for {
		select {
		case <-pubDone:
			break wait
		case err := <-errs:
			return nil, err
		case <-ticker.C:
			report()
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	<-drillDone
	// Settle: every input consumer drained, every claim merged everywhere.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		drained, _ := d.Drained(sctx)
		repd := true
		if top.Mode == topology.Async && !cfg.NoReplication {
			repd, _ = d.Replicated(sctx)
		}
		cancel()
		// Sources report no lag until they notice a healed link, so the
		// effects themselves say when every ID has been decided somewhere.
		if drained && repd && d.Effects.Distinct() >= cfg.Events {
			break
		}
		if time.Now().After(deadline) {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			behind, _ := d.Unreplicated(sctx)
			cancel()
			fmt.Fprintf(progress, "not settled after 2 minutes (drained %v, replicated %v %v, %d of %d IDs handled): reporting what happened\n", drained, repd, behind, d.Effects.Distinct(), cfg.Events)
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-ticker.C:
			report()
		case <-time.After(100 * time.Millisecond):
		}
	}
	ticker.Stop()
	report()
	close(stopSampling)
	<-sampleDone
	rep.Elapsed = time.Since(start)
	omu.Lock()
	rep.Takeovers = takeovers
	omu.Unlock()
	rep.decision = decision
	rep.repl, rep.dd = repl, dd
	journeys := FollowEvents(collector.snapshot())
	rep.Traced, rep.Traces, rep.TraceSample, rep.TraceFile = len(journeys), PickTraces(journeys, 8), cfg.TraceSample, cfg.TraceFile
	if err := rep.fill(ctx, d, cfg, sends, decision, repl, dd, &duringDrill); err != nil {
		return nil, err
	}
	return rep, nil
}

func (rep *MultiReport) fill(ctx context.Context, d *deploy.Deployment, cfg MultiConfig, sends []workload.Send, decision map[string]*Latency, repl, dd map[[2]string]*Latency, during *sync.Map) error {
	regions := cfg.Topology.RegionNames()
	counts := d.Effects.Counts()
	for _, r := range regions {
		s := d.Stats(r)
		rs := RegionStats{Region: r, Decided: s.In, First: s.First, Dups: s.Duplicates, ByPath: map[string]int64{},
			Conflicts: s.Conflicts, Effects: len(counts[r]), Decision: decision[r].Quantiles(),
			Uncertain: s.Uncertain, DLQ: s.DLQ, ClaimAppends: s.ClaimAppends}
		for _, p := range dedupe.Paths() {
			rs.ByPath[p.String()] = s.ByPath[p]
		}
		for _, x := range sends {
			if x.Region == r {
				rs.Sent++
			}
		}
		v, _ := during.Load(r)
		rs.DecidedDuringDrill = v.(*atomic.Int64).Load()
		rep.Regions = append(rep.Regions, rs)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conflicts, err := d.Conflicts(cctx)
	if err != nil {
		return err
	}
	reported := map[string]bool{}
	for _, recs := range conflicts {
		for _, c := range recs {
			reported[c.Hash] = true
		}
	}
	ids := make([]string, cfg.Events)
	for i := range ids {
		ids[i] = cfg.mix().ID(i)
	}
	flagged := d.Effects.Flagged()
	claimed := d.Effects.Claimed()
	if l := rep.RegionLoss; l != nil && len(l.claimed) > 0 {
		if claimed[l.Region] == nil {
			claimed[l.Region] = map[string]bool{}
		}
		maps.Copy(claimed[l.Region], l.claimed) // claims whose reply the kill lost
	}
	acct := verify.TallyEvidence(ids, verify.Evidence{Effects: counts, Flagged: flagged, Claimed: claimed, Conflicts: reported})
	for i := range rep.Regions {
		r := &rep.Regions[i]
		r.DupEffects, r.Repeated = acct.DupEffects[r.Region], acct.Repeated[r.Region]
	}
	if l := rep.RegionLoss; l != nil {
		l.Repeated = acct.Repeated[l.Region]
		for _, n := range flagged[l.Region] {
			l.Flagged += n
		}
		if l.Err != "" {
			rep.Inconsistent = append(rep.Inconsistent, "region-loss drill: "+l.Err)
		}
	}
	rep.Lost, rep.TrueRaces, rep.ConflictsReported, rep.Missed, rep.Spurious = acct.Lost, acct.TrueRaces, acct.Reported, acct.Missed, acct.Spurious
	rep.MissedIDs, rep.SpuriousIDs, rep.CutShort = acct.MissedIDs, acct.SpuriousIDs, acct.CutShort
	pairs := func(m map[[2]string]*Latency) []PairStats {
		var out []PairStats
		for k, l := range m {
			out = append(out, PairStats{From: k[0], To: k[1], Lat: l.Quantiles()})
		}
		slices.SortFunc(out, func(a, b PairStats) int {
			if a.From != b.From {
				return indexOf(regions, a.From) - indexOf(regions, b.From)
			}
			return indexOf(regions, a.To) - indexOf(regions, b.To)
		})
		return out
	}
	rep.Replication, rep.Dedupe = pairs(repl), pairs(dd)
	rep.OK = rep.Lost == 0 && rep.Spurious == 0 && (rep.Missed == 0 || cfg.NoReplication)
	for _, r := range rep.Regions {
		if r.DupEffects > 0 {
			rep.OK = false
		}
	}
	if cfg.Topology.Mode == topology.Strict && rep.TrueRaces > 0 {
		rep.OK = false
	}
	if rep.Inconsistent = append(rep.Inconsistent, rep.inconsistencies()...); len(rep.Inconsistent) > 0 {
		rep.OK = false
	}
	return nil
}

// inconsistencies lists what in the report does not add up: a region that
// decided fewer events than it handled IDs (counts lost to a restart), or a
// time outside the run (times on different origins).
func (rep *MultiReport) inconsistencies() []string {
	var out []string
	for _, r := range rep.Regions {
		if r.Decided < int64(r.Effects) {
			out = append(out, fmt.Sprintf("%s decided %d events but handled %d IDs", r.Region, r.Decided, r.Effects))
		}
	}
	end := rep.Elapsed.Seconds() + 1
	for _, m := range rep.Drill {
		if m.At < 0 || m.At.Seconds() > end {
			out = append(out, fmt.Sprintf("drill mark %q at %.1fs is outside the run (0 to %.1fs)", m.What, m.At.Seconds(), rep.Elapsed.Seconds()))
		}
	}
	for r, pts := range rep.Throughput {
		for _, p := range pts {
			if p.T < 0 || p.T > end {
				out = append(out, fmt.Sprintf("%s throughput sample at %.1fs is outside the run", r, p.T))
				break
			}
		}
	}
	for _, p := range rep.Takeovers {
		if p.Start < 0 || p.End > end {
			out = append(out, fmt.Sprintf("takeover %s %s at %.1fs is outside the run", p.Row, p.Name, p.Start))
			break
		}
	}
	return out
}

func indexOf(xs []string, x string) int { return slices.Index(xs, x) }

func joinRTT(t topology.Topology) string {
	s := ""
	for i, l := range t.Links {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s/%s %v", l.A, l.B, time.Duration(l.RTT))
	}
	return s
}

// Print writes the report as text: per region, per region pair, and the verdict.
func (rep *MultiReport) Print(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f", float64(d.Microseconds())/1000) }
	fmt.Fprintf(w, "\n== onceplane multi-region simulation (%s mode) ==\n", rep.Mode)
	fmt.Fprintf(w, "load: %d unique IDs; sends: %d first, %d in-region re-sends, %d producer retries, %d cross-region re-sends, %d two-region races; %.1fs\n",
		rep.Unique, rep.Sent["first"], rep.Sent["dup"], rep.Sent["retry"], rep.Sent["cross"], rep.Sent["race"], rep.Elapsed.Seconds())
	for _, m := range rep.Drill {
		fmt.Fprintf(w, "drill at %5.1fs: %s\n", m.At.Seconds(), m.What)
	}
	rep.RegionLoss.print(w)
	fmt.Fprintf(w, "\n%-10s %7s %8s %7s %7s %9s %9s %8s %9s %8s %10s %8s %12s\n", "region", "sent", "decided", "first", "dups", "exact-hit", "remote", "in-drill", "conflicts", "effects", "dup-effect", "flagged", "decide p99ms")
	for _, r := range rep.Regions {
		fmt.Fprintf(w, "%-10s %7d %8d %7d %7d %9d %9d %8d %9d %8d %10d %8d %12s\n", r.Region, r.Sent, r.Decided, r.First, r.Dups,
			r.ByPath["exact-hit"]+r.ByPath["in-batch"], r.ByPath["remote-claim"], r.DecidedDuringDrill, r.Conflicts, r.Effects, r.DupEffects, r.Repeated, ms(r.Decision.P99))
	}
	table := func(title string, ps []PairStats) {
		if len(ps) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n%-22s %8s %8s %8s %8s\n", title, "from -> to", "count", "p50 ms", "p99 ms", "max ms")
		for _, p := range ps {
			fmt.Fprintf(w, "%-22s %8d %8s %8s %8s\n", p.From+" -> "+p.To, p.Lat.Count, ms(p.Lat.P50), ms(p.Lat.P99), ms(p.Lat.Max))
		}
	}
	table("replication lag (batch ingested in one region -> its claim stored in the other, server clocks)", rep.Replication)
	table("dedupe latency (publish -> first-time decision, by origin and deciding region)", rep.Dedupe)
	rep.printTraces(w)
	verdict := "PASS"
	if !rep.OK {
		verdict = "FAIL"
	}
	for _, x := range rep.Inconsistent {
		fmt.Fprintf(w, "\nreport inconsistent: %s", x)
	}
	if len(rep.SpuriousIDs) > 0 || len(rep.MissedIDs) > 0 {
		fmt.Fprintf(w, "\nconflicts not races, e.g. %v; races unreported, e.g. %v", rep.SpuriousIDs, rep.MissedIDs)
	}
	cut := ""
	if rep.CutShort > 0 {
		cut = fmt.Sprintf(", %d claimed in two regions but run in one (a claim's run cut short by the kill)", rep.CutShort)
	}
	fmt.Fprintf(w, "\nlost %d; true races (effects in two regions) %d; conflicts reported %d (%d not races%s, %d races unreported) -> %s\n",
		rep.Lost, rep.TrueRaces, rep.ConflictsReported, rep.Spurious, cut, rep.Missed, verdict)
}

// traceNote says how the traces were sampled and where they went.
func (rep *MultiReport) traceNote() string {
	if rep.TraceSample == 0 {
		return "tracing off"
	}
	n := fmt.Sprintf("%d event journeys traced (%.3g%% of events sampled at their publish)", rep.Traced, rep.TraceSample*100)
	if rep.TraceFile != "" {
		n += "; every span in " + rep.TraceFile + " (OTLP JSON lines)"
	}
	return n
}

// printTraces lists the traces worth opening in a trace store.
func (rep *MultiReport) printTraces(w io.Writer) {
	fmt.Fprintf(w, "\ntraces: %s\n", rep.traceNote())
	for _, e := range rep.Traces {
		fmt.Fprintf(w, "  trace %s  %s\n", e.TraceID, e.Summary())
	}
}

// Doc turns the report into the HTML/JSON report's document.
func (rep *MultiReport) Doc() report.Doc {
	d := report.Doc{Title: fmt.Sprintf("onceplane multi-region simulation (%s mode)", rep.Mode), Verdict: "PASS", Paths: map[string]map[string]int64{}, Takeovers: rep.Takeovers}
	if !rep.OK {
		d.Verdict = "FAIL"
	}
	var text strings.Builder
	rep.Print(&text)
	d.Summary = strings.Split(strings.TrimSpace(text.String()), "\n")
	regions := make([]string, 0, len(rep.Regions))
	for _, r := range rep.Regions {
		regions = append(regions, r.Region)
		d.Throughput = append(d.Throughput, report.Series{Name: r.Region, Points: rep.Throughput[r.Region]})
		d.Paths[r.Region] = r.ByPath
	}
	for _, m := range rep.Drill {
		d.Marks = append(d.Marks, report.Mark{T: m.At.Seconds(), Label: m.What})
	}
	var g report.Group
	g.Title = "Dedupe cost per region (batch start -> claim durable)"
	for _, r := range regions {
		if l := rep.decision[r]; l != nil {
			g.Histograms = append(g.Histograms, l.Histogram(r))
		}
	}
	d.Latency = append(d.Latency, g)
	pairGroup := func(title string, m map[[2]string]*Latency) {
		g := report.Group{Title: title}
		for _, a := range regions {
			for _, b := range regions {
				if l := m[[2]string{a, b}]; l != nil {
					g.Histograms = append(g.Histograms, l.Histogram(a+" -> "+b))
				}
			}
		}
		if len(g.Histograms) > 0 {
			d.Latency = append(d.Latency, g)
		}
	}
	pairGroup("Replication lag per region pair (batch ingested -> its claim stored in the other region, server clocks)", rep.repl)
	pairGroup("Dedupe latency per region pair (publish -> first-time decision)", rep.dd)
	d.TraceNote = rep.traceNote()
	for _, e := range rep.Traces {
		d.Traces = append(d.Traces, e.Waterfall(e.Summary()))
	}
	return d
}

// WriteFiles writes report.txt, report.json and report.html into dir and
// returns their paths.
func (rep *MultiReport) WriteFiles(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	doc := rep.Doc()
	var paths []string
	write := func(name string, f func(io.Writer) error) error {
		p := filepath.Join(dir, name)
		fh, err := os.Create(p)
		if err != nil {
			return err
		}
		if err := f(fh); err != nil {
			fh.Close()
			return err
		}
		paths = append(paths, p)
		return fh.Close()
	}
	if err := write("report.txt", func(w io.Writer) error { rep.Print(w); return nil }); err != nil {
		return nil, err
	}
	if err := write("report.json", doc.JSON); err != nil {
		return nil, err
	}
	if err := write("report.html", doc.HTML); err != nil {
		return nil, err
	}
	return paths, nil
}

// awaitTakeover polls until region's edge name owns a partition and every
// edge of the region is ready, and returns how many partitions it owns.
func awaitTakeover(ctx context.Context, d *deploy.Deployment, region, name string, within time.Duration) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		for _, c := range d.Edges(region) {
			if c.Name() != name {
				continue
			}
			if n := len(c.Owned()); n > 0 && d.Ready() == nil {
				return n, nil
			}
		}
		if err := poll.Sleep(ctx, 50*time.Millisecond); err != nil {
			return 0, fmt.Errorf("not after %s: %w", within, err)
		}
	}
}
