package sourcing_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/onceplane/onceplane/jetstream/sourcing"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestWatchReportsHealthPerPair runs the watchdog over a region's xclaims
// stream sourcing a peer's claim log on one server: the pair is reported
// healthy, and a source restarted by hand (Restart: out and back in) keeps
// its position, so no claim is copied twice.
func TestWatchReportsHealthPerPair(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, peer, here := pair(t)
	for i := range 5 {
		if _, err := js.Publish(ctx, peer.Claims(i%2), []byte("claim")); err != nil {
			t.Fatal(err)
		}
	}
	w := sourcing.ForRegion(here)
	w.Metrics = sourcing.NewMetrics(prometheus.NewRegistry())
	w.Logger = coretest.Quiet
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = sourcing.Watch(wctx, js, w) }()
	defer func() { stop(); <-done }()
	coretest.Eventually(t, 10*time.Second, "b -> here reported healthy", func() bool {
		return testutil.ToFloat64(w.Metrics.Healthy.WithLabelValues("b", "here")) == 1
	})
	x, err := js.Stream(ctx, here.XClaimShard(0))
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "claims sourced", func() bool {
		info, err := x.Info(ctx)
		return err == nil && info.State.Msgs == 5
	})
	cfg := x.CachedInfo().Config
	if err := sourcing.Restart(ctx, js, cfg.Name, sourcing.Key(cfg.Sources[0]), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, peer.Claims(0), []byte("after")); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "the claim after the restart sourced", func() bool {
		info, err := x.Info(ctx)
		return err == nil && info.State.Msgs >= 6
	})
	if info, _ := x.Info(ctx); info.State.Msgs != 6 {
		t.Fatalf("%d claims in xclaims after a restart, want 6 (none twice)", info.State.Msgs)
	}
}

// pair provisions, on a server of its own, region "here" whose xclaims
// stream sources the claim log of peer region "b" (two partitions each).
func pair(t *testing.T) (jetstream.JetStream, streams.Config, streams.Config) {
	t.Helper()
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	peer := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 2, Memory: true, Peers: []string{"here"}}
	here := streams.Config{Names: streams.Names{Region: "here"}, Partitions: 2, Memory: true, Peers: []string{"b"}}
	for _, c := range []streams.Config{peer, here} {
		if err := streams.Provision(context.Background(), js, c); err != nil {
			t.Fatal(err)
		}
	}
	return js, peer, here
}
