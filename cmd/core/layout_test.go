package main

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestNodeOfAnotherLayoutRefused: a core node started with another shard or
// partition count than its region's streams refuses to run, with or without
// provisioning (its ingest mapping would put an ID's copies elsewhere).
func TestNodeOfAnotherLayoutRefused(t *testing.T) {
	n := coretest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := streams.Config{Names: streams.Names{Region: "us-east"}, Partitions: 6, Memory: true}
	if err := provision(ctx, n, cfg, true, coretest.Quiet); err != nil {
		t.Fatal(err)
	}
	for _, create := range []bool{true, false} {
		bad := cfg
		bad.Shards = 2
		if err := provision(ctx, n, bad, create, coretest.Quiet); !errors.Is(err, streams.ErrShardsChanged) {
			t.Fatalf("create %v: 2 shards on a region of 1 not refused: %v", create, err)
		}
		bad = cfg
		bad.Partitions = 8
		if err := provision(ctx, n, bad, create, coretest.Quiet); !errors.Is(err, streams.ErrPartitionsChanged) {
			t.Fatalf("create %v: 8 partitions on a region of 6 not refused: %v", create, err)
		}
	}
	if err := provision(ctx, n, cfg, false, coretest.Quiet); err != nil {
		t.Fatalf("the region's own layout refused: %v", err)
	}
}
