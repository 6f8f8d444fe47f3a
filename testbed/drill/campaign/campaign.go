// Package campaign runs a fault campaign against a region of real processes:
// a seeded random schedule of edge kills and pauses, core restarts, cut
// edge-to-core connections, skewed clocks, hostile producers and failing
// sinks under a steady load, then a pure check of the recorded history for
// lost events, unflagged duplicate handler runs, unbounded uncertain runs and
// partitions that do not drain.
package campaign

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"sync"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
)

// Config describes a campaign. EdgeBin and CoreBin are required; every
// other zero value is documented per field.
type Config struct {
	// EdgeBin and CoreBin are the edge and core binaries.
	EdgeBin, CoreBin string
	// Dir keeps logs, ledgers and data; it must be empty or absent. Empty
	// means a temporary directory, removed after a run without violations
	// and kept otherwise.
	Dir string
	// Seed draws the schedule, the load and the chaos sinks. Zero means a
	// seed from the clock (Report.Seed says which).
	Seed uint64
	// Duration is the fault phase (the load runs as long). Zero means 2 minutes.
	Duration time.Duration
	// Warmup is the load before the first fault. Zero means 5 s.
	Warmup time.Duration
	// MeanGap is the mean time between fault starts. Zero means 2 s.
	MeanGap time.Duration
	// Kinds are the fault kinds to draw. Empty means all (AllKinds).
	Kinds []FaultKind
	// Cores is 1 (a single node, restarted whole) or 3 (an R3 region, one
	// node restarted at a time). Zero means 1.
	Cores int
	// Edges is how many edge processes share the partitions. Zero means 3.
	Edges int
	// Partitions is the region's partition count. Zero means 8.
	Partitions int
	// Batch is the edges' batch size. Zero means 100.
	Batch int
	// Rate is the background load in events per second. Zero means 2,000.
	Rate int
	// LinkDelay is the one-way delay of every edge's link to the core, so
	// that answers are in flight when a cut swallows them. Zero means 2 ms;
	// negative means none. A flap raises it to 20–60 ms while it lasts.
	LinkDelay time.Duration
	// Window is the dedupe window the region provisions. Zero means the core's default (24 h).
	Window time.Duration
	// Chaos are the edges' baseline chaos-sink rates (FaultSink raises them
	// for a while). The zero value is a sink that never misbehaves.
	Chaos ChaosRates
	// ChaosLast puts the chaos sink after the ledger ("ledger,chaos"): a
	// failure then comes after the ledger recorded the run, so each event
	// the chaos sink failed or panicked on may be recorded once more
	// (counted from the edges' logs and excused), and any other extra run
	// is a duplicate (a batch re-run after a panic, say). False means
	// "chaos,ledger": a chaos failure happens before any effect.
	ChaosLast bool
	// SettleTimeout is how long the region has to drain once the faults
	// stop. Zero means a sixth of Duration, at least 60 s.
	SettleTimeout time.Duration

	// Regions is 1 (Run: one region) or 3 (RunRegions: us-east, eu-west
	// and ap-south, one core node each, joined by gateways through WAN
	// links). Zero means 1. In three regions Edges, Partitions, Rate and
	// the schedule's MeanGap are per region.
	Regions int
	// WANGap is the mean time between faults of the links between regions
	// (three regions). Zero means 10 s.
	WANGap time.Duration
	// RaceRate is how many IDs a second are sent to two regions at once
	// (three regions). Zero means Rate/20, at least 5.
	RaceRate int
	// ConflictTimeout bounds the wait, once the regions settled, for every
	// race to be recorded as a conflict (replication across a healed link
	// resumes at JetStream's next source retry). Zero means 3 minutes.
	ConflictTimeout time.Duration
	// Logger receives progress. Nil means discard.
	Logger *slog.Logger
}

// ChaosRates are the chaos sink's per-event rates and longest hang.
type ChaosRates struct {
	Fail, Hang, Panic float64
	// HangMax bounds a hang. Zero means 1 s.
	HangMax time.Duration
}

