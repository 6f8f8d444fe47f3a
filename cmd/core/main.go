// Command core runs a onceplane core node: an embedded NATS server with
// JetStream that provisions the region's streams at start.
//
//	core                                   one node, 127.0.0.1:4222, data in ./data/core-0
//	core -name c1 -cluster-port 6222 -routes 127.0.0.1:6222,127.0.0.1:6223,127.0.0.1:6224 -replicas 3
//	core secrets -dir ./secrets -hosts core-a,core-b   write credentials, dev TLS, gossip key, admin token; exit
//	core -name e0 -region us-east -gateway-port 7222 -gateways 'eu-west=10.0.1.5:7222;ap-south=10.0.2.5:7222' -peers eu-west,ap-south
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/devcert"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/jetstream/streams"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "health" {
		os.Exit(cli.Health(os.Args[2:], "http://127.0.0.1:8222/healthz?js-enabled-only=true"))
	}
	if len(os.Args) > 1 && os.Args[1] == "secrets" {
		if err := secrets(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "core secrets:", err)
			os.Exit(1)
		}
		return
	}
	var (
		o            core.Options
		routes       string
		cfg          streams.Config
		ingestDedupe string
		logLevel     string
		noProvision  bool
		gateways     string
		credDir      string
		genCreds     bool
		devCerts     string
		devHosts     string
		peers, home  string
	)
	flag.StringVar(&o.Name, "name", "core-0", "server name, unique in the deployment")
	flag.StringVar(&o.Region, "region", "local", "region (JetStream cluster name)")
	flag.StringVar(&o.Host, "host", "127.0.0.1", "listen address for clients and routes")
	flag.IntVar(&o.Port, "port", 4222, "client port (-1: any free port)")
	flag.StringVar(&o.DataDir, "data", "", "JetStream data directory (default ./data/<name>)")
	flag.IntVar(&o.ClusterPort, "cluster-port", 0, "route port; non-zero joins a region cluster")
	flag.StringVar(&routes, "routes", "", "comma-separated host:port route addresses of the region's core nodes")
	flag.IntVar(&o.MonitorPort, "monitor-port", 0, "NATS HTTP monitoring port (/healthz, /varz, /jsz); 0 is off; `core health` checks it")
	flag.StringVar(&o.MonitorHost, "monitor-host", "127.0.0.1", "address NATS monitoring listens on; it has no authentication, so loopback unless you expose it on purpose")
	flag.IntVar(&o.GatewayPort, "gateway-port", 0, "gateway port; non-zero joins other regions into a supercluster")
	flag.StringVar(&gateways, "gateways", "", "other regions' gateways: 'region=host:port,host:port;region2=...' (a WAN link's address in a simulation)")
	flag.StringVar(&o.GatewayAdvertise, "gateway-advertise", "", "gateway address told to other regions (default: the listen address; "+core.NoAdvertise+" keeps peers on -gateways)")
	flag.StringVar(&peers, "peers", "", "other regions, comma-separated: provision the xclaims stream (their claim logs, sourced) and the conflicts stream, and place this region's streams in its cluster")
	flag.StringVar(&home, "home", "", "strict mode: this region's home partitions (e.g. 0,3,6); provisions the home stream sourcing them from every region")
	flag.DurationVar(&o.PingInterval, "ping-interval", 0, "ping clients, routes and gateways this often; two missed pings drop the peer (0: NATS's 2m); lower it where links can fail silently")
	flag.Int64Var(&o.MaxMemory, "max-memory", 1<<30, "JetStream memory limit in bytes")
	flag.Int64Var(&o.MaxStore, "max-store", 16<<30, "JetStream file store limit in bytes")
	flag.IntVar(&cfg.Partitions, "partitions", 16, "partition count (fixed per deployment)")
	flag.IntVar(&cfg.Replicas, "replicas", 1, "stream replicas (1, or 3 in a 3-node region)")
	flag.DurationVar(&cfg.Window, "window", 24*time.Hour, "dedupe window: how long claims are remembered")
	flag.DurationVar(&cfg.IngestMaxAge, "ingest-max-age", 0, "how long ingested events are kept (default: the window; must not exceed it)")
	flag.StringVar(&ingestDedupe, "ingest-dedupe", "2m", "ingest stream Nats-Msg-Id window, or \"off\" (100ms, the minimum)")
	flag.BoolVar(&noProvision, "no-provision", false, "do not create or update streams at start")
	flag.StringVar(&o.TLS.CertFile, "tls-cert", "", "PEM certificate (server and client use): TLS on client, route and gateway ports")
	flag.StringVar(&o.TLS.KeyFile, "tls-key", "", "PEM private key of -tls-cert")
	flag.StringVar(&o.TLS.CAFile, "tls-ca", "", "PEM CA that signed the core nodes' certificates (routes and gateways verify peers with it)")
	flag.StringVar(&devCerts, "generate-dev-certs", "", "write a development CA, certificate and key into this directory and exit")
	flag.StringVar(&devHosts, "dev-cert-hosts", "", "comma-separated host names or IPs the development certificate is valid for (localhost and 127.0.0.1 always)")
	flag.StringVar(&credDir, "credentials", "", "directory of <user>.password files (producer, admin, sys, core, and edge-<region> for this region's edges): turns on authentication with per-role permissions, the system account and authenticated routes and gateways (package auth)")
	flag.BoolVar(&genCreds, "generate-credentials", false, "create missing password files in -credentials first (development)")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	insecure := cli.InsecureFlag(flag.CommandLine)
	flag.Parse()
	log := cli.Logger(logLevel)
	o.Logger = log
	if routes != "" {
		o.Routes = strings.Split(routes, ",")
	}
	cfg.Region = o.Region
	gws, err := cli.Regions(gateways)
	if err != nil {
		cli.Fatal(log, "bad -gateways", err)
	}
	for _, name := range gws.Names {
		o.Gateways = append(o.Gateways, core.Gateway{Name: name, URLs: gws.URLs[name]})
	}
	if peers != "" {
		cfg.Peers, cfg.Cluster = strings.Split(peers, ","), o.Region
	}
	if home != "" {
		h, err := cli.Ints(home)
		if err != nil {
			cli.Fatal(log, "bad -home", err)
		}
		cfg.Home = h
	}
	if ingestDedupe == "off" {
		cfg.IngestDuplicates = -1
	} else {
		d, err := time.ParseDuration(ingestDedupe)
		if err != nil {
			cli.Fatal(log, "bad -ingest-dedupe", err)
		}
		cfg.IngestDuplicates = d
	}
	if devCerts != "" {
		var hosts []string
		if devHosts != "" {
			hosts = strings.Split(devHosts, ",")
		}
		f, err := devcert.Generate(devCerts, hosts)
		if err != nil {
			cli.Fatal(log, "generate dev certs", err)
		}
		fmt.Printf("CA %s\ncertificate %s\nkey %s\n", f.CA, f.Cert, f.Key)
		return
	}
	if credDir != "" {
		load := auth.Load
		if genCreds {
			load = func(dir string) (auth.Credentials, error) { return auth.Generate(dir, auth.EdgeUser(o.Region)) }
		}
		creds, err := load(credDir)
		if err != nil {
			cli.Fatal(log, "credentials", err)
		}
		if creds.Password(auth.EdgeUser(o.Region)) == "" {
			log.Warn("no edge user for this region: its edges cannot connect", "want", filepath.Join(credDir, auth.EdgeUser(o.Region).Name()+".password"))
		}
		users, err := auth.Users(creds, o.Region)
		if err != nil {
			cli.Fatal(log, "credentials", err)
		}
		o.Users, o.SystemAccount, o.Accounts, o.ClientUser, o.ClientPassword = users, auth.SystemAccount, auth.AccountsConfig(), string(auth.Admin), creds.Password(auth.Admin.User())
		o.PeerPassword = creds.Password(auth.Core.User())
	}
	refuseExposed(log, o, *insecure)
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
	// Sourcing streams come after the region's own and after the peers'
	// claim logs exist: a source whose origin is missing backs off for tens
	// of seconds.
	if err := streams.Provision(ctx, js, cfg.Own()); err != nil {
		return err
	}
	if len(cfg.Peers) == 0 && cfg.Home == nil {
		return nil
	}
	for _, peer := range cfg.Peers {
		pn := streams.Names{Region: peer}
		for {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := js.Stream(sctx, pn.ClaimStream())
			var n int
			if err == nil {
				n, err = streams.PartitionCount(sctx, js, pn)
			}
			cancel()
			if err == nil {
				// The same ID must map to the same partition everywhere, or
				// owners merge other regions' claims of the wrong IDs.
				if want := cfg.Defaults().Partitions; n != want {
					return fmt.Errorf("region %s has %d partitions, this one %d: %w", peer, n, want, streams.ErrPartitionsChanged)
				}
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("waiting for region %s's streams: %w", peer, ctx.Err())
			case <-time.After(500 * time.Millisecond):
			}
		}
	}
	return streams.Provision(ctx, js, cfg)
}
