// Command edge runs a onceplane edge node: it owns partitions of a region's
// ingest stream, dedupes every event against the fenced claim log and hands
// first-time events to built-in sinks.
//
//	edge -nats nats://127.0.0.1:4222 -sink nats
//	edge -sink nats,ledger -ledger ./ledger.jsonl -partitions 0-7
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/gossip"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/sink/pgsink"
	"github.com/onceplane/onceplane/telemetry"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		// Readiness, not liveness: a container whose partition is stuck,
		// fenced or failed must not report healthy (issue 11, item 8).
		os.Exit(cli.Health(os.Args[2:], "http://127.0.0.1:9222/readyz"))
	}
	var f flags
	f.register(flag.CommandLine)
	flag.Parse()
	log := cli.Logger(f.logLevel)
	o, err := f.options(log)
	if err != nil {
		cli.Fatal(log, "flags", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	shutdownTracing, err := telemetry.SetupTracing(ctx, telemetry.TracingOptions{Service: "onceplane-edge", File: f.traceFile})
	if err != nil {
		cli.Fatal(log, "tracing", err)
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = shutdownTracing(sctx)
	}()
	go exitAfterBound(ctx, o.ShutdownGrace, log)
	nc, js := connect(f, log)
	defer nc.Close()
	h, closeSinks, err := buildSinks(ctx, &f, js, o)
	if err != nil {
		cli.Fatal(log, "sinks", err)
	}
	defer closeSinks()
	o.Metrics = telemetry.NewMetrics()
	var g *gossip.Cluster
	if f.gossipBind != "" {
		// The region's edge password proves to the other edges that this
		// member is one of them (gossip.Options.Proof).
		pw, err := f.conn.Password()
		if err != nil {
			cli.Fatal(log, "gossip", err)
		}
		if g, err = startGossip(o, f.gossipBind, f.gossipSeeds, f.gossipKeyFile, f.gossipProfile, f.admin, []byte(pw), log); err != nil {
			cli.Fatal(log, "gossip", err)
		}
		o.Membership = g
		go watchMembership(g, o, log)
	}
	var events ownershipLog
	o.OnOwnership = events.add
	c, err := edge.New(js, h, o)
	if err != nil {
		cli.Fatal(log, "edge", err)
	}
	if f.admin != "" {
		a := serveAdmin(f, c, g, &events, o.Metrics, log)
		defer a.Close(context.Background())
	}
	log.Info("edge starting", "name", o.Name, "region", o.Region, "sinks", f.sinks)
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
	if f.statsFile != "" {
		writeStats(log, f.statsFile, s)
	}
}

// flags are the command's flags; options turns them into edge.Options.
type flags struct {
	o                                         edge.Options
	conn                                      cli.NATSFlags
	url, parts, sinks, ledger, httpURL, admin string
	policy, logLevel, traceFile, statsFile    string
	gossipBind, gossipSeeds, gossipKeyFile    string
	gossipProfile, peers, adminTokenFile      string
	failoverOf                                string
	adminCert, adminKey                       string
	pg                                        pgsink.Options
	ledgerPositions, natsPositions            bool
	insecure                                  *bool
	test                                      testFlags
}

func (f *flags) register(fs *flag.FlagSet) {
	def := edge.DefaultOptions()
	o := &f.o
	fs.StringVar(&f.url, "nats", "nats://127.0.0.1:4222", "core node URL(s), comma-separated")
	fs.StringVar(&o.Region, "region", def.Region, "region whose streams to consume")
	f.conn.Register(fs, "edge")
	fs.StringVar(&o.Name, "name", "", "edge name in claim records (default hostname-pid)")
	fs.StringVar(&f.parts, "partitions", "", "partitions to own, e.g. 0-3,8 (default all; with -gossip: the partitions the region's edges share)")
	fs.StringVar(&f.peers, "peers", "", "other regions, comma-separated: merge their replicated claims and report conflicts (asynchronous cross-region mode)")
	fs.DurationVar(&o.IsolatedAfter, "isolated-after", 0, "stop claiming while this region has heard nothing from a majority of the regions (itself included) for this long, and resume when it hears them again unless -standby failed it over meanwhile; set it below the standby's -failover-after (0: never)")
	fs.StringVar(&o.Standby, "standby", "", "the region (among -peers) standing by for this one: before owning anything, ask it whether this region was failed over (core region-failover), and own nothing until it fails back")
	fs.StringVar(&f.failoverOf, "failover-of", "", "after `core region-failover <region>`: run that lost region's partitions here, from this region's mirror of its ingest, continuing its claim log (-region is this standby region, whose credentials and core nodes the edge uses; -peers are this region's peers; no -gossip yet; with -strict, from this region's promoted copy of its home stream, -partitions its home partitions)")
	fs.BoolVar(&o.NoTail, "no-tail", false, "do not read other regions' claim logs directly while replication from them recovers from a WAN fault (the tail: without it, claims made over there during a cut are known here only when JetStream's sources recover, about 2 s after the heal)")
	fs.BoolVar(&o.Strict, "strict", false, "strict cross-region mode: consume the region's home stream; without -partitions the edge owns the home partitions its home stream records, following moves (core home-move)")
	fs.IntVar(&o.BatchSize, "batch", def.BatchSize, "events per batch (one claim append each)")
	fs.DurationVar(&o.AckWait, "ack-wait", def.AckWait, "ingest redelivery timeout")
	fs.DurationVar(&o.Window, "window", def.Window, "dedupe window (must match the core's)")
	fs.IntVar(&o.ExpectedIDs, "expected-ids", 0, "IDs per partition per window to pre-size for (0: grow)")
	fs.IntVar(&o.RemoteExpectedIDs, "remote-expected-ids", 0, "asynchronous mode: IDs per partition per window each other region claims, to pre-size its merged set for (0: -expected-ids, about 20 B per ID per peer and partition, reserved at the peer's first record; -1: grow)")
	fs.BoolVar(&o.NoBloom, "no-bloom", false, "turn the Bloom pre-check off")
	fs.StringVar(&f.policy, "uncertain", "rerun", "policy for uncertain IDs: rerun or skip")
	fs.IntVar(&o.Limits.MaxPayload, "max-payload", def.Limits.MaxPayload, "largest accepted payload in bytes")
	fs.IntVar(&o.Retry.Attempts, "retry-attempts", def.Retry.Attempts, "handler attempts before dead-lettering")
	fs.StringVar(&f.sinks, "sink", "nats", "comma-separated sinks, run in order: nats, http, ledger, stdout, postgres, chaos (drills); postgres alone is transactional (exactly-once effects)")
	fs.StringVar(&f.pg.URL, "pg-url", "", "postgres sink: connection string (or set ONCEPLANE_PG_URL), e.g. postgres://user@host:5432/db")
	fs.StringVar(&f.pg.Table, "pg-table", "onceplane_events", "postgres sink: table of the default effect (one row per event key, with an apply counter)")
	fs.StringVar(&f.pg.Statement, "pg-statement", "", "postgres sink: your effect instead, one SQL statement per event with @id, @tenant, @payload, @headers, @partition, @seq, @epoch, @uncertain")
	fs.DurationVar(&f.pg.IdleInTransaction, "pg-idle-in-transaction", 10*time.Second, "postgres sink: PostgreSQL ends a transaction whose edge went quiet this long (a paused owner); a takeover waits about that long for it")
	fs.StringVar(&f.ledger, "ledger", "ledger.jsonl", "ledger sink file")
	fs.BoolVar(&f.natsPositions, "nats-positions", false, "nats sink: commit each batch's outputs with the partition's position in one atomic batch publish (exactly-once outputs when nats is the only sink; outputs then carry no Nats-Msg-Id)")
	fs.BoolVar(&f.ledgerPositions, "ledger-positions", false, "ledger sink: keep an fsync'd position per partition with each batch (exactly-once effects when the ledger is the only sink; the file is locked per batch)")
	fs.StringVar(&f.httpURL, "http-url", "", "http sink URL")
	fs.StringVar(&f.admin, "admin", "127.0.0.1:9222", "admin HTTP address for /metrics, /healthz, /readyz (empty: off)")
	fs.StringVar(&f.adminCert, "admin-tls-cert", "", "PEM certificate for the admin port: HTTPS only, so the bearer token never crosses the network in clear (with -admin-tls-key)")
	fs.StringVar(&f.adminKey, "admin-tls-key", "", "PEM key of -admin-tls-cert")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file holding the admin bearer token (or set ONCEPLANE_ADMIN_TOKEN); /metrics and /status then require it, health checks stay open")
	fs.StringVar(&f.traceFile, "trace-file", "", "also write spans to this file as OTLP JSON lines (the OTEL_* variables choose any other exporter)")
	fs.StringVar(&f.statsFile, "stats-file", "", "write final stats as JSON here on shutdown")
	fs.StringVar(&f.gossipBind, "gossip", "", "gossip listen host:port; set it to share partitions with the other edges by membership (empty: own -partitions statically)")
	fs.StringVar(&f.gossipSeeds, "gossip-seeds", "", "comma-separated gossip addresses of other edges")
	fs.StringVar(&f.gossipKeyFile, "gossip-key-file", "", "file holding the hex gossip encryption key (or set ONCEPLANE_GOSSIP_KEY)")
	fs.StringVar(&f.gossipProfile, "gossip-profile", "fast", "failure detection timers: fast (~1-2 s) or lan (~5-7 s)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	f.insecure = cli.InsecureFlag(fs)
	f.test.register(fs)
}

// options checks the flags (refusing unprotected listeners beyond loopback)
// and returns the edge's options.
func (f *flags) options(log *slog.Logger) (edge.Options, error) {
	o := f.o
	o.Logger = log
	if (f.adminCert == "") != (f.adminKey == "") {
		return o, errors.New("-admin-tls-cert and -admin-tls-key go together")
	}
	refuseExposed(log, f.gossipBind, f.gossipKeyFile, f.admin, f.adminTokenFile, f.adminCert != "", *f.insecure)
	f.test.apply(&o, log)
	if f.peers != "" {
		o.Peers = strings.Split(f.peers, ",")
	}
	if f.failoverOf != "" {
		// This region hosts the lost region's partitions: the lost one's
		// peers are this region's, with this region in its place.
		i := slices.Index(o.Peers, f.failoverOf)
		switch {
		case i < 0:
			return o, fmt.Errorf("-failover-of %s: not among -peers %q", f.failoverOf, f.peers)
		case f.gossipBind != "":
			return o, errors.New("-failover-of runs without -gossip (own -partitions statically)")
		case o.Strict && f.parts == "":
			return o, errors.New("-failover-of with -strict: set -partitions to the lost region's home partitions")
		case f.conn.User != "" && f.conn.User != auth.FailoverUser(o.Region).Name():
			// The region's everyday edge user has no failover rights.
			return o, fmt.Errorf("-failover-of runs as the failover edges' user: -nats-user %s, not %s", auth.FailoverUser(o.Region).Name(), f.conn.User)
		}
		o.Peers = slices.Clone(o.Peers)
		o.Peers[i] = o.Region
		o.Host, o.Region = o.Region, f.failoverOf
	}
	var err error
	if o.Partitions, err = cli.Ints(f.parts); err != nil {
		return o, fmt.Errorf("bad -partitions: %w", err)
	}
	switch f.policy {
	case "rerun":
		o.Policy = dedupe.PolicyRerun
	case "skip":
		o.Policy = dedupe.PolicySkip
	default:
		return o, fmt.Errorf("bad -uncertain %q: want rerun or skip", f.policy)
	}
	if o.Name == "" {
		h, _ := os.Hostname()
		o.Name = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	return o, nil
}

// exitAfterBound exits the process if a signalled edge has not stopped
// within its bound. However the core, the sinks or the exporters behave, a
// signalled edge is gone within a bound: partitions get ShutdownGrace to
// finish their batch and ShutdownGrace more once cancelled (edge.Run), then
// a few seconds for leaving gossip and closing connections.
func exitAfterBound(ctx context.Context, grace time.Duration, log *slog.Logger) {
	<-ctx.Done()
	if grace <= 0 {
		grace = edge.DefaultOptions().ShutdownGrace
	}
	bound := 2*grace + 5*time.Second
	<-time.After(bound)
	log.Error("shutdown did not finish within its bound; exiting", "bound", bound)
	os.Exit(1)
}

// connect connects to the core nodes. A core that is still starting or out
// of reach is waited for, not a reason to exit: the edge connects when it
// can (Run waits for the streams).
func connect(f flags, log *slog.Logger) (*nats.Conn, jetstream.JetStream) {
	natsOpts, err := f.conn.Options("onceplane-edge")
	if err != nil {
		cli.Fatal(log, "connect", err)
	}
	natsOpts = append(natsOpts, nats.RetryOnFailedConnect(true), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("nats async error", "err", err) }))
	nc, err := nats.Connect(f.url, natsOpts...)
	if err != nil {
		cli.Fatal(log, "connect", err)
	}
	// An async publish whose ack is lost with a dead core node must time out,
	// or it stays pending forever and the sink eventually stalls.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		cli.Fatal(log, "jetstream", err)
	}
	return nc, js
}

