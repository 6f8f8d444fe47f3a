package campaign

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/drill"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/proc"
	"github.com/onceplane/onceplane/testbed/wan"
)

// edgeNode is one edge process, its link to the core and what it runs with.
type edgeNode struct {
	idx  int
	spec drill.EdgeSpec // Extra is rebuilt at every start
	link *wan.Link

	mu     sync.Mutex // guards the fields below; held while the process is replaced
	p      *proc.Proc
	gen    int
	chaos  ChaosRates
	offset time.Duration
	// held is set while the campaign keeps the process down or replaces
	// it, so the crash watcher leaves it alone.
	held bool
	// logOff is the log's size when the process started: what it wrote
	// since starts there.
	logOff int64
	// retryAt is when the crash watcher may start it again.
	retryAt time.Time
}

// region is the campaign's region: core processes, one WAN link per edge,
// edge processes, and the campaign's own connection (straight to the core).
type region struct {
	cfg   Config
	log   *slog.Logger
	start time.Time
	names streams.Names
	cores *drill.Cores
	edges []*edgeNode
	nc    *nats.Conn
	js    jetstream.JetStream

	mu       sync.Mutex
	coreHeld []bool
	faults   []Injected
	crashes  []Crash
	errs     []error
	// startFailed counts, by the error logged, edge processes that exited
	// before owning any partition (a core out of reach at start: the edge
	// exits and a supervisor starts it again).
	startFailed map[string]int
}

// regionSpec says which region to start: its name, the other regions, and
// its core nodes when they were started already (joined to the other
// regions by gateways); nil cores means a region on its own, started here.
type regionSpec struct {
	name  string
	peers []string
	cores *drill.Cores
	// offset is the clock offset every edge of the region starts with.
	offset time.Duration
}

func startRegion(ctx context.Context, cfg Config, spec regionSpec) (*region, error) {
	if spec.name == "" {
		spec.name = "local"
	}
	r := &region{cfg: cfg, log: cfg.Logger, names: streams.Names{Region: spec.name}, coreHeld: make([]bool, cfg.Cores), startFailed: map[string]int{}}
	r.cores = spec.cores
	if r.cores == nil {
		var err error
		r.cores, err = drill.StartCores(ctx, drill.CoreSpec{Bin: cfg.CoreBin, Dir: cfg.Dir, Region: spec.name, Nodes: cfg.Cores, Partitions: cfg.Partitions, Window: cfg.Window})
		if err != nil {
			return nil, fmt.Errorf("campaign: %w", err)
		}
	}
	r.names = r.cores.Names()
	var err error
	r.nc, err = nats.Connect(r.cores.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { r.log.Debug("campaign connection", "err", err) }))
	if err != nil {
		r.close()
		return nil, fmt.Errorf("campaign: connect: %w", err)
	}
	if r.js, err = jetstream.New(r.nc, jetstream.WithPublishAsyncTimeout(5*time.Second)); err != nil {
		r.close()
		return nil, fmt.Errorf("campaign: %w", err)
	}
	ps, err := ports.Free(2 * cfg.Edges)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("campaign: %w", err)
	}
	var gossips []string
	for i := 0; i < cfg.Edges; i++ {
		gossips = append(gossips, fmt.Sprintf("127.0.0.1:%d", ps[2*i+1]))
	}
	linkLog := slog.New(slog.DiscardHandler)
	sinks := "chaos,ledger"
	if cfg.ChaosLast {
		sinks = "ledger,chaos"
	}
	for i := 0; i < cfg.Edges; i++ {
		name := fmt.Sprintf("edge-%d", i)
		// One link per edge: a fault cuts one edge's connection alone. In a
		// 3-node region the link dials the nodes in order until one answers.
		l, err := wan.Listen(wan.LinkOptions{Name: name, Targets: r.cores.Addrs, Logger: linkLog, DialTimeout: time.Second,
			Delay: cfg.LinkDelay, Seed: int64(cfg.Seed) + int64(i)})
		if err != nil {
			r.close()
			return nil, fmt.Errorf("campaign: %w", err)
		}
		var seeds []string
		for j, g := range gossips {
			if j != i {
				seeds = append(seeds, g)
			}
		}
		n := &edgeNode{idx: i, link: l, chaos: cfg.Chaos, offset: spec.offset, spec: drill.EdgeSpec{
			Bin: cfg.EdgeBin, Dir: cfg.Dir, NATS: "nats://" + l.Addr(), Name: name, Region: spec.name, Peers: spec.peers,
			Gossip: gossips[i], Admin: fmt.Sprintf("127.0.0.1:%d", ps[2*i]), Seeds: seeds,
			Sinks: sinks, Batch: cfg.Batch,
		}}
		r.edges = append(r.edges, n)
		n.mu.Lock()
		err = r.startEdge(n)
		n.mu.Unlock()
		if err != nil {
			r.close()
			return nil, err
		}
	}
	return r, nil
}

