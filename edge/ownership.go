package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/onceplane/onceplane/failover"
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
	// (claim-log replay), merge (other regions' claims), fence (takeover
	// record), resume (consumer).
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
	release chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
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
	n, err := streams.PartitionCount(ctx, c.js, c.names)
	if err != nil {
		return fmt.Errorf("edge %s: %w", c.o.Name, err)
	}
	l, err := claimlog.Open(ctx, c.js, c.names)
	if err != nil {
		return fmt.Errorf("edge %s: %w", c.o.Name, err)
	}
	for _, p := range c.o.Partitions {
		if p < 0 || p >= n {
			return fmt.Errorf("edge %s: partition %d out of range [0,%d)", c.o.Name, p, n)
		}
	}
	c.mu.Lock()
	c.nparts, c.log = n, l
	c.mu.Unlock()
	defer c.releaseAll()
	if c.o.Membership == nil {
		parts := c.o.Partitions
		if parts == nil {
			for p := 0; p < n; p++ {
				parts = append(parts, p)
			}
		}
		for _, p := range parts {
			c.acquire(p)
		}
		// A partition that failed (a core unreachable, a consumer create
		// timing out across the WAN) is taken again a second later; one that
		// was fenced has another owner configured and stays stopped.
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
				for _, p := range parts {
					if c.failed(p) {
						c.acquire(p)
					}
				}
			}
		}
	}
	return c.follow(ctx, n)
}

// follow keeps this edge's partitions equal to its share of the membership.
func (c *Consumer) follow(ctx context.Context, n int) error {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var prev []string
	fencedAt := map[int]time.Time{}
	for {
		members := c.o.Membership.Names()
		slices.Sort(members)
		want := failover.OwnedSome(members, n, c.o.Partitions, c.o.Name)
		var prevOwner []string
		if prev != nil {
			prevOwner = failover.AssignSome(prev, n, c.o.Partitions)
		}
		have := c.owned()
		plan := failover.Diff(have, want)
		// Releases finish their batch in hand: run them aside so that taking
		// over a dead owner's partitions never waits for them.
		for _, p := range plan.Release {
			go c.releaseOne(p)
		}
		var handoff []int
		if !slices.Equal(members, prev) {
			clear(fencedAt) // a new view: a fence under the old one says nothing
		}
		for _, p := range plan.Acquire {
			if t, ok := fencedAt[p]; ok && time.Since(t) < c.o.RefenceDelay {
				continue // fenced under this same view: let it settle before fencing back
			}
			// A partition whose previous owner is alive (or unknown: this
			// edge just started) is handed over: give that owner HandoffDelay
			// to release it gracefully first. A dead owner's is taken at once.
			if prevOwner == nil || (prevOwner[p] != "" && prevOwner[p] != c.o.Name && slices.Contains(members, prevOwner[p])) {
				handoff = append(handoff, p)
				continue
			}
			c.acquire(p)
		}
		if len(handoff) > 0 {
			go func(ps []int) {
				select {
				case <-ctx.Done():
					return
				case <-time.After(c.o.HandoffDelay):
				}
				for _, p := range ps {
					if slices.Contains(failover.OwnedSome(sortedNames(c.o.Membership), n, c.o.Partitions, c.o.Name), p) {
						c.acquire(p)
					}
				}
			}(handoff)
		}
		for p, at := range c.takeFenced() {
			fencedAt[p] = at
		}
		prev = members
		select {
		case <-ctx.Done():
			return nil
		case <-c.o.Membership.Changes():
		case <-tick.C:
		}
	}
}

func sortedNames(m Membership) []string {
	ns := m.Names()
	slices.Sort(ns)
	return ns
}

// owned returns the partitions with a running owner goroutine.
func (c *Consumer) owned() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var ps []int
	for p := range c.runs {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// takeFenced returns and forgets the partitions fenced since the last call.
func (c *Consumer) takeFenced() map[int]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.fenced
	c.fenced = map[int]time.Time{}
	return out
}

// failed reports whether p's last owner run stopped with an error other than fencing.
func (c *Consumer) failed(p int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, running := c.runs[p]
	return !running && strings.HasPrefix(c.state[p], "failed")
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
	c.state[p] = "taking-over"
	go func() {
		defer close(r.done)
		defer cancel()
		err := c.own(ctx, p, r.release)
		c.mu.Lock()
		if c.runs[p] == r {
			delete(c.runs, p)
		}
		c.mu.Unlock()
		now := time.Now()
		switch {
		case err == nil || ctx.Err() != nil:
			c.setState(p, "released")
			c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "released").Inc()
			c.notify(OwnershipEvent{Partition: p, Change: "released", At: now})
		case errors.Is(err, ErrFenced):
			c.c.fenced.Add(1)
			c.mu.Lock()
			c.fenced[p] = now
			c.mu.Unlock()
			c.setState(p, "fenced")
			c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "fenced").Inc()
			c.notify(OwnershipEvent{Partition: p, Change: "fenced", At: now, Error: err.Error()})
			c.lg.Warn("partition fenced by a newer owner; stopped", "partition", p, "err", err)
		default:
			c.setState(p, "failed: "+err.Error())
			c.o.Metrics.OwnershipChanges.WithLabelValues(c.o.Region, "failed").Inc()
			c.notify(OwnershipEvent{Partition: p, Change: "failed", At: now, Error: err.Error()})
			c.lg.Error("partition stopped", "partition", p, "err", err)
		}
	}()
}

// releaseOne hands p over gracefully, cancelling it after ShutdownGrace.
func (c *Consumer) releaseOne(p int) {
	c.mu.Lock()
	r, ok := c.runs[p]
	if ok {
		delete(c.runs, p)
		delete(c.state, p)
	}
	c.mu.Unlock()
	if !ok {
		return
	}
	close(r.release)
	select {
	case <-r.done:
	case <-time.After(c.o.ShutdownGrace):
		r.cancel()
		<-r.done
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
