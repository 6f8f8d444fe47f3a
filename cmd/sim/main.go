// Command sim runs a simulated onceplane region on this machine with embedded
// defaults and prints a report: events, first-time, duplicates by path,
// uncertain, dead letters, decision latency, and an exactly-once check of the
// output stream.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/sim"
)

func main() {
	var cfg sim.Config
	var logLevel string
	flag.IntVar(&cfg.Events, "events", 200_000, "events to publish, duplicates included")
	flag.Float64Var(&cfg.DupRate, "dup-rate", 0.3, "share of events that re-send an earlier ID")
	flag.IntVar(&cfg.Partitions, "partitions", 16, "partitions")
	flag.IntVar(&cfg.Edges, "edges", 2, "edges (partitions dealt round-robin)")
	flag.IntVar(&cfg.Cores, "cores", 1, "core nodes: 1, or 3 for an R3 region")
	flag.IntVar(&cfg.BatchSize, "batch", 500, "events per batch")
	flag.BoolVar(&cfg.NoBloom, "no-bloom", false, "turn the Bloom pre-check off")
	flag.Uint64Var(&cfg.Seed, "seed", 1, "load seed")
	flag.StringVar(&cfg.Dir, "data", "", "core data directory (default: a temporary one)")
	flag.StringVar(&logLevel, "log-level", "error", "component log level")
	flag.Parse()
	cfg.Logger = cli.Logger(logLevel)
	ctx, stop := cli.SignalContext()
	defer stop()
	r, err := sim.Run(ctx, cfg, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
	r.Print(os.Stdout)
	if !r.ExactlyOnce {
		os.Exit(2)
	}
}
