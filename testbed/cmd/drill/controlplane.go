package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/testbed/controlplane"
)

// runControlPlane measures ownership at scale (package controlplane) for
// each edge count given, and prints a table.
func runControlPlane(args []string) int {
	fs := flag.NewFlagSet("controlplane", flag.ExitOnError)
	var cfg controlplane.Config
	edges := fs.String("edges", "8,32,64", "edges per region, one measurement each")
	fs.IntVar(&cfg.Regions, "regions", 3, "regions")
	fs.IntVar(&cfg.Partitions, "partitions", 1024, "partitions per region")
	fs.IntVar(&cfg.Shards, "shards", 1, "shards per region (ingest and claim streams on the region's core node)")
	fs.Float64Var(&cfg.Kill, "kill", 0.1, "share of each region's edges crashed at once")
	logLevel := fs.String("log-level", "error", "component log level")
	_ = fs.Parse(args)
	cfg.Logger = cli.Logger(*logLevel)
	ctx, stop := cli.SignalContext()
	defer stop()
	var rs []controlplane.Result
	for _, e := range strings.Split(*edges, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(e))
		if err != nil {
			fmt.Fprintln(os.Stderr, "controlplane: -edges:", err)
			return 2
		}
		cfg.Edges = n
		fmt.Printf("%d regions × %d edges over %d partitions each...\n", cfg.Regions, n, cfg.Partitions)
		r, err := controlplane.Run(ctx, cfg)
		if err != nil {
			fmt.Fprintln(os.Stderr, "controlplane:", err)
			return 1
		}
		controlplane.Table(os.Stdout, []controlplane.Result{r})
		rs = append(rs, r)
	}
	fmt.Println()
	controlplane.Table(os.Stdout, rs)
	return 0
}
