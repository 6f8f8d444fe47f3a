package dedupe

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

// roundTrip is rec through its encoding, as a replay reads it.
func roundTrip(t *testing.T, rec Record) Record {
	t.Helper()
	b, err := rec.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return back
}

// TestResolveSettlesClaimsAgainstThePosition: claims at or below the sink's
// position are done, above it owed (first runs, not flagged); claims of
// another input, claims without a sequence and IDs already uncertain stay
// uncertain; owed IDs stay owed through a takeover that did not run them.
func TestResolveSettlesClaimsAgainstThePosition(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	var log []Record
	add := func(r Record) { log = append(log, roundTrip(t, r)) }
	replay := func() *State {
		s := New(Options{})
		for i, r := range log {
			s.Apply(uint64(i+1), r, now)
		}
		return s
	}
	ids := func(from, n int) []event.Hash {
		var hs []event.Hash
		for i := range n {
			hs = append(hs, hid(from+i))
		}
		return hs
	}
	// An owner without the contract left 0..1 uncertain.
	add(Record{Kind: KindTakeover, Epoch: 1, Writer: "a", Time: now})
	add(Record{Kind: KindClaim, Epoch: 1, Writer: "a", Time: now, IDs: ids(0, 2)})
	// A transactional owner on input "in@1": three batches, then it dies.
	add(Record{Kind: KindTakeover, Epoch: 2, Writer: "b", Time: now, Source: "in@1", IDs: ids(0, 2)})
	add(Record{Kind: KindClaim, Epoch: 2, Writer: "b", Time: now, IDs: ids(10, 3), Seq: 10})
	add(Record{Kind: KindClaim, Epoch: 2, Writer: "b", Time: now, IDs: ids(20, 3), Seq: 20})
	add(Record{Kind: KindClaim, Epoch: 2, Writer: "b", Time: now, IDs: ids(30, 3), Seq: 30})
	add(Record{Kind: KindClaim, Epoch: 2, Writer: "b", Time: now, IDs: ids(40, 1)}) // no sequence: a carried claim
	s := replay()
	res := s.Resolve("in@1", 20)
	if res != (Resolution{Done: 6, Owed: 3, Uncertain: 3}) {
		t.Fatalf("resolution %+v", res)
	}
	// The takeover carries owed and uncertain apart.
	tk := s.Takeover("c")
	if len(tk.Owed) != 3 || len(tk.IDs) != 3 || tk.Source != "in@1" || tk.Epoch != 3 {
		t.Fatalf("takeover %+v", tk)
	}
	add(tk)
	s = replay()
	paths := s.Classify([]event.Hash{hid(0), hid(10), hid(20), hid(30), hid(40)}, now, nil)
	want := []Path{PathUncertainRerun, PathExactHit, PathExactHit, PathOwed, PathUncertainRerun}
	for i := range want {
		if paths[i] != want[i] {
			t.Fatalf("paths %v, want %v", paths, want)
		}
	}
	if !PathOwed.First() {
		t.Fatal("an owed ID does not run")
	}
	// The next owner, dead before it ran anything, leaves them so.
	if res := s.Resolve("in@1", 20); res != (Resolution{Owed: 3, Uncertain: 3}) {
		t.Fatalf("second resolution %+v", res)
	}
	// Another input's position settles nothing: claims stay uncertain.
	log = log[:len(log)-1]
	s = replay()
	if res := s.Resolve("in@2", 100); res != (Resolution{Uncertain: 2 + 9 + 1}) {
		t.Fatalf("another input: %+v", res)
	}
	// A record applied after a Resolve drops it (a fence that lost a race
	// resolves again from the log): the takeover carries the log's sets.
	s.Resolve("in@2", 100)
	s.Apply(uint64(len(log)+1), Record{Kind: KindDone, Epoch: 2, Writer: "b", Time: now}, now)
	if tk := s.Takeover("x"); tk.Source != "" || len(tk.Owed) != 0 {
		t.Fatalf("a stale resolution in the takeover: %+v", tk)
	}
	// An owed ID claimed again (run by the next owner) is no longer owed.
	log = append(log, roundTrip(t, tk))
	log = append(log, roundTrip(t, Record{Kind: KindClaim, Epoch: 3, Writer: "c", Time: now, IDs: ids(30, 1), Seq: 31}))
	s = replay()
	if s.Owed() != 2 {
		t.Fatalf("owed %d after one was claimed again", s.Owed())
	}
	if res := s.Resolve("in@1", 31); res.Done != 1 || res.Owed != 2 {
		t.Fatalf("third resolution %+v", res)
	}
}

