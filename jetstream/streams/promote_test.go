package streams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestPromotedClaimMirrorContinuesTheLog: a standby keeps a mirror of each
// claim shard of the region it stands by for, with that region's sequences
// and subjects. Promoted (a region failover), it takes conditional appends
// on the standby's own subjects that continue the region's claim log
// exactly — JetStream checks the expected last sequence on the stored,
// transformed subject — while the region's own claim stream still exists.
// Provisioning again leaves it promoted; promoting again changes nothing.
func TestPromotedClaimMirrorContinuesTheLog(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, shards := range []int{1, 2} {
		a := streams.Config{Names: streams.Names{Region: "a", Shards: shards}, Partitions: 4, Memory: true, Peers: []string{"b"}}
		b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 4, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"},
			PeerShards: map[string]int{"a": shards}}
		provisionPair(t, ctx, js, a, b)
		// Partition 1 (shard 1 of 2) holds three records, partition 2 one.
		for _, p := range []int{1, 1, 1, 2} {
			if _, err := js.Publish(ctx, a.Claims(p), []byte("a")); err != nil {
				t.Fatal(err)
			}
		}
		shard := a.ShardOf(1)
		mirror, err := js.Stream(ctx, b.StandbyClaimShard("a", shard))
		if err != nil {
			t.Fatal(err)
		}
		coretest.Eventually(t, 10*time.Second, "a's claims mirrored", func() bool {
			info, err := mirror.Info(ctx, jetstream.WithSubjectFilter(a.Claims(1)))
			return err == nil && info.State.Subjects[a.Claims(1)] == 3
		})
		last, err := mirror.GetLastMsgForSubject(ctx, a.Claims(1))
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			promoted, err := streams.Promote(ctx, js, b.Names, "a")
			if err != nil {
				t.Fatal(err)
			}
			if len(promoted) != shards {
				t.Fatalf("%d shards: promoted %v", shards, promoted)
			}
		}
		if err := streams.Provision(ctx, js, b); err != nil {
			t.Fatalf("provisioning a promoted standby: %v", err)
		}
		ack, err := js.Publish(ctx, b.FailoverClaims("a", 1), []byte("failover"), jetstream.WithExpectLastSequencePerSubject(last.Sequence))
		if err != nil {
			t.Fatalf("%d shards: append continuing a's log: %v", shards, err)
		}
		got, err := mirror.GetLastMsgForSubject(ctx, a.Claims(1))
		if err != nil || string(got.Data) != "failover" || got.Sequence != ack.Sequence || ack.Stream != mirror.CachedInfo().Config.Name {
			t.Fatalf("%d shards: partition 1's last record: %+v (ack %+v), %v", shards, got, ack, err)
		}
		// A writer that had not seen the append is refused.
		if _, err := js.Publish(ctx, b.FailoverClaims("a", 1), []byte("stale"), jetstream.WithExpectLastSequencePerSubject(last.Sequence)); !claimlog.IsWrongLast(err) {
			t.Fatalf("stale append: %v, want a wrong-last-sequence refusal", err)
		}
		for _, name := range append(a.Streams(), b.Streams()...) {
			_ = js.DeleteStream(ctx, name)
		}
		for s := range 2 {
			_ = js.DeleteStream(ctx, b.StandbyClaimShard("a", s))
			_ = js.DeleteStream(ctx, b.StandbyShard("a", s))
		}
	}
}

