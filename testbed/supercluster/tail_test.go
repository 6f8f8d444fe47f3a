package supercluster

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/topology"
)

// TestEdgesLearnClaimsSoonAfterHeals: the us-east/eu-west link is cut while
// us-east's claim log takes claims, then healed; eu-west's edge, owning
// every partition, must merge each of those claims exactly once. Per heal
// it measures the time from the heal until the edge has merged them all,
// beside the time until eu-west's xclaims stream holds them (JetStream's
// sourcing, which the edge waited for before the tail). With the tail
// (the default) the edge reads us-east's claim log itself while the
// sources are silent and recovering. ONCEPLANE_HEALS sets how many heals
// (the README's figures: 20); ONCEPLANE_NO_TAIL=1 measures without the
// tail.
func TestEdgesLearnClaimsSoonAfterHeals(t *testing.T) {
	heals := 3
	if testing.Short() {
		heals = 2
	}
	if n, err := strconv.Atoi(os.Getenv("ONCEPLANE_HEALS")); err == nil {
		heals = n
	}
	noTail := os.Getenv("ONCEPLANE_NO_TAIL") != ""
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute+time.Duration(heals)*time.Minute)
	defer cancel()
	top := topology.Default()
	c, err := Start(ctx, top, Options{DataDir: t.TempDir(), MemoryStreams: true, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	top = top.Defaults()
	east, west := c.StreamConfig("us-east").Names, c.StreamConfig("eu-west").Names
	_, eastAdmin := mustConnect(t, c, "us-east")
	_, westAdmin := mustConnect(t, c, "eu-west")
	nc, js, err := c.ConnectAs("eu-west", auth.Edge)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	e, err := edge.New(js, edge.HandlerFunc(func(context.Context, event.Event) error { return nil }), edge.Options{
		Region: "eu-west", Name: "west-0", Peers: []string{"us-east", "ap-south"}, Window: time.Duration(top.Window),
		NoTail: noTail, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(ectx) }()
	defer func() { ecancel(); <-done }()
	coretest.Eventually(t, time.Minute, "eu-west's edge owns every partition", func() bool { return len(e.Owned()) == top.Partitions })

	// us-east's claims, as its edges would append them (none runs there:
	// conditional appends are not needed).
	k := 0
	claim := func() (string, uint64) {
		p := k % top.Partitions
		rec := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "east-heal", Time: time.Now(), IDs: []event.Hash{event.HashID(fmt.Sprintf("heal-%d", k))}}
		k++
		data, err := rec.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := eastAdmin.Publish(ctx, east.Claims(p), data)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Stream, ack.Sequence
	}
	// A claim in every partition first: the tail reads a peer's log only
	// after the xclaims stream has brought some of it (where to start).
	for range top.Partitions {
		claim()
	}
	coretest.Eventually(t, time.Minute, "the first claims merged", func() bool { return e.Stats().RemoteMerged == int64(top.Partitions) })
	var merged, sourced []time.Duration
	tailed := int64(0)
	for i := range heals {
		before := e.Stats()
		c.Cut("us-east", "eu-west")
		want := map[string]uint64{}
		n := 0
		for cut := time.Now(); time.Since(cut) < 3*time.Second; n++ {
			s, seq := claim()
			want[s] = seq
			if err := poll.Sleep(ctx, 100*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		if got := e.Stats().RemoteMerged - before.RemoteMerged; got != 0 {
			t.Fatalf("heal %d: %d claims crossed the cut link", i, got)
		}
		c.Heal("us-east", "eu-west")
		healed := time.Now()
		var m, s time.Duration
		for m == 0 || s == 0 {
			if time.Since(healed) > 90*time.Second {
				t.Fatalf("heal %d: claims not merged (%v) or not sourced (%v) 90 s after the heal", i, m, s)
			}
			if m == 0 && e.Stats().RemoteMerged-before.RemoteMerged >= int64(n) {
				m = time.Since(healed)
			}
			if s == 0 && caughtUp(ctx, westAdmin, west, east, top.Partitions, want) {
				s = time.Since(healed)
			}
			if err := poll.Sleep(ctx, 10*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		merged, sourced = append(merged, m), append(sourced, s)
		// Each claim merged once: the xclaims copies of those the tail
		// merged are skipped.
		coretest.Eventually(t, 30*time.Second, "the xclaims stream's copies delivered", func() bool {
			return caughtUp(ctx, westAdmin, west, east, top.Partitions, want)
		})
		if err := poll.Sleep(ctx, time.Second); err != nil {
			t.Fatal(err)
		}
		after := e.Stats()
		if got := after.RemoteMerged - before.RemoteMerged; got != int64(n) {
			t.Fatalf("heal %d: %d claims made during the cut, %d merged", i, n, got)
		}
		tailed += after.TailMerged - before.TailMerged
		t.Logf("heal %d: %d claims merged by the edge %v after the heal (%d by the tail), in the xclaims stream %v after", i, n, m, after.TailMerged-before.TailMerged, s)
	}
	t.Logf("edge merged the cut's claims after a heal: p50 %v, p99 %v; xclaims stream held them: p50 %v, p99 %v (%d heals, tail %v)",
		Percentile(merged, .5), Percentile(merged, .99), Percentile(sourced, .5), Percentile(sourced, .99), heals, !noTail)
	if !noTail && tailed == 0 {
		t.Error("the tail merged nothing: every claim waited for the xclaims stream")
	}
}