// TestRerunNotAppliedStaysUncertain: an uncertain ID (claimed by an owner
// without the contract) that a transactional owner re-ran, flagged, and
// died before its sink committed, is uncertain again, not owed: the first
// owner may have applied it.
func TestRerunNotAppliedStaysUncertain(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := New(Options{})
	s.Apply(1, roundTrip(t, Record{Kind: KindTakeover, Epoch: 1, Writer: "a", Time: now}), now)
	s.Apply(2, roundTrip(t, Record{Kind: KindClaim, Epoch: 1, Writer: "a", Time: now, IDs: []event.Hash{hid(1)}}), now)
	if r := s.Resolve("in@1", 0); r.Uncertain != 1 {
		t.Fatalf("first resolution %+v", r)
	}
	tk := s.Takeover("b")
	s.Apply(3, roundTrip(t, tk), time.Time{})
	if !s.IsUncertain(hid(1)) {
		t.Fatal("the takeover lost the uncertain ID")
	}
	var b Batch
	s.Decide([]event.Hash{hid(2), hid(1)}, []uint64{40, 41}, now, "b", &b)
	if b.Paths[1] != PathUncertainRerun || b.Claim.Reruns != 1 || b.Claim.IDs[0] != hid(1) || b.Claim.Seq != 41 {
		t.Fatalf("decided %v, claim %+v", b.Paths, b.Claim)
	}
	s.Committed(&b, 4)
	// b dies before its sink commits; the next owner resolves.
	next := New(Options{})
	next.Apply(1, roundTrip(t, Record{Kind: KindTakeover, Epoch: 1, Writer: "a", Time: now}), now)
	next.Apply(2, roundTrip(t, Record{Kind: KindClaim, Epoch: 1, Writer: "a", Time: now, IDs: []event.Hash{hid(1)}}), now)
	next.Apply(3, roundTrip(t, tk), now)
	next.Apply(4, roundTrip(t, b.Claim), now)
	if r := next.Resolve("in@1", 39); r != (Resolution{Owed: 1, Uncertain: 1}) {
		t.Fatalf("resolution %+v", r)
	}
	next.Apply(5, roundTrip(t, next.Takeover("c")), time.Time{})
	if !next.IsUncertain(hid(1)) || next.Owed() != 1 {
		t.Fatal("the re-run is owed: it would run unflagged")
	}
}

// TestRaiseEpoch: a sink's later epoch makes the next takeover's later.
func TestRaiseEpoch(t *testing.T) {
	s := New(Options{})
	s.RaiseEpoch(7)
	if e := s.Takeover("x").Epoch; e != 8 {
		t.Fatalf("epoch %d", e)
	}
	s.RaiseEpoch(3)
	if e := s.Takeover("x").Epoch; e != 8 {
		t.Fatalf("epoch lowered to %d", e)
	}
}

func TestTransactionalModel(t *testing.T) {
	for seed := range uint64(200) {
		runTransactionalModel(t, seed)
	}
}

// FuzzTransactionalModel runs owners that crash at every point of a batch
// (before the claim, between the claim and the sink's commit, between the
// commit and the ack, after the ack before the log hears of it) against a
// transactional sink model: each ID's effect must be applied exactly once,
// and no run is ever flagged uncertain. A dead owner's late commit is
// refused by the sink's epoch.
func FuzzTransactionalModel(f *testing.F) {
	f.Add(uint64(1))
	f.Add(uint64(42))
	f.Fuzz(func(t *testing.T, seed uint64) { runTransactionalModel(t, seed) })
}

// sinkModel is a transactional sink: effects and position in one commit.
type sinkModel struct {
	epoch, applied uint64
	effects        map[int]int
}

