package supercluster

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/topology"
)

// TestCutsHoldAfterHeals cuts and heals the us-east/eu-west link: every cut
// holds each side's claims back, and replication resumes after every heal.
// NATS gossips the gateway URLs a server is configured with (here, its WAN
// links' addresses) to the gateways that connect to it, so after the first
// heal us-east's gateway to eu-west reconnected through ap-south's link to
// eu-west and every later cut of the pair cut nothing (claims crossed it
// while "cut"). Links now refuse any other region's gateway
// (wan.LinkOptions.From). The figures per heal are logged
// (ONCEPLANE_HEALS sets how many; ONCEPLANE_NO_WATCHDOG=1 measures without
// the core nodes' replication watchdog).
func TestCutsHoldAfterHeals(t *testing.T) {
	heals := 3
	if testing.Short() {
		heals = 2
	}
	if n, err := strconv.Atoi(os.Getenv("ONCEPLANE_HEALS")); err == nil {
		heals = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, topology.Default(), Options{DataDir: t.TempDir(), MemoryStreams: true, Logger: coretest.Quiet,
		NoWatchdog: os.Getenv("ONCEPLANE_NO_WATCHDOG") != ""}) // to compare with JetStream's own recovery
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	hctx, hcancel := context.WithTimeout(context.Background(), time.Duration(heals)*3*time.Minute)
	defer hcancel()
	hs, err := c.Heals(hctx, HealOptions{Heals: heals, Limit: 90 * time.Second})
	var all []time.Duration
	for i, h := range hs {
		t.Logf("heal %d: %v", i, h.Resumed)
		for _, d := range h.Resumed {
			all = append(all, d)
		}
	}
	t.Logf("resumed after a heal: p50 %v, p99 %v over %d", Percentile(all, .5), Percentile(all, .99), len(all))
	if err != nil {
		t.Fatal(err)
	}
}
