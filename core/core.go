// Package core runs a onceplane core node: an embedded nats-server with
// JetStream, alone or clustered with the other core nodes of its region.
package core

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/jetstream/sourcing"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// PeerUser is the user core nodes authenticate as to each other's route
// and gateway ports (Options.PeerPassword).
const PeerUser = "core"

// GatewayProtocol is the TLS application protocol (ALPN) a core node of
// region offers when it dials another region's gateway. The server side
// does not negotiate it (it names no protocols), so it changes nothing on
// the wire but the ClientHello: something between the regions (a WAN
// link, a firewall) can tell which region a gateway connection comes from
// before a byte of it is forwarded. Without TLS, the gateway's CONNECT
// names its region.
func GatewayProtocol(region string) string { return "onceplane-gateway/" + region }

// Options configures a core node. The zero value runs one node on
// 127.0.0.1:4222 with data under ./data/core-0.
type Options struct {
	// Name is the server name, unique in the deployment. Zero means "core-0".
	Name string
	// Region is the JetStream cluster name. Zero means "local".
	Region string
	// Host is the listen address for clients and routes. Zero means 127.0.0.1.
	Host string
	// Port is the client port. Zero means 4222; -1 picks a free port.
	Port int
	// DataDir holds JetStream storage. Zero means ./data/<Name>.
	DataDir string
	// ClusterPort enables clustering with Routes when non-zero (-1 picks a free port).
	ClusterPort int
	// Routes are the other core nodes of the region, as host:port cluster addresses.
	Routes []string
	// GatewayPort enables the gateway listener joining this region to others
	// in a supercluster when non-zero (-1 picks a free port). A gateway node
	// is always clustered: zero ClusterPort then means a free port.
	GatewayPort int
	// Gateways are the other regions and the URLs (host:port) that reach
	// their gateway listeners, directly or through a WAN link.
	Gateways []Gateway
	// GatewayAdvertise is the gateway address told to other regions. Zero
	// means the listen address. When every inter-region connection must go
	// through a WAN proxy on one machine, set an address that refuses
	// connections (see NoAdvertise) so that peers only dial the URLs
	// configured in Gateways.
	GatewayAdvertise string
	// Users, when set, turns on authentication: only these users connect,
	// each with its permissions (see package auth). Nil means no
	// authentication (single-machine development only).
	Users []*server.User
	// ClientUser and ClientPassword are what Connect uses when Users is set
	// (an admin user: the core provisions streams with it).
	ClientUser, ClientPassword string
	// TLS, when CertFile is set, serves TLS on the client port, and on the
	// route and gateway ports with mutual verification against CAFile.
	TLS TLSFiles
	// MonitorPort serves NATS's HTTP monitoring (/healthz, /varz, /jsz) on
	// MonitorHost when non-zero. Zero means off.
	MonitorPort int
	// MonitorHost is the address monitoring listens on. NATS monitoring has
	// no authentication (/connz names users and addresses, /jsz shows
	// configurations), so zero means 127.0.0.1: a container's health check
	// runs on the node itself. Expose it on purpose, behind a network you
	// trust.
	MonitorHost string
	// PeerPassword, when set, makes routes and gateways authenticate: a
	// core node accepts a route or gateway connection only from user
	// PeerUser with this password, and dials its own with it. Zero means
	// peers are not authenticated (with TLS, they are still verified
	// against the CA).
	PeerPassword string
	// SystemAccount names the account of Users that is the NATS system
	// account (server monitoring over $SYS subjects). Every account of
	// Users is configured on the server; users without one are in the
	// global account. Zero means the server's default system account, with
	// no users.
	SystemAccount string
	// Accounts is NATS configuration of accounts (an `accounts { … }`
	// block: JetStream, exports, imports) that Users' accounts name: a
	// user whose Account has the name of one defined here is put in it
	// (auth.AccountsConfig). Empty means none.
	Accounts string
	// PingInterval is how often the server pings clients, routes and
	// gateways; a peer that misses two pings in a row is dropped, so a link
	// that silently stops carrying packets (a network disconnect, not a
	// reset) is noticed after about three intervals. Zero means NATS's
	// default, 2 minutes.
	PingInterval time.Duration
	// Mappings are subject mappings (source to destination, with NATS's
	// mapping functions) of the account the streams live in: ClientUser's
	// account, or the global account without Users. A sharded region's
	// ingest partitioning (streams.Config.IngestMapping) is one. Nil means
	// none beyond the ingest subjects of before tenants, always mapped.
	Mappings map[string]string
	// MaxMemory and MaxStore cap JetStream resources. Zero means 1 GiB and 16 GiB.
	MaxMemory, MaxStore int64
	// Logger receives server logs. Nil means slog.Default() at warn level and above.
	Logger *slog.Logger
	// Sources, when set, runs a replication watchdog (package sourcing) over
	// these sourcing streams for as long as the node runs, acting on the
	// streams this node leads (its Server is set to Name). Nil means none.
	Sources *sourcing.WatchOptions
}

