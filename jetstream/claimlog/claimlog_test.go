package claimlog_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// setup provisions cfg's streams on a fresh core node and opens the claim
// log, with the handle it uses.
func setup(t *testing.T, cfg streams.Config) (*claimlog.Log, jetstream.JetStream) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := claimlog.Open(ctx, js, cfg.Names)
	if err != nil {
		t.Fatal(err)
	}
	return l, js
}

func TestAppendFencesStaleWriter(t *testing.T) {
	l, _ := setup(t, streams.Config{Partitions: 4, Memory: true})
	ctx := context.Background()
	now := time.Now()
	a := dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 1, Writer: "a", Time: now}
	s1, err := l.Append(ctx, 2, 0, a)
	if err != nil {
		t.Fatal(err)
	}
	b := dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 2, Writer: "b", Time: now}
	s2, err := l.Append(ctx, 2, s1, b)
	if err != nil {
		t.Fatal(err)
	}
	// Writer a still believes the log ends at s1: it is fenced.
	claim := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "a", Time: now, IDs: []event.Hash{event.HashID("x")}}
	if _, err := l.Append(ctx, 2, s1, claim); !errors.Is(err, claimlog.ErrFenced) {
		t.Fatalf("stale append: %v", err)
	}
	// Other partitions are independent.
	if _, err := l.Append(ctx, 3, 0, claim); err != nil {
		t.Fatal(err)
	}
	var got []dedupe.Record
	last, err := l.Replay(ctx, 2, 0, func(seq uint64, r dedupe.Record, _ time.Time) { got = append(got, r) })
	if err != nil || last != s2 || len(got) != 2 || got[1].Writer != "b" {
		t.Fatalf("replay: last=%d err=%v got=%+v", last, err, got)
	}
	// Replaying from s1 yields only the tail.
	got = nil
	if _, err := l.Replay(ctx, 2, s1, func(seq uint64, r dedupe.Record, _ time.Time) { got = append(got, r) }); err != nil || len(got) != 1 {
		t.Fatalf("tail replay: %v %d", err, len(got))
	}
}

