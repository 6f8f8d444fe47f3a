package deploy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/supercluster"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
	"github.com/onceplane/onceplane/topology"
)

func start(t *testing.T, top topology.Topology, o Options) *Deployment {
	t.Helper()
	return startWith(t, top, o, true)
}

// startWith starts a deployment with streams in memory or on disk.
func startWith(t *testing.T, top topology.Topology, o Options, memory bool) *Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o.Logger = coretest.Quiet
	if os.Getenv("ONCEPLANE_TEST_LOG") != "" {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	o.Cluster.DataDir, o.Cluster.MemoryStreams, o.Cluster.Logger = t.TempDir(), memory, o.Logger
	d, err := Start(ctx, top, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if err := d.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	return d
}

// publish sends ids to region's ingest as an at-least-once producer does
// (every publish retried until acked) and returns once all are acked.
func publish(t *testing.T, d *Deployment, region string, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := workload.Publish(ctx, d.Producer(region), workload.Plan{}, ids, 1000, nil); err != nil {
		t.Fatal(err)
	}
}

func totalDone(d *Deployment) int64 {
	var n int64
	for _, r := range d.Topology().RegionNames() {
		n += d.Stats(r).Done
	}
	return n
}

func replicated(t *testing.T, d *Deployment) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, _ := d.Replicated(ctx)
	return ok
}

