// Package supercluster runs a topology's core nodes in one process: a
// JetStream cluster per region, gateways between regions through simulated
// WAN links, and every region's streams provisioned and placed in its own
// cluster. It is the engine room of the simulation, the drills and the tests.
//
// One JetStream meta group spans the whole supercluster. A region cut off
// from the meta leader's side keeps its existing streams and consumers
// working (ingest, claim appends, sourcing from the regions it still reaches)
// but cannot create streams or consumers until it rejoins: everything is
// provisioned at start, and an in-region takeover that needs a new consumer
// waits for the heal.
package supercluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/devcert"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/sourcing"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/wan"
	"github.com/onceplane/onceplane/topology"
)

// Options configures Start. The zero value keeps data under ./data/sim.
type Options struct {
	// DataDir holds each core node's storage in a subdirectory. Zero means ./data/sim.
	DataDir string
	// MemoryStreams stores the streams in memory (tests, benchmarks).
	MemoryStreams bool
	// IngestDuplicates is passed to streams.Config (zero: 2 minutes).
	IngestDuplicates time.Duration
	// Insecure turns authentication and TLS off. By default every core node
	// requires a user per role (package auth) with passwords generated under
	// DataDir, and serves TLS on client, route and gateway ports with a
	// development CA generated there (package devcert); ConnectAs connects
	// with the role's credentials over TLS.
	Insecure bool
	// MaxMemory and MaxStore cap each core node. Zero means 256 MiB and 4 GiB.
	MaxMemory, MaxStore int64
	// Logger receives logs. Nil means slog.Default().
	Logger *slog.Logger
	// NoWatchdog leaves the core nodes without their replication watchdog
	// (package sourcing): sources then recover from WAN faults on
	// JetStream's own retries only. For comparisons.
	NoWatchdog bool
	// Watchdog tunes the core nodes' watchdog (its zero value: the
	// defaults); its streams and labels come from the topology.
	Watchdog sourcing.Options
}

