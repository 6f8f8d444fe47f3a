package sourcing_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/jetstream/sourcing"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestRestartCutShortIsFinished: a restart is two stream updates. Killed
// (or its reply lost, or its node no longer the leader) between them, the
// source used to stay removed until the node's provisioning ran again:
// the peer's claims stopped replicating and its duplicates went
// undetected. The removal now records the source in the stream's
// metadata, and any watchdog that reads the stream (here one that does not
// lead it, with no memory of the restart) puts it back; claims appended
// meanwhile arrive, none twice.
func TestRestartCutShortIsFinished(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	js, peer, here := pair(t)
	claim := func() {
		if _, err := js.Publish(ctx, peer.Claims(1), []byte("claim")); err != nil {
			t.Fatal(err)
		}
	}
	x, err := js.Stream(ctx, here.XClaimShard(0))
	if err != nil {
		t.Fatal(err)
	}
	msgs := func() uint64 {
		info, err := x.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	claim()
	coretest.Eventually(t, 10*time.Second, "first claim sourced", func() bool { return msgs() == 1 })
	key := sourcing.Key(x.CachedInfo().Config.Sources[0])
	if err := sourcing.RemoveForTest(ctx, js, x.CachedInfo().Config.Name, key, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	claim() // while the source is out
	w := sourcing.ForRegion(here)
	w.Server, w.Logger = "another-node", slog.New(slog.DiscardHandler)
	wctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = sourcing.Watch(wctx, js, w) }()
	coretest.Eventually(t, 10*time.Second, "the source put back by a watchdog that does not lead the stream", func() bool {
		info, err := x.Info(ctx)
		return err == nil && len(info.Config.Sources) == 1 && sourcing.Key(info.Config.Sources[0]) == key && len(info.Config.Metadata) > 0 &&
			!hasRestarting(info.Config.Metadata)
	})
	stop()
	<-done
	claim()
	coretest.Eventually(t, 10*time.Second, "every claim sourced", func() bool { return msgs() >= 3 })
	if got := msgs(); got != 3 {
		t.Fatalf("%d claims sourced, want 3 (none twice)", got)
	}
}

func hasRestarting(md map[string]string) bool {
	for k := range md {
		if strings.HasPrefix(k, "onceplane.restarting.") {
			return true
		}
	}
	return false
}
