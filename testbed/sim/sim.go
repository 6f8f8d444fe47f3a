// Package sim runs a onceplane region on one machine: embedded core nodes,
// in-process edges, a producer load with duplicates, and a report that
// checks every effect happened exactly once.
package sim

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/deploy"
	"github.com/onceplane/onceplane/testbed/supercluster"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
	"github.com/onceplane/onceplane/topology"
)

// Config describes a simulation. The zero value runs the default demo.
type Config struct {
	// Events is the number of events published, duplicates included. Zero means 200,000.
	Events int
	// DupRate is the share of events that re-send an earlier ID. Zero means 0.3; negative means none.
	DupRate float64
	// Partitions per region. Zero means 16.
	Partitions int
	// Edges is the number of edges; partitions are dealt round-robin. Zero means 2.
	Edges int
	// Cores is 1, or 3 for a clustered region with R3 streams. Zero means 1.
	Cores int
	// Shards spreads the partitions over that many ingest and claim
	// streams. Zero means one per core node.
	Shards int
	// BatchSize per edge. Zero means 500.
	BatchSize int
	// NoBloom turns the Bloom pre-check off.
	NoBloom bool
	// Dir holds core data. Empty means a temporary directory removed afterwards.
	Dir string
	// Seed makes the load reproducible.
	Seed uint64
	// Logger receives component logs. Nil means discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Events <= 0 {
		c.Events = 200_000
	}
	switch {
	case c.DupRate == 0:
		c.DupRate = 0.3
	case c.DupRate < 0:
		c.DupRate = 0
	}
	if c.Partitions <= 0 {
		c.Partitions = 16
	}
	if c.Edges <= 0 {
		c.Edges = 2
	}
	if c.Cores != 3 {
		c.Cores = 1
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Report is what a simulation measured.
type Report struct {
	Config                 Config
	Published, Stored      int
	Unique                 int
	Decided, First, Dups   int64
	ByPath                 map[string]int64
	Uncertain, Reruns, DLQ int64
	ClaimAppends           int64
	Output                 int
	OutputDuplicates       int
	Missing                int
	// Runs is the account of every handler run, counted in process after
	// the sink succeeded (the output stream's Nats-Msg-Id window would hide
	// a second effect): no run lost, none repeated. The simulation injects
	// no failure, so even a flagged re-run fails it.
	Runs               verify.RunAccount
	Elapsed            time.Duration
	Decision, EndToEnd Quantiles
	EventsPerSec       float64
	ExactlyOnce        bool
}

// dataDir returns dir, or when it is empty a temporary directory that
// cleanup removes.
func dataDir(dir string) (string, func(), error) {
	if dir != "" {
		return dir, func() {}, nil
	}
	d, err := os.MkdirTemp("", "onceplane-sim")
	if err != nil {
		return "", nil, err
	}
	return d, func() { os.RemoveAll(d) }, nil
}

// Region is the simulated region's name.
const Region = "local"

// Topology is the simulation's deployment: one region of cfg.Cores core
// nodes and cfg.Edges edges.
func (c Config) Topology() topology.Topology {
	r := topology.Region{Name: Region, Shards: c.Shards}
	for i := range c.Cores {
		r.Cores = append(r.Cores, topology.Core{Name: fmt.Sprintf("core-%d", i)})
	}
	for i := range c.Edges {
		r.Edges = append(r.Edges, topology.Edge{Name: fmt.Sprintf("edge-%d", i)})
	}
	return topology.Topology{Name: "onceplane-sim-single", Partitions: c.Partitions, Regions: []topology.Region{r}}.Defaults()
}

// Run runs the simulation, printing progress to progress (may be nil): the
// one-region topology on deploy, every edge's handler writing to the output
// stream and counting its runs.
func Run(ctx context.Context, cfg Config, progress io.Writer) (*Report, error) {
	cfg = cfg.withDefaults()
	if progress == nil {
		progress = io.Discard
	}
	dir, cleanup, err := dataDir(cfg.Dir)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	top := cfg.Topology()
	if err := top.Validate(); err != nil {
		return nil, fmt.Errorf("sim: %w", err)
	}
	decision, e2e := NewLatency(), NewLatency()
	runs := verify.NewRuns()
	d, err := deploy.Start(ctx, top, deploy.Options{
		Cluster:   supercluster.Options{DataDir: dir, IngestDuplicates: -1, MaxMemory: 512 << 20, MaxStore: 8 << 30, Logger: cfg.Logger},
		BatchSize: cfg.BatchSize, NoBloom: cfg.NoBloom, Logger: cfg.Logger,
		OnDecision: func(_ string, d edge.Decision) {
			decision.Record(d.Committed.Sub(d.Started))
			if !d.Stored.IsZero() {
				e2e.Record(d.Committed.Sub(d.Stored))
			}
		},
		Handler: func(region string, js jetstream.JetStream) edge.Handler {
			return sink.NewChain(&sink.NATS{JS: js, Names: streams.Names{Region: region}}, runs)
		},
	})
	if err != nil {
		return nil, err
	}
	defer d.Close()
	nc, js, err := d.Connect(Region)
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	names := d.Names(Region)
	fmt.Fprintf(progress, "onceplane sim: region %q, %d core node(s), %d partitions, %d edges, %d events (%.0f%% re-sent)\n",
		Region, cfg.Cores, cfg.Partitions, cfg.Edges, cfg.Events, cfg.DupRate*100)

	plan := workload.Plan{Events: cfg.Events, DupRate: cfg.DupRate, Gap: min(cfg.Events/10, 20_000), Seed: cfg.Seed, Prefix: "sim-"}
	ids, unique := plan.IDs()
	start := time.Now()
	var published atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- workload.Publish(ctx, d.Producer(Region), plan, ids, 4096, func(n int) { published.Store(int64(n)) })
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pubFinished := false
	var lastDecided int64
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case err := <-pubErr:
			if err != nil {
				return nil, err
			}
			pubFinished = true
			continue
		case <-tick.C:
		}
		n := d.Stats(Region).Done
		fmt.Fprintf(progress, "  %5.1fs  published %7d/%d  decided %7d  (%6.0f events/s)\n",
			time.Since(start).Seconds(), published.Load(), cfg.Events, n, float64(n-lastDecided))
		lastDecided = n
		if !pubFinished {
			continue
		}
		if ok, err := d.Drained(ctx); err == nil && ok {
			break
		}
	}
	elapsed := time.Since(start)
	s := d.Stats(Region) // drained: every event's batch has finished
	d.StopEdges(Region)
	stored, err := verify.StreamsMsgs(ctx, js, names.EveryShard(names.IngestShard))
	if err != nil {
		return nil, err
	}
	counts, err := verify.OutputCounts(ctx, js, names)
	if err != nil {
		return nil, err
	}
	r := &Report{Config: cfg, Published: cfg.Events, Stored: int(stored), Unique: unique, Elapsed: elapsed,
		ByPath: map[string]int64{}, Decision: decision.Quantiles(), EndToEnd: e2e.Quantiles()}
	r.Decided, r.First, r.Dups, r.Uncertain, r.Reruns, r.DLQ, r.ClaimAppends = s.Done, s.First, s.Duplicates, s.Uncertain, s.UncertainReruns, s.DLQ, s.ClaimAppends
	for _, p := range dedupe.Paths() {
		r.ByPath[p.String()] = s.ByPath[p]
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			if counts[id] == 0 {
				r.Missing++
			}
		}
	}
	for _, n := range counts {
		r.Output += n
		if n > 1 {
			r.OutputDuplicates += n - 1
		}
	}
	r.Runs = runs.Account(ids)
	r.EventsPerSec = float64(r.Decided) / elapsed.Seconds()
	r.ExactlyOnce = r.Missing == 0 && r.OutputDuplicates == 0 && r.Output == unique && r.Runs.Check(0) == nil
	return r, nil
}
