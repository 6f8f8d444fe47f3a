// Command edge runs a onceplane edge node: it owns partitions of a region's
// ingest stream, dedupes every event against the fenced claim log and hands
// first-time events to built-in sinks.
//
//	edge -nats nats://127.0.0.1:4222 -sink nats
//	edge -sink nats,ledger -ledger ./ledger.jsonl -partitions 0-7
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/gossip"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/telemetry"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		// Readiness, not liveness: a container whose partition is stuck,
		// fenced or failed must not report healthy (issue 11, item 8).
		os.Exit(cli.Health(os.Args[2:], "http://127.0.0.1:9222/readyz"))
	}
	var (
		o                                         edge.Options
		conn                                      cli.NATSFlags
		url, parts, sinks, ledger, httpURL, admin string
		policy, logLevel, traceFile, statsFile    string
		gossipBind, gossipSeeds, gossipKeyFile    string
		gossipProfile, peers, adminTokenFile      string
		adminCert, adminKey                       string
		test                                      testFlags
	)
	def := edge.DefaultOptions()
	flag.StringVar(&url, "nats", "nats://127.0.0.1:4222", "core node URL(s), comma-separated")
	flag.StringVar(&o.Region, "region", def.Region, "region whose streams to consume")
	conn.Register(flag.CommandLine, "edge")
	flag.StringVar(&o.Name, "name", "", "edge name in claim records (default hostname-pid)")
	flag.StringVar(&parts, "partitions", "", "partitions to own, e.g. 0-3,8 (default all; with -gossip: the partitions the region's edges share)")
	flag.StringVar(&peers, "peers", "", "other regions, comma-separated: merge their replicated claims and report conflicts (asynchronous cross-region mode)")
	flag.BoolVar(&o.Strict, "strict", false, "strict cross-region mode: consume the region's home stream (set -partitions to the home partitions)")
	flag.IntVar(&o.BatchSize, "batch", def.BatchSize, "events per batch (one claim append each)")
	flag.DurationVar(&o.AckWait, "ack-wait", def.AckWait, "ingest redelivery timeout")
	flag.DurationVar(&o.Window, "window", def.Window, "dedupe window (must match the core's)")
	flag.IntVar(&o.ExpectedIDs, "expected-ids", 0, "IDs per partition per window to pre-size for (0: grow)")
	flag.BoolVar(&o.NoBloom, "no-bloom", false, "turn the Bloom pre-check off")
	flag.StringVar(&policy, "uncertain", "rerun", "policy for uncertain IDs: rerun or skip")
	flag.IntVar(&o.Limits.MaxPayload, "max-payload", def.Limits.MaxPayload, "largest accepted payload in bytes")
	flag.IntVar(&o.Retry.Attempts, "retry-attempts", def.Retry.Attempts, "handler attempts before dead-lettering")
	flag.StringVar(&sinks, "sink", "nats", "comma-separated sinks, run in order: nats, http, ledger, stdout, chaos (drills)")
	flag.StringVar(&ledger, "ledger", "ledger.jsonl", "ledger sink file")
	flag.StringVar(&httpURL, "http-url", "", "http sink URL")
	flag.StringVar(&admin, "admin", "127.0.0.1:9222", "admin HTTP address for /metrics, /healthz, /readyz (empty: off)")
	flag.StringVar(&adminCert, "admin-tls-cert", "", "PEM certificate for the admin port: HTTPS only, so the bearer token never crosses the network in clear (with -admin-tls-key)")
	flag.StringVar(&adminKey, "admin-tls-key", "", "PEM key of -admin-tls-cert")
	flag.StringVar(&adminTokenFile, "admin-token-file", "", "file holding the admin bearer token (or set ONCEPLANE_ADMIN_TOKEN); /metrics and /status then require it, health checks stay open")
	flag.StringVar(&traceFile, "trace-file", "", "write spans as JSON lines to this file (else OTEL_* variables decide)")
	flag.StringVar(&statsFile, "stats-file", "", "write final stats as JSON here on shutdown")
	flag.StringVar(&gossipBind, "gossip", "", "gossip listen host:port; set it to share partitions with the other edges by membership (empty: own -partitions statically)")
	flag.StringVar(&gossipSeeds, "gossip-seeds", "", "comma-separated gossip addresses of other edges")
	flag.StringVar(&gossipKeyFile, "gossip-key-file", "", "file holding the hex gossip encryption key (or set ONCEPLANE_GOSSIP_KEY)")
	flag.StringVar(&gossipProfile, "gossip-profile", "fast", "failure detection timers: fast (~1-2 s) or lan (~5-7 s)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	insecure := cli.InsecureFlag(flag.CommandLine)
	test.register(flag.CommandLine)
	flag.Parse()
	log := cli.Logger(logLevel)
	o.Logger = log
	if (adminCert == "") != (adminKey == "") {
		cli.Fatal(log, "admin TLS", errors.New("-admin-tls-cert and -admin-tls-key go together"))
	}
	refuseExposed(log, gossipBind, gossipKeyFile, admin, adminTokenFile, adminCert != "", *insecure)
	test.apply(&o, log)
	var err error
	if peers != "" {
		o.Peers = strings.Split(peers, ",")
	}
	if o.Partitions, err = cli.Ints(parts); err != nil {
		cli.Fatal(log, "bad -partitions", err)
	}
	switch policy {
	case "rerun":
		o.Policy = dedupe.PolicyRerun
	case "skip":
		o.Policy = dedupe.PolicySkip
	default:
		cli.Fatal(log, "bad -uncertain", fmt.Errorf("%q: want rerun or skip", policy))
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	shutdownTracing, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{Service: "onceplane-edge", File: traceFile})
	if err != nil {
		cli.Fatal(log, "tracing", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	// However the core, the sinks or the exporters behave, a signalled edge
	// is gone within a bound: partitions get ShutdownGrace to finish their
	// batch and ShutdownGrace more once cancelled (edge.Run), then a few
	// seconds for leaving gossip and closing connections.
	go func() {
		<-ctx.Done()
		grace := o.ShutdownGrace
		if grace <= 0 {
			grace = 5 * time.Second
		}
		t := time.NewTimer(2*grace + 5*time.Second)
		<-t.C
		log.Error("shutdown did not finish within its bound; exiting", "bound", 2*grace+5*time.Second)
		os.Exit(1)
	}()

	natsOpts, err := conn.Options("onceplane-edge")
	if err != nil {
		cli.Fatal(log, "connect", err)
	}
	// A core that is still starting or out of reach is waited for, not a
	// reason to exit: the edge connects when it can (Run waits for the streams).
	natsOpts = append(natsOpts, nats.RetryOnFailedConnect(true), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats async error", "err", err) }))
	nc, err := nats.Connect(url, natsOpts...)
	if err != nil {
		cli.Fatal(log, "connect", err)
	}
	defer nc.Close()
	// An async publish whose ack is lost with a dead core node must time out,
	// or it stays pending forever and the sink eventually stalls.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		cli.Fatal(log, "jetstream", err)
	}
	if o.Name == "" {
		h, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	h, closeSinks, err := buildSinks(sinks, js, o, ledger, httpURL, &test)
	if err != nil {
		cli.Fatal(log, "sinks", err)
	}
	defer closeSinks()
	o.Metrics = telemetry.NewMetrics()
	var g *gossip.Cluster
	if gossipBind != "" {
		// The region's edge password proves to the other edges that this
		// member is one of them (gossip.Options.Proof).
		pw, err := conn.Password()
		if err != nil {
			cli.Fatal(log, "gossip", err)
		}
		if g, err = startGossip(o, gossipBind, gossipSeeds, gossipKeyFile, gossipProfile, admin, []byte(pw), log); err != nil {
			cli.Fatal(log, "gossip", err)
		}
		o.Membership = g
		go watchMembership(g, o, log)
	}
	var events ownershipLog
	o.OnOwnership = events.add
	c := edge.New(js, h, o)
	if admin != "" {
		token, err := cli.Secret(adminTokenFile, "ONCEPLANE_ADMIN_TOKEN")
		if err != nil {
			cli.Fatal(log, "admin token", err)
		}
		ao := telemetry.AdminOptions{Addr: admin, Metrics: o.Metrics, Ready: c.Ready, Logger: log, Token: token,
			Routes: []telemetry.Route{{Path: "/status", Handler: statusHandler(c, g, &events)}}}
		if adminCert != "" {
			cert, err := tls.LoadX509KeyPair(adminCert, adminKey)
			if err != nil {
				cli.Fatal(log, "admin TLS", err)
			}
			ao.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		}
		a, err := telemetry.StartAdmin(ao)
		if err != nil {
			cli.Fatal(log, "admin", err)
		}
		defer a.Close(context.Background())
		log.Info("admin listening", "addr", a.Addr())
	}
	log.Info("edge starting", "name", o.Name, "region", o.Region, "sinks", sinks)
	if err := c.Run(ctx); err != nil {
		cli.Fatal(log, "run", err)
	}
	if g != nil {
		// Partitions are released (batches finished, done recorded): now
		// tell the others, who take them over at once.
		if err := g.Leave(2 * time.Second); err != nil {
			log.Warn("gossip leave", "err", err)
		}
	}
	s := c.Stats()
	log.Info("edge stopped", "in", s.In, "first", s.First, "duplicates", s.Duplicates, "dlq", s.DLQ,
		"uncertain", s.Uncertain, "reruns", s.UncertainReruns, "fenced", s.Fenced)
	if statsFile != "" {
		writeStats(log, statsFile, s)
	}
}

func writeStats(log *slog.Logger, path string, s edge.Stats) {
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(path, b, 0o640); err != nil {
		log.Error("stats file", "err", err)
	}
}

func buildSinks(list string, js jetstream.JetStream, o edge.Options, ledger, httpURL string, test *testFlags) (edge.Handler, func(), error) {
	var chain []edge.Handler
	closers := []func(){}
	for _, name := range strings.Split(list, ",") {
		switch strings.TrimSpace(name) {
		case "nats":
			chain = append(chain, &sink.NATS{JS: js, Names: streams.Names{Region: o.Region}})
		case "http":
			if httpURL == "" {
				return nil, nil, fmt.Errorf("sink http needs -http-url")
			}
			chain = append(chain, &sink.HTTP{URL: httpURL})
		case "ledger":
			l, err := sink.OpenLedger(ledger, o.Name)
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, l)
			closers = append(closers, func() { l.Close() })
		case "stdout":
			chain = append(chain, &sink.Writer{W: os.Stdout})
		case "chaos":
			c, err := test.chaosSink(o.Logger)
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, c)
		default:
			return nil, nil, fmt.Errorf("unknown sink %q (want nats, http, ledger, stdout, chaos)", name)
		}
	}
	return sink.NewChain(chain...), func() {
		for _, c := range closers {
			c()
		}
	}, nil
}
