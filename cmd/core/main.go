// Command core runs a onceplane core node: an embedded NATS server with
// JetStream that provisions the region's streams at start.
//
//	core                                   one node, 127.0.0.1:4222, data in ./data/core-0
//	core -name c1 -cluster-port 6222 -routes 127.0.0.1:6222,127.0.0.1:6223,127.0.0.1:6224 -replicas 3
package main

import (
	"context"
	"flag"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/jetstream/streams"
)

func main() {
	var (
		o            core.Options
		routes       string
		cfg          streams.Config
		ingestDedupe string
		logLevel     string
		noProvision  bool
	)
	flag.StringVar(&o.Name, "name", "core-0", "server name, unique in the deployment")
	flag.StringVar(&o.Region, "region", "local", "region (JetStream cluster name)")
	flag.StringVar(&o.Host, "host", "127.0.0.1", "listen address for clients and routes")
	flag.IntVar(&o.Port, "port", 4222, "client port (-1: any free port)")
	flag.StringVar(&o.DataDir, "data", "", "JetStream data directory (default ./data/<name>)")
	flag.IntVar(&o.ClusterPort, "cluster-port", 0, "route port; non-zero joins a region cluster")
	flag.StringVar(&routes, "routes", "", "comma-separated host:port route addresses of the region's core nodes")
	flag.Int64Var(&o.MaxMemory, "max-memory", 1<<30, "JetStream memory limit in bytes")
	flag.Int64Var(&o.MaxStore, "max-store", 16<<30, "JetStream file store limit in bytes")
	flag.IntVar(&cfg.Partitions, "partitions", 16, "partition count (fixed per deployment)")
	flag.IntVar(&cfg.Replicas, "replicas", 1, "stream replicas (1, or 3 in a 3-node region)")
	flag.DurationVar(&cfg.Window, "window", 24*time.Hour, "dedupe window: how long claims are remembered")
	flag.DurationVar(&cfg.IngestMaxAge, "ingest-max-age", 0, "how long ingested events are kept (default: the window; must not exceed it)")
	flag.StringVar(&ingestDedupe, "ingest-dedupe", "2m", "ingest stream Nats-Msg-Id window, or \"off\" (100ms, the minimum)")
	flag.BoolVar(&noProvision, "no-provision", false, "do not create or update streams at start")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Parse()
	log := cli.Logger(logLevel)
	o.Logger = log
	if routes != "" {
		o.Routes = strings.Split(routes, ",")
	}
	cfg.Region = o.Region
	if ingestDedupe == "off" {
		cfg.IngestDuplicates = -1
	} else {
		d, err := time.ParseDuration(ingestDedupe)
		if err != nil {
			cli.Fatal(log, "bad -ingest-dedupe", err)
		}
		cfg.IngestDuplicates = d
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	n, err := core.Start(ctx, o)
	if err != nil {
		cli.Fatal(log, "start", err)
	}
	defer n.Shutdown()
	log.Info("core node up", "name", o.Name, "region", o.Region, "url", n.ClientURL(), "cluster", n.ClusterAddr())
	if !noProvision {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		err := provision(pctx, n, cfg)
		cancel()
		if err != nil {
			cli.Fatal(log, "provision streams", err)
		}
		log.Info("streams provisioned", "partitions", cfg.Partitions, "replicas", cfg.Replicas, "window", cfg.Window)
	}
	<-ctx.Done()
	log.Info("shutting down")
}

func provision(ctx context.Context, n *core.Node, cfg streams.Config) error {
	nc, err := n.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	return streams.Provision(ctx, js, cfg)
}
