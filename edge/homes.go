package edge

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// Strict-mode edges with no configured partitions own their region's home
// partitions as its home stream records them (streams.ReadHomes), looked at
// every homesEvery: a home moved by command (rehome.Move) is let go here
// and taken over in its new home within about that long.

const homesEvery = time.Second

// followsHomes reports whether the edge's partitions are its region's
// recorded homes.
func (c *Consumer) followsHomes() bool {
	return c.o.Strict && c.o.Host == "" && c.o.Partitions == nil
}

// parts returns the partitions this edge's region shares among its edges
// now (nil: all of them).
func (c *Consumer) parts() []int {
	if !c.followsHomes() {
		return c.o.Partitions
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.homes
}

// readHomes reads the region's recorded homes once (never nil: a region
// homing nothing owns nothing).
func (c *Consumer) readHomes(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	r, err := streams.ReadHomes(rctx, c.js, c.names)
	if err != nil {
		return fmt.Errorf("homes: %w", err)
	}
	homes := slices.Sorted(slices.Values(r.Homes))
	if homes == nil {
		homes = []int{}
	}
	c.mu.Lock()
	changed := !slices.Equal(c.homes, homes)
	before := c.homes
	c.homes = homes
	c.mu.Unlock()
	if changed && before != nil {
		c.lg.Info("region's home partitions changed", "before", before, "now", homes, "version", r.Version)
	}
	return nil
}

// watchHomes keeps the recorded homes current until ctx ends.
func (c *Consumer) watchHomes(ctx context.Context) {
	for poll.Sleep(ctx, homesEvery) == nil {
		if err := c.readHomes(ctx); err != nil && ctx.Err() == nil {
			c.lg.Warn("reading the region's home partitions", "err", err)
		}
	}
}
