package drill

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/proc"
)

// CoreSpec describes a region of core processes for a drill.
type CoreSpec struct {
	// Bin is the core binary. Required.
	Bin string
	// Dir holds each node's data directory and log. Required.
	Dir string
	// Region names the streams. Zero means "local".
	Region string
	// Nodes is 1 (R1 streams) or 3 (a cluster with R3 streams). Zero means 1.
	Nodes int
	// Partitions is the partition count the nodes provision. Zero means 8.
	Partitions int
	// Window is the dedupe window the nodes provision. Zero means the core's default.
	Window time.Duration
	// GatewayPort, when non-zero, joins the region (one node) to other
	// regions into a supercluster; Gateways maps each other region to the
	// address its gateway is reached at (a WAN link's, in a simulation).
	// The node advertises no gateway address of its own, so the other
	// regions keep to Gateways.
	GatewayPort int
	Gateways    map[string]string
	// Peers are the other regions: the nodes provision the xclaims and
	// conflicts streams. Empty means a region on its own.
	Peers []string
	// Shards is the region's shard count (core -shards). Zero means the
	// core's default, one per node.
	Shards int
}

// Names are the region's stream names (with its shards).
func (c *Cores) Names() streams.Names { return c.spec.names() }

// names are the region's stream names under spec.
func (spec CoreSpec) names() streams.Names {
	return streams.Names{Region: spec.Region, Shards: cmp.Or(spec.Shards, spec.Nodes, 1)}
}

// Cores is a running region of core processes. Each node keeps its ports
// and data directory across restarts.
type Cores struct {
	spec CoreSpec
	// Procs holds the node processes, replaced on Restart.
	Procs []*proc.Proc
	// Addrs are the nodes' client addresses (host:port), in node order.
	Addrs []string
	args  [][]string
	names []string
}

// StartCores starts spec's nodes with ingest dedupe off (re-sends reach the
// edges) and returns once the region's streams exist (within a minute).
func StartCores(ctx context.Context, spec CoreSpec) (*Cores, error) {
	c, err := LaunchCores(spec)
	if err != nil {
		return nil, err
	}
	if err := c.WaitStreams(ctx, time.Minute); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// LaunchCores starts spec's nodes as StartCores does, without waiting for
// the streams: regions joined by gateways provision only once the
// supercluster has a JetStream meta leader, so all of them start first.
func LaunchCores(spec CoreSpec) (*Cores, error) {
	if spec.Region == "" {
		spec.Region = "local"
	}
	if spec.Nodes <= 0 {
		spec.Nodes = 1
	}
	if spec.Nodes != 1 && spec.Nodes != 3 {
		return nil, fmt.Errorf("cores: %d nodes, want 1 or 3", spec.Nodes)
	}
	if spec.Partitions <= 0 {
		spec.Partitions = 8
	}
	if spec.GatewayPort != 0 && spec.Nodes != 1 {
		return nil, fmt.Errorf("cores: gateways from a region of %d nodes (want 1)", spec.Nodes)
	}
	if err := os.MkdirAll(spec.Dir, 0o750); err != nil {
		return nil, fmt.Errorf("cores: %w", err)
	}
	n := spec.Nodes
	ps, err := ports.Free(2 * n)
	if err != nil {
		return nil, fmt.Errorf("cores: %w", err)
	}
	c := &Cores{spec: spec}
	var routes []string
	for i := 0; i < n; i++ {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", ps[n+i]))
	}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("core-%d", i)
		server := name
		if spec.GatewayPort != 0 {
			server = spec.Region + "-" + name // server names are unique across a supercluster
		}
		args := []string{"-name", server, "-region", spec.Region, "-port", fmt.Sprint(ps[i]), "-data", filepath.Join(spec.Dir, name),
			"-partitions", fmt.Sprint(spec.Partitions), "-ingest-dedupe", "off", "-log-level", "warn"}
		if n > 1 {
			args = append(args, "-cluster-port", fmt.Sprint(ps[n+i]), "-routes", strings.Join(routes, ","), "-replicas", "3")
		} else if spec.GatewayPort != 0 {
			// JetStream in a supercluster needs a cluster: one node routes to itself.
			args = append(args, "-cluster-port", fmt.Sprint(ps[n+i]), "-routes", routes[i])
		}
		if spec.Shards > 0 {
			args = append(args, "-shards", fmt.Sprint(spec.Shards))
		}
		if spec.Window > 0 {
			args = append(args, "-window", spec.Window.String())
		}
		if spec.GatewayPort != 0 {
			var gws []string
			for _, r := range slices.Sorted(maps.Keys(spec.Gateways)) {
				gws = append(gws, r+"="+spec.Gateways[r])
			}
			args = append(args, "-gateway-port", fmt.Sprint(spec.GatewayPort), "-gateways", strings.Join(gws, ";"),
				"-gateway-advertise", core.NoAdvertise)
		}
		if len(spec.Peers) > 0 {
			args = append(args, "-peers", strings.Join(spec.Peers, ","))
		}
		c.names, c.args = append(c.names, name), append(c.args, args)
		c.Addrs = append(c.Addrs, fmt.Sprintf("127.0.0.1:%d", ps[i]))
		p, err := proc.Start(name, filepath.Join(spec.Dir, name+".log"), spec.Bin, args...)
		if err != nil {
			c.Stop()
			return nil, fmt.Errorf("cores: %w", err)
		}
		c.Procs = append(c.Procs, p)
	}
	return c, nil
}