// TestAsyncCrossRegion is G2: three regions with WAN delay. 30,000 events
// are decided where they arrive; 20 % of them are then re-sent to another
// region after their claims replicated, and every one is caught as a remote
// duplicate; 300 more IDs are sent to two regions at once. The conflicts
// the regions record are exactly the races that really happened, counted
// independently from the effect ledgers, and each race is recorded by both
// regions.
func TestAsyncCrossRegion(t *testing.T) {
	top := topology.Default()
	t0 := time.Now()
	spans := tracetest.NewInMemoryExporter()
	d := start(t, top, Options{TracerProvider: sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))})
	t.Logf("started in %v", time.Since(t0))
	regions := top.RegionNames()

	const n, races = 30_000, 300
	byRegion := map[string][]string{}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("ev-%d", i)
		ids = append(ids, id)
		byRegion[regions[i%3]] = append(byRegion[regions[i%3]], id)
	}
	var wg sync.WaitGroup
	for r, rids := range byRegion {
		wg.Add(1)
		go func() { defer wg.Done(); publish(t, d, r, rids) }()
	}
	// Races: the same ID published to two regions at the same moment.
	raceIDs := map[string][2]string{}
	pairs := map[string][]string{}
	for i := range races {
		id := fmt.Sprintf("race-%d", i)
		a, b := regions[i%3], regions[(i+1)%3]
		raceIDs[id] = [2]string{a, b}
		pairs[a] = append(pairs[a], id)
		pairs[b] = append(pairs[b], id)
	}
	for r, rids := range pairs {
		wg.Add(1)
		go func() { defer wg.Done(); publish(t, d, r, rids) }()
	}
	wg.Wait()
	t.Logf("published after %v", time.Since(t0))
	coretest.Eventually(t, 120*time.Second, "first wave decided", func() bool { return totalDone(d) == n+2*races })
	t.Logf("decided after %v", time.Since(t0))
	coretest.Eventually(t, 60*time.Second, "claims replicated", func() bool { return replicated(t, d) })
	t.Logf("replicated after %v", time.Since(t0))

	// 20 %: re-send to the next region, after replication. us-east's edges
	// are down meanwhile: the re-sends wait in its ingest, and the new owners
	// must know every remote claim (from their rebuild) before deciding them.
	before := d.Stats("us-east")
	d.StopEdges("us-east")
	// A region's counts survive its edges' restarts (the report's
	// "decided" once dropped by what the restarted edges had counted).
	if after := d.Stats("us-east"); after.Done != before.Done || after.In != before.In {
		t.Fatalf("us-east's counts changed when its edges stopped: done %d -> %d, in %d -> %d", before.Done, after.Done, before.In, after.In)
	}
	resend := map[string][]string{}
	for i := 0; i < n; i += 5 {
		r := regions[(i+1)%3]
		resend[r] = append(resend[r], ids[i])
	}
	for r, rids := range resend {
		publish(t, d, r, rids)
	}
	for _, e := range top.Regions[0].Edges {
		if err := d.StartEdge("us-east", e.Name); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, 120*time.Second, "re-sends decided", func() bool { return totalDone(d) == n+2*races+n/5 })
	coretest.Eventually(t, 60*time.Second, "claims replicated", func() bool { return replicated(t, d) })

	var remoteHits int64
	for _, r := range regions {
		remoteHits += d.Stats(r).ByPath[dedupe.PathRemoteHit]
	}

	// Effects: at most once per region; once globally except true races.
	counts := d.Effects.Counts()
	trueRaces := map[string][]string{} // id hash -> regions with an effect
	for _, r := range regions {
		for id, k := range counts[r] {
			if k != 1 {
				t.Errorf("%s: %s handled %d times in one region", r, id, k)
			}
			trueRaces[HashOf(id)] = append(trueRaces[HashOf(id)], r)
		}
	}
	for _, id := range ids {
		if len(trueRaces[HashOf(id)]) != 1 {
			t.Errorf("%s (never raced) has effects in %v", id, trueRaces[HashOf(id)])
		}
	}
	raced := 0
	for id := range raceIDs {
		switch len(trueRaces[HashOf(id)]) {
		case 1:
		case 2:
			raced++
		default:
			t.Errorf("%s: effects in %v", id, trueRaces[HashOf(id)])
		}
	}
	for h, rs := range trueRaces {
		if len(rs) < 2 {
			delete(trueRaces, h)
		}
	}
	// Every re-send after replication is a remote duplicate, and so is the
	// second copy of a race ID that did not race (its claim got there first).
	if want := int64(n/5 + races - raced); remoteHits != want {
		t.Errorf("%d remote-claim duplicates, want %d (%d re-sent after replication + %d race IDs that did not race)", remoteHits, want, n/5, races-raced)
	}

	t.Logf("checked effects after %v", time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conflicts, err := d.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reported := map[string]map[string]dedupe.ConflictRecord{} // hash -> detecting region -> record
	for r, recs := range conflicts {
		for _, c := range recs {
			if reported[c.Hash] == nil {
				reported[c.Hash] = map[string]dedupe.ConflictRecord{}
			}
			reported[c.Hash][r] = c
		}
	}
	for h, rs := range trueRaces {
		for _, r := range rs {
			c, ok := reported[h][r]
			if !ok {
				t.Errorf("race %s (effects in %v) not recorded by %s", h, rs, r)
				continue
			}
			if other := otherOf(rs, r); c.Remote.Region != other {
				t.Errorf("race %s recorded by %s against %s, want %s", h, r, c.Remote.Region, other)
			}
		}
	}
	for h, by := range reported {
		if _, ok := trueRaces[h]; !ok {
			t.Errorf("conflict %s recorded by %v is not a real race", h, by)
		}
	}
	var counted int64
	for _, r := range regions {
		counted += d.Stats(r).Conflicts
	}
	t.Logf("%d events, %d re-sent after replication (all caught), %d race IDs: %d really raced, %d conflicts reported (%d records, %d counted)",
		n, n/5, races, raced, len(reported), 2*raced, counted)
	if counted != int64(2*raced) {
		t.Errorf("conflicts counted %d, want %d (each race once per side)", counted, 2*raced)
	}
	if raced == 0 {
		t.Error("no race happened: the test did not exercise conflicts")
	}

	// A conflict's trace: the merge in one region continues the trace of the
	// claim append in the other, and says it found a conflict.
	batchRegion := map[trace.TraceID]string{}
	var merges []sdktrace.ReadOnlySpan
	for _, sp := range spans.GetSpans().Snapshots() {
		switch sp.Name() {
		case "onceplane.batch":
			batchRegion[sp.SpanContext().TraceID()] = attr(sp, "onceplane.region")
		case "onceplane.merge_remote":
			if attr(sp, "onceplane.path") == "conflict" {
				merges = append(merges, sp)
			}
		}
	}
	linked := 0
	for _, m := range merges {
		from := batchRegion[m.SpanContext().TraceID()]
		if from != "" && from != attr(m, "onceplane.region") && from == attr(m, "onceplane.from_region") {
			linked++
		}
	}
	t.Logf("%d merge spans found conflicts; %d continue the trace of the other region's claim batch", len(merges), linked)
	if linked == 0 {
		t.Error("no conflict trace spans two regions")
	}
}

func attr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.Emit()
		}
	}
	return ""
}

// HashOf is the conflict-record form of an event ID's hash.
func HashOf(id string) string { return event.HashID(id).Hex() }

func otherOf(rs []string, r string) string {
	for _, x := range rs {
		if x != r {
			return x
		}
	}
	return ""
}