func (o Options) withDefaults() Options {
	if o.Name == "" {
		o.Name = "core-0"
	}
	if o.Region == "" {
		o.Region = "local"
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.Port == 0 {
		o.Port = 4222
	}
	if o.DataDir == "" {
		o.DataDir = filepath.Join("data", o.Name)
	}
	if o.MaxMemory == 0 {
		o.MaxMemory = 1 << 30
	}
	if o.MaxStore == 0 {
		o.MaxStore = 16 << 30
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// TLSFiles names PEM files. The certificate must be valid for server and
// client use (core nodes verify each other on routes and gateways).
type TLSFiles struct {
	CertFile, KeyFile, CAFile string
}

// Gateway names a remote region (its JetStream cluster) and how to reach it.
type Gateway struct {
	Name string
	URLs []string
}

// NoAdvertise is a gateway address that refuses connections at once: a
// node advertising it keeps remote regions on their configured gateway URLs
// (the WAN proxies) instead of dialing it directly after a reconnect.
const NoAdvertise = "127.0.0.1:1"

// Node is a running core node.
type Node struct {
	opt     Options
	srv     *server.Server
	stopped chan struct{} // closed when the watchdog has stopped (nil: none)
	stop    context.CancelFunc
}

// aeadSuites are the TLS 1.2 cipher suites the core accepts: AEAD only (no
// CBC, no SHA-1 MACs). TLS 1.3's suites are all AEAD and not configurable.
var aeadSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// Start starts a node and waits until it accepts clients and, when clustered,
// until JetStream has a current meta leader.
func Start(ctx context.Context, o Options) (*Node, error) {
	o = o.withDefaults()
	if err := os.MkdirAll(o.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("core %s: data dir: %w", o.Name, err)
	}
	if o.GatewayPort != 0 && o.ClusterPort == 0 {
		o.ClusterPort = -1 // a supercluster member is clustered, if alone
	}
	sopts, err := serverOptions(o)
	if err != nil {
		return nil, err
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("core %s: %w", o.Name, err)
	}
	srv.SetLoggerV2(&slogAdapter{l: o.Logger.With("core", o.Name)}, false, false, false)
	if err := addMappings(srv, o); err != nil {
		return nil, fmt.Errorf("core %s: %w", o.Name, err)
	}
	srv.Start()
	n := &Node{opt: o, srv: srv}
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("core %s: not ready for connections after 30s", o.Name)
	}
	if o.ClusterPort != 0 {
		if err := n.WaitJetStream(ctx); err != nil {
			srv.Shutdown()
			return nil, err
		}
	}
	if o.Sources != nil {
		if err := n.watchSources(*o.Sources); err != nil {
			srv.Shutdown()
			return nil, err
		}
	}
	return n, nil
}

// watchSources runs the replication watchdog on a connection of its own
// until Shutdown.
func (n *Node) watchSources(w sourcing.WatchOptions) error {
	nc, err := n.Connect()
	if err != nil {
		return fmt.Errorf("core %s: watchdog connection: %w", n.opt.Name, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return fmt.Errorf("core %s: watchdog: %w", n.opt.Name, err)
	}
	w.Server = n.opt.Name
	if w.Logger == nil {
		w.Logger = n.opt.Logger.With("core", n.opt.Name)
	}
	ctx, stop := context.WithCancel(context.Background())
	n.stop, n.stopped = stop, make(chan struct{})
	go func() {
		defer close(n.stopped)
		defer nc.Close()
		_ = sourcing.Watch(ctx, js, w)
	}()
	return nil
}

// addMappings adds o.Mappings to the account the streams live in, before
// the server accepts a client, and then the mapping of the ingest subjects
// of before tenants (to the default tenant's): an account applies the first
// of its mappings that matches a subject, so o.Mappings' more specific ones
// come first. (Producers in auth.ProducerAccount have that mapping in their
// account, auth.AccountsConfig.)
func addMappings(srv *server.Server, o Options) error {
	acc := srv.GlobalAccount()
	for _, u := range o.Users {
		if u.Username == o.ClientUser && u.Account != nil {
			a, err := srv.LookupAccount(u.Account.Name)
			if err != nil {
				return fmt.Errorf("mappings: account %s: %w", u.Account.Name, err)
			}
			acc = a
		}
	}
	for _, src := range slices.Sorted(maps.Keys(o.Mappings)) {
		if err := acc.AddMapping(src, o.Mappings[src]); err != nil {
			return fmt.Errorf("mapping %s: %w", src, err)
		}
	}
	if err := acc.AddMapping(streams.LegacyIngestMapping()); err != nil {
		return fmt.Errorf("ingest mapping: %w", err)
	}
	return nil
}

// serverOptions translates o (with defaults) into nats-server options.
func serverOptions(o Options) (*server.Options, error) {
	sopts := &server.Options{
		ServerName:         o.Name,
		Host:               o.Host,
		Port:               o.Port,
		JetStream:          true,
		StoreDir:           o.DataDir,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		MaxPayload:         8 << 20,
		NoSigs:             true,
		Users:              o.Users,
		PingInterval:       o.PingInterval,
		SystemAccount:      o.SystemAccount,
	}
	if err := setAccounts(sopts, o); err != nil {
		return nil, err
	}
	if o.MonitorPort != 0 {
		sopts.HTTPHost, sopts.HTTPPort = cmp.Or(o.MonitorHost, "127.0.0.1"), o.MonitorPort
	}
	if err := setClientTLS(sopts, o); err != nil {
		return nil, err
	}
	if o.GatewayPort != 0 {
		if err := setGateways(sopts, o); err != nil {
			return nil, err
		}
	}
	if o.ClusterPort != 0 {
		if err := setCluster(sopts, o); err != nil {
			return nil, err
		}
	}
	return sopts, nil
}

// setAccounts puts the configured accounts (o.Accounts) in sopts, each user
// in the account of its account's name, and the authorization block that
// keeps a server with a system account from admitting anonymous clients.
func setAccounts(sopts *server.Options, o Options) error {
	if o.Accounts != "" {
		if err := sopts.ProcessConfigString(o.Accounts); err != nil {
			return fmt.Errorf("core %s: accounts: %w", o.Name, err)
		}
		// Put each user in the configured account of its account's name.
		users := make([]*server.User, len(o.Users))
		for i, u := range o.Users {
			c := *u
			for _, a := range sopts.Accounts {
				if c.Account != nil && a.Name == c.Account.Name {
					c.Account = a
				}
			}
			users[i] = &c
		}
		sopts.Users = users
	}
	for _, u := range sopts.Users {
		if u.Account != nil && !slices.Contains(sopts.Accounts, u.Account) {
			sopts.Accounts = append(sopts.Accounts, u.Account)
		}
	}
	if o.SystemAccount != "" {
		// A server whose only accounts are the global and the system one
		// quietly lets clients without credentials in as a generated
		// global-account user, unless the configuration has an
		// authorization block. Declare one (it sets only the auth timeout).
		if err := sopts.ProcessConfigString("authorization { timeout: 2 }"); err != nil {
			return fmt.Errorf("core %s: authorization: %w", o.Name, err)
		}
	}
	return nil
}

// setClientTLS turns TLS on for the client port (AEAD suites, TLS 1.2+).
func setClientTLS(sopts *server.Options, o Options) error {
	if o.TLS.CertFile != "" {
		client, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLS.CertFile, KeyFile: o.TLS.KeyFile, CaFile: o.TLS.CAFile,
			Ciphers: aeadSuites, MinVersion: tls.VersionTLS12})
		if err != nil {
			return fmt.Errorf("core %s: tls: %w", o.Name, err)
		}
		sopts.TLSConfig, sopts.TLS, sopts.TLSTimeout = client, true, 2
	}
	return nil
}

// setGateways configures this node's gateway and its remote gateways, each
// authenticated with the peer password.
func setGateways(sopts *server.Options, o Options) error {
	sopts.Gateway = server.GatewayOpts{Name: o.Region, Host: o.Host, Port: o.GatewayPort, Advertise: o.GatewayAdvertise}
	if o.PeerPassword != "" {
		sopts.Gateway.Username, sopts.Gateway.Password = PeerUser, o.PeerPassword
	}
	for _, g := range o.Gateways {
		rg := &server.RemoteGatewayOpts{Name: g.Name}
		for _, a := range g.URLs {
			u, err := url.Parse("nats://" + a)
			if err != nil {
				return fmt.Errorf("core %s: gateway %s url %q: %w", o.Name, g.Name, a, err)
			}
			if o.PeerPassword != "" {
				u.User = url.UserPassword(PeerUser, o.PeerPassword)
			}
			rg.URLs = append(rg.URLs, u)
		}
		sopts.Gateway.Gateways = append(sopts.Gateway.Gateways, rg)
	}
	return nil
}

// setCluster configures routes inside the region: the peer password, and
// mutually verified TLS (which gateways share).
func setCluster(sopts *server.Options, o Options) error {
	sopts.Cluster = server.ClusterOpts{Name: o.Region, Host: o.Host, Port: o.ClusterPort}
	if o.PeerPassword != "" {
		sopts.Cluster.Username, sopts.Cluster.Password = PeerUser, o.PeerPassword
	}
	if o.TLS.CertFile != "" {
		peer, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: o.TLS.CertFile, KeyFile: o.TLS.KeyFile, CaFile: o.TLS.CAFile, Verify: true,
			Ciphers: aeadSuites, MinVersion: tls.VersionTLS12})
		if err != nil {
			return fmt.Errorf("core %s: tls: %w", o.Name, err)
		}
		// Outgoing routes and gateways verify the peer against the CA too
		// (GenTLSConfig only sets the pool that verifies incoming ones).
		peer.RootCAs = peer.ClientCAs
		sopts.Cluster.TLSConfig, sopts.Cluster.TLSTimeout = peer, 2
		if o.GatewayPort != 0 {
			sopts.Gateway.TLSConfig, sopts.Gateway.TLSTimeout = peer.Clone(), 2
			for _, rg := range sopts.Gateway.Gateways {
				rg.TLSConfig, rg.TLSTimeout = peer.Clone(), 2
				rg.TLSConfig.NextProtos = []string{GatewayProtocol(o.Region)}
			}
		}
	}
	for _, r := range o.Routes {
		u, err := url.Parse("nats-route://" + r)
		if err != nil {
			return fmt.Errorf("core %s: route %q: %w", o.Name, r, err)
		}
		if o.PeerPassword != "" {
			u.User = url.UserPassword(PeerUser, o.PeerPassword)
		}
		sopts.Routes = append(sopts.Routes, u)
	}
	return nil
}