// URL is the region's client URL list, comma-separated.
func (c *Cores) URL() string {
	urls := make([]string, len(c.Addrs))
	for i, a := range c.Addrs {
		urls[i] = "nats://" + a
	}
	return strings.Join(urls, ",")
}

// Restart starts node i again on its ports and data directory; it must have
// exited (Kill9 or Stop first).
func (c *Cores) Restart(i int) error {
	if !c.Procs[i].Exited() {
		return fmt.Errorf("cores: %s is still running", c.names[i])
	}
	p, err := proc.Start(c.names[i], filepath.Join(c.spec.Dir, c.names[i]+".log"), c.spec.Bin, c.args[i]...)
	if err != nil {
		return fmt.Errorf("cores: restart: %w", err)
	}
	c.Procs[i] = p
	return nil
}

// Stop stops every running node (SIGTERM, then SIGKILL after 5 s).
func (c *Cores) Stop() {
	for _, p := range c.Procs {
		if !p.Exited() {
			_ = p.Stop(5 * time.Second)
		}
	}
}

// WaitStreams polls until the region's streams exist, for up to within.
func (c *Cores) WaitStreams(ctx context.Context, within time.Duration) error {
	cfg := streams.Config{Names: c.spec.names(), Peers: c.spec.Peers}
	deadline := time.Now().Add(within)
	for {
		err := streamsExist(ctx, c.URL(), cfg)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("region of %d core nodes not ready after %v: %w", len(c.Procs), within, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// streamsExist checks, with a bounded wait, that the region's streams exist.
func streamsExist(ctx context.Context, url string, cfg streams.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	nc, err := nats.Connect(url, nats.Timeout(time.Second))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for _, sc := range cfg.StreamConfigs() {
		if _, err := js.Stream(ctx, sc.Name); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// EdgeSpec is how a drill starts one edge process sharing partitions by gossip.
type EdgeSpec struct {
	// Bin is the edge binary. Required.
	Bin string
	// Dir holds the edge's log (<Name>.log) and ledger (<Name>.jsonl). Required.
	Dir string
	// NATS is the URL list the edge connects to. Required.
	NATS string
	// Region names the streams. Zero means "local".
	Region string
	// Name is the edge's name. Required.
	Name string
	// Gossip and Admin are the edge's gossip and admin addresses. Required.
	Gossip, Admin string
	// Seeds are other members' gossip addresses.
	Seeds []string
	// Peers are the other regions (the edge merges their claims). Empty
	// means a region on its own.
	Peers []string
	// Sinks is the -sink list. Zero means "nats,ledger".
	Sinks string
	// Batch is the edge's batch size. Zero means the edge's default.
	Batch int
	// StatsFile, when set, receives the edge's totals when it stops gracefully.
	StatsFile string
	// Extra are more flags, appended last.
	Extra []string
}

// Ledger is the path of the edge's ledger file.
func (s EdgeSpec) Ledger() string { return filepath.Join(s.Dir, s.Name+".jsonl") }

// Log is the path of the edge's log file (appended to across restarts).
func (s EdgeSpec) Log() string { return filepath.Join(s.Dir, s.Name+".log") }

// Args returns the edge's command-line flags.
func (s EdgeSpec) Args() []string {
	region, sinks := s.Region, s.Sinks
	if region == "" {
		region = "local"
	}
	if sinks == "" {
		sinks = "nats,ledger"
	}
	args := []string{"-nats", s.NATS, "-region", region, "-name", s.Name,
		"-gossip", s.Gossip, "-gossip-seeds", strings.Join(s.Seeds, ","), "-admin", s.Admin,
		"-sink", sinks, "-ledger", s.Ledger(), "-log-level", "info"}
	if s.Batch > 0 {
		args = append(args, "-batch", fmt.Sprint(s.Batch))
	}
	if len(s.Peers) > 0 {
		args = append(args, "-peers", strings.Join(s.Peers, ","))
	}
	if s.StatsFile != "" {
		args = append(args, "-stats-file", s.StatsFile)
	}
	return append(args, s.Extra...)
}

// Start starts the edge process.
func (s EdgeSpec) Start() (*proc.Proc, error) {
	return proc.Start(s.Name, s.Log(), s.Bin, s.Args()...)
}

// Status reads an edge's /status document from its admin address.
func Status(admin string) (edge.Status, error) {
	var s edge.Status
	c := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + admin + "/status")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// Ready asks an edge's /readyz: nil when it answers 200, else an error
// holding its answer.
func Ready(admin string) error {
	c := http.Client{Timeout: 500 * time.Millisecond}
	resp, err := c.Get("http://" + admin + "/readyz")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	return fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
}
