package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/failover"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// Membership is the live view of the edges of a region (gossip.Cluster
// implements it). The edge's Options.Name must be its member name.
type Membership interface {
	// Names returns the live members, this edge included.
	Names() []string
	// Changes receives a value after membership changes (coalesced).
	Changes() <-chan struct{}
}

// OwnershipEvent reports a partition ownership change, for drills and reports.
type OwnershipEvent struct {
	Partition int
	// Change is "acquired", "released", "fenced" or "failed".
	Change string
	At     time.Time
	// Took is, for "acquired", the time from deciding to own to consuming
	// (replay of the claim log, fencing append, consumer creation).
	Took      time.Duration
	Epoch     uint64
	Uncertain int
	Tracked   int
	// Error says why, for "fenced" and "failed".
	Error string `json:",omitempty"`
	// Phases are, for "acquired", the takeover's phases in order: rebuild
	// (claim-log replay), fence (takeover record), merge (other regions'
	// claims, asynchronous mode only), resume (consumer).
	Phases []TakeoverPhase `json:",omitempty"`
}

// TakeoverPhase is one timed phase of a takeover.
type TakeoverPhase struct {
	Name       string
	Start, End time.Time
}

// Status is an edge's /status document: what it owns, its totals, its view
// of the membership and its recent ownership changes.
type Status struct {
	Name      string           `json:"name"`
	Owned     []int            `json:"owned"`
	Stats     Stats            `json:"stats"`
	Members   []string         `json:"members,omitempty"`
	Ownership []OwnershipEvent `json:"ownership"`
}

type partRun struct {
	release   chan struct{}
	cancel    context.CancelFunc
	done      chan struct{}
	releasing bool // handed over: still running until its batch in hand is done
}

func (c *Consumer) notify(e OwnershipEvent) {
	if c.o.OnOwnership != nil {
		c.o.OnOwnership(e)
	}
}

// Run owns partitions until ctx ends: the configured ones, or, with
// Options.Membership, those failover.Assign gives this edge, following
// membership changes (acquire on join/failure, graceful release to a new
// owner). A partition that is fenced or fails stops alone. When ctx ends,
// every partition is released gracefully (the batch in hand finishes and is
// recorded done) within Options.ShutdownGrace.
func (c *Consumer) Run(ctx context.Context) error {
	set, l, err := c.open(ctx)
	if err != nil {
		return fmt.Errorf("edge %s: %w", c.o.Name, err)
	}
	if err := c.o.check(set); err != nil {
		return fmt.Errorf("edge %s: %w", c.o.Name, err)
	}
	n := set.Partitions
	c.mu.Lock()
	c.nparts, c.log, c.maxMsg = n, l, int(set.MaxMsgSize)
	c.mu.Unlock()
	defer c.releaseAll()
	go c.watchStuck(ctx)
	if c.o.IsolatedAfter > 0 {
		go c.watchIsolation(ctx)
	}
	if c.tailOn() {
		go c.watchPeers(ctx)
	}
	if c.followsHomes() {
		for b := poll.Backoff(100*time.Millisecond, 5*time.Second); ; {
			err := c.readHomes(ctx)
			if err == nil {
				break
			}
			c.lg.Warn("reading the region's home partitions", "err", err)
			if poll.Sleep(ctx, b.NextBackOff()) != nil {
				return nil
			}
		}
		go c.watchHomes(ctx)
	}
	if c.o.Membership == nil {
		return c.hold(ctx, n)
	}
	return c.follow(ctx, n)
}

// open reads the region's stream settings and binds the claim log, waiting
// for a core that is still starting or out of reach (and for streams not yet
// provisioned) until ctx ends, as a supervisor restarting the edge would.
func (c *Consumer) open(ctx context.Context) (streams.Settings, *claimlog.Log, error) {
	waiting := false
	for b := poll.Backoff(100*time.Millisecond, 5*time.Second); ; {
		set, l, err := c.openOnce(ctx)
		if err == nil {
			return set, l, nil
		}
		if ctx.Err() != nil {
			return streams.Settings{}, nil, err
		}
		if errors.Is(err, errAwaitingFailover) {
			// A failover edge standing by: it looks twice a second, so it
			// takes over within a second of the declaration.
			if !waiting {
				c.lg.Info("standing by: the region is not failed over here", "region", c.o.Region, "host", c.o.Host)
				waiting = true
			}
			if poll.Sleep(ctx, 500*time.Millisecond) != nil {
				return streams.Settings{}, nil, err
			}
			continue
		}
		wait := b.NextBackOff()
		c.lg.Warn("region's streams not usable yet; retrying", "err", err, "in", wait)
		if poll.Sleep(ctx, wait) != nil {
			return streams.Settings{}, nil, err
		}
	}
}

