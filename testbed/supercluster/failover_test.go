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
	"github.com/onceplane/onceplane/regionwatch"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
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
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, top := startEastStoodBy(t, ctx)
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
		o.Logger, o.Window = coretest.Quiet, time.Duration(top.Window)
		_, stop := runEdge(t, ctx, c, region, h, o)
		return stop
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
	coretest.Eventually(t, time.Minute, "the failover handles us-east's backlog", func() bool { return count("failover") == 100 })

	// us-east comes back: its provisioning finds the failover and fences
	// its own claim log, so its edges own nothing.
	if err := c.StartRegion(ctx, "us-east"); err != nil {
		t.Fatal(err)
	}
	cfg := c.StreamConfig("us-east")
	for _, pc := range []streams.Config{cfg.Own(), cfg} {
		coretest.Eventually(t, time.Minute, "us-east provisioned again", func() bool {
			pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
			defer pcancel()
			return streams.Provision(pctx, eastAdmin, pc) == nil
		})
	}
	fenced, err := eastAdmin.Stream(ctx, east.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	if by := streams.FencedBy(fenced.CachedInfo().Config); by != "eu-west" {
		t.Fatalf("us-east's claim log fenced by %q, want eu-west", by)
	}
	if _, err := eastAdmin.Publish(ctx, east.Claims(0), []byte("stale")); err == nil {
		t.Fatal("a fenced claim log took an append")
	}
	stopE := run("us-east", edge.Options{Region: "us-east", Name: "east-edge-2", Peers: []string{"eu-west", "ap-south"}}, handler("east-2"))
	defer stopE()

	// Fail back: the failover edges stop, us-east's log takes the
	// failover's records (same sequences), and us-east's edge goes on
	// after them: only what arrives after is new to it.
	stopF()
	coretest.Eventually(t, time.Minute, "failed back", func() bool {
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		defer fcancel()
		_, err := streams.FailBack(fctx, westAdmin, "eu-west", east, streams.FailBackOptions{})
		if err != nil {
			t.Logf("fail back: %v", err)
		}
		return err == nil
	})
	if s, err := westAdmin.Stream(ctx, west.StandbyClaimShard("us-east", 0)); err != nil || s.CachedInfo().Config.Mirror == nil {
		t.Fatalf("eu-west's copy of us-east's claim log is not a mirror again (%v)", err)
	}
	publish(200, 250)
	coretest.Eventually(t, time.Minute, "us-east handles what arrives after the failback", func() bool { return count("east-2") == 50 })
	mu.Lock()
	defer mu.Unlock()
	for i := range 250 {
		id := fmt.Sprintf("acct-%d", i)
		want := [3]int{1, 0, 0} // us-east before, the failover, us-east after
		switch {
		case i >= 200:
			want = [3]int{0, 0, 1}
		case i >= 100:
			want = [3]int{0, 1, 0}
		}
		if got := [3]int{runs["east"][id], runs["failover"][id], runs["east-2"][id]}; got != want {
			t.Errorf("%s handled %v times (us-east, failover, us-east again), want %v", id, got, want)
		}
	}
}

