// Command plan sizes a onceplane deployment (package capacity): by default
// the seed analysis's four tiers (100, 10K, 1M and 100M events/s), or one
// load given by flags, each figure with its arithmetic, from per-event
// costs measured on this machine's real processes. -calibrate measures
// them again (a core node and an edge as processes of their own, their CPU
// read from the kernel) and writes them to a file that -figures reads.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/onceplane/onceplane/capacity"
)

// reference are the figures of `go run ./cmd/plan -calibrate` on the
// reference machine: the defaults.
var reference = capacity.Figures{
	Source: "calibration on the reference machine (2 cores, AMD EPYC), 2026-12-01, 200000 events of 1024 B: go run ./cmd/plan -calibrate " +
		"(per-event CPU: the highest of three runs, others read 10-30 % lower; the comparisons: the run of 2026-12-01 with -rounds 3)",
	CoreStoreCPU: 13.1, CoreServeCPU: 9.85, EdgeCPU: 7.59, EdgeCPUNoBloom: 5.52,
	BytesPerID: 27.4, ClaimBytesPerID: 16, ClaimRecordOverhead: 175, EventOverhead: 144,
	ReplayIDsPerSec: 333_000, DetectSec: 1.25,
	Filtering: &capacity.Filtering{Partitions: 8, SharedStoreCPU: 9.15, SharedServeCPU: 7.50, OwnStoreCPU: 8.80, OwnServeCPU: 4.75},
	Scaling: []capacity.RegionRate{
		{Nodes: 1, Replicas: 1, Shards: 1, Events: 200_000, Rounds: 3, StoredPerSec: 108_496, DecidedPerSec: 145_812, CoreStoreCPU: 9.15, CoreServeCPU: 7.50},
		{Nodes: 3, Replicas: 3, Shards: 1, Events: 200_000, Rounds: 3, StoredPerSec: 40_181, DecidedPerSec: 77_648, CoreStoreCPU: 38.05, CoreServeCPU: 18.85},
		{Nodes: 3, Replicas: 3, Shards: 3, Events: 200_000, Rounds: 3, StoredPerSec: 39_615, DecidedPerSec: 92_016, CoreStoreCPU: 38.70, CoreServeCPU: 15.25},
	},
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == roleArg {
		os.Exit(child(os.Args[2:]))
	}
	var (
		load                       capacity.Load
		m                          capacity.Machines
		figuresFile, calibrateOut  string
		calibrate, strict, noBloom bool
		cal                        calibration
	)
	flag.Float64Var(&load.Rate, "rate", 0, "events/s across the deployment (0: print the four tiers)")
	flag.IntVar(&load.Regions, "regions", 1, "regions sharing the load")
	flag.IntVar(&load.Payload, "payload", 1024, "bytes per event")
	flag.Float64Var(&load.DupRate, "dup", 0.1, "share of events that repeat an earlier ID")
	flag.DurationVar(&load.Window, "window", time.Hour, "how long IDs are remembered")
	flag.BoolVar(&strict, "strict", false, "strict mode (each partition decided in its home region)")
	flag.IntVar(&load.Replicas, "replicas", 3, "stream replicas: 1 or 3")
	flag.IntVar(&load.Batch, "batch", 500, "the edges' batch size")
	flag.Float64Var(&m.CoreCPUs, "core-cpus", 8, "cores per core node")
	flag.Float64Var(&m.EdgeCPUs, "edge-cpus", 8, "cores per edge")
	flag.Float64Var(&m.EdgeMemory, "edge-memory", 32<<30, "bytes an edge may give its ID sets")
	flag.Float64Var(&m.Utilization, "utilization", 0.5, "share of each node's CPU the plan uses")
	flag.BoolVar(&noBloom, "no-bloom", false, "plan edges without the Bloom pre-check")
	flag.StringVar(&figuresFile, "figures", "", "per-event figures (JSON, written by -calibrate; default: the reference machine's)")
	flag.BoolVar(&calibrate, "calibrate", false, "measure the figures on this machine and write them to -out")
	flag.StringVar(&calibrateOut, "out", "figures.json", "-calibrate: where the figures go")
	flag.IntVar(&cal.events, "events", 200_000, "-calibrate: events per measurement")
	flag.IntVar(&cal.rounds, "rounds", 3, "-calibrate: measurements of each region (the median is kept)")
	flag.Parse()
	if calibrate {
		cal.payload, cal.dup = load.Payload, load.DupRate
		f, err := cal.run()
		if err != nil {
			fmt.Fprintln(os.Stderr, "plan -calibrate:", err)
			os.Exit(1)
		}
		b, _ := json.MarshalIndent(f, "", "  ")
		if err := os.WriteFile(calibrateOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "plan:", err)
			os.Exit(1)
		}
		fmt.Printf("%s\nwritten to %s\n", b, calibrateOut)
		return
	}
	f := reference
	if figuresFile != "" {
		b, err := os.ReadFile(figuresFile)
		if err == nil {
			f = capacity.Figures{}
			err = json.Unmarshal(b, &f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "plan: figures:", err)
			os.Exit(1)
		}
	}
	if noBloom {
		f.EdgeCPU = f.EdgeCPUNoBloom
	}
	load.Strict = strict
	loads := capacity.Tiers()
	if load.Rate > 0 {
		load.Name = "the given load"
		loads = []capacity.Load{load}
	}
	fmt.Println(f.Text())
	for _, l := range loads {
		p, err := capacity.Make(l, m, f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "plan:", err)
			os.Exit(1)
		}
		fmt.Println(p.Text())
	}
}