func (o Options) withDefaults() Options {
	if o.DataDir == "" {
		o.DataDir = filepath.Join("data", "sim")
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = 256 << 20
	}
	if o.MaxStore == 0 {
		o.MaxStore = 4 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Cluster is a running supercluster.
type Cluster struct {
	top   topology.Topology
	opt   Options
	mu    sync.Mutex
	nodes map[string][]*core.Node   // region -> its core nodes (nil entries while stopped)
	cfg   map[string][]core.Options // region -> node options, for restarts
	links map[[2]string]*wan.Link   // (from, to) -> the link carrying from's gateway connection to to
	creds auth.Credentials          // nil when Insecure
	tls   devcert.Files             // zero when Insecure
}

// Start brings up every core node of top (all at once: the meta group needs
// a quorum across regions), the WAN links between regions, and provisions
// every region's streams.
func Start(ctx context.Context, top topology.Topology, o Options) (*Cluster, error) {
	o = o.withDefaults()
	top = top.Defaults()
	if err := top.Validate(); err != nil {
		return nil, fmt.Errorf("supercluster: %w", err)
	}
	c := &Cluster{top: top, opt: o, nodes: map[string][]*core.Node{}, cfg: map[string][]core.Options{}, links: map[[2]string]*wan.Link{}}
	if !o.Insecure {
		creds, err := auth.Generate(filepath.Join(o.DataDir, "credentials"), auth.EdgeUsers(top.RegionNames()...)...)
		if err != nil {
			return nil, fmt.Errorf("supercluster: %w", err)
		}
		c.creds = creds
		if c.tls, err = devcert.Generate(filepath.Join(o.DataDir, "tls"), nil); err != nil {
			return nil, fmt.Errorf("supercluster: %w", err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			c.Close()
		}
	}()
	// Fix every port first: the links need the gateway addresses they dial,
	// and each node needs the link addresses of its gateways.
	gwAddrs := map[string][]string{}
	type planned struct {
		region string
		core   topology.Core
	}
	var all []planned
	for _, r := range top.Regions {
		for _, cr := range r.Cores {
			all = append(all, planned{r.Name, cr})
		}
	}
	free, err := ports.Free(3 * len(all))
	if err != nil {
		return nil, fmt.Errorf("supercluster: %w", err)
	}
	pick := func(p int) int {
		if p != 0 {
			return p
		}
		p, free = free[0], free[1:]
		return p
	}
	for i := range all {
		cr := &all[i].core
		cr.Port, cr.ClusterPort, cr.GatewayPort = pick(cr.Port), pick(cr.ClusterPort), pick(cr.GatewayPort)
		gwAddrs[all[i].region] = append(gwAddrs[all[i].region], fmt.Sprintf("%s:%d", cr.Host, cr.GatewayPort))
	}
	multi := len(top.Regions) > 1
	if multi {
		for _, a := range top.Regions {
			for _, b := range top.Regions {
				if a.Name == b.Name {
					continue
				}
				l, _ := top.Link(a.Name, b.Name)
				link, err := wan.Listen(wan.LinkOptions{
					Name: a.Name + "->" + b.Name, Targets: gwAddrs[b.Name],
					Delay: time.Duration(l.RTT) / 2, Jitter: time.Duration(l.Jitter), Loss: l.Loss,
					Logger: o.Logger, From: a.Name,
				})
				if err != nil {
					return nil, fmt.Errorf("supercluster: link %s->%s: %w", a.Name, b.Name, err)
				}
				c.links[[2]string{a.Name, b.Name}] = link
			}
		}
	}
	for _, pl := range all {
		r, _ := top.Region(pl.region)
		var routes []string
		for _, other := range all {
			if other.region == pl.region {
				routes = append(routes, fmt.Sprintf("%s:%d", other.core.Host, other.core.ClusterPort))
			}
		}
		sc := StreamConfig(top, pl.region, o.MemoryStreams, o.IngestDuplicates)
		co := core.Options{
			Name: pl.core.Name, Region: pl.region, Host: pl.core.Host, Port: pl.core.Port,
			DataDir: filepath.Join(o.DataDir, pl.core.Name), ClusterPort: pl.core.ClusterPort,
			MaxMemory: o.MaxMemory, MaxStore: o.MaxStore, Logger: o.Logger,
			Mappings: sc.IngestMapping(),
		}
		if c.creds != nil {
			users, err := auth.Users(c.creds, sc.Names, auth.Regions{Peers: sc.Peers, StandbyFor: sc.StandbyFor, Standby: sc.Standby})
			if err != nil {
				return nil, fmt.Errorf("supercluster: %w", err)
			}
			co.Users, co.SystemAccount, co.Accounts, co.ClientUser, co.ClientPassword = users, auth.SystemAccount, auth.AccountsConfig(), string(auth.Admin), c.creds.Password(auth.Admin.User())
			co.PeerPassword = c.creds.Password(auth.Core.User())
			co.TLS = core.TLSFiles{CertFile: c.tls.Cert, KeyFile: c.tls.Key, CAFile: c.tls.CA}
		}
		if len(r.Cores) > 1 || multi {
			// JetStream clustering wants configured routes even for a one-node
			// region of a supercluster; a route to itself is ignored.
			co.Routes = routes
		} else {
			co.ClusterPort = 0 // one node alone: standalone JetStream
		}
		if multi {
			co.GatewayPort, co.GatewayAdvertise = pl.core.GatewayPort, core.NoAdvertise
			for _, other := range top.Regions {
				if other.Name != pl.region {
					co.Gateways = append(co.Gateways, core.Gateway{Name: other.Name, URLs: []string{c.links[[2]string{pl.region, other.Name}].Addr()}})
				}
			}
		}
		if multi && !o.NoWatchdog {
			w := sourcing.ForRegion(sc)
			w.Options = o.Watchdog
			co.Sources = &w
		}
		c.cfg[pl.region] = append(c.cfg[pl.region], co)
	}
	if err := c.startNodes(ctx, top.RegionNames()); err != nil {
		return nil, err
	}
	if err := c.provision(ctx); err != nil {
		return nil, err
	}
	ok = true
	return c, nil
}

// startNodes starts the core nodes of regions concurrently.
func (c *Cluster) startNodes(ctx context.Context, regions []string) error {
	type result struct {
		region string
		i      int
		n      *core.Node
		err    error
	}
	var cfgs []result
	c.mu.Lock()
	for _, r := range regions {
		if c.nodes[r] == nil {
			c.nodes[r] = make([]*core.Node, len(c.cfg[r]))
		}
		for i := range c.cfg[r] {
			cfgs = append(cfgs, result{region: r, i: i})
		}
	}
	c.mu.Unlock()
	res := make(chan result, len(cfgs))
	for _, r := range cfgs {
		go func(r result) {
			r.n, r.err = core.Start(ctx, c.cfg[r.region][r.i])
			res <- r
		}(r)
	}
	var errs []error
	for range cfgs {
		r := <-res
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		c.mu.Lock()
		c.nodes[r.region][r.i] = r.n
		c.mu.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("supercluster: %w", err)
	}
	return nil
}

// StreamConfig is region's stream configuration under the topology.
func (c *Cluster) StreamConfig(region string) streams.Config {
	return StreamConfig(c.top, region, c.opt.MemoryStreams, c.opt.IngestDuplicates)
}

// StreamConfig is region's stream configuration under top: placed in its
// cluster; in asynchronous mode sourcing the other regions' claim logs; in
// strict mode sourcing its home partitions from every region's ingest.
func StreamConfig(top topology.Topology, region string, memory bool, ingestDup time.Duration) streams.Config {
	r, _ := top.Region(region)
	cfg := streams.Config{
		Names: streams.Names{Region: region, Shards: top.ShardCount(r)}, Partitions: top.Partitions, Replicas: top.StreamReplicas(r),
		Window: time.Duration(top.Window), Memory: memory, IngestDuplicates: ingestDup,
	}
	if len(top.Regions) > 1 {
		cfg.Cluster, cfg.PeerShards = region, map[string]int{}
		for _, other := range top.Regions {
			if other.Name != region {
				cfg.Peers = append(cfg.Peers, other.Name)
				cfg.PeerShards[other.Name] = top.ShardCount(other)
			}
		}
	}
	cfg.StandbyFor = top.StandbyFor(region)
	if r, ok := top.Region(region); ok {
		cfg.Standby = r.Standby
	}
	if top.Mode == topology.Strict {
		cfg.Home = top.HomePartitions(region)
		if cfg.Home == nil {
			cfg.Home = []int{}
		}
	}
	return cfg
}

// provision creates every region's streams. A source whose origin stream
// does not exist yet retries with a growing backoff (tens of seconds), so
// every region's own streams come first and the sourcing streams after.
func (c *Cluster) provision(ctx context.Context) error {
	// Regions provision concurrently: each stream create is a meta-group
	// proposal that crosses the WAN, so one region after another adds up.
	for _, pass := range []string{"own", "cross-region"} {
		regions := c.top.RegionNames()
		errs := make(chan error, len(regions))
		for _, r := range regions {
			go func() {
				cfg := c.StreamConfig(r)
				if pass == "own" {
					cfg = cfg.Own()
				}
				nc, js, err := c.Connect(r)
				if err != nil {
					errs <- err
					return
				}
				defer nc.Close()
				if err := streams.Provision(ctx, js, cfg); err != nil {
					errs <- fmt.Errorf("supercluster: region %s %s streams: %w", r, pass, err)
					return
				}
				if pass == "cross-region" {
					if err := streams.SpreadLeaders(ctx, js, cfg); err != nil {
						c.opt.Logger.Warn("shard leaders not spread", "region", r, "err", err)
					}
				}
				errs <- nil
			}()
		}
		var all []error
		for range regions {
			all = append(all, <-errs)
		}
		if err := errors.Join(all...); err != nil {
			return err
		}
	}
	return nil
}

// Topology returns the topology the cluster runs (defaults filled).
func (c *Cluster) Topology() topology.Topology { return c.top }

// ClientURL returns region's client URLs, comma-separated for nats.Connect.
func (c *Cluster) ClientURL(region string) string {
	var urls []string
	for _, co := range c.cfg[region] {
		urls = append(urls, fmt.Sprintf("nats://%s:%d", co.Host, co.Port))
	}
	return strings.Join(urls, ",")
}

// Connect opens an admin connection to region's core nodes (reconnecting
// forever) and a JetStream handle on it.
func (c *Cluster) Connect(region string, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	return c.ConnectAs(region, auth.Admin, opts...)
}

// ConnectAs is Connect with role's credentials (an edge's are its
// region's, auth.EdgeUser; a failover edge's auth.FailoverUser): what a producer or an edge may do is then
// limited by its permissions.
func (c *Cluster) ConnectAs(region string, role auth.Role, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	u := role.User()
	switch role {
	case auth.Edge:
		u = auth.EdgeUser(region)
	case auth.FailoverEdge:
		u = auth.FailoverUser(region)
	}
	return c.ConnectUser(region, u, opts...)
}

// ConnectUser is Connect as user u (with TLS), whatever its scope: tests
// use it to prove what one region's credentials cannot do in another.
func (c *Cluster) ConnectUser(region string, u auth.User, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	base := []nats.Option{nats.Name("onceplane-" + region + "-" + u.Name()), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if c.creds != nil {
		base = append(append(base, auth.ClientOptions(u, c.creds.Password(u))...), nats.RootCAs(c.tls.CA))
	}
	nc, err := nats.Connect(c.ClientURL(region), append(base, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("supercluster: connect %s: %w", region, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("supercluster: jetstream %s: %w", region, err)
	}
	return nc, js, nil
}

// Nodes returns region's running core nodes.
func (c *Cluster) Nodes(region string) []*core.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*core.Node
	for _, n := range c.nodes[region] {
		if n != nil {
			out = append(out, n)
		}
	}
	return out
}

// Link returns the link that carries from's gateway connection to to.
func (c *Cluster) Link(from, to string) *wan.Link { return c.links[[2]string{from, to}] }

// Cut takes the WAN link between regions a and b down, both directions:
// gateway connections drop and cannot reconnect until Heal.
func (c *Cluster) Cut(a, b string) {
	for _, k := range [][2]string{{a, b}, {b, a}} {
		if l := c.links[k]; l != nil {
			l.Cut()
		}
	}
}

// Heal brings the link between a and b back.
func (c *Cluster) Heal(a, b string) {
	for _, k := range [][2]string{{a, b}, {b, a}} {
		if l := c.links[k]; l != nil {
			l.Heal()
		}
	}
}

// StopRegion shuts down every core node of region (its storage stays).
func (c *Cluster) StopRegion(region string) {
	c.mu.Lock()
	nodes := slices.Clone(c.nodes[region])
	for i := range c.nodes[region] {
		c.nodes[region][i] = nil
	}
	c.mu.Unlock()
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n != nil {
			wg.Add(1)
			go func() { defer wg.Done(); n.Shutdown() }()
		}
	}
	wg.Wait()
}

// StartRegion restarts region's core nodes on their ports and storage.
func (c *Cluster) StartRegion(ctx context.Context, region string) error {
	return c.startNodes(ctx, []string{region})
}

// ProvisionRegion provisions region's streams as its core nodes do at
// start (its own, then those sourcing other regions), retrying until it
// succeeds or ctx ends: after StartRegion, what a restarted core binary
// does. With a standby named, a region failed over finds it and fences its
// claim log (streams.Config.Standby).
func (c *Cluster) ProvisionRegion(ctx context.Context, region string) error {
	nc, js, err := c.Connect(region)
	if err != nil {
		return err
	}
	defer nc.Close()
	cfg := c.StreamConfig(region)
	for _, pc := range []streams.Config{cfg.Own(), cfg} {
		for {
			pctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			err := streams.Provision(pctx, js, pc)
			cancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return fmt.Errorf("supercluster: provision %s: %w", region, err)
			}
			c.opt.Logger.Warn("provisioning again", "region", region, "err", err)
			if err := poll.Sleep(ctx, 500*time.Millisecond); err != nil {
				return fmt.Errorf("supercluster: provision %s: %w", region, err)
			}
		}
	}
	return nil
}

// Close stops every node and link.
func (c *Cluster) Close() {
	for _, r := range c.top.RegionNames() {
		c.StopRegion(r)
	}
	for _, l := range c.links {
		_ = l.Close()
	}
}