// TestAutomaticRegionFailover: eu-west watches us-east (regionwatch) and
// runs a failover edge standing by. Cut from eu-west alone, us-east is not
// declared lost (ap-south still hears it) and the failover edge owns
// nothing; with every core node of us-east gone, eu-west and ap-south agree
// within the configured time, eu-west promotes its copy of us-east's claim
// log, and the standing-by edge handles us-east's backlog, each event once.
func TestAutomaticRegionFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, top := startEastStoodBy(t, ctx)
	east, west := streams.Names{Region: "us-east"}, streams.Names{Region: "eu-west"}
	_, eastAdmin := mustConnect(t, c, "us-east")
	_, westAdmin := mustConnect(t, c, "eu-west")
	for i := range 50 {
		id := fmt.Sprintf("auto-%d", i)
		if _, err := eastAdmin.Publish(ctx, east.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, 30*time.Second, "us-east's ingest mirrored in eu-west", func() bool {
		return msgs(t, westAdmin, west.StandbyShard("us-east", 0)) == 50
	})

	const after = 2 * time.Second
	declared := make(chan error, 1)
	go func() {
		_, err := regionwatch.Watch(ctx, westAdmin, regionwatch.Options{Region: "us-east", Standby: "eu-west", Others: []string{"ap-south"},
			After: after, Every: 200 * time.Millisecond, Logger: coretest.Quiet})
		declared <- err
	}()
	nc, js, err := c.ConnectAs("eu-west", auth.FailoverEdge)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	var mu sync.Mutex
	runs := map[string]int{}
	fo, err := edge.New(js, edge.HandlerFunc(func(_ context.Context, e event.Event) error {
		mu.Lock()
		runs[e.ID]++
		mu.Unlock()
		return nil
	}), edge.Options{Region: "us-east", Host: "eu-west", Name: "west-standing-by", Peers: []string{"eu-west", "ap-south"},
		Window: time.Duration(top.Window), Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(ctx)
	edgeDone := make(chan error, 1)
	go func() { edgeDone <- fo.Run(ectx) }()
	defer func() { ecancel(); <-edgeDone }()

	// Cut from its standby alone: not lost.
	c.Cut("us-east", "eu-west")
	select {
	case err := <-declared:
		t.Fatalf("us-east declared lost while ap-south still heard it (%v)", err)
	case <-time.After(3 * after):
	}
	if err := fo.Ready(); err == nil {
		t.Fatal("the failover edge owns us-east's partitions while us-east is not failed over")
	}
	c.Heal("us-east", "eu-west")

	lost := time.Now()
	c.StopRegion("us-east")
	select {
	case err := <-declared:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("us-east not declared lost a minute after its core nodes went")
	}
	t.Logf("declared %v after us-east's core nodes went (after %v)", time.Since(lost).Round(time.Millisecond), after)
	if host, err := streams.FailedOverTo(ctx, westAdmin, east, []string{"eu-west"}); err != nil || host != "eu-west" {
		t.Fatalf("us-east failed over to %q (%v), want eu-west", host, err)
	}
	coretest.Eventually(t, time.Minute, "the standing-by edge handles us-east's backlog", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(runs) == 50
	})
	mu.Lock()
	defer mu.Unlock()
	for id, n := range runs {
		if n != 1 {
			t.Errorf("%s handled %d times", id, n)
		}
	}
}

// startEastStoodBy starts the default topology with eu-west standing by
// for us-east, on file storage: us-east's streams keep their sequences
// across the restart of its core nodes.
func startEastStoodBy(t *testing.T, ctx context.Context) (*Cluster, topology.Topology) {
	t.Helper()
	top := topology.Default()
	top.Regions[0].Standby = "eu-west"
	c, err := Start(ctx, top, Options{DataDir: t.TempDir(), Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, top
}

// TestRegionDeclaredLostWhileAliveIsFenced: us-east, cut off from its
// standby eu-west and from ap-south but running, is declared lost. When the
// links heal, Guard (as us-east's core nodes run it) fences its claim log,
// and its edge, which ran all along, stops claiming: events us-east accepts
// after that are not handled there. Without Guard the edge went on
// handling them in a log the failover continues in eu-west, so both
// regions would run them. With IsolatedAfter below the standby's
// declaration time, the edge stops claiming during the cut already (what
// us-east accepts then waits for the failback), and stays stopped after
// the heal, because the standby failed it over meanwhile.
func TestRegionDeclaredLostWhileAliveIsFenced(t *testing.T) {
	for _, isolatedAfter := range []time.Duration{0, time.Second} {
		t.Run(fmt.Sprintf("isolated-after=%v", isolatedAfter), func(t *testing.T) { declaredLostWhileAlive(t, isolatedAfter) })
	}
}

func declaredLostWhileAlive(t *testing.T, isolatedAfter time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, top := startEastStoodBy(t, ctx)
	east := streams.Names{Region: "us-east"}
	_, eastAdmin := mustConnect(t, c, "us-east")
	_, westAdmin := mustConnect(t, c, "eu-west")
	nc, js, err := c.ConnectAs("us-east", auth.Edge)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	runs := verify.NewRuns()
	handled := func(ids []string) int {
		a := runs.Account(ids)
		return a.IDs - a.Lost
	}
	e, err := edge.New(js, runs, edge.Options{Region: "us-east", Standby: "eu-west", Name: "east-1", Peers: []string{"eu-west", "ap-south"},
		Window: time.Duration(top.Window), IsolatedAfter: isolatedAfter, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(ctx)
	edgeDone := make(chan error, 1)
	go func() { edgeDone <- e.Run(ectx) }()
	defer func() { ecancel(); <-edgeDone }()
	publish := func(prefix string, n int) []string {
		var ids []string
		for i := range n {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if _, err := eastAdmin.Publish(ctx, east.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		return ids
	}
	before := publish("before", 20)
	coretest.Eventually(t, time.Minute, "us-east's edge handles its events", func() bool { return handled(before) == len(before) })
	fenced := make(chan string, 1)
	gctx, gcancel := context.WithCancel(ctx)
	defer gcancel()
	go regionwatch.Guard(gctx, eastAdmin, c.StreamConfig("us-east"), regionwatch.GuardOptions{Every: 200 * time.Millisecond, Logger: coretest.Quiet,
		OnFenced: func(host string) { fenced <- host }})

	// Cut off from both, alive: eu-west and ap-south hear nothing, and
	// eu-west declares it lost.
	c.Cut("us-east", "eu-west")
	c.Cut("us-east", "ap-south")
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	_, err = regionwatch.Watch(wctx, westAdmin, regionwatch.Options{Region: "us-east", Standby: "eu-west", Others: []string{"ap-south"},
		After: 2 * time.Second, Every: 200 * time.Millisecond, Logger: coretest.Quiet})
	wcancel()
	if err != nil {
		t.Fatalf("us-east cut off from every region not declared lost: %v", err)
	}
	during := publish("during", 20)
	if isolatedAfter == 0 {
		// us-east runs on: it handles what it accepts while cut off.
		coretest.Eventually(t, time.Minute, "us-east's edge handles what it accepts while cut off", func() bool { return handled(during) == len(during) })
	} else {
		// Isolated for longer than IsolatedAfter: it claims nothing.
		coretest.Never(t, 3*time.Second, "us-east's edge handling events while isolated", func() bool { return handled(during) > 0 })
	}

	healed := time.Now()
	c.Heal("us-east", "eu-west")
	c.Heal("us-east", "ap-south")
	select {
	case host := <-fenced:
		if host != "eu-west" {
			t.Fatalf("fenced for %q, want eu-west", host)
		}
		t.Logf("us-east fenced %v after the heal", time.Since(healed).Round(time.Millisecond))
	case <-time.After(time.Minute):
		t.Fatal("us-east's claim log not fenced a minute after the heal")
	}
	after := publish("after", 20)
	coretest.Never(t, 5*time.Second, "us-east's edge handling events after its log was fenced (or, isolated, after the cut)", func() bool {
		return handled(after) > 0 || isolatedAfter > 0 && handled(during) > 0
	})
}