// WaitJetStream polls until this node's JetStream is current with a meta leader.
func (n *Node) WaitJetStream(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !n.srv.JetStreamIsCurrent() {
		select {
		case <-ctx.Done():
			return fmt.Errorf("core %s: waiting for JetStream meta leader: %w", n.opt.Name, ctx.Err())
		case <-tick.C:
		}
	}
	return nil
}

// GatewayAddr returns host:port of the gateway listener, or "" when none.
func (n *Node) GatewayAddr() string {
	if a := n.srv.GatewayAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Name returns the server name.
func (n *Node) Name() string { return n.opt.Name }

// ClientURL returns the nats:// URL clients connect to.
// A node listening on every address (0.0.0.0, ::) is reached on loopback.
func (n *Node) ClientURL() string {
	u := n.srv.ClientURL()
	if p, err := url.Parse(u); err == nil {
		if ip := net.ParseIP(p.Hostname()); ip != nil && ip.IsUnspecified() {
			p.Host = net.JoinHostPort("127.0.0.1", p.Port())
			return p.String()
		}
	}
	return u
}

// ClusterAddr returns host:port of the route listener, or "" when not clustered.
func (n *Node) ClusterAddr() string {
	if a := n.srv.ClusterAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Server exposes the embedded server (for status and tests).
func (n *Node) Server() *server.Server { return n.srv }

// Connect opens a client connection that keeps reconnecting while the node restarts.
func (n *Node) Connect(opts ...nats.Option) (*nats.Conn, error) {
	base := []nats.Option{nats.Name(n.opt.Name + "-client"), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}
	if n.opt.ClientUser != "" {
		base = append(base, nats.UserInfo(n.opt.ClientUser, n.opt.ClientPassword))
	}
	if n.opt.TLS.CAFile != "" {
		base = append(base, nats.RootCAs(n.opt.TLS.CAFile))
	}
	return nats.Connect(n.ClientURL(), append(base, opts...)...)
}

// Shutdown stops the node and waits for it to finish.
func (n *Node) Shutdown() {
	if n.stop != nil {
		n.stop()
		<-n.stopped
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
}

type slogAdapter struct{ l *slog.Logger }

func (a *slogAdapter) Noticef(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if peerConnError(msg) {
		a.l.Warn(msg, "expected", "a route or gateway connection failed (a peer restarting, a WAN cut); NATS redials it")
		return
	}
	a.l.Error(msg)
}

// peerConnError reports whether a server error is a failed route or gateway
// connection: what a cut link or a restarting peer produces on every redial,
// logged at warn level so that errors stay errors.
func peerConnError(msg string) bool {
	for _, s := range []string{"Error connecting to explicit gateway", "Error connecting to implicit gateway", "Error trying to connect to route", "Error getting IP for",
		"TLS gateway handshake error", "TLS route handshake error"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func (a *slogAdapter) Debugf(format string, v ...any) { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *slogAdapter) Tracef(format string, v ...any) {}

// StartCluster starts the nodes of one region at once, each with routes to
// all of them (from their Host and ClusterPort, which must be set), and
// returns them in order once every one is up and JetStream is current. If
// any fails, the others are shut down.
func StartCluster(ctx context.Context, opts []Options) ([]*Node, error) {
	var routes []string
	for _, o := range opts {
		routes = append(routes, net.JoinHostPort(cmp.Or(o.Host, "127.0.0.1"), strconv.Itoa(o.ClusterPort)))
	}
	nodes := make([]*Node, len(opts))
	errs := make(chan error, len(opts))
	for i, o := range opts {
		o.Routes = routes
		go func() {
			var err error
			nodes[i], err = Start(ctx, o)
			errs <- err
		}()
	}
	var err error
	for range opts {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		for _, n := range nodes {
			if n != nil {
				n.Shutdown()
			}
		}
		return nil, err
	}
	return nodes, nil
}
