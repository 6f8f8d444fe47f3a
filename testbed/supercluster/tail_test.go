package supercluster

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
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
	claim := eastClaims(t, ctx, eastAdmin, east, top.Partitions, "heal")
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

// TestEdgesLearnClaimsThroughAStalledSource: replication from us-east into
// eu-west stops without falling silent (its source is taken off eu-west's
// xclaims streams, as a source that stalls with its heartbeats still
// arriving, nats-server #8630, leaves nothing silent either). eu-west's
// edge must still learn each claim us-east makes within 2 s, by reading
// us-east's claim log past what it merged once a second; when the source
// is back, each claim is merged once.
func TestEdgesLearnClaimsThroughAStalledSource(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
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
	e, stop := runEdge(t, ctx, c, "eu-west", edge.HandlerFunc(func(context.Context, event.Event) error { return nil }), edge.Options{
		Region: "eu-west", Name: "west-0", Peers: []string{"us-east", "ap-south"}, Window: time.Duration(top.Window),
		Logger: coretest.Quiet})
	defer stop()
	coretest.Eventually(t, time.Minute, "eu-west's edge owns every partition", func() bool { return len(e.Owned()) == top.Partitions })
	claim := eastClaims(t, ctx, eastAdmin, east, top.Partitions, "stall")
	for range top.Partitions {
		claim()
	}
	coretest.Eventually(t, time.Minute, "the first claims merged", func() bool { return e.Stats().RemoteMerged == int64(top.Partitions) })
	// Past the tail's linger after the start (sources not heard yet at the
	// start make a peer suspect): the stall is caught by the idle reads.
	if err := poll.Sleep(ctx, 11*time.Second); err != nil {
		t.Fatal(err)
	}

	// The stall: us-east's sources off eu-west's xclaims streams.
	removed := map[string][]*jetstream.StreamSource{}
	for _, name := range west.EveryShard(west.XClaimShard) {
		s, err := westAdmin.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		var keep []*jetstream.StreamSource
		for _, src := range cfg.Sources {
			if _, ok := streams.ShardIndex(src.Name, east.ClaimStream()); ok {
				removed[name] = append(removed[name], src)
			} else {
				keep = append(keep, src)
			}
		}
		cfg.Sources = keep
		if _, err := westAdmin.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	before := e.Stats()
	var learned []time.Duration
	want := map[string]uint64{}
	for i := range 12 {
		s, seq := claim()
		want[s] = seq
		at := time.Now()
		for e.Stats().RemoteMerged-before.RemoteMerged < int64(i+1) {
			if time.Since(at) > 10*time.Second {
				t.Fatalf("claim %d of the stall not learned in 10 s", i)
			}
			if err := poll.Sleep(ctx, 5*time.Millisecond); err != nil {
				t.Fatal(err)
			}
		}
		learned = append(learned, time.Since(at))
	}
	if caughtUp(ctx, westAdmin, west, east, top.Partitions, want) {
		t.Fatal("the xclaims stream holds the stall's claims: the source was not stopped")
	}
	p99 := Percentile(learned, .99)
	t.Logf("claims made during a stalled replication learned by the edge: p50 %v, p99 %v (%d claims)", Percentile(learned, .5), p99, len(learned))
	if p99 > 2*time.Second {
		t.Errorf("p99 %v: a stalled replication's claims learned later than 2 s", p99)
	}
	// The source back: it resumes after its last message, and the edge
	// skips what it learned already.
	for name, srcs := range removed {
		s, err := westAdmin.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.Sources = append(cfg.Sources, srcs...)
		if _, err := westAdmin.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, time.Minute, "the xclaims stream caught up", func() bool { return caughtUp(ctx, westAdmin, west, east, top.Partitions, want) })
	if err := poll.Sleep(ctx, time.Second); err != nil {
		t.Fatal(err)
	}
	after := e.Stats()
	if got := after.RemoteMerged - before.RemoteMerged; got != int64(len(learned)) {
		t.Errorf("%d claims made during the stall, %d merged", len(learned), got)
	}
	if got := after.TailMerged - before.TailMerged; got != int64(len(learned)) {
		t.Errorf("%d claims made during the stall, %d merged by the tail", len(learned), got)
	}
}

// eastClaims returns a function that appends a claim of one new ID
// (<name>-<k>) to us-east's claim log, partition after partition, as its
// edges would (none runs there: no conditional append), and returns the
// claim stream and sequence.
func eastClaims(t *testing.T, ctx context.Context, js jetstream.JetStream, east streams.Names, partitions int, name string) func() (string, uint64) {
	k := 0
	return func() (string, uint64) {
		p := k % partitions
		rec := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "east-" + name, Time: time.Now(), IDs: []event.Hash{event.HashID(fmt.Sprintf("%s-%d", name, k))}}
		k++
		data, err := rec.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		ack, err := js.Publish(ctx, east.Claims(p), data)
		if err != nil {
			t.Fatal(err)
		}
		return ack.Stream, ack.Sequence
	}
}
