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
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
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

// Run runs the simulation, printing progress to progress (may be nil).
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
	urls, stop, err := startCores(ctx, cfg, dir)
	if err != nil {
		return nil, err
	}
	defer stop()
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("sim connect: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192), jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	scfg := streams.Config{Partitions: cfg.Partitions, Replicas: map[int]int{1: 1, 3: 3}[cfg.Cores], IngestDuplicates: -1}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = streams.Provision(pctx, js, scfg)
	cancel()
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(progress, "onceplane sim: region %q, %d core node(s), %d partitions, %d edges, %d events (%.0f%% re-sent)\n",
		scfg.Defaults().Region, cfg.Cores, cfg.Partitions, cfg.Edges, cfg.Events, cfg.DupRate*100)

	decision, e2e := NewLatency(), NewLatency()
	onDecision := func(d edge.Decision) {
		decision.Record(d.Committed.Sub(d.Started))
		if !d.Stored.IsZero() {
			e2e.Record(d.Committed.Sub(d.Stored))
		}
	}
	ectx, ecancel := context.WithCancel(ctx)
	defer ecancel()
	var edges []*edge.Consumer
	edgeDone := make(chan struct{}, cfg.Edges)
	runs := verify.NewRuns()
	metrics := telemetry.NewMetrics()
	for i := 0; i < cfg.Edges; i++ {
		var parts []int
		for p := i; p < cfg.Partitions; p += cfg.Edges {
			parts = append(parts, p)
		}
		enc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1))
		if err != nil {
			return nil, err
		}
		defer enc.Close()
		ejs, _ := jetstream.New(enc, jetstream.WithPublishAsyncTimeout(5*time.Second))
		c := edge.New(ejs, sink.NewChain(&sink.NATS{JS: ejs, Names: scfg.Names}, runs), edge.Options{
			Name: fmt.Sprintf("edge-%d", i), Partitions: parts, BatchSize: cfg.BatchSize, NoBloom: cfg.NoBloom,
			Metrics: metrics, Logger: cfg.Logger, OnDecision: onDecision,
		})
		edges = append(edges, c)
		go func() { _ = c.Run(ectx); edgeDone <- struct{}{} }()
	}

	plan := workload.Plan{Events: cfg.Events, DupRate: cfg.DupRate, Gap: min(cfg.Events/10, 20_000), Seed: cfg.Seed, Prefix: "sim-"}
	ids, unique := plan.IDs()
	start := time.Now()
	var published atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- workload.Publish(ctx, producer.New(js, scfg.Region), plan, ids, 4096, func(n int) { published.Store(int64(n)) })
	}()
	decided := func() int64 {
		var n int64
		for _, e := range edges {
			n += e.Stats().Done
		}
		return n
	}
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
		d := decided()
		fmt.Fprintf(progress, "  %5.1fs  published %7d/%d  decided %7d  (%6.0f events/s)\n",
			time.Since(start).Seconds(), published.Load(), cfg.Events, d, float64(d-lastDecided))
		lastDecided = d
		if !pubFinished {
			continue
		}
		ok, err := verify.Drained(ctx, js, scfg.Names, cfg.Partitions, false)
		if err == nil && ok {
			break
		}
	}
	elapsed := time.Since(start)
	ecancel()
	for range edges {
		<-edgeDone
	}
	stored, err := verify.StreamMsgs(ctx, js, scfg.IngestStream())
	if err != nil {
		return nil, err
	}
	counts, err := verify.OutputCounts(ctx, js, scfg.Names)
	if err != nil {
		return nil, err
	}
	r := &Report{Config: cfg, Published: cfg.Events, Stored: int(stored), Unique: unique, Elapsed: elapsed,
		ByPath: map[string]int64{}, Decision: decision.Quantiles(), EndToEnd: e2e.Quantiles()}
	var s edge.Stats
	for _, e := range edges {
		s.Add(e.Stats())
	}
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

func startCores(ctx context.Context, cfg Config, dir string) ([]string, func(), error) {
	quiet := cfg.Logger
	if cfg.Cores == 1 {
		n, err := core.Start(ctx, core.Options{Port: -1, DataDir: filepath.Join(dir, "core-0"), MaxMemory: 512 << 20, MaxStore: 8 << 30, Logger: quiet})
		if err != nil {
			return nil, nil, err
		}
		return []string{n.ClientURL()}, n.Shutdown, nil
	}
	ps, err := ports.Free(3)
	if err != nil {
		return nil, nil, err
	}
	opts := make([]core.Options, 3)
	for i := range opts {
		opts[i] = core.Options{Name: fmt.Sprintf("core-%d", i), Port: -1, DataDir: filepath.Join(dir, fmt.Sprintf("core-%d", i)),
			ClusterPort: ps[i], MaxMemory: 512 << 20, MaxStore: 8 << 30, Logger: quiet}
	}
	nodes, err := core.StartCluster(ctx, opts)
	if err != nil {
		return nil, nil, err
	}
	stop := func() {
		for _, n := range nodes {
			n.Shutdown()
		}
	}
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.ClientURL())
	}
	return urls, stop, nil
}