// TestStrictMode is G3: every partition has a home region, events are
// routed there and decided there. The same ID sent to two regions at once
// and re-sent later has exactly one effect globally, no conflict exists, the
// WAN shows in the dedupe latency of events published away from home, and
// one event's trace holds spans from two regions under one trace ID.
func TestStrictMode(t *testing.T) {
	top := topology.Default()
	top.Mode = topology.Strict
	edgeSpans := tracetest.NewInMemoryExporter()
	edgeTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(edgeSpans))
	type lat struct {
		from, to string
		d        time.Duration
	}
	var mu sync.Mutex
	var lats []lat
	// The ingest layer's Nats-Msg-Id window is off (100 ms), so the copies
	// reach the edges and the edges' dedupe is what is tested.
	d := start(t, top, Options{Cluster: supercluster.Options{IngestDuplicates: -1}, TracerProvider: edgeTP, OnDecision: func(region string, dec edge.Decision) {
		if !dec.Published.IsZero() && dec.Path.First() {
			mu.Lock()
			lats = append(lats, lat{dec.Origin, region, dec.Committed.Sub(dec.Published)})
			mu.Unlock()
		}
	}})
	regions := top.RegionNames()
	// Strict mode merges nothing: no region has an xclaims or conflicts stream.
	for _, r := range regions {
		nc, js, err := d.Connect(r)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range []string{streams.Names{Region: r}.XClaimStream(), streams.Names{Region: r}.ConflictStream()} {
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if _, err := js.Stream(sctx, s); !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("strict mode: stream %s: %v, want not found", s, err)
			}
			cancel()
		}
		nc.Close()
	}

	const n = 9_000
	var wg sync.WaitGroup
	sent := 0
	for _, r := range regions {
		var ids []string
		for k := range n {
			ids = append(ids, fmt.Sprintf("ev-%d", k))
		}
		// Every region gets every ID: each one arrives three times, at about
		// the same moment, from three regions.
		sent += len(ids)
		wg.Add(1)
		go func() { defer wg.Done(); publish(t, d, r, ids) }()
	}
	wg.Wait()
	// Decided first: the traced event below then has its batch to itself
	// (a batch gives decide spans to its first few sampled events only, and
	// every published event here is sampled).
	coretest.Eventually(t, 120*time.Second, "every ID handled", func() bool { return len(d.Effects.Counts()) > 0 && distinct(d) == n })
	coretest.Eventually(t, 60*time.Second, "all routed copies decided at home", func() bool { return totalDone(d) == homeMsgs(t, d) })

	// One traced event, published in us-east for a partition homed elsewhere.
	prodSpans := tracetest.NewInMemoryExporter()
	prodTP := sdktrace.NewTracerProvider(sdktrace.WithSyncer(prodSpans))
	var tracedID string
	for k := 0; ; k++ {
		tracedID = fmt.Sprintf("traced-%d", k)
		if top.Home(event.Partition(tracedID, top.Partitions)) != "us-east" {
			break
		}
	}
	ctx, span := prodTP.Tracer("producer").Start(context.Background(), "publish", trace.WithAttributes(attribute.String("onceplane.region", "us-east")))
	if _, err := d.Producer("us-east").Publish(ctx, tracedID, nil); err != nil {
		t.Fatal(err)
	}
	span.End()
	sent++

	// Strict mode decides each event once, at home: every copy stored in a
	// home stream is decided there.
	coretest.Eventually(t, 120*time.Second, "every ID handled", func() bool { return len(d.Effects.Counts()) > 0 && distinct(d) == n+1 })
	coretest.Eventually(t, 60*time.Second, "all routed copies decided at home", func() bool { return totalDone(d) == homeMsgs(t, d) })
	var dups int64
	for _, r := range regions {
		dups += d.Stats(r).Duplicates
	}
	t.Logf("%d copies sent, %d reached home streams, %d decided duplicate by the edges", sent, homeMsgs(t, d), dups)
	if dups == 0 {
		t.Fatal("no copy reached an edge as a duplicate: the test did not exercise edge dedupe")
	}
	counts := d.Effects.Counts()
	global := map[string]int{}
	for _, m := range counts {
		for id, k := range m {
			global[id] += k
		}
	}
	for k := range n {
		if id := fmt.Sprintf("ev-%d", k); global[id] != 1 {
			t.Fatalf("%s: %d effects globally, want 1", id, global[id])
		}
	}
	if len(global) != n+1 {
		t.Fatalf("%d IDs have effects, want %d", len(global), n+1)
	}
	for _, r := range regions {
		if got := len(counts[r]); got == 0 {
			t.Fatalf("%s decided nothing: homes not spread", r)
		}
	}

	// The WAN cost: first-time decisions of events published away from home
	// wait at least the one-way delay; those published at home do not.
	mu.Lock()
	var cross, local []time.Duration
	for _, l := range lats {
		if l.from == l.to {
			local = append(local, l.d)
		} else if l.d < top.RTT(l.from, l.to)/2 {
			t.Errorf("%s->%s decided in %v, less than the one-way delay %v", l.from, l.to, l.d, top.RTT(l.from, l.to)/2)
		} else {
			cross = append(cross, l.d)
		}
	}
	mu.Unlock()
	if len(cross) == 0 || len(local) == 0 {
		t.Fatalf("latency samples: %d cross-region, %d in-region", len(cross), len(local))
	}
	t.Logf("first-time decisions: %d published at home (median %v), %d routed over the WAN (median %v)", len(local), median(local), len(cross), median(cross))

	// The trace: the producer's span in us-east and the decision's span in
	// the home region share one trace ID.
	traceID := span.SpanContext().TraceID()
	var decide sdktrace.ReadOnlySpan
	coretest.Eventually(t, 10*time.Second, "decide span exported", func() bool {
		for _, s := range edgeSpans.GetSpans().Snapshots() {
			if s.Name() == "onceplane.decide" && s.SpanContext().TraceID() == traceID {
				decide = s
				return true
			}
		}
		return false
	})
	attrs := map[string]string{}
	for _, kv := range decide.Attributes() {
		attrs[string(kv.Key)] = kv.Value.Emit()
	}
	home := top.Home(event.Partition(tracedID, top.Partitions))
	if attrs["onceplane.region"] != home || attrs["onceplane.origin_region"] != "us-east" || attrs["onceplane.path"] == "" {
		t.Fatalf("decide span attributes %v: want region %s, origin us-east, a path", attrs, home)
	}
	// The producer records onceplane.publish under the caller's span; the
	// decision, in the home region, is the publish's child.
	var publish sdktrace.ReadOnlySpan
	for _, s := range edgeSpans.GetSpans().Snapshots() {
		if s.Name() == "onceplane.publish" && s.SpanContext().TraceID() == traceID {
			publish = s
		}
	}
	if publish == nil || publish.Parent().SpanID() != span.SpanContext().SpanID() {
		t.Fatalf("no onceplane.publish span under the caller's span %v", span.SpanContext().SpanID())
	}
	if decide.Parent().SpanID() != publish.SpanContext().SpanID() {
		t.Fatalf("decide span's parent %v is not the producer's publish span %v", decide.Parent().SpanID(), publish.SpanContext().SpanID())
	}
	t.Logf("trace %s: publish in us-east -> decide in %s (%s)", traceID, home, attrs["onceplane.path"])
}

