package edge_test

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/gossip"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

// member is one in-process edge with its own connection and gossip member.
type member struct {
	name   string
	g      *gossip.Cluster
	c      *edge.Consumer
	cancel context.CancelFunc
	done   chan struct{}
	crash  func()

	mu     sync.Mutex
	events []edge.OwnershipEvent
}

func (m *member) ownership() []edge.OwnershipEvent {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]edge.OwnershipEvent(nil), m.events...)
}

func startMember(t *testing.T, r *region, name string, seeds []string, ledger string) *member {
	t.Helper()
	g, err := gossip.Start(gossip.Options{Name: name, Seeds: seeds, Meta: gossip.Meta{Role: "edge", Region: "local"}})
	if err != nil {
		t.Fatal(err)
	}
	nc, js := coretest.Connect(t, r.url)
	l, err := sink.OpenLedger(ledger, name)
	if err != nil {
		t.Fatal(err)
	}
	r.ledgers = append(r.ledgers, ledger)
	m := &member{name: name, g: g, done: make(chan struct{})}
	m.c = newEdge(t, js, sink.NewChain(l, &sink.NATS{JS: js, Names: r.cfg.Names}), edge.Options{
		Name: name, Membership: g, BatchSize: 100, Logger: coretest.Quiet,
		OnOwnership: func(e edge.OwnershipEvent) { m.mu.Lock(); m.events = append(m.events, e); m.mu.Unlock() },
	})
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go func() { defer close(m.done); _ = m.c.Run(ctx) }()
	// crash: the process vanishes: its connection drops mid-batch (no done
	// record, no ack), its gossip goes silent (no leave message).
	m.crash = func() { l.Close(); nc.Close(); _ = g.Shutdown(); cancel() }
	t.Cleanup(func() {
		cancel()
		<-m.done
		_ = g.Shutdown()
		l.Close()
	})
	return m
}

// leave is a graceful scale-in: release partitions, then leave gossip.
func (m *member) leave() {
	m.cancel()
	<-m.done
	_ = m.g.Leave(time.Second)
}

// finishLoad waits for the producer and for every partition to drain, then
// checks every ID is in the output exactly once.
func (r *region) finishLoad(t *testing.T, pubDone <-chan error, parts int, ids []string) {
	t.Helper()
	if err := <-pubDone; err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, time.Minute, "drained", func() bool {
		ok, _ := verify.Drained(context.Background(), r.js, r.cfg.Names, parts, nil)
		return ok
	})
	r.checkOnce(t, ids)
}

func ownedCounts(ms []*member) map[string]int64 {
	out := map[string]int64{}
	for _, m := range ms {
		out[m.name] = m.c.Stats().Owned
	}
	return out
}

func totalOwned(ms []*member) int64 {
	var n int64
	for _, m := range ms {
		n += m.c.Stats().Owned
	}
	return n
}

// TestFailoverCrash: three edges share 8 partitions by gossip; one crashes
// mid-load; the survivors detect it, take its partitions over (fencing it in
// the claim log) and finish the load with no event lost and no effect twice.
func TestFailoverCrash(t *testing.T) {
	const parts = 8
	r := newRegion(t, streams.Config{Partitions: parts, IngestDuplicates: -1})
	dir := t.TempDir()
	a := startMember(t, r, "edge-a", nil, filepath.Join(dir, "a.jsonl"))
	b := startMember(t, r, "edge-b", []string{a.g.Addr()}, filepath.Join(dir, "b.jsonl"))
	c := startMember(t, r, "edge-c", []string{a.g.Addr()}, filepath.Join(dir, "c.jsonl"))
	all := []*member{a, b, c}
	coretest.Eventually(t, 15*time.Second, "8 partitions owned by 3 edges", func() bool {
		return totalOwned(all) == parts && a.c.Stats().Owned > 0 && b.c.Stats().Owned > 0 && c.c.Stats().Owned > 0
	})
	plan := workload.Plan{Events: 30_000, DupRate: 0.2, Gap: 5_000, Seed: 21}
	ids, _ := plan.IDs()
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- workload.Publish(context.Background(), producer.New(r.js, "local"), plan, ids, 1024, nil)
	}()
	coretest.Eventually(t, time.Minute, "load in flight", func() bool {
		n, _ := verify.StreamMsgs(context.Background(), r.js, r.cfg.OutputStream())
		return n > 5_000
	})
	lost := c.c.Stats().Owned
	evs := a.g.Subscribe()
	killed := time.Now()
	c.crash()
	detected := make(chan time.Duration, 1)
	go func() {
		for e := range evs {
			if e.Member.Name == "edge-c" && e.Kind == gossip.Failed {
				detected <- e.At.Sub(killed)
				return
			}
		}
	}()
	survivors := []*member{a, b}
	coretest.Eventually(t, 15*time.Second, "survivors own every partition", func() bool { return totalOwned(survivors) == parts })
	tookOver := time.Since(killed)
	detectedAfter := <-detected
	r.finishLoad(t, pubDone, parts, ids)
	var uncertain, reruns int64
	for _, m := range survivors {
		uncertain += m.c.Stats().Uncertain
		reruns += m.c.Stats().UncertainReruns
	}
	// Ledgers: every ID ran, each extra run flagged (checkOnce above); the
	// flagged re-runs are at most the crashed edge's batches in flight and
	// no more than the survivors counted.
	extra := r.checkRuns(t, ids)
	if int64(extra) > reruns {
		t.Fatalf("%d extra handler runs > %d uncertain re-runs", extra, reruns)
	}
	if uncertain > lost*100 || int64(extra) > lost*100 {
		t.Fatalf("uncertain %d, extra runs %d > %d partitions x batch 100", uncertain, extra, lost)
	}
	t.Logf("crashed edge owned %d partitions; failure detected after %v; all owned again after %v; uncertain %d, re-runs %d, extra handler runs %d",
		lost, detectedAfter, tookOver, uncertain, reruns, extra)
}

