package edge_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// runs counts handler runs by ID, and the uncertain ones.
type runs struct {
	mu        sync.Mutex
	n         map[string]int
	uncertain map[string]int
}

func newRuns() *runs { return &runs{n: map[string]int{}, uncertain: map[string]int{}} }

func (r *runs) handle(_ context.Context, e event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n[e.ID]++
	if e.Uncertain {
		r.uncertain[e.ID]++
	}
	return nil
}

func (r *runs) total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.n {
		n += k
	}
	return n
}

// TestRegionFailoverTakesTheBacklog: region a dies with a backlog its
// edges never reached. Its standby b promotes its claim mirror and runs a
// failover edge (Host b) on a's partitions: it consumes a's ingest as b
// mirrored it, after what a's edges recorded as done, skips the IDs a
// handled, the IDs b and a third region t claimed (b's from b's own claim
// stream, t's from b's xclaims), and handles every other ID of the backlog
// exactly once (flagged uncertain: a may have run it), with a's sequences
// and a's claim log continued.
func TestRegionFailoverTakesTheBacklog(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	peers := map[string][]string{"a": {"b", "t"}, "b": {"a", "t"}, "t": {"a", "b"}}
	cfg := func(r string) streams.Config {
		c := streams.Config{Names: streams.Names{Region: r}, Partitions: 4, Memory: true, Peers: peers[r], IngestDuplicates: -1}
		if r == "b" {
			c.StandbyFor = []string{"a"}
		}
		return c
	}
	for _, r := range []string{"a", "b", "t"} {
		if err := streams.Provision(ctx, js, cfg(r).Own()); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []string{"a", "b", "t"} {
		if err := streams.Provision(ctx, js, cfg(r)); err != nil {
			t.Fatal(err)
		}
	}
	publish := func(r string, ids ...string) {
		for _, id := range ids {
			if _, err := js.Publish(ctx, cfg(r).Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
				t.Fatal(err)
			}
		}
	}
	ids := func(from, to int) []string {
		var out []string
		for i := from; i < to; i++ {
			out = append(out, fmt.Sprintf("e%d", i))
		}
		return out
	}
	// runEdge runs an edge until stop is called (which waits for it).
	runEdge := func(o edge.Options, r *runs) (stop func() edge.Stats) {
		c := newEdge(t, js, edge.HandlerFunc(r.handle), o)
		rctx, rcancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- c.Run(rctx) }()
		return func() edge.Stats {
			st := c.Stats()
			t.Logf("%s: %+v", o.Name, st)
			rcancel()
			<-done
			return st
		}
	}
	// a handles e0..e59, then is gone; e60..e99 wait in its ingest.
	publish("a", ids(0, 60)...)
	inA := newRuns()
	stopA := runEdge(edge.Options{Region: "a", Name: "a-edge", Peers: peers["a"], IdleFlush: 20 * time.Millisecond}, inA)
	coretest.Eventually(t, 30*time.Second, "a handles e0..e59", func() bool { return inA.total() == 60 })
	stopA()
	publish("a", ids(60, 100)...)
	// b and t claim one backlog ID each, in their own region.
	inB, inT := newRuns(), newRuns()
	publish("b", "e70")
	publish("t", "e80")
	stopB := runEdge(edge.Options{Region: "b", Name: "b-edge", Peers: peers["b"]}, inB)
	defer stopB()
	stopT := runEdge(edge.Options{Region: "t", Name: "t-edge", Peers: peers["t"]}, inT)
	defer stopT()
	coretest.Eventually(t, 30*time.Second, "b and t handle their IDs", func() bool { return inB.total() == 1 && inT.total() == 1 })

	// b holds a's ingest and claim log as mirrors, and t's claims.
	mirrored := func(stream string, want uint64) func() bool {
		return func() bool {
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.LastSeq == want
		}
	}
	aClaims, err := js.Stream(ctx, cfg("a").ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "a's ingest mirrored in b", mirrored(cfg("b").StandbyShard("a", 0), 100))
	coretest.Eventually(t, 10*time.Second, "a's claims mirrored in b", mirrored(cfg("b").StandbyClaimShard("a", 0), aClaims.CachedInfo().State.LastSeq))
	coretest.Eventually(t, 10*time.Second, "t's claim sourced into b", func() bool {
		s, err := js.Stream(ctx, cfg("b").XClaimShard(0))
		if err != nil {
			return false
		}
		info, err := s.Info(ctx, jetstream.WithSubjectFilter("onceplane.t.claims.*"))
		return err == nil && info.State.Msgs > 0
	})

	// a is lost: none of its streams answer any more.
	for _, name := range cfg("a").Streams() {
		if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatal(err)
		}
	}
	if _, err := streams.Promote(ctx, js, cfg("b").Names, "a"); err != nil {
		t.Fatal(err)
	}
	inFailover := newRuns()
	stopF := runEdge(edge.Options{Region: "a", Host: "b", Name: "b-failover", Peers: peers["a"]}, inFailover)
	coretest.Eventually(t, 30*time.Second, "the failover handles a's backlog", func() bool { return inFailover.total() >= 38 })
	// Nothing more comes: every backlog event was decided.
	coretest.Eventually(t, 10*time.Second, "the failover's claims cover the backlog", func() bool {
		s, err := js.Stream(ctx, cfg("b").StandbyClaimShard("a", 0))
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		return err == nil && info.State.LastSeq > aClaims.CachedInfo().State.LastSeq
	})
	// No race: a's own records are the failover's history, not another
	// region's claims.
	if st := stopF(); st.Conflicts != 0 || st.RemoteMerged == 0 {
		t.Errorf("failover: %d conflicts, %d remote records merged: want none, and b's and t's", st.Conflicts, st.RemoteMerged)
	}
	inFailover.mu.Lock()
	defer inFailover.mu.Unlock()
	for i, id := range ids(0, 100) {
		want := 1
		if i < 60 || id == "e70" || id == "e80" {
			want = 0
		}
		if got := inFailover.n[id]; got != want {
			t.Errorf("%s handled %d times by the failover, want %d", id, got, want)
		}
	}
	// a may have run any of them and died before its claim reached b:
	// every run of the failover's is flagged.
	for id, n := range inFailover.n {
		if inFailover.uncertain[id] != n {
			t.Errorf("%s run %d times by the failover, %d flagged uncertain: want every run flagged", id, n, inFailover.uncertain[id])
		}
	}
}