func distinct(d *Deployment) int {
	ids := map[string]bool{}
	for _, m := range d.Effects.Counts() {
		for id := range m {
			ids[id] = true
		}
	}
	return len(ids)
}

func homeMsgs(t *testing.T, d *Deployment) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var total int64
	for _, r := range d.Topology().RegionNames() {
		nc, js, err := d.Connect(r)
		if err != nil {
			t.Fatal(err)
		}
		n, err := verify.StreamMsgs(ctx, js, streams.Names{Region: r}.HomeStream())
		nc.Close()
		if err != nil {
			return -1
		}
		total += int64(n)
	}
	return total
}

// idBatch returns k IDs prefix-0 .. prefix-(k-1) and adds them to *all.
func idBatch(all *[]string, prefix string, k int) []string {
	ids := make([]string, 0, k)
	for i := range k {
		ids = append(ids, fmt.Sprintf("%s-%d", prefix, i))
	}
	*all = append(*all, ids...)
	return ids
}

func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}

// waitSettled waits until every stored event is decided and every region
// has merged every claim of the others.
func waitSettled(t *testing.T, d *Deployment, stored int64) {
	t.Helper()
	coretest.Eventually(t, 120*time.Second, "every event decided", func() bool { return totalDone(d) == stored })
	coretest.Eventually(t, 120*time.Second, "claims replicated", func() bool { return replicated(t, d) })
}

