// Package drill runs failure drills against a region: it starts its own edge
// processes (so it can kill, pause and restart them), drives a load with
// duplicates, injects the failure, and reports when the failure was
// detected, when every partition was owned again, and what the output
// stream and the ledgers say: events lost, duplicate effects, uncertain re-runs.
package drill

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/gossip"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/proc"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

// Config describes where and how hard to drill. The zero value (with
// EdgeBin set) drills an embedded single-node region.
type Config struct {
	// NATS is the region's core URL(s), comma-separated. Empty starts an
	// embedded core node for the drill.
	NATS string
	// Region names the streams. Zero means "local".
	Region string
	// Partitions is used when the drill provisions the streams. Zero means 8.
	Partitions int
	// EdgeBin is the edge binary to run.
	EdgeBin string
	// CoreBin is the core binary, for the "core" drill, which runs its own
	// 3-node region (R3 streams) so that it can kill one node.
	CoreBin string
	// Dir holds logs and ledgers. Empty means a temporary directory.
	Dir string
	// Edges is how many edges run. Zero means 3.
	Edges int
	// Events is the load size. Zero means 20,000.
	Events int
	// Rate paces the load in events per second. Zero means 5,000.
	Rate int
	// Batch is the edges' batch size. Zero means 200.
	Batch int
	// PreloadIDs, when set, claims that many synthetic IDs in every
	// partition's claim log before the edges start, so that a takeover has a
	// realistic window to rebuild.
	PreloadIDs int
	// Logger receives progress. Nil means discard.
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Region == "" {
		c.Region = "local"
	}
	if c.Partitions <= 0 {
		c.Partitions = 8
	}
	if c.Edges <= 0 {
		c.Edges = 3
	}
	if c.Events <= 0 {
		c.Events = 20_000
	}
	if c.Rate <= 0 {
		c.Rate = 5_000
	}
	if c.Batch <= 0 {
		c.Batch = 200
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

type edgeProc struct {
	name, admin, gossip string
	p                   *proc.Proc
}

type harness struct {
	cfg      Config
	names    streams.Names
	parts    int
	js       jetstream.JetStream
	nc       *nats.Conn
	node     *core.Node
	observer *gossip.Cluster
	failed   chan gossip.Event
	edges    map[string]*edgeProc
	cores    *Cores
	url      string
	gen      int
	prefix   string
	ids      []string
	unique   int
	loadDone chan error
	sent     atomic.Int64
	mu       sync.Mutex
}

func newHarness(ctx context.Context, cfg Config, drillName string) (*harness, error) {
	cfg = cfg.withDefaults()
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "onceplane-drill")
		if err != nil {
			return nil, err
		}
		cfg.Dir = d
	}
	h := &harness{cfg: cfg, names: streams.Names{Region: cfg.Region}, edges: map[string]*edgeProc{}, failed: make(chan gossip.Event, 64)}
	url := cfg.NATS
	if drillName == "core" {
		if cfg.CoreBin == "" {
			return nil, fmt.Errorf("the core drill needs the core binary")
		}
		var err error
		if url, err = h.startCores(ctx); err != nil {
			h.close()
			return nil, err
		}
	}
	if url == "" {
		n, err := core.Start(ctx, core.Options{Port: -1, DataDir: filepath.Join(cfg.Dir, "core"), MaxMemory: 256 << 20, MaxStore: 4 << 30, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return nil, err
		}
		h.node, url = n, n.ClientURL()
	}
	nc, err := nats.Connect(url, nats.MaxReconnects(-1))
	if err != nil {
		h.close()
		return nil, fmt.Errorf("drill connect: %w", err)
	}
	h.nc, h.url = nc, url
	h.js, _ = jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if l, err := streams.ReadLayout(ctx, h.js, h.names); err == nil {
		h.parts, h.names.Shards = l.Partitions, l.Shards
	} else {
		if err := streams.Provision(ctx, h.js, streams.Config{Names: h.names, Partitions: cfg.Partitions, IngestDuplicates: -1}); err != nil {
			h.close()
			return nil, err
		}
		h.parts = cfg.Partitions
	}
	if cfg.PreloadIDs > 0 {
		if err := h.preload(ctx, cfg.PreloadIDs); err != nil {
			h.close()
			return nil, err
		}
	}
	if h.observer, err = gossip.Start(gossip.Options{Name: "drill-" + drillName, Meta: gossip.Meta{Role: "drill", Region: cfg.Region}}); err != nil {
		h.close()
		return nil, err
	}
	ev := h.observer.Subscribe()
	go func() {
		for e := range ev {
			if e.Kind == gossip.Failed {
				select {
				case h.failed <- e:
				default:
				}
			}
		}
	}()
	h.prefix = fmt.Sprintf("%s-%d-", drillName, time.Now().UnixNano()%1_000_000_000)
	h.cfg = cfg
	return h, nil
}

func (h *harness) close() {
	for _, e := range h.edges {
		if !e.p.Exited() {
			_ = e.p.Stop(5 * time.Second)
		}
	}
	if h.observer != nil {
		_ = h.observer.Shutdown()
	}
	if h.nc != nil {
		h.nc.Close()
	}
	if h.node != nil {
		h.node.Shutdown()
	}
	if h.cores != nil {
		h.cores.Stop()
	}
}

// startCores runs a 3-node region of core processes with R3 streams and
// returns its client URLs once the streams exist.
func (h *harness) startCores(ctx context.Context) (string, error) {
	c, err := StartCores(ctx, CoreSpec{Bin: h.cfg.CoreBin, Dir: h.cfg.Dir, Region: h.cfg.Region, Nodes: 3, Partitions: h.cfg.Partitions})
	if err != nil {
		return "", err
	}
	h.cores = c
	return c.URL(), nil
}

// startEdge starts (or restarts) edge name, seeded with the observer and
// every running edge.
func (h *harness) startEdge(name string) (*edgeProc, error) {
	ps, err := ports.Free(2)
	if err != nil {
		return nil, err
	}
	seeds := []string{h.observer.Addr()}
	for _, e := range h.edges {
		if !e.p.Exited() {
			seeds = append(seeds, e.gossip)
		}
	}
	e := &edgeProc{name: name, admin: fmt.Sprintf("127.0.0.1:%d", ps[0]), gossip: fmt.Sprintf("127.0.0.1:%d", ps[1])}
	h.gen++
	spec := EdgeSpec{Bin: h.cfg.EdgeBin, Dir: h.cfg.Dir, NATS: h.url, Region: h.cfg.Region, Name: name,
		Gossip: e.gossip, Admin: e.admin, Seeds: seeds, Sinks: "nats,ledger", Batch: h.cfg.Batch,
		StatsFile: filepath.Join(h.cfg.Dir, fmt.Sprintf("%s.%d.stats.json", name, h.gen))}
	if e.p, err = spec.Start(); err != nil {
		return nil, err
	}
	h.edges[name] = e
	h.observer.SetSeeds(append(seeds, e.gossip))
	return e, nil
}

func (h *harness) status(e *edgeProc) (edge.Status, error) { return Status(e.admin) }

// owners returns how many partitions each given edge owns, and whether
// together they own every partition exactly once.
func (h *harness) owners(es []*edgeProc) (map[string]int, bool) {
	counts := map[string]int{}
	seen := map[int]int{}
	for _, e := range es {
		s, err := h.status(e)
		if err != nil {
			counts[e.name+" (status: "+err.Error()+")"] = -1
			return counts, false
		}
		counts[e.name] = len(s.Owned)
		for _, p := range s.Owned {
			seen[p]++
		}
	}
	if len(seen) != h.parts {
		return counts, false
	}
	for _, n := range seen {
		if n != 1 {
			return counts, false
		}
	}
	return counts, true
}

func (h *harness) running() []*edgeProc {
	var out []*edgeProc
	for _, e := range h.edges {
		if !e.p.Exited() {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b *edgeProc) int { return strings.Compare(a.name, b.name) })
	return out
}

// waitOwned polls until es own every partition once; it returns how long that took.
func (h *harness) waitOwned(ctx context.Context, es []*edgeProc, within time.Duration) (time.Duration, map[string]int, error) {
	start := time.Now()
	for {
		counts, ok := h.owners(es)
		if ok {
			return time.Since(start), counts, nil
		}
		if time.Since(start) > within {
			return 0, counts, fmt.Errorf("partitions not all owned by %d edges after %v: %v", len(es), within, counts)
		}
		select {
		case <-ctx.Done():
			return 0, counts, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// startLoad publishes the load at the configured rate in the background.
func (h *harness) startLoad(ctx context.Context) {
	plan := workload.Plan{Events: h.cfg.Events, DupRate: 0.2, Gap: min(h.cfg.Events/10, 2_000), Seed: 5, Prefix: h.prefix}
	h.ids, h.unique = plan.IDs()
	h.loadDone = make(chan error, 1)
	pr := producer.New(h.js, h.cfg.Region)
	go func() {
		chunk := max(h.cfg.Rate/20, 1)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < len(h.ids); i += chunk {
			part := h.ids[i:min(i+chunk, len(h.ids))]
			if err := workload.Publish(ctx, pr, plan, part, chunk, nil); err != nil {
				h.loadDone <- err
				return
			}
			h.sent.Add(int64(len(part)))
			select {
			case <-ctx.Done():
				h.loadDone <- ctx.Err()
				return
			case <-tick.C:
			}
		}
		h.loadDone <- nil
	}()
}

// waitSent blocks until n events of the load are published.
func (h *harness) waitSent(ctx context.Context, n int) error {
	for h.sent.Load() < int64(n) {
		select {
		case err := <-h.loadDone:
			h.loadDone <- err
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// waitDetected returns when the observer saw name fail, measured from t0.
func (h *harness) waitDetected(ctx context.Context, name string, t0 time.Time, within time.Duration) (time.Duration, error) {
	deadline := time.After(within)
	for {
		select {
		case e := <-h.failed:
			if e.Member.Name == name {
				return e.At.Sub(t0), nil
			}
		case <-deadline:
			return 0, fmt.Errorf("%s not declared failed within %v", name, within)
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// finish waits for the load and for every partition to drain, stops the
// edges gracefully and counts what happened.
func (h *harness) finish(ctx context.Context, r *Report) error {
	if err := <-h.loadDone; err != nil {
		return fmt.Errorf("load: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// Bound each request: one sent just before a core node died gets no
		// answer, and the drill's context allows minutes.
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := verify.Drained(dctx, h.js, h.names, h.parts, nil)
		cancel()
		if err == nil && ok {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("region not drained after 2 minutes: %s", h.diagnose(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Stop the edges gracefully: each writes its stats file. Every edge that
	// ran and was not killed has one.
	for _, e := range h.running() {
		_ = e.p.Stop(10 * time.Second)
	}
	files, _ := filepath.Glob(filepath.Join(h.cfg.Dir, "*.stats.json"))
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		var st edge.Stats
		if json.Unmarshal(b, &st) == nil {
			r.Uncertain += st.Uncertain
			r.UncertainReruns += st.UncertainReruns
			r.Fenced += st.Fenced
		}
	}
	octx, cancel := context.WithTimeout(ctx, time.Minute)
	counts, err := verify.OutputCounts(octx, h.js, h.names)
	cancel()
	if err != nil {
		return err
	}
	r.Published, r.Unique = len(h.ids), h.unique
	// Every handler run, line by line, from every edge's ledger (a killed
	// edge's last line may be torn).
	runs := verify.NewRuns()
	for name := range h.edges {
		if err := runs.AddLedger(filepath.Join(h.cfg.Dir, name+".jsonl"), func(id string) bool { return strings.HasPrefix(id, h.prefix) }); err != nil {
			return err
		}
	}
	acct := runs.Account(h.ids)
	seen := map[string]bool{}
	ran := runs.Effects()
	for _, id := range h.ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		switch n := counts[id]; {
		case n == 0 || ran[id] == 0:
			r.Lost++
		case n > 1:
			r.DuplicateEffects += n - 1
		}
	}
	r.DuplicateEffects += acct.Unflagged
	r.ExtraHandlerRuns, r.FlaggedReruns, r.UnexplainedReruns = acct.Extra, acct.Flagged, acct.Extra-acct.Flagged
	r.TornLines = acct.Torn
	return nil
}

// preload appends n synthetic claimed IDs to every partition's claim log,
// 1,000 per record, continuing after whatever the log already holds.
func (h *harness) preload(ctx context.Context, n int) error {
	l, err := claimlog.Open(ctx, h.js, h.names)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make(chan error, h.parts)
	for p := 0; p < h.parts; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			last, err := l.LastSeq(ctx, p)
			if err != nil {
				errs <- err
				return
			}
			ids := make([]event.Hash, 1000)
			for k := 0; k < n; k += len(ids) {
				for j := range ids {
					ids[j] = event.HashID(fmt.Sprintf("preload-%d-%d", p, k+j))
				}
				rec := dedupe.Record{Kind: dedupe.KindClaim, Writer: "drill-preload", Time: time.Now(), IDs: ids, DoneThrough: last}
				if last, err = l.Append(ctx, p, last, rec); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// diagnose describes the ingest consumers and the edges' ownership, for a
// drill that did not drain.
func (h *harness) diagnose(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var b strings.Builder
	if s, err := h.js.Stream(ctx, h.names.IngestStream()); err == nil {
		l := s.ListConsumers(ctx)
		for ci := range l.Info() {
			fmt.Fprintf(&b, "[%s pending=%d ackpending=%d waiting=%d ackfloor=%d] ", ci.Name, ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.AckFloor.Stream)
		}
	}
	for _, e := range h.running() {
		if st, err := h.status(e); err == nil {
			fmt.Fprintf(&b, "[%s owns %v fenced=%d] ", e.name, st.Owned, st.Stats.Fenced)
		}
	}
	return b.String()
}
