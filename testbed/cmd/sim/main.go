// Command sim runs a simulated onceplane deployment on this machine with
// embedded defaults: by default three regions (us-east, eu-west, ap-south)
// joined by simulated WAN links, a load with in-region duplicates, producer
// retries, cross-region re-sends and races, and a link-cut drill mid-load;
// it prints per-region and per-region-pair results and checks that nothing
// was lost, nothing ran twice in a region, and every race was reported as a
// conflict. -single runs the one-region simulation instead.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/testbed/sim"
	"github.com/onceplane/onceplane/topology"
)

func main() {
	var (
		mc                sim.MultiConfig
		sc                sim.Config
		single            bool
		topoFile, mode    string
		logLevel, dataDir string
		seed              uint64
		printTopo         bool
		reportDir         string
		shards            int
	)
	flag.BoolVar(&single, "single", false, "run the one-region simulation (flags -dup-rate, -partitions, -edges, -cores, -batch, -no-bloom)")
	flag.StringVar(&topoFile, "topology", "", "topology file (JSON; default: the built-in three regions)")
	flag.BoolVar(&printTopo, "print-topology", false, "print the default topology as JSON and exit")
	flag.StringVar(&mode, "mode", "", "cross-region mode: async or strict (default: the topology's)")
	flag.IntVar(&mc.Events, "events", 60_000, "unique event IDs (single: events published, duplicates included)")
	flag.IntVar(&mc.Rate, "rate", 10_000, "publish rate across the simulation, events/s")
	flag.StringVar(&mc.Drill, "drill", "cut", "drill mid-load: cut (first two regions' link), core (last region's core nodes), region-loss (last region's cores and edges killed, failover to its standby, failback; both modes), none")
	flag.DurationVar(&mc.DrillFor, "drill-for", 3*time.Second, "drill duration (region-loss: how long the region stays failed over)")
	flag.BoolVar(&mc.NoReplication, "no-replication", false, "edges do not merge other regions' claims (baseline for the in-region cost)")
	flag.Float64Var(&sc.DupRate, "dup-rate", 0.3, "single: share of events that re-send an earlier ID")
	flag.IntVar(&sc.Partitions, "partitions", 16, "single: partitions")
	flag.IntVar(&sc.Edges, "edges", 2, "single: edges")
	flag.IntVar(&sc.Cores, "cores", 0, "core nodes per region, 1 or 3 (default: the topology's; single: 1)")
	flag.IntVar(&shards, "shards", 0, "shards per region: ingest and claim streams, each led by a core node (default: one per core node)")
	flag.IntVar(&sc.BatchSize, "batch", 500, "single: events per batch")
	flag.BoolVar(&sc.NoBloom, "no-bloom", false, "single: turn the Bloom pre-check off")
	flag.Uint64Var(&seed, "seed", 1, "load seed")
	flag.Float64Var(&mc.TraceSample, "trace-sample", 0.01, "share of events traced from their publish across regions (0: none)")
	flag.StringVar(&mc.TraceFile, "trace-file", "", "also write the traces to this file as OTLP JSON lines (OTEL_EXPORTER_OTLP_ENDPOINT sends them to a collector too)")
	flag.StringVar(&mc.OTLPEndpoint, "otlp-endpoint", "", "send the traces over OTLP/HTTP to this URL (Jaeger, a Collector: http://127.0.0.1:4318), in place of OTEL_EXPORTER_OTLP_ENDPOINT")
	flag.StringVar(&reportDir, "report-dir", "onceplane-report", "where the text, JSON and HTML reports go (empty: none)")
	flag.StringVar(&dataDir, "data", "", "core data directory (default: a temporary one)")
	flag.StringVar(&logLevel, "log-level", "error", "component log level")
	flag.Parse()
	if mc.TraceSample == 0 {
		mc.TraceSample = -1 // MultiConfig's zero is its default
	}
	if printTopo {
		os.Stdout.Write(topology.Default().Defaults().JSON())
		return
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	logger := cli.Logger(logLevel)
	if single {
		sc.Events, sc.Seed, sc.Dir, sc.Logger, sc.Shards = mc.Events, seed, dataDir, logger, shards
		r, err := sim.Run(ctx, sc, os.Stdout)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sim:", err)
			os.Exit(1)
		}
		r.Print(os.Stdout)
		if !r.ExactlyOnce {
			os.Exit(2)
		}
		return
	}
	if topoFile != "" {
		t, err := topology.Load(topoFile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sim:", err)
			os.Exit(1)
		}
		mc.Topology = t
	} else {
		mc.Topology = topology.Default()
	}
	if mode != "" {
		mc.Topology.Mode = topology.Mode(mode)
	}
	mc.Topology = reshape(mc.Topology, sc.Cores, shards)
	if err := mc.Topology.Defaults().Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
	mc.Seed, mc.Dir, mc.Logger = seed, dataDir, logger
	r, err := sim.RunMulti(ctx, mc, os.Stdout)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sim:", err)
		os.Exit(1)
	}
	r.Print(os.Stdout)
	if reportDir != "" {
		paths, err := r.WriteFiles(reportDir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sim: report:", err)
			os.Exit(1)
		}
		fmt.Println("\nreports:")
		for _, p := range paths {
			fmt.Println("  " + p)
		}
	}
	if !r.OK {
		os.Exit(2)
	}
}

// reshape gives every region of t cores core nodes (when non-zero) and
// shards shards (when non-zero).
func reshape(t topology.Topology, cores, shards int) topology.Topology {
	t.Regions = slices.Clone(t.Regions)
	for i := range t.Regions {
		r := &t.Regions[i]
		if cores > 0 {
			r.Cores = nil
			for j := range cores {
				r.Cores = append(r.Cores, topology.Core{Name: fmt.Sprintf("%s-core-%d", r.Name, j)})
			}
		}
		if shards > 0 {
			r.Shards = shards
		}
	}
	return t
}
