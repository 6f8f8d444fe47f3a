// Package controlplane measures partition ownership at the large tiers'
// shape in one process, with no event load: regions × edges (each edge a
// memberlist member with its own NATS connection) over many partitions of
// real JetStream streams. It reports how long ownership takes to settle,
// how balanced it is, how long detection and takeover take when a share of
// every region's edges crash at once, and what gossip and ownership cost
// in heap and goroutines per edge.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/gossip"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/supercluster"
	"github.com/onceplane/onceplane/topology"
)

// Config is one measurement. The zero value is 3 regions × 8 edges over
// 256 partitions, 10 % of the edges killed.
type Config struct {
	// Regions, Edges per region and Partitions per region. Zero means 3,
	// 8 and 256.
	Regions, Edges, Partitions int
	// Shards per region: its partitions' ingest and claim streams (on the
	// region's one core node). Zero means 1.
	Shards int
	// Kill is the share of each region's edges crashed at once (at least
	// one). Zero means 0.1.
	Kill float64
	// Dir holds core data. Zero means a temporary directory.
	Dir string
	// Settle bounds each wait. Zero means 5 minutes.
	Settle time.Duration
	// Logger receives component logs. Nil means discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Regions <= 0 {
		c.Regions = 3
	}
	if c.Edges <= 0 {
		c.Edges = 8
	}
	if c.Partitions <= 0 {
		c.Partitions = 256
	}
	if c.Kill <= 0 {
		c.Kill = 0.1
	}
	if c.Settle <= 0 {
		c.Settle = 5 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return c
}

// Result is what one measurement saw.
type Result struct {
	Regions, Edges, Partitions, Shards int
	// Settle is from starting the edges to every partition of every region
	// owned once and every edge ready.
	Settle time.Duration
	// MaxOwned is the most partitions one edge owned after settling; Fair
	// is ceil(Partitions/Edges).
	MaxOwned, Fair int
	// Killed edges per region; Detect is from the crash to every survivor's
	// view without them; Takeover to every partition owned again and every
	// survivor ready.
	Killed           int
	Detect, Takeover time.Duration
	// HeapPerEdge and GoroutinesPerEdge are the settled deployment's live
	// heap and goroutines beyond the core nodes', per edge.
	HeapPerEdge       float64
	GoroutinesPerEdge float64
}

// member is one edge: its gossip member, consumer and connection.
type member struct {
	region, name string
	g            *gossip.Cluster
	c            *edge.Consumer
	nc           *nats.Conn
	cancel       context.CancelFunc
	done         chan struct{}
	dead         bool
}

// crash makes the member vanish: its connection drops (nothing recorded
// done), its gossip goes silent (no leave message).
func (m *member) crash() {
	m.dead = true
	m.nc.Close()
	_ = m.g.Shutdown()
	m.cancel()
}

// Run makes one measurement.
func Run(ctx context.Context, cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	res := Result{Regions: cfg.Regions, Edges: cfg.Edges, Partitions: cfg.Partitions, Shards: max(1, cfg.Shards), Fair: (cfg.Partitions + cfg.Edges - 1) / cfg.Edges}
	top := topology.Topology{Name: "controlplane", Partitions: cfg.Partitions, Window: topology.Duration(time.Hour)}
	for r := range cfg.Regions {
		name := fmt.Sprintf("r%d", r)
		reg := topology.Region{Name: name, Cores: []topology.Core{{Name: name + "-core"}}, Shards: cfg.Shards}
		for e := range cfg.Edges {
			reg.Edges = append(reg.Edges, topology.Edge{Name: fmt.Sprintf("%s-e%d", name, e)})
		}
		top.Regions = append(top.Regions, reg)
	}
	for a := range cfg.Regions {
		for b := a + 1; b < cfg.Regions; b++ {
			// A LAN between regions: this measures ownership, not the WAN.
			top.Links = append(top.Links, topology.Link{A: fmt.Sprintf("r%d", a), B: fmt.Sprintf("r%d", b), RTT: topology.Duration(time.Millisecond)})
		}
	}
	top = top.Defaults()
	if err := top.Validate(); err != nil {
		return res, err
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "onceplane-controlplane")
		if err != nil {
			return res, err
		}
		defer os.RemoveAll(d)
		cfg.Dir = d
	}
	sc, err := supercluster.Start(ctx, top, supercluster.Options{DataDir: cfg.Dir, MemoryStreams: true, Insecure: true, MaxMemory: 1 << 30, Logger: cfg.Logger})
	if err != nil {
		return res, err
	}
	defer sc.Close()
	heap0, gr0 := usage()
	t0 := time.Now()
	var members []*member
	defer func() {
		// Cancel every edge, then wait (bounded: a saturated machine can
		// leave a run behind; say so rather than hang).
		for _, m := range members {
			if !m.dead {
				m.cancel()
			}
		}
		deadline := time.After(time.Minute)
		for _, m := range members {
			if m.dead {
				continue
			}
			select {
			case <-m.done:
			case <-deadline:
				cfg.Logger.Error("edge run did not end a minute after its cancellation", "edge", m.name)
			}
			_ = m.g.Shutdown()
			m.nc.Close()
		}
	}()
	for _, r := range top.Regions {
		var seed []string
		for _, e := range r.Edges {
			m, err := start(sc, r.Name, e.Name, seed, cfg.Logger)
			if err != nil {
				return res, err
			}
			members = append(members, m)
			if seed == nil {
				seed = []string{m.g.Addr()}
			}
		}
	}
	if err := waitOwned(ctx, members, cfg); err != nil {
		return res, fmt.Errorf("settle: %w", err)
	}
	res.Settle = time.Since(t0)
	for _, m := range members {
		res.MaxOwned = max(res.MaxOwned, len(m.c.Owned()))
	}
	heap1, gr1 := usage()
	n := float64(len(members))
	res.HeapPerEdge, res.GoroutinesPerEdge = (heap1-heap0)/n, float64(gr1-gr0)/n
	return kill(ctx, members, cfg, res)
}