// startEdge starts n's process with its current rates and clock offset.
// The caller holds n.mu.
func (r *region) startEdge(n *edgeNode) error {
	n.gen++
	s := n.spec
	s.StatsFile = fmt.Sprintf("%s/%s.%d.stats.json", r.cfg.Dir, s.Name, n.gen)
	s.Extra = []string{
		"-chaos-fail", fmt.Sprint(n.chaos.Fail), "-chaos-hang", fmt.Sprint(n.chaos.Hang),
		"-chaos-panic", fmt.Sprint(n.chaos.Panic), "-chaos-hang-max", n.chaos.HangMax.String(),
		"-chaos-seed", fmt.Sprint(r.cfg.Seed*1_000_003 + uint64(n.idx)*1_009 + uint64(n.gen)),
	}
	if n.offset != 0 {
		s.Extra = append(s.Extra, "-test-clock-offset", n.offset.String())
	}
	n.logOff = 0
	if fi, err := os.Stat(s.Log()); err == nil {
		n.logOff = fi.Size()
	}
	p, err := s.Start()
	if err != nil {
		return fmt.Errorf("campaign: start %s: %w", s.Name, err)
	}
	n.p = p
	return nil
}

// startFailure reads what n's exited process logged since it started: when
// it never owned a partition, it returns the last error it logged (it failed
// to start: a core out of reach) and true.
func startFailure(n *edgeNode) (string, bool) {
	f, err := os.Open(n.spec.Log())
	if err != nil {
		return "", false
	}
	defer f.Close()
	b := make([]byte, 1<<20)
	k, _ := f.ReadAt(b, n.logOff)
	out := string(b[:k])
	if strings.Contains(out, `msg="partition owned"`) {
		return "", false
	}
	why := "exited"
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "level=ERROR "); i >= 0 {
			why = line[i+len("level=ERROR "):]
		}
	}
	return strings.ReplaceAll(clip(why), n.spec.Name, "<edge>"), true
}

// stopEdge stops n's process: SIGTERM with a grace, or SIGKILL. The caller holds n.mu.
func stopEdge(n *edgeNode, graceful bool) {
	if n.p.Exited() {
		return
	}
	if graceful {
		_ = n.p.Resume() // a stopped process cannot handle SIGTERM
		_ = n.p.Stop(10 * time.Second)
		return
	}
	n.p.Kill9()
}

func (r *region) close() {
	for _, n := range r.edges {
		n.mu.Lock()
		if n.p != nil && !n.p.Exited() {
			_ = n.p.Resume()
			_ = n.p.Stop(10 * time.Second)
		}
		n.mu.Unlock()
		_ = n.link.Close()
	}
	if r.nc != nil {
		r.nc.Close()
	}
	if r.cores != nil {
		r.cores.Stop()
	}
}

func (r *region) since() time.Duration { return time.Since(r.start) }

func (r *region) record(in Injected) {
	r.mu.Lock()
	r.faults = append(r.faults, in)
	r.mu.Unlock()
	r.log.Info("fault", "at", in.At.Round(time.Millisecond), "kind", in.Kind, "target", in.Target, "detail", in.Detail)
}

func (r *region) fail(err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	r.log.Warn("campaign error", "err", err)
}

func (r *region) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// affected is how many partitions a fault of n can leave work in flight in:
// those n owns, plus one that an acquisition racing this look-up may add, at
// most all of them; all of them when n does not answer.
func (r *region) affected(n *edgeNode) int {
	st, err := drill.Status(n.spec.Admin)
	if err != nil {
		return r.cfg.Partitions
	}
	return min(len(st.Owned)+1, r.cfg.Partitions)
}

// waitOwned polls until the running edges own every partition once.
func (r *region) waitOwned(ctx context.Context, within time.Duration) error {
	var last string
	ok := poll.Until(within, func() bool {
		if ctx.Err() != nil {
			return true
		}
		seen := map[int]int{}
		var b strings.Builder
		for _, n := range r.edges {
			st, err := drill.Status(n.spec.Admin)
			if err != nil {
				fmt.Fprintf(&b, "%s: %v; ", n.spec.Name, err)
				continue
			}
			fmt.Fprintf(&b, "%s owns %v; ", n.spec.Name, st.Owned)
			for _, p := range st.Owned {
				seen[p]++
			}
		}
		last = b.String()
		if len(seen) != r.cfg.Partitions {
			return false
		}
		for _, c := range seen {
			if c != 1 {
				return false
			}
		}
		return true
	})
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if !ok {
		return fmt.Errorf("campaign: partitions not all owned after %v: %s", within, last)
	}
	return nil
}

