// Command drill runs a failure drill and prints its report: when the
// failure was detected, when every partition was owned again, events lost,
// duplicate effects and uncertain re-runs.
//
//	drill kill                 # embedded core, 3 edge processes, kill -9 one under load
//	drill -nats nats://127.0.0.1:4222 pause
//	drill rolling | scale
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
	"time"

	"github.com/onceplane/onceplane/drill"
	"github.com/onceplane/onceplane/internal/cli"
)

func main() {
	var cfg drill.Config
	var logLevel string
	flag.StringVar(&cfg.NATS, "nats", "", "core URL(s) of the region (empty: an embedded core)")
	flag.StringVar(&cfg.Region, "region", "local", "region")
	flag.StringVar(&cfg.EdgeBin, "edge-bin", "", "edge binary (default: build ./cmd/edge)")
	flag.StringVar(&cfg.Dir, "dir", "", "directory for logs and ledgers (default: temporary)")
	flag.IntVar(&cfg.Edges, "edges", 3, "edges (scale: starts 2, goes to 4)")
	flag.IntVar(&cfg.Events, "events", 30000, "events in the load")
	flag.IntVar(&cfg.Rate, "rate", 5000, "events per second")
	flag.IntVar(&cfg.Partitions, "partitions", 8, "partitions, when the drill provisions the streams")
	flag.StringVar(&logLevel, "log-level", "warn", "log level")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: drill [flags] %v\n", drill.Names)
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
	if cfg.EdgeBin == "" {
		dir, err := os.MkdirTemp("", "onceplane-drill-bin")
		if err != nil {
			cli.Fatal(cfg.Logger, "temp dir", err)
		}
		defer os.RemoveAll(dir)
		cfg.EdgeBin = filepath.Join(dir, "edge")
		build := exec.Command("go", "build", "-o", cfg.EdgeBin, "./cmd/edge")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			cli.Fatal(cfg.Logger, "build edge (run from the repository root, or pass -edge-bin)", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	r, err := drill.Run(ctx, cfg, flag.Arg(0))
	if r != nil {
		r.Print(os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "drill:", err)
		os.Exit(1)
	}
	if !r.OK() {
		os.Exit(2)
	}
}