func (c Config) withDefaults() Config {
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	if c.Duration <= 0 {
		c.Duration = 2 * time.Minute
	}
	if c.Warmup <= 0 {
		c.Warmup = 5 * time.Second
	}
	if c.MeanGap <= 0 {
		c.MeanGap = 2 * time.Second
	}
	if c.Cores <= 0 {
		c.Cores = 1
	}
	if c.Edges <= 0 {
		c.Edges = 3
	}
	if c.Partitions <= 0 {
		c.Partitions = 8
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Rate <= 0 {
		c.Rate = 2000
	}
	if c.LinkDelay == 0 {
		c.LinkDelay = 2 * time.Millisecond
	}
	c.LinkDelay = max(c.LinkDelay, 0)
	if c.Chaos.HangMax <= 0 {
		c.Chaos.HangMax = time.Second
	}
	if c.SettleTimeout <= 0 {
		// A long run at a high rate on a small machine ends with a backlog
		// built during the faults: give it time in proportion.
		c.SettleTimeout = max(60*time.Second, c.Duration/6)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Regions <= 0 {
		c.Regions = 1
	}
	if c.WANGap <= 0 {
		c.WANGap = 10 * time.Second
	}
	if c.RaceRate <= 0 {
		c.RaceRate = max(c.Rate/20, 5)
	}
	if c.ConflictTimeout <= 0 {
		c.ConflictTimeout = 3 * time.Minute
	}
	return c
}

// gossipTimeout is about how long the edges' fast gossip profile takes to
// declare a silent member dead.
const gossipTimeout = 1500 * time.Millisecond

// Run runs one campaign and checks its history. It returns an error when
// the region could not be started or the history could not be read; a
// broken promise is a violation in the report, not an error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg = cfg.withDefaults()
	if cfg.EdgeBin == "" || cfg.CoreBin == "" {
		return nil, errors.New("campaign: EdgeBin and CoreBin are required")
	}
	if cfg.Cores != 1 && cfg.Cores != 3 {
		return nil, fmt.Errorf("campaign: %d cores, want 1 or 3", cfg.Cores)
	}
	if cfg.Regions != 1 {
		return nil, fmt.Errorf("campaign: %d regions: use RunRegions", cfg.Regions)
	}
	tempDir, err := prepareDir(&cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	schedule := Plan(cfg.Seed, PlanOptionsOf(cfg))
	rep := &Report{Seed: cfg.Seed, Config: cfg, Dir: cfg.Dir, Schedule: schedule}
	log.Info("campaign starting", "seed", cfg.Seed, "duration", cfg.Duration, "faults", len(schedule), "dir", cfg.Dir)

	r, err := startRegion(ctx, cfg, regionSpec{})
	if err != nil {
		return rep, err
	}
	defer r.close()
	if err := r.waitOwned(ctx, 60*time.Second); err != nil {
		return rep, err
	}
	log.Info("region up", "cores", cfg.Cores, "edges", cfg.Edges, "partitions", cfg.Partitions)
	if err := drive(ctx, cfg.Duration, []*region{r}, []*Report{rep}, hooks{}); err != nil {
		return rep, err
	}
	rep.save()
	if tempDir && rep.OK() && len(rep.Errors) == 0 {
		_ = os.RemoveAll(cfg.Dir)
		rep.Dir = ""
	}
	return rep, nil
}

// prepareDir makes cfg.Dir a fresh directory (a temporary one when empty,
// reported by the bool) and refuses one holding a previous run's data.
func prepareDir(cfg *Config) (bool, error) {
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "onceplane-campaign-")
		if err != nil {
			return false, fmt.Errorf("campaign: %w", err)
		}
		cfg.Dir = d
		return true, nil
	}
	// A previous run's core data would be reused: refuse it.
	if ents, err := os.ReadDir(cfg.Dir); err == nil && len(ents) > 0 {
		return false, fmt.Errorf("campaign: directory %s is not empty (a previous run's data would be reused)", cfg.Dir)
	}
	if err := os.MkdirAll(cfg.Dir, 0o750); err != nil {
		return false, fmt.Errorf("campaign: %w", err)
	}
	return false, nil
}

// hooks add to what drive does; a nil hook does nothing.
type hooks struct {
	// during runs beside the regions' own faults while faults last (stop),
	// and returns once what it started has ended; loads are the regions'
	// producers.
	during func(ctx, stop context.Context, loads []*load)
	// settled runs once every region settled, before the edges are
	// stopped and their histories collected.
	settled func(ctx context.Context)
}

