package streams_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestStrictPromoteAndFailBack: strict mode, b stands by for a. Promoted,
// b's copy of a's home stream sources a's home partitions from every
// region after where a's home stream had reached (events published in b
// after the promotion arrive once; none of the earlier ones again), and
// records where its mirror stopped (PromotedLast). A failback of a log that
// parted from the failover's is refused before anything changes (a's home
// stream and the copy's sources stay as they were); with Supersede, a's
// home stream is made again from the copy and sources again, and the copy
// mirrors it again.
func TestStrictPromoteAndFailBack(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a"}, Partitions: 4, Memory: true, Peers: []string{"b"}, Home: []int{0, 2}}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 4, Memory: true, Peers: []string{"a"}, Home: []int{1, 3}, StandbyFor: []string{"a"}}
	provisionPair(t, ctx, js, a, b)
	msgs := func(name string) uint64 {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}
	// Events homed in a (partitions 0 and 2), published in a and in b.
	homed := 0
	publish := func(r streams.Names, prefix string, n int) {
		for i := 0; n > 0; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if !slices.Contains(a.Home, event.Partition(id, a.Partitions)) {
				continue
			}
			if _, err := js.Publish(ctx, r.Ingest(id), []byte(id)); err != nil {
				t.Fatal(err)
			}
			n--
			homed++
		}
	}
	publish(a.Names, "a-before", 5)
	publish(b.Names, "b-before", 5)
	copyName := b.StandbyHomeShard("a", 0)
	coretest.Eventually(t, 10*time.Second, "a's home stream mirrored in b", func() bool {
		return msgs(a.HomeShard(0)) == uint64(homed) && msgs(copyName) == uint64(homed)
	})
	rec, err := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "a-0", Time: time.Now(), Through: 3, IDs: []event.Hash{event.HashID("a-before-0")}}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, a.Claims(0), rec); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "a's claim mirrored in b", func() bool { return msgs(b.StandbyClaimShard("a", 0)) == 1 })

	promoted, err := streams.Promote(ctx, js, b.Names, "a")
	if err != nil || !slices.Contains(promoted, copyName) {
		t.Fatalf("promote: %v (%v)", promoted, err)
	}
	claims, homes, err := streams.PromotedLast(ctx, js, b.Names, "a", 1)
	if err != nil || claims[0] != 1 || homes[0] != uint64(homed) {
		t.Fatalf("promoted last: claims %v homes %v (%v), want [1] [%d]", claims, homes, err, homed)
	}
	before := homed
	publish(b.Names, "b-after", 4)
	coretest.Eventually(t, 10*time.Second, "what b accepts after the promotion in the copy", func() bool { return msgs(copyName) >= uint64(homed) })
	if err := poll(ctx, 500*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := msgs(copyName); got != uint64(homed) {
		t.Fatalf("the promoted copy holds %d messages, want %d (%d before, 4 after): a source started elsewhere than where a's home stream stopped", got, homed, before)
	}

	// a's log parts from the failover's: a claim never mirrored, and a
	// comes back fenced (its core nodes fence it at start).
	if _, err := js.Publish(ctx, a.Claims(0), rec); err != nil {
		t.Fatal(err)
	}
	if err := streams.Fence(ctx, js, a.Names, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{}); !errors.Is(err, streams.ErrNotFailedOver) {
		t.Fatalf("failback of a parted log: %v, want ErrNotFailedOver", err)
	}
	home, err := js.Stream(ctx, a.HomeShard(0))
	if err != nil || home.CachedInfo().Config.Mirror != nil || len(home.CachedInfo().Config.Sources) == 0 {
		t.Fatalf("a's home stream after a refused failback: %+v (%v), want it untouched", home.CachedInfo().Config, err)
	}
	if c, err := js.Stream(ctx, copyName); err != nil || len(c.CachedInfo().Config.Sources) == 0 {
		t.Fatalf("the copy after a refused failback: %v, want it still sourcing", err)
	}

	n2, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{Supersede: true, Carry: claimlog.CarrySuperseded})
	if err != nil || n2 != 1 {
		t.Fatalf("failback with supersede: %d superseded (%v), want 1", n2, err)
	}
	home, err = js.Stream(ctx, a.HomeShard(0))
	if err != nil {
		t.Fatal(err)
	}
	if cfg := home.CachedInfo().Config; cfg.Mirror != nil || len(cfg.Sources) == 0 || cfg.Metadata["onceplane.fenced"] != "" {
		t.Fatalf("a's home stream after the failback: mirror %v, %d sources, metadata %v", cfg.Mirror, len(cfg.Sources), cfg.Metadata)
	}
	if got := msgs(a.HomeShard(0)); got < uint64(homed) {
		t.Fatalf("a's home stream holds %d messages after the failback, want at least the copy's %d", got, homed)
	}
	coretest.Eventually(t, 10*time.Second, "the copy mirrors a's home stream again", func() bool {
		c, err := js.Stream(ctx, copyName)
		return err == nil && c.CachedInfo().Config.Mirror != nil
	})
}

// poll waits d, or until ctx ends.
func poll(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}