// inject runs one fault to its end: the hold ends early when stop ends, and
// whatever the fault did is undone before it returns.
func (r *region) inject(ctx, stop context.Context, load *load, f Fault) error {
	at := r.since()
	if f.Kind == FaultHostile {
		n := load.hostile(ctx, f)
		r.record(Injected{At: at, Kind: f.Kind, Target: "producer", Strikes: n, Detail: fmt.Sprintf("%d × %s acked", n, f.Hostile)})
		return nil
	}
	if f.Kind == FaultCore {
		return r.restartCore(ctx, stop, f, at)
	}
	n := r.edges[f.Target]
	name := n.spec.Name
	r.running(n)
	switch f.Kind {
	case FaultKill:
		aff := r.affected(n)
		n.mu.Lock()
		n.held = true
		n.p.Kill9()
		n.mu.Unlock()
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff, Strikes: 1, Detail: fmt.Sprintf("down %v", f.Hold.Round(time.Millisecond))})
		_ = poll.Sleep(stop, f.Hold)
		return r.restart(n, false, nil)
	case FaultPause:
		aff := r.affected(n)
		n.mu.Lock()
		n.held = true
		err := n.p.Pause()
		exited := n.p.Exited()
		if err != nil {
			n.held = false
		}
		n.mu.Unlock()
		if err != nil && exited {
			r.log.Info("fault skipped: the edge exited by itself just before", "fault", f.String())
			return nil // the crash watcher starts it again
		}
		if err != nil {
			return fmt.Errorf("pause %s: %w", name, err)
		}
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff, Strikes: 1, Detail: fmt.Sprintf("stopped %v", f.Hold.Round(time.Millisecond))})
		_ = poll.Sleep(stop, f.Hold)
		n.mu.Lock()
		defer n.mu.Unlock()
		n.held = false
		if err := n.p.Resume(); err != nil && !n.p.Exited() {
			return fmt.Errorf("resume %s: %w", name, err)
		}
		return nil
	case FaultCut:
		aff := r.affected(n)
		n.link.Cut()
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff, Strikes: 1, Detail: fmt.Sprintf("cut %v", f.Hold.Round(time.Millisecond))})
		_ = poll.Sleep(stop, f.Hold)
		n.link.Heal()
		return nil
	case FaultFlap:
		aff := r.affected(n)
		cuts := r.flap(stop, n, f)
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff * cuts, Strikes: cuts, Detail: fmt.Sprintf("%d cuts in %v", cuts, f.Hold.Round(time.Millisecond))})
		return nil
	case FaultFlapKill:
		aff := r.affected(n)
		var cuts int
		done := make(chan struct{})
		go func() { defer close(done); cuts = r.flap(stop, n, f) }()
		var err error
		if poll.Sleep(stop, f.KillAt) == nil {
			kaff := r.affected(n)
			n.mu.Lock()
			n.held = true
			n.p.Kill9()
			n.mu.Unlock()
			r.record(Injected{At: r.since(), Kind: FaultKill, Target: name, Affected: kaff, Strikes: 1, Detail: fmt.Sprintf("down %v, in a flap", f.Down.Round(time.Millisecond))})
			_ = poll.Sleep(stop, f.Down)
			err = r.restart(n, false, nil)
		}
		<-done
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff * cuts, Strikes: cuts, Detail: fmt.Sprintf("%d cuts in %v", cuts, f.Hold.Round(time.Millisecond))})
		return err
	case FaultSkew:
		aff := r.affected(n)
		how := "SIGKILL"
		if f.Graceful {
			how = "SIGTERM"
		}
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff, Strikes: 1, Detail: fmt.Sprintf("restarted (%s) with clock offset %v", how, f.Offset)})
		return r.restart(n, f.Graceful, func(n *edgeNode) { n.offset = f.Offset })
	case FaultSink:
		aff := r.affected(n)
		n.mu.Lock()
		base := n.chaos
		n.mu.Unlock()
		r.record(Injected{At: at, Kind: f.Kind, Target: name, Affected: aff, Strikes: 1,
			Detail: fmt.Sprintf("fail %.2f hang %.3f panic %.3f for %v", f.Fail, f.Hang, f.Panic, f.Hold.Round(time.Millisecond))})
		if err := r.restart(n, true, func(n *edgeNode) {
			n.chaos = ChaosRates{Fail: f.Fail, Hang: f.Hang, Panic: f.Panic, HangMax: base.HangMax}
		}); err != nil {
			return err
		}
		_ = poll.Sleep(stop, f.Hold)
		return r.restart(n, true, func(n *edgeNode) { n.chaos = base })
	}
	return fmt.Errorf("unknown fault kind %q", f.Kind)
}

// restart replaces n's process (stopping it first unless it is down),
// applying change to what it runs with.
func (r *region) restart(n *edgeNode, graceful bool, change func(*edgeNode)) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.held = true
	stopEdge(n, graceful)
	if change != nil {
		change(n)
	}
	err := r.startEdge(n)
	n.held = false
	return err
}