// serveAdmin starts the admin HTTP port: metrics, health, readiness and
// /status, behind the bearer token and over TLS when configured.
func serveAdmin(f flags, c *edge.Consumer, g *gossip.Cluster, events *ownershipLog, m *telemetry.Metrics, log *slog.Logger) *telemetry.Admin {
	token, err := cli.Secret(f.adminTokenFile, "ONCEPLANE_ADMIN_TOKEN")
	if err != nil {
		cli.Fatal(log, "admin token", err)
	}
	ao := telemetry.AdminOptions{Addr: f.admin, Metrics: m, Ready: c.Ready, Logger: log, Token: token,
		Routes: []telemetry.Route{{Path: "/status", Handler: statusHandler(c, g, events)}}}
	if f.adminCert != "" {
		cert, err := tls.LoadX509KeyPair(f.adminCert, f.adminKey)
		if err != nil {
			cli.Fatal(log, "admin TLS", err)
		}
		ao.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	a, err := telemetry.StartAdmin(ao)
	if err != nil {
		cli.Fatal(log, "admin", err)
	}
	log.Info("admin listening", "addr", a.Addr())
	return a
}

func writeStats(log *slog.Logger, path string, s edge.Stats) {
	b, _ := json.MarshalIndent(s, "", "  ")
	if err := os.WriteFile(path, b, 0o640); err != nil {
		log.Error("stats file", "err", err)
	}
}

// buildSinks makes the handler the -sink list names. One sink alone is the
// handler itself, so that a transactional one (postgres) keeps its
// contract with the edge; in a chain it is applied at least once.
func buildSinks(ctx context.Context, f *flags, js jetstream.JetStream, o edge.Options) (edge.Handler, func(), error) {
	var chain []edge.Handler
	closers := []func(){}
	ledger, httpURL, test := f.ledger, f.httpURL, &f.test
	closeAll := func() {
		for _, c := range closers {
			c()
		}
	}
	for _, name := range strings.Split(f.sinks, ",") {
		switch strings.TrimSpace(name) {
		case "nats":
			// Into the output stream of the region the edge runs in.
			out := streams.Names{Region: cmp.Or(o.Host, o.Region)}
			if f.natsPositions {
				chain = append(chain, &sink.PositionedNATS{JS: js, Names: out, Logger: o.Logger})
				continue
			}
			chain = append(chain, &sink.NATS{JS: js, Names: out})
		case "http":
			if httpURL == "" {
				return nil, nil, fmt.Errorf("sink http needs -http-url")
			}
			chain = append(chain, &sink.HTTP{URL: httpURL})
		case "ledger":
			if f.ledgerPositions {
				l, err := sink.OpenPositionedLedger(ledger, o.Name)
				if err != nil {
					closeAll()
					return nil, nil, err
				}
				chain = append(chain, l)
				closers = append(closers, func() { l.Close() })
				continue
			}
			l, err := sink.OpenLedger(ledger, o.Name)
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, l)
			closers = append(closers, func() { l.Close() })
		case "stdout":
			chain = append(chain, &sink.Writer{W: os.Stdout})
		case "postgres":
			po := f.pg
			po.URL = cmp.Or(po.URL, os.Getenv("ONCEPLANE_PG_URL"))
			if po.URL == "" {
				closeAll()
				return nil, nil, fmt.Errorf("sink postgres needs -pg-url or ONCEPLANE_PG_URL")
			}
			po.Logger = o.Logger
			pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			pg, err := pgsink.Open(pctx, po)
			cancel()
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			chain = append(chain, pg)
			closers = append(closers, pg.Close)
		case "chaos":
			c, err := test.chaosSink(o.Logger)
			if err != nil {
				return nil, nil, err
			}
			chain = append(chain, c)
		default:
			closeAll()
			return nil, nil, fmt.Errorf("unknown sink %q (want nats, http, ledger, stdout, postgres, chaos)", name)
		}
	}
	if len(chain) == 1 {
		return chain[0], closeAll, nil
	}
	if f.natsPositions || f.ledgerPositions {
		// In a chain the edge keeps no positions for the sinks (postgres
		// then applies at least once).
		closeAll()
		return nil, nil, fmt.Errorf("sinks %q: -nats-positions and -ledger-positions need their sink alone (-sink nats or -sink ledger)", f.sinks)
	}
	return sink.NewChain(chain...), closeAll, nil
}