// errAwaitingFailover is a failover edge's open before the region is
// failed over to its host: it stands by.
var errAwaitingFailover = errors.New("not failed over")

// openAttempt bounds one attempt of open: a reply lost while the streams
// change (a failback remaking the claim log) must not hold the edge for as
// long as its caller's deadline.
const openAttempt = 10 * time.Second

// openOnce is one attempt of open.
func (c *Consumer) openOnce(ctx context.Context) (streams.Settings, *claimlog.Log, error) {
	ctx, cancel := context.WithTimeout(ctx, openAttempt)
	defer cancel()
	if c.o.Standby != "" && c.o.Host == "" {
		host, err := streams.FailedOverTo(ctx, c.js, c.names, []string{c.o.Standby})
		switch {
		case err != nil:
			return streams.Settings{}, nil, fmt.Errorf("asking standby %s: %w", c.o.Standby, err)
		case host != "":
			return streams.Settings{}, nil, fmt.Errorf("region %s failed over to %s: its edges own nothing until `core region-failback`", c.o.Region, host)
		}
	}
	if c.o.Host != "" {
		// A failover edge owns nothing until the region is failed over
		// here (`core region-failover`, or the standby's automatic
		// declaration, regionwatch), and nothing after the failback.
		host, err := streams.FailedOverTo(ctx, c.js, c.names, []string{c.o.Host})
		switch {
		case err != nil:
			return streams.Settings{}, nil, fmt.Errorf("asking %s whether %s is failed over: %w", c.o.Host, c.o.Region, err)
		case host == "":
			return streams.Settings{}, nil, fmt.Errorf("%w: %s to %s", errAwaitingFailover, c.o.Region, c.o.Host)
		}
	}
	set, err := c.settings(ctx)
	if err != nil {
		return set, nil, err
	}
	c.names.Shards = set.Shards
	var l *claimlog.Log
	if c.o.Host != "" && c.o.Strict {
		claims, homes, err := streams.PromotedLast(ctx, c.js, c.here, c.o.Region, set.Shards)
		if err != nil {
			return set, nil, err
		}
		c.promoted = &promotedCopies{claims: claims, homes: homes}
	}
	if c.o.Host != "" {
		l, err = claimlog.OpenFailover(ctx, c.js, c.here, c.names)
	} else {
		l, err = claimlog.Open(ctx, c.js, c.names)
	}
	switch {
	case err != nil:
		return set, nil, err
	case l.FencedBy() != "":
		// A failover ran this region's partitions elsewhere: the log
		// continues there until the region fails back.
		return set, nil, fmt.Errorf("region %s failed over to %s: its edges own nothing until `core region-failback`", c.o.Region, l.FencedBy())
	}
	l.Foreign = func(p int, seq uint64) { c.foreign("claims", p, seq) }
	return set, l, nil
}

// settings reads the region's stream settings: from its own streams, or
// after a failover from Options.Host's standby claim streams of it (with
// Host's own layout, for its xclaims and claim streams).
func (c *Consumer) settings(ctx context.Context) (streams.Settings, error) {
	if c.o.Host == "" {
		return streams.ReadSettings(ctx, c.js, c.names)
	}
	l, err := streams.ReadLayout(ctx, c.js, c.here)
	if err != nil {
		return streams.Settings{}, err
	}
	c.here.Shards = l.Shards
	return streams.ReadFailoverSettings(ctx, c.js, c.here, c.o.Region)
}

// check refuses options the region's streams cannot honour.
func (o Options) check(set streams.Settings) error {
	for _, p := range o.Partitions {
		if p < 0 || p >= set.Partitions {
			return fmt.Errorf("partition %d out of range [0,%d)", p, set.Partitions)
		}
	}
	if o.Window != set.Window {
		// A longer edge window lets claim records age out before their IDs
		// (a re-send after a takeover is handled again); a shorter one
		// forgets IDs the region promises to remember.
		return fmt.Errorf("window %v differs from the streams' %v: set the edge's window to the core's", o.Window, set.Window)
	}
	if max := dedupe.MaxBatch(int(set.MaxMsgSize)); o.BatchSize > max {
		return fmt.Errorf("batch %d: a claim record of that many IDs would not fit the claim stream's %d-byte messages (at most %d)", o.BatchSize, set.MaxMsgSize, max)
	}
	return nil
}