// checkConflictsAreRaces requires at most one effect per region and ID, at
// least one effect per published ID, and the recorded conflicts to be
// exactly the IDs with effects in two regions. It returns the race count.
func checkConflictsAreRaces(t *testing.T, d *Deployment, published []string) int {
	t.Helper()
	where := map[string][]string{}
	for r, m := range d.Effects.Counts() {
		for id, k := range m {
			if k != 1 {
				t.Errorf("%s: %s handled %d times in one region", r, id, k)
			}
			where[HashOf(id)] = append(where[HashOf(id)], r)
		}
	}
	for _, id := range published {
		if len(where[HashOf(id)]) == 0 {
			t.Errorf("%s lost: no effect anywhere", id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conflicts, err := d.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reported := map[string]map[string]bool{}
	for r, recs := range conflicts {
		for _, c := range recs {
			if reported[c.Hash] == nil {
				reported[c.Hash] = map[string]bool{}
			}
			reported[c.Hash][r] = true
		}
	}
	races := 0
	for h, rs := range where {
		if len(rs) < 2 {
			continue
		}
		races++
		for _, r := range rs {
			if !reported[h][r] {
				t.Errorf("race on %s (effects in %v) not recorded by %s", h, rs, r)
			}
		}
	}
	for h, by := range reported {
		if len(where[h]) < 2 {
			t.Errorf("conflict %s recorded by %v is not a real race (effects in %v)", h, by, where[h])
		}
	}
	return races
}

// TestLinkCutAndHeal cuts the WAN link between us-east and eu-west under
// load: both sides keep deciding their own events; IDs sent to both sides
// during the cut are real races. After the heal every race is reported as a
// conflict by both sides, nothing else is, and nothing is lost.
func TestLinkCutAndHeal(t *testing.T) {
	top := topology.Default()
	d := start(t, top, Options{})
	var published []string
	var stored int64
	send := func(region string, ids ...string) {
		publish(t, d, region, ids)
		stored += int64(len(ids))
	}
	batch := func(prefix string, k int) []string { return idBatch(&published, prefix, k) }
	send("us-east", batch("before-e", 2000)...)
	send("eu-west", batch("before-w", 2000)...)
	waitSettled(t, d, stored)

	d.Cut("us-east", "eu-west")
	east, west := d.Stats("us-east").Done, d.Stats("eu-west").Done
	send("us-east", batch("cut-e", 2000)...)
	send("eu-west", batch("cut-w", 2000)...)
	both := batch("cut-both", 200)
	send("us-east", both...)
	send("eu-west", both...)
	// Resends of IDs claimed before the cut are still caught on both sides.
	send("eu-west", published[:500]...)
	coretest.Eventually(t, 60*time.Second, "both sides decide their own events while cut", func() bool {
		return d.Stats("us-east").Done == east+2200 && d.Stats("eu-west").Done == west+2700
	})
	d.Heal("us-east", "eu-west")
	waitSettled(t, d, stored)

	races := checkConflictsAreRaces(t, d, published)
	t.Logf("cut and heal: %d IDs, %d sent to both sides during the cut, %d conflicts (true races)", len(published), len(both), races)
	if races != len(both) {
		t.Errorf("%d races, want %d: every ID sent to both sides of a cut link races", races, len(both))
	}
}

// TestRegionCoreRestart stops every core node of eu-west and starts them
// again on the same storage: the region's events resume, none is handled
// twice inside it, and the other regions keep going meanwhile.
func TestRegionCoreRestart(t *testing.T) {
	top := topology.Default()
	d := startWith(t, top, Options{}, false)
	var published []string
	batch := func(prefix string, k int) []string { return idBatch(&published, prefix, k) }
	handled := func(ids []string) func() bool {
		return func() bool {
			where := map[string]bool{}
			for _, m := range d.Effects.Counts() {
				for id := range m {
					where[id] = true
				}
			}
			for _, id := range ids {
				if !where[id] {
					return false
				}
			}
			return true
		}
	}
	publish(t, d, "eu-west", batch("w-before", 3000))
	publish(t, d, "us-east", batch("e-before", 1000))
	d.StopRegion("eu-west") // events of eu-west may be in flight
	others := append(batch("e-during", 1000), batch("s-during", 1000)...)
	publish(t, d, "us-east", others[:1000])
	publish(t, d, "ap-south", others[1000:])
	coretest.Eventually(t, 60*time.Second, "other regions keep deciding while eu-west is down", handled(others))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := d.StartRegion(ctx, "eu-west"); err != nil {
		t.Fatal(err)
	}
	publish(t, d, "eu-west", batch("w-after", 1000))
	if !coretest.Within(60*time.Second, handled(published)) {
		t.Fatalf("not every event handled after the restart: ready: %v; eu-west stats %+v", d.Ready(), d.Stats("eu-west"))
	}
	coretest.Eventually(t, 120*time.Second, "claims replicated", func() bool { return replicated(t, d) })
	if races := checkConflictsAreRaces(t, d, published); races != 0 {
		t.Errorf("%d races without any ID sent twice", races)
	}
	s := d.Stats("eu-west")
	t.Logf("eu-west restarted: %d events decided (%d duplicates: redeliveries), %d handled once each", s.Done, s.Duplicates, len(d.Effects.Counts()["eu-west"]))
}