// TestPromoteAllShardsOrReport: a standby whose claim mirrors of a sharded
// region are not all there (provisioning cut short) is not promoted in
// part: the partitions of a missing shard would have no claim log.
func TestPromoteAllShardsOrReport(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a", Shards: 2}, Partitions: 4, Memory: true, Peers: []string{"b"}}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 4, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"},
		PeerShards: map[string]int{"a": 2}}
	provisionPair(t, ctx, js, a, b)
	if err := js.DeleteStream(ctx, b.StandbyClaimShard("a", 1)); err != nil {
		t.Fatal(err)
	}
	if promoted, err := streams.Promote(ctx, js, b.Names, "a"); err == nil {
		t.Fatalf("promoted %v with shard 1's mirror missing, no error", promoted)
	}
	if s, err := js.Stream(ctx, b.StandbyClaimShard("a", 0)); err != nil || s.CachedInfo().Config.Mirror == nil {
		t.Fatalf("shard 0 promoted alone (%v)", err)
	}
	if err := streams.Provision(ctx, js, b); err != nil {
		t.Fatal(err)
	}
	if promoted, err := streams.Promote(ctx, js, b.Names, "a"); err != nil || len(promoted) != 2 {
		t.Fatalf("after provisioning again: promoted %v, %v", promoted, err)
	}
}

// TestFailBackRefusesADivergedLogAndFinishesACutShortOne: a returning
// region's log that appended after the failover began is refused
// (ErrNotFailedOver) and left as it is; one whose stream a failback cut
// short had already deleted is made again from the standby's, with every
// record; afterwards the standby mirrors it again.
func TestFailBackRefusesADivergedLogAndFinishesACutShortOne(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a"}, Partitions: 2, Memory: true, Peers: []string{"b"}}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 2, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"}}
	provisionPair(t, ctx, js, a, b)
	for range 3 {
		if _, err := js.Publish(ctx, a.Claims(0), []byte("a")); err != nil {
			t.Fatal(err)
		}
	}
	copyOfA, err := js.Stream(ctx, b.StandbyClaimShard("a", 0))
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "a's log mirrored", func() bool {
		info, err := copyOfA.Info(ctx)
		return err == nil && info.State.LastSeq == 3
	})
	if _, err := streams.Promote(ctx, js, b.Names, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, b.FailoverClaims("a", 0), []byte("failover"), jetstream.WithExpectLastSequencePerSubject(3)); err != nil {
		t.Fatal(err)
	}
	// a's own edges append too (not fenced, no -standby): diverged.
	if _, err := js.Publish(ctx, a.Claims(0), []byte("a, after")); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{}); !errors.Is(err, streams.ErrNotFailedOver) {
		t.Fatalf("failing back a diverged log: %v, want %v", err, streams.ErrNotFailedOver)
	}
	own, err := js.Stream(ctx, a.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	if m, err := own.GetMsg(ctx, 4); err != nil || string(m.Data) != "a, after" {
		t.Fatalf("a's own record after the refusal: %v, %v", m, err)
	}

	// Start again without the divergence: a's log deleted by a failback
	// cut short, the standby's stopped.
	if err := js.DeleteStream(ctx, a.ClaimStream()); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{}); err != nil {
		t.Fatal(err)
	}
	own, err = js.Stream(ctx, a.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	if m, err := own.GetMsg(ctx, 4); err != nil || string(m.Data) != "failover" || streams.FencedBy(own.CachedInfo().Config) != "" {
		t.Fatalf("a's log after the failback: record 4 %v (%v), fenced by %q", m, err, streams.FencedBy(own.CachedInfo().Config))
	}
	if s, err := js.Stream(ctx, b.StandbyClaimShard("a", 0)); err != nil || s.CachedInfo().Config.Mirror == nil {
		t.Fatalf("b's copy is not a mirror of a's log again (%v)", err)
	}
	if _, err := js.Publish(ctx, a.Claims(0), []byte("a again"), jetstream.WithExpectLastSequencePerSubject(4)); err != nil {
		t.Fatalf("a's edges append after the failback: %v", err)
	}
	if _, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{}); err != nil {
		t.Fatalf("failing back again: %v", err)
	}
}