// TestAppendAfterLogAgedOut: when every record of an idle partition has aged
// out of the log, the owner's next append starts the subject again.
func TestAppendAfterLogAgedOut(t *testing.T) {
	l, _ := setup(t, streams.Config{Partitions: 1, Memory: true, Window: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s1, err := l.Append(ctx, 0, 0, dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 1, Writer: "a", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	// MaxAge is window+window/8+window: wait for the record to age out.
	coretest.Eventually(t, 30*time.Second, "claim record to age out", func() bool {
		seq, err := l.LastSeq(ctx, 0)
		return err == nil && seq == 0
	})
	s2, err := l.Append(ctx, 0, s1, dedupe.Record{Kind: dedupe.KindDone, Epoch: 1, Writer: "a", Time: time.Now()})
	if err != nil || s2 <= s1 {
		t.Fatalf("append after age-out: %d %v", s2, err)
	}
}

// TestForeignTailDoesNotFence: bytes no edge wrote on a claim subject (a
// JetStream acknowledgement sent there through a publisher's reply
// subject) neither fence the owner nor stop a replay: both skip them and
// report each; a record of another writer among them still fences.
func TestForeignTailDoesNotFence(t *testing.T) {
	cfg := streams.Config{Partitions: 2, Memory: true}
	n := coretest.Start(t)
	nc, js := coretest.Connect(t, n.ClientURL())
	ctx := context.Background()
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	l, err := claimlog.Open(ctx, js, cfg.Names)
	if err != nil {
		t.Fatal(err)
	}
	var foreign []uint64
	l.Foreign = func(p int, seq uint64) { foreign = append(foreign, seq) }
	now := time.Now()
	s1, err := l.Append(ctx, 0, 0, dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 1, Writer: "a", Time: now})
	if err != nil {
		t.Fatal(err)
	}
	poison := func() uint64 {
		t.Helper()
		if _, err := js.Publish(ctx, cfg.Claims(0), []byte(`{"stream":"onceplane-local-in","seq":7}`)); err != nil {
			t.Fatal(err)
		}
		seq, err := l.LastSeq(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	f1, f2 := poison(), poison()
	claim := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "a", Time: now, IDs: []event.Hash{event.HashID("x")}}
	s2, err := l.Append(ctx, 0, s1, claim)
	if err != nil || s2 <= f2 {
		t.Fatalf("append after a foreign tail: seq %d, %v", s2, err)
	}
	if len(foreign) != 2 || foreign[0] != f1 || foreign[1] != f2 {
		t.Fatalf("foreign reported %v, want [%d %d]", foreign, f1, f2)
	}
	// A replay skips them and ends past them.
	foreign = nil
	f3 := poison()
	var got []uint64
	last, err := l.Replay(ctx, 0, 0, func(seq uint64, _ dedupe.Record, _ time.Time) { got = append(got, seq) })
	if err != nil || last != f3 || len(got) != 2 || got[0] != s1 || got[1] != s2 || len(foreign) != 3 {
		t.Fatalf("replay: last %d (want %d), records %v (want [%d %d]), foreign %v, %v", last, f3, got, s1, s2, foreign, err)
	}
	if moved, last, err := l.MovedOn(ctx, 0, s2); err != nil || moved || last != f3 {
		t.Fatalf("moved on after foreign bytes only: %v (last %d, want %d), %v", moved, last, f3, err)
	}
	// The same append retried after its ack was lost, foreign bytes having
	// landed behind it: it landed, at s2; it is not fenced.
	if again, err := l.Append(ctx, 0, s1, claim); err != nil || again != s2 {
		t.Fatalf("a landed append retried behind foreign bytes: seq %d (want %d), %v", again, s2, err)
	}
	// Another writer's record among foreign bytes fences.
	if _, err := l.Append(ctx, 0, f3, dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 2, Writer: "b", Time: now}); err != nil {
		t.Fatal(err)
	}
	poison()
	if moved, _, err := l.MovedOn(ctx, 0, s2); err != nil || !moved {
		t.Fatalf("moved on after another writer's record: %v, %v", moved, err)
	}
	if _, err := l.Append(ctx, 0, f3, claim); !errors.Is(err, claimlog.ErrFenced) {
		t.Fatalf("a newer writer's record behind foreign bytes: %v, want fenced", err)
	}
	_ = nc
}

// TestReplayLeavesNoConsumer: a replay deletes its reader (an ordered
// consumer) when done: left to nats.go's 5-minute inactive threshold, a
// takeover wave over thousands of partitions, with retries, once filled the
// claim stream's consumer limit and every further takeover failed.
func TestReplayLeavesNoConsumer(t *testing.T) {
	cfg := streams.Config{Partitions: 4, Memory: true}
	l, js := setup(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var err error
	var last uint64
	for i := range 3 {
		if last, err = l.Append(ctx, 1, last, dedupe.Record{Kind: dedupe.KindTakeover, Epoch: uint64(i + 1), Writer: "a", Time: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	for range 20 {
		n := 0
		if _, err := l.Replay(ctx, 1, 0, func(uint64, dedupe.Record, time.Time) { n++ }); err != nil || n != 3 {
			t.Fatalf("replay: %d records, %v", n, err)
		}
	}
	s, err := js.Stream(ctx, cfg.Names.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 5*time.Second, "no consumer left on the claim stream", func() bool {
		info, err := s.Info(ctx)
		return err == nil && info.State.Consumers == 0
	})
}

// TestFailoverContinuesTheLog: region a's claim log, mirrored in its
// standby b and promoted there (a region failover), is continued by a new
// owner in b: it replays a's records with a's sequences, fences a's last
// owner with its takeover record, and a writer that had not seen that
// record (a's old owner, had it reached b) is fenced.
func TestFailoverContinuesTheLog(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a", Shards: 2}, Partitions: 4, Memory: true, Peers: []string{"b"}}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 4, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"},
		PeerShards: map[string]int{"a": 2}}
	for _, c := range []streams.Config{a.Own(), b.Own(), a, b} {
		if err := streams.Provision(ctx, js, c); err != nil {
			t.Fatal(err)
		}
	}
	own, err := claimlog.Open(ctx, js, a.Names)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var last uint64
	for i, id := range []string{"x", "y", "z"} {
		rec := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "a-edge", Time: now, IDs: []event.Hash{event.HashID(id)}, Through: uint64(10 * (i + 1))}
		if last, err = own.Append(ctx, 3, last, rec); err != nil {
			t.Fatal(err)
		}
	}
	mirror, err := js.Stream(ctx, b.StandbyClaimShard("a", a.ShardOf(3)))
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "a's log mirrored", func() bool {
		info, err := mirror.Info(ctx)
		return err == nil && info.State.LastSeq == last
	})
	if _, err := streams.Promote(ctx, js, b.Names, "a"); err != nil {
		t.Fatal(err)
	}
	l, err := claimlog.OpenFailover(ctx, js, b.Names, a.Names)
	if err != nil {
		t.Fatal(err)
	}
	var seen []uint64
	var through uint64
	if _, err := l.Replay(ctx, 3, 0, func(seq uint64, r dedupe.Record, _ time.Time) {
		seen = append(seen, seq)
		through = max(through, r.Through)
	}); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 3 || seen[2] != last || through != 30 {
		t.Fatalf("replayed %v (through %d), want a's 3 records ending at %d, through 30", seen, through, last)
	}
	takeover, err := l.Append(ctx, 3, last, dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 2, Writer: "b-edge", Time: now})
	if err != nil {
		t.Fatalf("the failover's takeover record: %v", err)
	}
	if _, err := l.Append(ctx, 3, last, dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "a-edge", Time: now}); !errors.Is(err, claimlog.ErrFenced) {
		t.Fatalf("a writer behind the takeover: %v, want %v", err, claimlog.ErrFenced)
	}
	if got, err := l.LastSeq(ctx, 3); err != nil || got != takeover {
		t.Fatalf("last sequence %d (%v), want the takeover's %d", got, err, takeover)
	}
}

// TestAppendToAFencedLogIsFenced: a log fenced while its writer runs (its
// region failed over while cut off: regionwatch.Guard) takes no append,
// and the writer is told it is fenced instead of retrying for ever.
func TestAppendToAFencedLogIsFenced(t *testing.T) {
	cfg := streams.Config{Partitions: 4, Memory: true}
	l, js := setup(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	now := time.Now()
	s1, err := l.Append(ctx, 1, 0, dedupe.Record{Kind: dedupe.KindTakeover, Epoch: 1, Writer: "a", Time: now})
	if err != nil {
		t.Fatal(err)
	}
	if err := streams.Fence(ctx, js, cfg.Names, "eu-west"); err != nil {
		t.Fatal(err)
	}
	claim := dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "a", Time: now, IDs: []event.Hash{event.HashID("x")}}
	_, err = l.Append(ctx, 1, s1, claim)
	if !errors.Is(err, claimlog.ErrFenced) {
		t.Fatalf("append to a fenced log: %v, want ErrFenced", err)
	}
	if !strings.Contains(err.Error(), "eu-west") {
		t.Errorf("the error does not name the region the log failed over to: %v", err)
	}
}
