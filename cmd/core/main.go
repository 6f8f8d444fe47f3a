// Command core runs a onceplane core node: an embedded NATS server with
// JetStream that provisions the region's streams at start.
//
//	core                                   one node, 127.0.0.1:4222, data in ./data/core-0
//	core -name c1 -cluster-port 6222 -routes 127.0.0.1:6222,127.0.0.1:6223,127.0.0.1:6224 -replicas 3
//	core secrets -dir ./secrets -hosts core-a,core-b   write credentials, dev TLS, gossip key, admin token; exit
//	core region-failover -region eu-west us-east       us-east is lost: eu-west continues its claim log (then run edge -failover-of us-east there)
//	core region-failback -region eu-west us-east       us-east is back: its claim log is remade from eu-west's, its edges resume
//	core home-move -regions us-east,eu-west,ap-south -to eu-west 3   strict mode: partition 3's home moves to eu-west
//	core -name e0 -region us-east -gateway-port 7222 -gateways 'eu-west=10.0.1.5:7222;ap-south=10.0.2.5:7222' -peers eu-west,ap-south
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/devcert"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/sourcing"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/regionwatch"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(cli.Health(os.Args[2:], "http://127.0.0.1:8222/healthz?js-enabled-only=true"))
	}
	if len(os.Args) > 1 && (os.Args[1] == "region-failover" || os.Args[1] == "region-failback" || os.Args[1] == "home-move") {
		run := map[string]func([]string, io.Writer) error{"region-failover": regionFailover, "region-failback": regionFailback, "home-move": homeMove}[os.Args[1]]
		if err := run(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintf(os.Stderr, "core %s: %v\n", os.Args[1], err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "secrets" {
		if err := secrets(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "core secrets:", err)
			os.Exit(1)
		}
		return
	}
	var f flags
	f.register(flag.CommandLine)
	flag.Parse()
	log := cli.Logger(f.logLevel)
	if f.devCerts != "" {
		var hosts []string
		if f.devHosts != "" {
			hosts = strings.Split(f.devHosts, ",")
		}
		files, err := devcert.Generate(f.devCerts, hosts)
		if err != nil {
			cli.Fatal(log, "generate dev certs", err)
		}
		fmt.Printf("CA %s\ncertificate %s\nkey %s\n", files.CA, files.Cert, files.Key)
		return
	}
	o, cfg, err := f.options(log)
	if err != nil {
		cli.Fatal(log, "flags", err)
	}
	o.Mappings = cfg.IngestMapping()
	refuseExposed(log, o, *f.insecure, f.metricsAddr)
	var reg *prometheus.Registry
	if (len(cfg.Peers) > 0 || cfg.Home != nil) && !f.noWatchdog {
		// Replication watchdog: restarts sources that stall after WAN
		// faults (package sourcing).
		w := sourcing.ForRegion(cfg)
		reg = prometheus.NewRegistry()
		w.Metrics = sourcing.NewMetrics(reg)
		o.Sources = &w
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	n, err := core.Start(ctx, o)
	if err != nil {
		cli.Fatal(log, "start", err)
	}
	defer n.Shutdown()
	log.Info("core node up", "name", o.Name, "region", o.Region, "url", n.ClientURL(), "cluster", n.ClusterAddr())
	if f.metricsAddr != "" && reg == nil {
		log.Warn("-metrics-addr ignored: no replication watchdog runs (it needs -peers or -home, and no -no-watchdog)")
	}
	if f.metricsAddr != "" && reg != nil {
		srv := &http.Server{Addr: f.metricsAddr, Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener", "addr", f.metricsAddr, "err", err)
			}
		}()
		defer srv.Close()
	}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = provision(pctx, n, cfg, !f.noProvision, log)
	cancel()
	if err != nil {
		cli.Fatal(log, "provision streams", err)
	}
	if f.failoverAfter > 0 {
		for _, r := range cfg.StandbyFor {
			go watchRegion(ctx, n, cfg, r, f.failoverAfter, log)
		}
	}
	if cfg.Standby != "" && !f.noProvision {
		go guard(ctx, n, cfg, log)
	}
	<-ctx.Done()
	log.Info("shutting down")
}

// guard fences this region's claim log as soon as its standby fails it
// over while it runs (regionwatch.Guard): declared lost while cut off, not
// dead.
func guard(ctx context.Context, n *core.Node, cfg streams.Config, log *slog.Logger) {
	nc, err := n.Connect()
	if err != nil {
		log.Error("guard: connect", "err", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error("guard", "err", err)
		return
	}
	regionwatch.Guard(ctx, js, cfg, regionwatch.GuardOptions{Logger: log})
}

// watchRegion declares region r lost and fails it over here once this
// region and a majority of the others have heard nothing from it for
// after (regionwatch): the failover edges standing by here then take its
// partitions over. Every core node of the region watches; the promotion is
// idempotent.
func watchRegion(ctx context.Context, n *core.Node, cfg streams.Config, r string, after time.Duration, log *slog.Logger) {
	nc, err := n.Connect()
	if err != nil {
		log.Error("region watch: connect", "region", r, "err", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Error("region watch", "region", r, "err", err)
		return
	}
	others := slices.DeleteFunc(slices.Clone(cfg.Peers), func(p string) bool { return p == r })
	for ctx.Err() == nil {
		log.Info("watching a region this one stands by for: declared lost when silent", "region", r, "after", after, "agreeing", others)
		if _, err := regionwatch.Watch(ctx, js, regionwatch.Options{Region: r, Standby: cfg.Names.Region, Others: others, Strict: cfg.Home != nil, After: after, Logger: log}); err != nil {
			if ctx.Err() == nil {
				log.Error("region watch", "region", r, "err", err)
			}
			return
		}
		// Failed over: watch again once it has failed back.
		for ctx.Err() == nil {
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			host, err := streams.FailedOverTo(actx, js, streams.Names{Region: r}, []string{cfg.Names.Region})
			cancel()
			if err == nil && host == "" {
				break
			}
			if poll.Sleep(ctx, 5*time.Second) != nil {
				return
			}
		}
	}
}

// flags are the command's flags; options turns them into the node's and
// the streams' options.
type flags struct {
	o                                        core.Options
	cfg                                      streams.Config
	routes, ingestDedupe, logLevel, gateways string
	credDir, devCerts, devHosts, peers, home string
	standbyFor                               string
	noProvision, genCreds, noWatchdog        bool
	metricsAddr                              string
	failoverAfter                            time.Duration
	insecure                                 *bool
}

func (f *flags) register(fs *flag.FlagSet) {
	o, cfg := &f.o, &f.cfg
	fs.StringVar(&o.Name, "name", "core-0", "server name, unique in the deployment")
	fs.StringVar(&o.Region, "region", "local", "region (JetStream cluster name)")
	fs.StringVar(&o.Host, "host", "127.0.0.1", "listen address for clients and routes")
	fs.IntVar(&o.Port, "port", 4222, "client port (-1: any free port)")
	fs.StringVar(&o.DataDir, "data", "", "JetStream data directory (default ./data/<name>)")
	fs.IntVar(&o.ClusterPort, "cluster-port", 0, "route port; non-zero joins a region cluster")
	fs.StringVar(&f.routes, "routes", "", "comma-separated host:port route addresses of the region's core nodes")
	fs.IntVar(&o.MonitorPort, "monitor-port", 0, "NATS HTTP monitoring port (/healthz, /varz, /jsz); 0 is off; `core health` checks it")
	fs.StringVar(&o.MonitorHost, "monitor-host", "127.0.0.1", "address NATS monitoring listens on; it has no authentication, so loopback unless you expose it on purpose")
	fs.IntVar(&o.GatewayPort, "gateway-port", 0, "gateway port; non-zero joins other regions into a supercluster")
	fs.StringVar(&f.gateways, "gateways", "", "other regions' gateways: 'region=host:port,host:port;region2=...' (a WAN link's address in a simulation)")
	fs.StringVar(&o.GatewayAdvertise, "gateway-advertise", "", "gateway address told to other regions (default: the listen address; "+core.NoAdvertise+" keeps peers on -gateways)")
	fs.StringVar(&f.peers, "peers", "", "other regions, comma-separated: provision the xclaims stream (their claim logs, sourced) and the conflicts stream, and place this region's streams in its cluster")
	fs.StringVar(&f.standbyFor, "standby-for", "", "regions (among -peers) this region stands by for, comma-separated: provision a mirror of each one's ingest here, so that the events it accepted survive its loss")
	fs.DurationVar(&f.failoverAfter, "failover-after", 0, "with -standby-for: declare a region this one stands by for lost, and fail it over here, once this region and a majority of the other regions have heard nothing from it for this long (what `core region-failover` does; failover edges standing by here, edge -failover-of, take its partitions over); 0: only by command")
	fs.StringVar(&cfg.Standby, "standby", "", "the region (among -peers) standing by for this one (its core runs -standby-for <this region>): at start, ask it whether this region was failed over while gone and if so fence this region's claim log until `core region-failback` (waits for its answer)")
	fs.StringVar(&f.home, "home", "", "strict mode: this region's home partitions (e.g. 0,3,6); provisions the home stream sourcing them from every region")
	fs.DurationVar(&o.PingInterval, "ping-interval", 0, "ping clients, routes and gateways this often; two missed pings drop the peer (0: NATS's 2m); lower it where links can fail silently")
	fs.Int64Var(&o.MaxMemory, "max-memory", 1<<30, "JetStream memory limit in bytes")
	fs.Int64Var(&o.MaxStore, "max-store", 16<<30, "JetStream file store limit in bytes")
	fs.IntVar(&cfg.Partitions, "partitions", 16, "partition count (fixed per deployment)")
	fs.IntVar(&cfg.Shards, "shards", 0, "shards the region's partitions are spread over, each with its own ingest and claim streams (default: one per core node, the -routes count; fixed per region: every core node of the region must agree)")
	fs.IntVar(&cfg.Replicas, "replicas", 1, "stream replicas (1, or 3 in a 3-node region)")
	fs.DurationVar(&cfg.Window, "window", 24*time.Hour, "dedupe window: how long claims are remembered")
	fs.DurationVar(&cfg.IngestMaxAge, "ingest-max-age", 0, "how long ingested events are kept (default: the window; must not exceed it)")
	fs.StringVar(&f.ingestDedupe, "ingest-dedupe", "2m", "ingest stream Nats-Msg-Id window, or \"off\" (100ms, the minimum)")
	fs.BoolVar(&f.noProvision, "no-provision", false, "do not create or update streams at start")
	fs.BoolVar(&f.noWatchdog, "no-watchdog", false, "do not run the replication watchdog (it restarts, from their stored position, sources of the xclaims or home streams that stall after a WAN fault)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve the replication watchdog's Prometheus metrics (onceplane_replication_healthy{from,to}, …) on this host:port at /metrics; no authentication, so loopback unless you expose it on purpose (empty: off)")
	fs.StringVar(&o.TLS.CertFile, "tls-cert", "", "PEM certificate (server and client use): TLS on client, route and gateway ports")
	fs.StringVar(&o.TLS.KeyFile, "tls-key", "", "PEM private key of -tls-cert")
	fs.StringVar(&o.TLS.CAFile, "tls-ca", "", "PEM CA that signed the core nodes' certificates (routes and gateways verify peers with it)")
	fs.StringVar(&f.devCerts, "generate-dev-certs", "", "write a development CA, certificate and key into this directory and exit")
	fs.StringVar(&f.devHosts, "dev-cert-hosts", "", "comma-separated host names or IPs the development certificate is valid for (localhost and 127.0.0.1 always)")
	fs.StringVar(&f.credDir, "credentials", "", "directory of <user>.password files (producer, admin, sys, core, and edge-<region> for this region's edges): turns on authentication with per-role permissions, the system account and authenticated routes and gateways (package auth)")
	fs.BoolVar(&f.genCreds, "generate-credentials", false, "create missing password files in -credentials first (development)")
	fs.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	f.insecure = cli.InsecureFlag(fs)
}

// options checks the flags and returns the node's and the streams' options.
func (f *flags) options(log *slog.Logger) (core.Options, streams.Config, error) {
	o, cfg := f.o, f.cfg
	o.Logger = log
	if f.routes != "" {
		o.Routes = strings.Split(f.routes, ",")
	}
	cfg.Region = o.Region
	if cfg.Shards == 0 {
		cfg.Shards = max(1, len(o.Routes))
	}
	if p := cfg.Defaults().Partitions; cfg.Shards < 1 || cfg.Shards > p {
		return o, cfg, fmt.Errorf("bad -shards %d: must be in 1..%d (the partition count)", cfg.Shards, p)
	}
	gws, err := cli.Regions(f.gateways)
	if err != nil {
		return o, cfg, fmt.Errorf("bad -gateways: %w", err)
	}
	for _, name := range gws.Names {
		o.Gateways = append(o.Gateways, core.Gateway{Name: name, URLs: gws.URLs[name]})
	}
	if f.peers != "" {
		cfg.Peers, cfg.Cluster = strings.Split(f.peers, ","), o.Region
	}
	if f.standbyFor != "" {
		cfg.StandbyFor = strings.Split(f.standbyFor, ",")
		for _, r := range cfg.StandbyFor {
			if !slices.Contains(cfg.Peers, r) {
				return o, cfg, fmt.Errorf("bad -standby-for: %q is not among -peers", r)
			}
		}
	}
	if cfg.Standby != "" && !slices.Contains(cfg.Peers, cfg.Standby) {
		return o, cfg, fmt.Errorf("bad -standby: %q is not among -peers", cfg.Standby)
	}
	switch {
	case f.failoverAfter < 0:
		return o, cfg, errors.New("bad -failover-after: negative")
	case f.failoverAfter > 0 && f.standbyFor == "":
		return o, cfg, errors.New("-failover-after watches the regions of -standby-for: set it")
	}
	if f.home != "" {
		if cfg.Home, err = cli.Ints(f.home); err != nil {
			return o, cfg, fmt.Errorf("bad -home: %w", err)
		}
	}
	if f.ingestDedupe == "off" {
		cfg.IngestDuplicates = -1
	} else if cfg.IngestDuplicates, err = time.ParseDuration(f.ingestDedupe); err != nil {
		return o, cfg, fmt.Errorf("bad -ingest-dedupe: %w", err)
	}
	if f.credDir != "" {
		if err := withCredentials(&o, cfg.Shards, auth.Regions{Peers: cfg.Peers, StandbyFor: cfg.StandbyFor, Standby: cfg.Standby}, f.credDir, f.genCreds, log); err != nil {
			return o, cfg, err
		}
	}
	return o, cfg, nil
}

// withCredentials turns authentication on in o from the password files in
// dir (creating missing ones first when generate is set).
func withCredentials(o *core.Options, shards int, regions auth.Regions, dir string, generate bool, log *slog.Logger) error {
	load := auth.Load
	if generate {
		load = func(dir string) (auth.Credentials, error) { return auth.Generate(dir, auth.EdgeUsers(o.Region)...) }
	}
	creds, err := load(dir)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	if creds.Password(auth.EdgeUser(o.Region)) == "" {
		log.Warn("no edge user for this region: its edges cannot connect", "want", filepath.Join(dir, auth.EdgeUser(o.Region).Name()+".password"))
	}
	users, err := auth.Users(creds, streams.Names{Region: o.Region, Shards: shards}, regions)
	if err != nil {
		return fmt.Errorf("credentials: %w", err)
	}
	o.Users, o.SystemAccount, o.Accounts, o.ClientUser, o.ClientPassword = users, auth.SystemAccount, auth.AccountsConfig(), string(auth.Admin), creds.Password(auth.Admin.User())
	o.PeerPassword = creds.Password(auth.Core.User())
	return nil
}

// provision checks that the region's streams were made for this node's
// partition and shard counts (the ingest mapping it applies depends on
// them), then, when create is set, creates or updates them and spreads the
// shards' leaders over the region's nodes.
func provision(ctx context.Context, n *core.Node, cfg streams.Config, create bool, log *slog.Logger) error {
	nc, err := n.Connect()
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if err := checkLayout(ctx, js, cfg, log); err != nil {
		return err
	}
	if !create {
		return nil
	}
	if cfg.Standby != "" {
		log.Info("asking the standby whether this region was failed over", "standby", cfg.Standby)
	}
	// Sourcing streams come after the region's own and after the peers'
	// claim logs exist: a source whose origin is missing backs off for tens
	// of seconds.
	if err := streams.Provision(ctx, js, cfg.Own()); err != nil {
		return err
	}
	if len(cfg.Peers) > 0 || cfg.Home != nil {
		if cfg.PeerShards, err = peerShards(ctx, js, cfg, log); err != nil {
			return err
		}
		if err := streams.Provision(ctx, js, cfg); err != nil {
			return err
		}
	}
	log.Info("streams provisioned", "partitions", cfg.Defaults().Partitions, "shards", cfg.ShardCount(), "replicas", cfg.Defaults().Replicas, "window", cfg.Defaults().Window)
	if err := streams.SpreadLeaders(ctx, js, cfg); err != nil {
		log.Warn("shard leaders not spread (the streams serve where they are)", "err", err)
	}
	return nil
}

// checkLayout refuses a node whose partition or shard count differs from
// the region's streams, retrying what is not an answer (a cluster still
// electing its leaders) until ctx ends.
func checkLayout(ctx context.Context, js jetstream.JetStream, cfg streams.Config, log *slog.Logger) error {
	for b := poll.Backoff(100*time.Millisecond, 2*time.Second); ; {
		// Each attempt bounded: right after a restart, before the node has
		// found the meta leader, a request can go unanswered, and ctx's
		// deadline is minutes away.
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := streams.CheckLayout(actx, js, cfg)
		cancel()
		if errors.Is(err, streams.ErrPartitionsChanged) || errors.Is(err, streams.ErrShardsChanged) {
			return fmt.Errorf("%w: set -partitions and -shards to the region's", err)
		}
		if err == nil {
			return nil
		}
		log.Info("region's streams not readable yet; retrying", "err", err)
		if poll.Sleep(ctx, b.NextBackOff()) != nil {
			return err
		}
	}
}

// peerShards waits for every peer region's streams and reads its shard
// count, refusing a peer of another partition count. A peer that does not
// answer while this region already sources its claim log (a core restarting
// while that region is lost) keeps the shard count this region's streams
// were made with: waiting for it would keep this region down as long as
// the other one.
func peerShards(ctx context.Context, js jetstream.JetStream, cfg streams.Config, log *slog.Logger) (map[string]int, error) {
	shards := map[string]int{}
	for _, peer := range cfg.Peers {
		pn := streams.Names{Region: peer}
		for {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			l, err := streams.ReadLayout(sctx, js, pn)
			if err == nil {
				// Its last stream made before the sourced ones.
				pn.Shards = l.Shards
				_, err = js.Stream(sctx, pn.ClaimShard(l.Shards-1))
			}
			cancel()
			if err == nil {
				// The same ID must map to the same partition everywhere, or
				// owners merge other regions' claims of the wrong IDs.
				if want := cfg.Defaults().Partitions; l.Partitions != want {
					return nil, fmt.Errorf("region %s has %d partitions, this one %d: %w", peer, l.Partitions, want, streams.ErrPartitionsChanged)
				}
				shards[peer] = l.Shards
				break
			}
			sctx, cancel = context.WithTimeout(ctx, 5*time.Second)
			known, kerr := streams.SourcedShards(sctx, js, cfg, peer)
			cancel()
			if kerr == nil && known > 0 {
				log.Warn("a peer region's streams do not answer: keeping the shards this region already sources from it", "peer", peer, "shards", known, "err", err)
				shards[peer] = known
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("waiting for region %s's streams: %w", peer, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return shards, nil
}