// watchStuck keeps the stuck_partitions gauge current.
func (c *Consumer) watchStuck(ctx context.Context) {
	g := c.o.Metrics.StuckPartitions.WithLabelValues(c.o.Region, c.o.Name)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		g.Set(float64(len(c.stuck())))
		select {
		case <-ctx.Done():
			g.Set(0)
			return
		case <-t.C:
		}
	}
}

// hold owns a static set of partitions: all at once, then again after any
// that failed (a core unreachable, a consumer create timing out across the
// WAN), a second later, doubling while it keeps failing (the planner's
// backoff); one that was fenced is taken back, after the planner's
// refence wait, once its other owner is no longer consuming (a stale run of
// this edge, a restarted core that lost the consumer): statically it is
// this edge's, and a second edge configured for it is a mistake that must
// not stop it for good.
func (c *Consumer) hold(ctx context.Context, n int) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	pl := &failover.Planner{Self: c.o.Name, N: n, RefenceDelay: c.o.RefenceDelay}
	self := []string{c.o.Name}
	var handed []int
	for {
		pl.Parts = c.parts()
		s := pl.Step(failover.Observed{Now: time.Now(), Members: self, Have: c.owned(), Fenced: c.takeFenced(), Handed: handed, Failed: c.takeFailed()})
		c.forget(s.Want)
		for _, p := range s.Release { // a home moved away
			go c.releaseOne(p)
		}
		for _, p := range append(s.Take, s.Handoff...) { // nobody to hand over from
			c.acquire(p)
		}
		handed = s.Handoff // done at once: a failed one is planned again next step
		for _, p := range s.Retake {
			if !c.ownerActive(ctx, p) {
				c.lg.Warn("retaking a statically owned partition that was fenced", "partition", p)
				c.acquire(p)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// follow keeps this edge's partitions equal to its share of the membership:
// at each change of view (and every second) it asks its failover.Planner
// what to do and does it.
func (c *Consumer) follow(ctx context.Context, n int) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// A handover (below) ends by HandoffDelay + ShutdownGrace: until then
	// the planner leaves its partition to it.
	pl := &failover.Planner{Self: c.o.Name, N: n, RefenceDelay: c.o.RefenceDelay,
		HandoffWait: c.o.HandoffDelay + c.o.ShutdownGrace + time.Second}
	for {
		pl.Parts = c.parts()
		s := pl.Step(failover.Observed{Now: time.Now(), Members: c.o.Membership.Names(), Have: c.owned(), Fenced: c.takeFenced(), Handed: c.takeHanded(), Failed: c.takeFailed()})
		c.forget(s.Want)
		// Releases finish their batch in hand: run them aside so that taking
		// over a dead owner's partitions never waits for them.
		for _, p := range s.Release {
			go c.releaseOne(p)
		}
		for _, p := range s.Take {
			c.acquire(p)
		}
		for _, p := range s.Retake {
			if !c.ownerActive(ctx, p) { // its other owner is consuming: leave it
				c.acquire(p)
			}
		}
		for _, p := range s.Handoff {
			go c.handover(ctx, n, p)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.o.Membership.Changes():
		case <-tick.C:
		}
	}
}

// handover takes p from a live previous owner: after HandoffDelay, once
// that owner has let go (its consumer has no pull waiting: it finished its
// batch in hand, recorded it done and deleted its consumer) and the view
// has held still for HandoffDelay (while members are still joining, as
// when a region's edges start together, the share it computes keeps
// moving: taking and releasing partitions on every passing view would load
// the cores for nothing), or after ShutdownGrace, the longest a release may
// take. Taking it earlier would fence the owner mid-batch and leave that
// batch uncertain.
func (c *Consumer) handover(ctx context.Context, n, p int) {
	view, still := sortedNames(c.o.Membership), time.Now()
	if poll.Sleep(ctx, c.o.HandoffDelay) != nil {
		return
	}
	deadline := time.Now().Add(c.o.ShutdownGrace)
	for time.Now().Before(deadline) {
		if v := sortedNames(c.o.Membership); !slices.Equal(v, view) {
			view, still = v, time.Now()
		}
		if time.Since(still) >= c.o.HandoffDelay && !c.ownerActive(ctx, p) {
			break
		}
		if poll.Sleep(ctx, namesTTL) != nil {
			return
		}
	}
	if slices.Contains(failover.OwnedSome(sortedNames(c.o.Membership), n, c.parts(), c.o.Name), p) {
		c.acquire(p)
	}
	c.mu.Lock()
	c.handed = append(c.handed, p)
	c.mu.Unlock()
}

// takeFailed returns and forgets the partitions whose run failed since the
// last call.
func (c *Consumer) takeFailed() map[int]time.Time {
	return take(&c.mu, &c.failed, map[int]time.Time{})
}

// takeHanded returns and forgets the partitions whose handover ended since
// the last call.
func (c *Consumer) takeHanded() []int {
	return take(&c.mu, &c.handed, nil)
}

func sortedNames(m Membership) []string {
	ns := m.Names()
	slices.Sort(ns)
	return ns
}

// owned returns the partitions with a running owner goroutine that is not
// being handed over.
func (c *Consumer) owned() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []int
	for p, r := range c.runs {
		if !r.releasing {
			ps = append(ps, p)
		}
	}
	slices.Sort(ps)
	return ps
}

// takeFenced returns and forgets the partitions fenced since the last call.
func (c *Consumer) takeFenced() map[int]time.Time {
	return take(&c.mu, &c.fenced, map[int]time.Time{})
}

// take returns *v and sets it to empty, under mu: what happened since the
// planner's last step, handed to its next.
func take[T any](mu *sync.Mutex, v *T, empty T) T {
	mu.Lock()
	defer mu.Unlock()
	out := *v
	*v = empty
	return out
}

// forget drops what this edge remembers of partitions membership no longer
// gives it and that it does not run (fenced, failed): they are another
// edge's business now and must not hold this edge's readiness down.
func (c *Consumer) forget(want []int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for p := range c.state {
		if _, running := c.runs[p]; !running && !slices.Contains(want, p) {
			delete(c.state, p)
		}
	}
}

// acquire starts owning p unless it already does.
func (c *Consumer) acquire(p int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.runs == nil {
		c.runs = map[int]*partRun{}
	}
	if _, ok := c.runs[p]; ok {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &partRun{release: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	c.runs[p] = r
	c.state[p] = partState{phase: takingOver}
	go func() {
		defer close(r.done)
		defer cancel()
		err := c.own(ctx, p, r.release)
		c.idle(p)
		now := time.Now()
		// Only the partition's current run says what became of it: a run
		// handed over (and any newer run of the same partition) must not be
		// overwritten by an older run's exit.
		c.mu.Lock()
		current := c.runs[p] == r
		if current {
			delete(c.runs, p)
		}
		c.mu.Unlock()
		switch {
		case err == nil || ctx.Err() != nil:
			if current {
				c.mu.Lock()
				delete(c.state, p)
				c.mu.Unlock()
			}
			c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "released").Inc()
			c.notify(OwnershipEvent{Partition: p, Change: "released", At: now})
		case errors.Is(err, ErrFenced):
			c.c.fenced.add(1)
			if current {
				c.mu.Lock()
				c.fenced[p] = now
				c.state[p] = partState{phase: fenced}
				c.mu.Unlock()
			}
			c.notify(OwnershipEvent{Partition: p, Change: "fenced", At: now, Error: err.Error()})
			c.lg.Warn("partition fenced by a newer owner; stopped", "partition", p, "err", err)
		default:
			if current {
				c.setState(p, partState{phase: failed, err: err})
				c.mu.Lock()
				c.failed[p] = now
				c.mu.Unlock()
			}
			c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "failed").Inc()
			c.notify(OwnershipEvent{Partition: p, Change: "failed", At: now, Error: err.Error()})
			c.lg.Error("partition stopped", "partition", p, "err", err)
		}
	}()
}

// releaseOne hands p over gracefully, cancelling it after ShutdownGrace. The
// run stays this edge's until it has ended, so the partition is not taken
// again (by this edge) while its batch in hand is still being handled.
func (c *Consumer) releaseOne(p int) {
	c.mu.Lock()
	r, ok := c.runs[p]
	if ok && !r.releasing {
		r.releasing = true
		c.state[p] = partState{phase: releasing}
		close(r.release)
	} else {
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	if !c.wait(r.done, c.o.ShutdownGrace) {
		r.cancel()
		if !c.wait(r.done, c.o.ShutdownGrace) {
			c.lg.Error("partition run did not end after its release and cancellation", "partition", p)
		}
	}
}

// wait waits for done up to d.
func (c *Consumer) wait(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

func (c *Consumer) releaseAll() {
	var wg sync.WaitGroup
	for _, p := range c.owned() {
		wg.Add(1)
		go func() { defer wg.Done(); c.releaseOne(p) }()
	}
	wg.Wait()
}
