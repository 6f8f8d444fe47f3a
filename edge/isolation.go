package edge

import (
	"context"
	"fmt"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/regionwatch"
)

// watchIsolation looks at the region's view of its peers (regionwatch.Heard)
// every 250 ms until ctx ends: isolated for IsolatedAfter, claims stop
// (gate); hearing a majority again, they resume, unless the standby failed
// the region over meanwhile (its log is then fenced: nothing here owns
// anything until the failback).
func (c *Consumer) watchIsolation(ctx context.Context) {
	regions := 1 + len(c.o.Peers)
	unheard := map[string]time.Time{}
	isolated := false
	for poll.Sleep(ctx, 250*time.Millisecond) == nil {
		vctx, cancel := context.WithTimeout(ctx, time.Second)
		views := regionwatch.Unheard(regionwatch.Heard(vctx, c.js, c.names, c.o.Peers), unheard, time.Now())
		cancel()
		now := regionwatch.Isolated(views, regions, c.o.IsolatedAfter)
		switch {
		case now && !isolated:
			isolated = true
			c.setIsolated(true)
			c.lg.Warn("region cut off from a majority of the regions: claims stop until it hears them again", "region", c.o.Region,
				"after", c.o.IsolatedAfter, "views", regionwatch.Describe(views))
		case !now && isolated:
			// IsolatedAfter requires a Standby (Options.Validate).
			actx, cancel := context.WithTimeout(ctx, 5*time.Second)
			host, err := streams.FailedOverTo(actx, c.js, c.names, []string{c.o.Standby})
			cancel()
			if err != nil {
				continue // ask again before resuming
			}
			if host != "" {
				c.lg.Warn("the region was failed over while cut off: claims stay stopped until `core region-failback`", "region", c.o.Region, "standby", host)
				return // isolated for good: its core nodes fence the log
			}
			isolated = false
			c.setIsolated(false)
			c.lg.Warn("region hears a majority of the regions again: claims resume", "region", c.o.Region, "views", regionwatch.Describe(views))
		}
	}
}

// setIsolated stops (true) or resumes the claims: while the region is
// isolated, c.reopen is a channel closed when it no longer is.
func (c *Consumer) setIsolated(on bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case on && c.reopen == nil:
		c.reopen = make(chan struct{})
	case !on && c.reopen != nil:
		close(c.reopen)
		c.reopen = nil
	}
}

// awaitConnected returns once partition p may claim: at once unless the
// region is isolated; then when it is not, or ctx ends. The wait shows as
// p's step ("isolated"), so a long one makes the edge unready.
func (c *Consumer) awaitConnected(ctx context.Context, p int) error {
	c.mu.Lock()
	wait := c.reopen
	c.mu.Unlock()
	if wait == nil {
		return nil
	}
	c.busy(p, "isolated from a majority of the regions")
	defer c.idle(p)
	select {
	case <-wait:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("p%d: %w", p, ctx.Err())
	}
}