// kill crashes a share of every region's edges at once and times the
// survivors' detection and takeover.
func kill(ctx context.Context, members []*member, cfg Config, res Result) (Result, error) {
	res.Killed = max(1, int(math.Round(cfg.Kill*float64(cfg.Edges))))
	if res.Killed >= cfg.Edges {
		return res, errors.New("controlplane: the kill leaves no survivor")
	}
	var victims []*member
	for r := range cfg.Regions {
		victims = append(victims, members[r*cfg.Edges:r*cfg.Edges+res.Killed]...)
	}
	t0 := time.Now()
	for _, v := range victims {
		v.crash()
	}
	survivors := slices.DeleteFunc(slices.Clone(members), func(m *member) bool { return m.dead })
	want := cfg.Edges - res.Killed
	if !poll.Until(cfg.Settle, func() bool {
		for _, s := range survivors {
			if len(s.g.Names()) != want {
				return false
			}
		}
		return true
	}) {
		return res, errors.New("controlplane: the crashed edges were never detected by every survivor")
	}
	res.Detect = time.Since(t0)
	if err := waitOwned(ctx, survivors, cfg); err != nil {
		return res, fmt.Errorf("takeover: %w", err)
	}
	res.Takeover = time.Since(t0)
	return res, nil
}

// start runs one edge of region with its own gossip member (seeded by the
// region's first) and connection.
func start(sc *supercluster.Cluster, region, name string, seeds []string, lg *slog.Logger) (*member, error) {
	g, err := gossip.Start(gossip.Options{Name: name, Seeds: seeds, Meta: gossip.Meta{Role: "edge", Region: region}, Logger: lg})
	if err != nil {
		return nil, err
	}
	nc, js, err := sc.ConnectAs(region, auth.Edge, nats.Timeout(15*time.Second)) // servers busy with other regions' takeovers answer late
	if err != nil {
		_ = g.Shutdown()
		return nil, err
	}
	c, err := edge.New(js, edge.HandlerFunc(func(context.Context, event.Event) error { return nil }), edge.Options{
		Region: region, Name: name, Membership: g, Window: time.Hour, Logger: lg, Metrics: telemetry.NewMetrics(),
	})
	if err != nil {
		_ = g.Shutdown()
		nc.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &member{region: region, name: name, g: g, c: c, nc: nc, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(m.done); _ = c.Run(ctx) }()
	return m, nil
}

// waitOwned waits until, in every region, the live members own every
// partition exactly once and are ready.
func waitOwned(ctx context.Context, live []*member, cfg Config) error {
	var last string
	ok := poll.Until(cfg.Settle, func() bool {
		if ctx.Err() != nil {
			return true
		}
		owners := map[string]map[int]int{}
		for _, m := range live {
			if owners[m.region] == nil {
				owners[m.region] = map[int]int{}
			}
			for _, p := range m.c.Owned() {
				owners[m.region][p]++
			}
			if err := m.c.Ready(); err != nil {
				last = fmt.Sprintf("%s not ready: %v", m.name, err)
				return false
			}
		}
		for r, ps := range owners {
			if len(ps) != cfg.Partitions {
				last = fmt.Sprintf("%s: %d of %d partitions owned", r, len(ps), cfg.Partitions)
				return false
			}
			for p, n := range ps {
				if n != 1 {
					last = fmt.Sprintf("%s: p%d owned %d times", r, p, n)
					return false
				}
			}
		}
		return len(owners) == cfg.Regions
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("not settled after %v: %s", cfg.Settle, last)
	}
	return nil
}

// usage is the live heap (after a collection) and the goroutine count.
func usage() (float64, int) {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return float64(ms.HeapAlloc), runtime.NumGoroutine()
}

// Table writes results as a Markdown table.
func Table(w io.Writer, rs []Result) {
	fmt.Fprintln(w, "| regions × edges | partitions / region | shards | settle | max owned (fair) | killed / region | detection | takeover | heap / edge | goroutines / edge |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|---|---|---|")
	for _, r := range rs {
		fmt.Fprintf(w, "| %d × %d | %d | %d | %.1f s | %d (%d) | %d | %.2f s | %.2f s | %.1f MiB | %.0f |\n",
			r.Regions, r.Edges, r.Partitions, r.Shards, r.Settle.Seconds(), r.MaxOwned, r.Fair, r.Killed, r.Detect.Seconds(), r.Takeover.Seconds(), r.HeapPerEdge/(1<<20), r.GoroutinesPerEdge)
	}
}