// TestFailBackSupersedesClaimsNeverMirrored: a region lost abruptly wrote
// claims its standby never mirrored, and the failover wrote its own at the
// same sequences. A failback refuses that log unless told to supersede
// (and then the failover's copy still takes appends); superseding, the
// region's records after the parting are kept aside (each once, with the
// subject and sequence they had), the failover's take their place, and
// the region's claims are carried into the log (same IDs, the failover's
// epoch, nothing done), so its next owner does not take those events for
// new. Run again, it changes nothing.
func TestFailBackSupersedesClaimsNeverMirrored(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a"}, Partitions: 2, Memory: true, Peers: []string{"b"}}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 2, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"}}
	provisionPair(t, ctx, js, a, b)
	record := func(writer string, epoch uint64, ids ...string) []byte {
		r := dedupe.Record{Kind: dedupe.KindClaim, Epoch: epoch, Writer: writer, Time: time.UnixMilli(1_700_000_000_000)}
		for _, id := range ids {
			r.IDs = append(r.IDs, event.HashID(id))
		}
		data, err := r.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	appendTo := func(subject string, data []byte) {
		t.Helper()
		if _, err := js.Publish(ctx, subject, data); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		appendTo(a.Claims(0), record("a-edge", 1, fmt.Sprint("mirrored-", i)))
	}
	copyOfA, err := js.Stream(ctx, b.StandbyClaimShard("a", 0))
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "a's log mirrored", func() bool {
		info, err := copyOfA.Info(ctx)
		return err == nil && info.State.LastSeq == 3
	})
	// The region is lost; the standby promotes what it has. The region's
	// last claims (written before the loss, never mirrored) stay behind.
	if _, err := streams.Promote(ctx, js, b.Names, "a"); err != nil {
		t.Fatal(err)
	}
	lost1, lost2 := record("a-edge", 1, "x", "y"), record("a-edge", 1, "z")
	appendTo(a.Claims(0), lost1)
	appendTo(a.Claims(1), lost2)
	appendTo(b.FailoverClaims("a", 0), record("b-failover", 7, "f1"))
	appendTo(b.FailoverClaims("a", 1), record("b-failover", 7, "f2"))
	appendTo(b.FailoverClaims("a", 0), record("b-failover", 7, "f3"))
	if err := streams.Fence(ctx, js, a.Names, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{}); !errors.Is(err, streams.ErrNotFailedOver) {
		t.Fatalf("failing back a parted log without Supersede: %v, want %v", err, streams.ErrNotFailedOver)
	}
	// Refused, the failover's copy still takes appends.
	appendTo(b.FailoverClaims("a", 1), record("b-failover", 7, "f4"))
	o := streams.FailBackOptions{Supersede: true, Carry: claimlog.CarrySuperseded}
	for run, want := range []int{2, 0} { // the second run finds nothing left to supersede
		k, err := streams.FailBack(ctx, js, "b", a.Names, o)
		if err != nil || k != want {
			t.Fatalf("failback run %d: %d superseded (%v), want %d", run+1, k, err, want)
		}
	}
	own, err := js.Stream(ctx, a.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	// 1-3 mirrored, 4-7 the failover's, 8 and 9 carried (partition 0's,
	// then partition 1's).
	for seq, want := range map[uint64]struct {
		subject, writer string
		epoch           uint64
		ids             []string
	}{
		3: {a.Claims(0), "a-edge", 1, []string{"mirrored-2"}},
		4: {a.Claims(0), "b-failover", 7, []string{"f1"}},
		7: {a.Claims(1), "b-failover", 7, []string{"f4"}},
		8: {a.Claims(0), dedupe.CarryWriter, 7, []string{"x", "y"}},
		9: {a.Claims(1), dedupe.CarryWriter, 7, []string{"z"}},
	} {
		m, err := own.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("a's log at %d: %v", seq, err)
		}
		r, err := dedupe.Decode(m.Data)
		var ids []string
		for _, id := range want.ids {
			ids = append(ids, event.HashID(id).Hex())
		}
		var got []string
		for _, h := range r.IDs {
			got = append(got, h.Hex())
		}
		if err != nil || m.Subject != want.subject || r.Writer != want.writer || r.Epoch != want.epoch || r.Kind != dedupe.KindClaim || fmt.Sprint(got) != fmt.Sprint(ids) || r.DoneThrough != 0 || r.Through != 0 {
			t.Fatalf("a's log at %d after the failback: %s %+v (%v), want %+v", seq, m.Subject, r, err, want)
		}
	}
	if info, err := own.Info(ctx); err != nil || info.State.LastSeq != 9 {
		t.Fatalf("a's log after the failback ends at %d (%v), want 9", info.State.LastSeq, err)
	}
	kept, err := js.Stream(ctx, a.SupersededStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := kept.Info(ctx)
	if err != nil || info.State.Msgs != 2 {
		t.Fatalf("superseded records kept: %v (%v), want 2", info.State.Msgs, err)
	}
	for i, want := range []struct {
		data         []byte
		subject, seq string
	}{{lost1, a.Claims(0), "4"}, {lost2, a.Claims(1), "5"}} {
		m, err := kept.GetMsg(ctx, uint64(i+1))
		if err != nil || !bytes.Equal(m.Data, want.data) || m.Header.Get(streams.HeaderSupersededSubject) != want.subject || m.Header.Get(streams.HeaderSupersededSeq) != want.seq {
			t.Fatalf("superseded record %d: %+v (%v), want %+v", i+1, m, err, want)
		}
	}
	if _, err := js.Publish(ctx, a.Claims(0), []byte("a again"), jetstream.WithExpectLastSequencePerSubject(8)); err != nil {
		t.Fatalf("a's edges append after the failback: %v", err)
	}
}

