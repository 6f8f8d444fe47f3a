package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/testbed/drill/campaign"
	"github.com/onceplane/onceplane/testbed/proc"
)

// runCampaign runs "drill campaign [flags]" and returns the exit status:
// 0 no violation, 2 a violation, 1 the campaign could not run.
func runCampaign(args []string) int {
	fs := flag.NewFlagSet("campaign", flag.ExitOnError)
	var cfg campaign.Config
	var kinds, logLevel string
	var schedule bool
	fs.Uint64Var(&cfg.Seed, "seed", 0, "seed of the schedule, load and chaos (0: from the clock; printed)")
	fs.DurationVar(&cfg.Duration, "duration", 2*time.Minute, "fault phase (the load runs as long)")
	fs.DurationVar(&cfg.MeanGap, "every", 2*time.Second, "mean time between faults")
	fs.StringVar(&kinds, "faults", "", fmt.Sprintf("fault kinds to draw, comma-separated (default all: %v)", campaign.AllKinds()))
	fs.IntVar(&cfg.Cores, "cores", 1, "core nodes: 1, or 3 (an R3 region; one node restarted at a time)")
	fs.IntVar(&cfg.Edges, "edges", 3, "edge processes")
	fs.IntVar(&cfg.Partitions, "partitions", 8, "partitions")
	fs.IntVar(&cfg.Batch, "batch", 100, "edge batch size")
	fs.IntVar(&cfg.Rate, "rate", 2000, "background load, events per second")
	fs.DurationVar(&cfg.Window, "window", 0, "dedupe window (0: the core's default)")
	fs.DurationVar(&cfg.LinkDelay, "link-delay", 2*time.Millisecond, "one-way delay of each edge's link to the core (negative: none); flaps raise it")
	fs.Float64Var(&cfg.Chaos.Fail, "chaos-fail", 0.01, "baseline chaos sink failure rate")
	fs.Float64Var(&cfg.Chaos.Hang, "chaos-hang", 0.002, "baseline chaos sink hang rate")
	fs.Float64Var(&cfg.Chaos.Panic, "chaos-panic", 0.0005, "baseline chaos sink panic rate")
	fs.DurationVar(&cfg.Chaos.HangMax, "chaos-hang-max", time.Second, "longest chaos sink hang")
	fs.BoolVar(&cfg.ChaosLast, "chaos-last", false, "put the chaos sink after the ledger (a batch re-run after a panic then shows as unflagged duplicates)")
	fs.DurationVar(&cfg.SettleTimeout, "settle", 0, "how long the region has to drain once faults stop (0: a sixth of -duration, at least 60 s)")
	fs.StringVar(&cfg.Dir, "dir", "", "keep logs, ledgers and data here; must be empty (default: a temporary directory, kept on violation)")
	fs.StringVar(&cfg.EdgeBin, "edge-bin", "", "edge binary (default: build ./cmd/edge)")
	fs.StringVar(&cfg.CoreBin, "core-bin", "", "core binary (default: build ./cmd/core)")
	fs.IntVar(&cfg.Regions, "regions", 1, "1, or 3: us-east, eu-west and ap-south joined by gateways through WAN links that are cut and healed, edges' clocks hours apart between regions, IDs sent to two regions at once (-edges, -partitions, -rate and -every are then per region)")
	fs.DurationVar(&cfg.WANGap, "wan-every", 10*time.Second, "three regions: mean time between link cuts")
	fs.IntVar(&cfg.RaceRate, "race-rate", 0, "three regions: IDs a second sent to two regions at once (0: -rate/20, at least 5)")
	fs.DurationVar(&cfg.ConflictTimeout, "conflict-timeout", 3*time.Minute, "three regions: how long to wait, once settled, for every race to be recorded as a conflict")
	fs.BoolVar(&schedule, "print-schedule", false, "print the schedule before running")
	fs.StringVar(&logLevel, "log-level", "info", "campaign log level")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: drill campaign [flags]\n\nA seeded random schedule of faults over a region of real processes, then a check of\nthe history: nothing acked lost, no unflagged duplicate, uncertain runs bounded,\nevery partition drained.\n\n")
		fs.PrintDefaults()
	}
	_ = fs.Parse(args)
	log := cli.Logger(logLevel)
	cfg.Logger = log
	var err error
	if cfg.Kinds, err = campaign.ParseKinds(kinds); err != nil {
		log.Error("bad -faults", "err", err)
		return 1
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	if cfg.EdgeBin == "" || cfg.CoreBin == "" {
		dir, err := os.MkdirTemp("", "onceplane-campaign-bin")
		if err != nil {
			log.Error("temp dir", "err", err)
			return 1
		}
		defer os.RemoveAll(dir)
		for _, b := range []struct {
			path *string
			pkg  string
		}{{&cfg.EdgeBin, "./cmd/edge"}, {&cfg.CoreBin, "./cmd/core"}} {
			if *b.path != "" {
				continue
			}
			if *b.path, err = proc.Build(".", dir, b.pkg); err != nil {
				log.Error("build (run from the repository root, or pass -edge-bin/-core-bin)", "err", err)
				return 1
			}
		}
	}
	if cfg.Seed == 0 {
		cfg.Seed = uint64(time.Now().UnixNano()) % 1_000_000_000
	}
	fmt.Printf("campaign seed %d (replay with -seed %d)\n", cfg.Seed, cfg.Seed)
	if schedule {
		r := campaign.Report{Seed: cfg.Seed, Schedule: campaign.Plan(cfg.Seed, campaign.PlanOptionsOf(cfg))}
		r.PrintSchedule(os.Stdout)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+15*time.Minute)
	defer cancel()
	if cfg.Regions > 1 {
		return runRegions(ctx, cfg)
	}
	r, err := campaign.Run(ctx, cfg)
	if r != nil && (err == nil || r.Verdict.Runs > 0) {
		r.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "campaign:", err)
		if r != nil && r.Dir != "" {
			fmt.Fprintln(os.Stderr, "campaign: logs in", r.Dir)
		}
		return 1
	}
	if !r.OK() {
		return 2
	}
	if len(r.Errors) > 0 {
		return 1
	}
	return 0
}

// runRegions runs a three-region campaign and returns the exit status as
// runCampaign does.
func runRegions(ctx context.Context, cfg campaign.Config) int {
	m, err := campaign.RunRegions(ctx, cfg)
	if m != nil && (err == nil || len(m.Regions) > 0) {
		m.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "campaign:", err)
		if m != nil && m.Dir != "" {
			fmt.Fprintln(os.Stderr, "campaign: logs in", m.Dir)
		}
		return 1
	}
	if !m.OK() {
		return 2
	}
	if len(m.Errors) > 0 {
		return 1
	}
	return 0
}
