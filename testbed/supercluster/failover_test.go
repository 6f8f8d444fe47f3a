package supercluster

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/topology"
)

// TestRegionFailover: us-east's edges handle part of its load, then every
// core node of us-east is gone with a backlog accepted. Its standby,
// eu-west, promotes its mirror of us-east's claim log and runs a failover
// edge with eu-west's edge credentials (Host eu-west): every backlog event
// us-east accepted and eu-west mirrored is handled exactly once, none of
// those us-east handled is handled again, and the failover continues
// us-east's claim log.
func TestRegionFailover(t *testing.T) {
	top := topology.Default()
	top.Regions[0].Standby = "eu-west"
	c := start(t, top)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	east := streams.Names{Region: "us-east"}
	west := streams.Names{Region: "eu-west"}
	_, eastAdmin := mustConnect(t, c, "us-east")
	_, westAdmin := mustConnect(t, c, "eu-west")
	publish := func(from, to int) {
		for i := from; i < to; i++ {
			id := fmt.Sprintf("acct-%d", i)
			if _, err := eastAdmin.Publish(ctx, east.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	runs := map[string]map[string]int{}
	handler := func(name string) edge.Handler {
		runs[name] = map[string]int{}
		return edge.HandlerFunc(func(_ context.Context, e event.Event) error {
			mu.Lock()
			runs[name][e.ID]++
			mu.Unlock()
			return nil
		})
	}
	count := func(name string) int {
		mu.Lock()
		defer mu.Unlock()
		return len(runs[name])
	}
	run := func(region string, o edge.Options, h edge.Handler) func() {
		nc, js, err := c.ConnectAs(region, auth.Edge)
		if err != nil {
			t.Fatal(err)
		}
		o.Logger, o.Window = coretest.Quiet, time.Duration(top.Window)
		e, err := edge.New(js, h, o)
		if err != nil {
			t.Fatal(err)
		}
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- e.Run(rctx) }()
		return func() {
			rcancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Logf("%s: %v", o.Name, err)
			}
			nc.Close()
		}
	}
	publish(0, 100)
	stop := run("us-east", edge.Options{Region: "us-east", Name: "east-edge", Peers: []string{"eu-west", "ap-south"}}, handler("east"))
	coretest.Eventually(t, time.Minute, "us-east handles its first 100", func() bool { return count("east") == 100 })
	stop()
	publish(100, 200)
	claims, err := eastAdmin.Stream(ctx, east.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	lastClaim := claims.CachedInfo().State.LastSeq
	coretest.Eventually(t, 30*time.Second, "us-east's ingest and claims mirrored in eu-west", func() bool {
		return msgs(t, westAdmin, west.StandbyShard("us-east", 0)) == 200 && msgs(t, westAdmin, west.StandbyClaimShard("us-east", 0)) == lastClaim
	})
	c.StopRegion("us-east")

	coretest.Eventually(t, 30*time.Second, "us-east's claim log promoted in eu-west", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		_, err := streams.Promote(pctx, westAdmin, west, "us-east")
		return err == nil
	})
	stopF := run("eu-west", edge.Options{Region: "us-east", Host: "eu-west", Name: "west-failover", Peers: []string{"eu-west", "ap-south"}}, handler("failover"))
	defer stopF()
	coretest.Eventually(t, time.Minute, "the failover handles us-east's backlog", func() bool { return count("failover") == 100 })
	mu.Lock()
	defer mu.Unlock()
	for i := range 200 {
		id := fmt.Sprintf("acct-%d", i)
		want := 0
		if i >= 100 {
			want = 1
		}
		if got := runs["failover"][id]; got != want {
			t.Errorf("%s handled %d times by the failover, want %d", id, got, want)
		}
	}
}