// commit applies a batch for an owner of epoch e, or refuses it. Only a
// retry (retried) may hand it an event at or below its position: anything
// else is a re-run the edge should have known was applied.
func (k *sinkModel) commit(t *testing.T, e uint64, ids []int, seqs []uint64, retried bool) bool {
	if e < k.epoch {
		return false
	}
	k.epoch = e
	for i, id := range ids {
		if seqs[i] <= k.applied {
			if !retried {
				t.Fatalf("id %d at %d handed to the sink again (applied through %d)", id, seqs[i], k.applied)
			}
			continue // applied already (a retry after a lost reply)
		}
		k.effects[id]++
	}
	for _, s := range seqs {
		k.applied = max(k.applied, s)
	}
	return true
}

func runTransactionalModel(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 11))
	const unique, maxBatch = 300, 16
	msgs := modelStream(r, unique, 800)
	const source = "in@1"
	sink := &sinkModel{effects: map[int]int{}}
	var log []Record
	now := time.Unix(1_700_000_000, 0)
	// late is a dead owner's batch that commits after the next takeover, if
	// the sink lets it.
	var late func()
	finished := false
	for owner := 0; owner < 80 && !finished; owner++ {
		name := fmt.Sprintf("o%d", owner)
		st := New(Options{NoBloom: r.IntN(2) == 0})
		for i, rec := range log {
			st.Apply(uint64(i+1), rec, now)
		}
		// Fence the sink with the coming epoch, read its position.
		epoch := st.Epoch() + 1
		sink.epoch = max(sink.epoch, epoch)
		st.Resolve(source, sink.applied)
		if late != nil {
			late()
			late = nil
		}
		tk := roundTrip(t, st.Takeover(name))
		log = append(log, tk)
		st.Apply(uint64(len(log)), tk, time.Time{})
		crashAt := r.IntN(25)
		cursor := int(st.Through())
		appendRec := func(rec Record) {
			log = append(log, roundTrip(t, rec))
			st.Apply(uint64(len(log)), rec, time.Time{})
		}
		for step := 0; ; step++ {
			idx, hs, seqs := nextModelBatch(r, msgs, &cursor, maxBatch)
			if len(idx) == 0 {
				finished = true
				break
			}
			now = now.Add(time.Millisecond)
			var b Batch
			st.Decide(hs, seqs, now, name, &b)
			var runIDs []int
			var runSeqs []uint64
			for _, i := range b.Run {
				if b.Paths[i] == PathUncertainRerun {
					t.Fatalf("seed %d: owner %d: id %d re-run flagged with a transactional sink", seed, owner, msgs[idx[i]])
				}
				runIDs, runSeqs = append(runIDs, msgs[idx[i]]), append(runSeqs, seqs[i])
			}
			crash := step == crashAt
			if crash && r.IntN(4) == 0 {
				break // before the claim
			}
			if b.Claims {
				appendRec(b.Claim)
				st.Committed(&b, uint64(len(log)))
			}
			if crash && r.IntN(3) == 0 {
				// Between the claim and the commit: maybe the commit comes
				// late, from a dead owner the next takeover fenced.
				if len(runIDs) > 0 && r.IntN(2) == 0 {
					e := st.Epoch()
					late = func() {
						if sink.commit(t, e, runIDs, runSeqs, false) {
							t.Fatalf("seed %d: a fenced owner's commit landed", seed)
						}
					}
				}
				break
			}
			if len(runIDs) > 0 && !sink.commit(t, st.Epoch(), runIDs, runSeqs, false) {
				t.Fatalf("seed %d: owner %d refused by the sink", seed, owner)
			}
			if crash && r.IntN(2) == 0 {
				// The commit's reply lost, retried, then the owner dies.
				if len(runIDs) > 0 {
					sink.commit(t, st.Epoch(), runIDs, runSeqs, true)
				}
				break
			}
			st.Finished(&b, seqs[len(seqs)-1])
			if crash {
				break // acked; the log never heard
			}
			if r.IntN(4) == 0 {
				if d, ok := st.Done(name); ok {
					appendRec(d)
				}
			}
		}
	}
	if !finished {
		t.Fatalf("seed %d: no owner finished", seed)
	}
	for id := 0; id < unique; id++ {
		if n := sink.effects[id]; n != 1 {
			t.Fatalf("seed %d: id %d applied %d times", seed, id, n)
		}
	}
}