// TestScaleOutAndIn: 2 edges, then 4 (each owns at most ceil(8/4)+1), then
// back to 2 by graceful leave, under load: no loss, no unflagged extra run,
// and the uncertain re-runs bounded (views that briefly disagree fence).
func TestScaleOutAndIn(t *testing.T) {
	const parts = 8
	r := newRegion(t, streams.Config{Partitions: parts, IngestDuplicates: -1})
	dir := t.TempDir()
	a := startMember(t, r, "edge-a", nil, filepath.Join(dir, "a.jsonl"))
	b := startMember(t, r, "edge-b", []string{a.g.Addr()}, filepath.Join(dir, "b.jsonl"))
	coretest.Eventually(t, 15*time.Second, "2 edges own 8", func() bool { return totalOwned([]*member{a, b}) == parts })
	plan := workload.Plan{Events: 30_000, DupRate: 0.2, Gap: 5_000, Seed: 22}
	ids, _ := plan.IDs()
	pubDone := make(chan error, 1)
	go func() {
		pubDone <- workload.Publish(context.Background(), producer.New(r.js, "local"), plan, ids, 512, nil)
	}()
	c := startMember(t, r, "edge-c", []string{a.g.Addr()}, filepath.Join(dir, "c.jsonl"))
	d := startMember(t, r, "edge-d", []string{b.g.Addr()}, filepath.Join(dir, "d.jsonl"))
	four := []*member{a, b, c, d}
	coretest.Eventually(t, 20*time.Second, "4 edges share 8", func() bool {
		if totalOwned(four) != parts {
			return false
		}
		for _, m := range four {
			if n := m.c.Stats().Owned; n == 0 || n > (parts+3)/4+1 {
				return false
			}
		}
		return true
	})
	t.Logf("after scale-out: %v", ownedCounts(four))
	c.leave()
	d.leave()
	coretest.Eventually(t, 20*time.Second, "2 edges own 8 again", func() bool { return totalOwned([]*member{a, b}) == parts })
	r.finishLoad(t, pubDone, parts, ids)
	var uncertain, reruns int64
	for _, m := range four {
		uncertain += m.c.Stats().Uncertain
		reruns += m.c.Stats().UncertainReruns
	}
	// Handoffs are graceful, but two joiners' views can briefly disagree
	// (c takes a partition that d's view gives d): one of them is fenced and
	// its batch in flight is uncertain. Seen in about 1 run of 3: one batch.
	// Bound: a batch per partition per membership change (two joins, two
	// leaves), and every extra run counted by the edges as a re-run.
	const changes = 4
	extra := r.checkRuns(t, ids)
	if int64(extra) > reruns {
		t.Errorf("%d extra handler runs > %d uncertain re-runs the edges counted", extra, reruns)
	}
	if bound := int64(parts * 100 * changes); uncertain > bound || int64(extra) > bound {
		t.Errorf("uncertain %d, flagged re-runs %d > %d (batch 100 x %d partitions x %d changes)", uncertain, extra, bound, parts, changes)
	}
	t.Logf("uncertain after the handoffs: %d, flagged re-runs %d; ownership events: a=%d b=%d c=%d d=%d", uncertain, extra,
		len(a.ownership()), len(b.ownership()), len(c.ownership()), len(d.ownership()))
}