// drive runs the load and each region's schedule (reps[i].Schedule) for
// duration, and the hooks; then lets every region settle, collects its
// history and checks it into reps[i].
func drive(ctx context.Context, duration time.Duration, regions []*region, reps []*Report, h hooks) error {
	start := time.Now()
	loads := make([]*load, len(regions))
	for i, r := range regions {
		r.start = start
		loads[i] = newLoad(r, r.cfg)
	}
	loadCtx, stopLoad := context.WithCancel(ctx)
	var loading sync.WaitGroup
	for _, l := range loads {
		loading.Go(func() { l.run(loadCtx) })
	}
	faultCtx, stopFaults := context.WithTimeout(ctx, duration)
	var wg sync.WaitGroup
	var stopWatch []func()
	for i, r := range regions {
		for _, queue := range byTarget(reps[i].Schedule) {
			wg.Go(func() { r.runFaults(ctx, faultCtx, loads[i], queue) })
		}
		stopWatch = append(stopWatch, r.watchCrashes())
	}
	if h.during != nil {
		wg.Go(func() { h.during(ctx, faultCtx, loads) })
	}
	<-faultCtx.Done()
	stopFaults()
	wg.Wait()
	stopLoad()
	loading.Wait()
	// Publishes still being retried get a while to be acked (the regions
	// are whole again); what is never acked is not checked. Then one new
	// event per partition: each must still be handled.
	each(regions, func(i int, _ *region) {
		loads[i].finish(ctx, 30*time.Second)
		loads[i].probes(ctx)
		loads[i].close()
	})
	for i, r := range regions {
		loads[i].mu.Lock()
		n := len(loads[i].pubs)
		loads[i].mu.Unlock()
		r.log.Info("faults stopped; settling", "published", n)
	}
	each(regions, func(i int, r *region) { reps[i].Settle = r.settle(ctx, r.cfg.SettleTimeout) })
	for _, stop := range stopWatch {
		stop()
	}
	if h.settled != nil {
		h.settled(ctx)
	}
	for i, r := range regions {
		rep := reps[i]
		rep.Bypassed = r.bypassed()
		h, err := r.collect(ctx, loads[i], rep)
		if err != nil {
			return err
		}
		rep.History = h
		rep.Verdict = Check(h)
		rep.Elapsed = time.Since(start)
		rep.Errors = r.errors()
		r.mu.Lock()
		rep.StartFailed = maps.Clone(r.startFailed)
		r.mu.Unlock()
		rep.summarize(loads[i])
	}
	return nil
}

// each runs f for every region at once and returns when all have returned.
func each(regions []*region, f func(int, *region)) {
	var wg sync.WaitGroup
	for i, r := range regions {
		wg.Go(func() { f(i, r) })
	}
	wg.Wait()
}

// PlanOptionsOf returns the schedule options of a campaign run with cfg.
func PlanOptionsOf(cfg Config) PlanOptions {
	cfg = cfg.withDefaults()
	return PlanOptions{Duration: cfg.Duration, Warmup: cfg.Warmup, MeanGap: cfg.MeanGap,
		Edges: cfg.Edges, Cores: cfg.Cores, Kinds: cfg.Kinds, GossipTimeout: gossipTimeout}
}

// byTarget splits a schedule into one queue per target, each in order: a
// target takes one fault at a time.
func byTarget(s []Fault) [][]Fault {
	idx := map[string]int{}
	var out [][]Fault
	for _, f := range s {
		key := fmt.Sprintf("edge-%d", f.Target)
		switch f.Kind {
		case FaultCore:
			key = fmt.Sprintf("core-%d", f.Target)
		case FaultHostile:
			key = "producer"
		}
		i, ok := idx[key]
		if !ok {
			i = len(out)
			idx[key] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], f)
	}
	return out
}

// runFaults injects a target's faults in order, each at its time or as soon
// as the previous one ended. stop ends the fault phase: holds are cut short
// and what a fault did is undone; ctx ends everything.
func (r *region) runFaults(ctx, stop context.Context, load *load, queue []Fault) {
	for _, f := range queue {
		if err := poll.Sleep(stop, time.Until(r.start.Add(f.At))); err != nil {
			return
		}
		if err := r.inject(ctx, stop, load, f); err != nil {
			r.fail(fmt.Errorf("fault %s: %w", f, err))
		}
	}
}