// flap cuts n's link every 400 ms for 20–150 ms until f.Hold has passed or
// stop ends, and returns how many cuts it made. Meanwhile the link's delay
// is 5–25 ms, so that each cut swallows the answers in flight (a pull's
// first answer to a fresh consumer among them) while the edge can still
// reconnect and work between cuts.
func (r *region) flap(stop context.Context, n *edgeNode, f Fault) int {
	rng := newRand(f.Seed)
	n.link.SetDelay(5*time.Millisecond+time.Duration(rng.Int64N(int64(20*time.Millisecond))), 0)
	defer n.link.SetDelay(r.cfg.LinkDelay, 0)
	end := time.Now().Add(f.Hold)
	cuts := 0
	for time.Now().Before(end) && stop.Err() == nil {
		tick := time.Now()
		n.link.Cut()
		cuts++
		_ = poll.Sleep(stop, 20*time.Millisecond+time.Duration(rng.Int64N(int64(130*time.Millisecond))))
		n.link.Heal()
		_ = poll.Sleep(stop, time.Until(tick.Add(400*time.Millisecond)))
	}
	n.link.Heal()
	return cuts
}

// restartCore kills a core node, keeps it down for f.Hold (or until stop)
// and starts it again on its data directory.
func (r *region) restartCore(ctx, stop context.Context, f Fault, at time.Duration) error {
	i := f.Target
	r.mu.Lock()
	r.coreHeld[i] = true
	r.mu.Unlock()
	r.cores.Procs[i].Kill9()
	r.record(Injected{At: at, Kind: FaultCore, Target: fmt.Sprintf("core-%d", i), Affected: r.cfg.Partitions, Strikes: 1, Detail: fmt.Sprintf("down %v", f.Hold.Round(time.Millisecond))})
	_ = poll.Sleep(stop, f.Hold)
	defer func() {
		r.mu.Lock()
		r.coreHeld[i] = false
		r.mu.Unlock()
	}()
	if err := r.cores.Restart(i); err != nil {
		return err
	}
	// Back when the streams answer again (bounded: the fault ends either way).
	if err := r.cores.WaitStreams(ctx, 30*time.Second); err != nil {
		r.log.Warn("core restarted but the streams do not answer yet", "core", i, "err", err)
	}
	return nil
}

// watchCrashes restarts, and records, any process that exits while the
// campaign did not stop it. The returned function stops watching.
func (r *region) watchCrashes() func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for poll.Sleep(ctx, 250*time.Millisecond) == nil {
			for _, n := range r.edges {
				n.mu.Lock()
				if !n.held && n.p.Exited() && time.Now().After(n.retryAt) {
					r.revive(n)
				}
				n.mu.Unlock()
			}
			for i, p := range r.cores.Procs {
				r.mu.Lock()
				held := r.coreHeld[i]
				r.mu.Unlock()
				if !held && p.Exited() {
					r.crashed(p.Name, p.Log)
					if err := r.cores.Restart(i); err != nil {
						r.fail(err)
					}
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// revive starts n again after its process exited by itself, recording
// why: a failed start (it never owned a partition: the edge exits when the
// core is out of reach at start, and a supervisor starts it again) or a
// crash. The caller holds n.mu.
func (r *region) revive(n *edgeNode) {
	if why, ok := startFailure(n); ok {
		r.mu.Lock()
		r.startFailed[why]++
		r.mu.Unlock()
	} else {
		r.crashed(n.spec.Name, n.p.Log)
	}
	if err := r.startEdge(n); err != nil {
		r.fail(err)
	}
	n.retryAt = time.Now().Add(500 * time.Millisecond)
}

// running makes sure n has a live process before a fault strikes it.
func (r *region) running(n *edgeNode) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.p.Exited() {
		r.revive(n)
	}
}

func (r *region) crashed(name, logPath string) {
	tail := ""
	if b, err := os.ReadFile(logPath); err == nil {
		tail = string(b[max(0, len(b)-1500):])
	}
	r.mu.Lock()
	r.crashes = append(r.crashes, Crash{At: r.since(), Process: name, Tail: tail})
	r.faults = append(r.faults, Injected{At: r.since(), Kind: FaultCrash, Target: name, Affected: r.cfg.Partitions, Strikes: 1})
	r.mu.Unlock()
	r.log.Warn("process exited by itself; restarted", "process", name)
}

// bypassed lists the edges with no live connection through their link: in
// a 3-node region a client can learn the nodes' own addresses from the
// cluster and reconnect around the link, out of the cuts' reach.
func (r *region) bypassed() []string {
	var out []string
	for _, n := range r.edges {
		if n.link.Stats().Conns == 0 {
			out = append(out, n.spec.Name)
		}
	}
	return out
}
