// Command drill runs a failure drill and prints its report: when the
// failure was detected, when every partition was owned again, events lost,
// duplicate effects and uncertain re-runs.
//
//	drill kill                 # embedded core, 3 edge processes, kill -9 one under load
//	drill -nats nats://127.0.0.1:4222 pause
//	drill rolling | scale
//	drill campaign -duration 2m -seed 42   # a seeded random fault campaign (see package drill/campaign)
//	drill controlplane -edges 8,32,64      # ownership at scale, no load (see package controlplane)
//
// The drill starts its own edge processes (it has to be able to kill and
// pause them); with -nats they run against your region's core nodes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/testbed/drill"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "campaign" {
		os.Exit(runCampaign(os.Args[2:]))
	}
	if len(os.Args) > 1 && os.Args[1] == "controlplane" {
		os.Exit(runControlPlane(os.Args[2:]))
	}
	var cfg drill.Config
	var logLevel string
	var repeat int
	flag.StringVar(&cfg.NATS, "nats", "", "core URL(s) of the region (empty: an embedded core)")
	flag.StringVar(&cfg.Region, "region", "local", "region")
	flag.StringVar(&cfg.EdgeBin, "edge-bin", "", "edge binary (default: build ./cmd/edge)")
	flag.StringVar(&cfg.CoreBin, "core-bin", "", "core binary for the core drill (default: build ./cmd/core)")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for logs and ledgers (default: temporary)")
	flag.IntVar(&cfg.Edges, "edges", 3, "edges (scale: starts 2, goes to 4)")
	flag.IntVar(&cfg.Events, "events", 30000, "events in the load")
	flag.IntVar(&cfg.Rate, "rate", 5000, "events per second")
	flag.IntVar(&cfg.Partitions, "partitions", 8, "partitions, when the drill provisions the streams")
	flag.IntVar(&cfg.PreloadIDs, "preload-ids", 0, "claimed IDs to preload in every partition's claim log (a realistic window for takeover)")
	flag.IntVar(&repeat, "repeat", 1, "run the drill this many times and report p50/p99 of detection and takeover")
	flag.StringVar(&logLevel, "log-level", "warn", "log level")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: drill [flags] %v\n       drill campaign [flags]   (drill campaign -h)\n       drill controlplane [flags]   (drill controlplane -h)\n", drill.Names)
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	cfg.Logger = cli.Logger(logLevel)
	ctx, stop := cli.SignalContext()
	defer stop()
	dir, err := os.MkdirTemp("", "onceplane-drill-bin")
	if err != nil {
		cli.Fatal(cfg.Logger, "temp dir", err)
	}
	defer os.RemoveAll(dir)
	for _, b := range []struct {
		path *string
		pkg  string
	}{{&cfg.EdgeBin, "./cmd/edge"}, {&cfg.CoreBin, "./cmd/core"}} {
		if *b.path != "" || (b.pkg == "./cmd/core" && flag.Arg(0) != "core") {
			continue
		}
		*b.path = filepath.Join(dir, filepath.Base(b.pkg))
		build := exec.Command("go", "build", "-o", *b.path, b.pkg)
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			cli.Fatal(cfg.Logger, "build "+b.pkg+" (run from the repository root, or pass -edge-bin/-core-bin)", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, time.Duration(repeat)*10*time.Minute)
	defer cancel()
	var detected, takenOver []time.Duration
	failed := false
	for i := 0; i < repeat; i++ {
		run := cfg
		if cfg.Dir != "" && repeat > 1 {
			run.Dir = filepath.Join(cfg.Dir, fmt.Sprintf("run-%d", i))
			_ = os.MkdirAll(run.Dir, 0o750)
		}
		r, err := drill.Run(ctx, run, flag.Arg(0))
		if r != nil {
			r.Print(os.Stdout)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "drill:", err)
			os.Exit(1)
		}
		failed = failed || !r.OK()
		detected, takenOver = append(detected, r.Detected), append(takenOver, r.TakenOver)
	}
	if repeat > 1 {
		fmt.Printf("\n== %d runs ==\n", repeat)
		fmt.Printf("failure detected after    p50 %v  p99 %v  max %v\n", pct(detected, 50), pct(detected, 99), pct(detected, 100))
		fmt.Printf("takeover finished after   p50 %v  p99 %v  max %v\n", pct(takenOver, 50), pct(takenOver, 99), pct(takenOver, 100))
		fmt.Printf("takeover minus detection  p50 %v  p99 %v\n", pct(diff(takenOver, detected), 50), pct(diff(takenOver, detected), 99))
	}
	if failed {
		os.Exit(2)
	}
}

// pct returns the q-th percentile (nearest rank) of ds.
func pct(ds []time.Duration, q int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	i := (q*len(s) + 99) / 100
	return s[max(0, min(len(s)-1, i-1))].Round(time.Millisecond)
}

func diff(a, b []time.Duration) []time.Duration {
	out := make([]time.Duration, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}