// TestFenceMakesAMissingShardFenced: a failback cut short after deleting
// the region's claim shard, then the region's core restarting: its
// provisioning must not make that shard empty and unfenced (an edge would
// own a log that forgot the failover's claims). It is made fenced, and the
// failback then makes it again from the failover's log.
func TestFenceMakesAMissingShardFenced(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a"}, Partitions: 2, Memory: true, Peers: []string{"b"}, Standby: "b"}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 2, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"}}
	provisionPair(t, ctx, js, a, b)
	if _, err := streams.Promote(ctx, js, b.Names, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, b.FailoverClaims("a", 0), []byte("failover")); err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx, a.ClaimStream()); err != nil {
		t.Fatal(err)
	}
	// One pass (a core provisions its own streams first): fenced from the
	// moment it exists.
	if err := streams.Provision(ctx, js, a.Own()); err != nil {
		t.Fatal(err)
	}
	own, err := js.Stream(ctx, a.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	if by := streams.FencedBy(own.CachedInfo().Config); by != "b" {
		t.Fatalf("a's remade claim shard fenced by %q, want b", by)
	}
	if _, err := js.Publish(ctx, a.Claims(0), []byte("stale")); err == nil {
		t.Fatal("a's remade claim shard took an append")
	}
	if _, err := streams.FailBack(ctx, js, "b", a.Names, streams.FailBackOptions{}); err != nil {
		t.Fatal(err)
	}
	own, err = js.Stream(ctx, a.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	if m, err := own.GetMsg(ctx, 1); err != nil || string(m.Data) != "failover" || streams.FencedBy(own.CachedInfo().Config) != "" {
		t.Fatalf("a's log after the failback: %v (%v), fenced by %q", m, err, streams.FencedBy(own.CachedInfo().Config))
	}
}

// provisionPair provisions regions a and b as their core nodes do: each
// one's own streams first, then those sourcing the other (b's mirrors of a).
func provisionPair(t *testing.T, ctx context.Context, js jetstream.JetStream, a, b streams.Config) {
	t.Helper()
	for _, c := range []streams.Config{a.Own(), b.Own(), a, b} {
		if err := streams.Provision(ctx, js, c); err != nil {
			t.Fatal(err)
		}
	}
}
