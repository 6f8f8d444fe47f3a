package deploy

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/coretest"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/supercluster"
	"github.com/onceplane/onceplane/topology"
)

func start(t *testing.T, top topology.Topology, o Options) *Deployment {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	o.Logger = coretest.Quiet
	o.Cluster = supercluster.Options{DataDir: t.TempDir(), MemoryStreams: true, Logger: coretest.Quiet}
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

// publish sends ids to region's ingest and waits for every ack.
func publish(t *testing.T, d *Deployment, region string, ids []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p := d.Producer(region)
	for i, id := range ids {
		if _, err := p.PublishAsync(ctx, id, []byte(id)); err != nil {
			t.Fatal(err)
		}
		if i%1000 == 999 {
			if err := p.Wait(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := p.Wait(ctx); err != nil {
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

// replicated reports whether every region's owners have merged every claim
// record the other regions have written so far.
func replicated(t *testing.T, d *Deployment) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	claims := map[string]uint64{}
	for _, r := range d.Topology().RegionNames() {
		nc, js, err := d.Connect(r)
		if err != nil {
			t.Fatal(err)
		}
		s, err := js.Stream(ctx, streams.Names{Region: r}.ClaimStream())
		if err != nil {
			nc.Close()
			return false
		}
		info, err := s.Info(ctx)
		nc.Close()
		if err != nil {
			return false
		}
		claims[r] = info.State.Msgs
	}
	for _, r := range d.Topology().RegionNames() {
		var want uint64
		for q, n := range claims {
			if q != r {
				want += n
			}
		}
		if uint64(d.Stats(r).RemoteMerged) != want {
			return false
		}
	}
	return true
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
	d := start(t, top, Options{})
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

	// 20 %: re-send to the next region, after replication.
	resend := map[string][]string{}
	for i := 0; i < n; i += 5 {
		r := regions[(i+1)%3]
		resend[r] = append(resend[r], ids[i])
	}
	for r, rids := range resend {
		publish(t, d, r, rids)
	}
	coretest.Eventually(t, 120*time.Second, "re-sends decided", func() bool { return totalDone(d) == n+2*races+n/5 })
	coretest.Eventually(t, 60*time.Second, "claims replicated", func() bool { return replicated(t, d) })

	var remoteHits int64
	for _, r := range regions {
		remoteHits += d.Stats(r).ByPath[dedupe.PathRemoteHit]
	}
	if remoteHits != n/5 {
		t.Errorf("re-sent after replication: %d remote-claim duplicates, want %d", remoteHits, n/5)
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

	t.Logf("checked effects after %v", time.Since(t0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conflicts, err := d.Conflicts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	reported := map[string]map[string]edge.ConflictRecord{} // hash -> detecting region -> record
	for r, recs := range conflicts {
		for _, c := range recs {
			if reported[c.Hash] == nil {
				reported[c.Hash] = map[string]edge.ConflictRecord{}
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
}

// HashOf is the conflict-record form of an event ID's hash.
func HashOf(id string) string { return edge.HashHex(event.HashID(id)) }

func otherOf(rs []string, r string) string {
	for _, x := range rs {
		if x != r {
			return x
		}
	}
	return ""
}
