package dedupe

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

func hid(i int) event.Hash { return event.HashID(fmt.Sprintf("ev-%d", i)) }

func TestRecordRoundTrip(t *testing.T) {
	r := Record{Kind: KindClaim, Epoch: 7, Writer: "edge-a", Time: time.UnixMilli(1_700_000_000_123), DoneThrough: 41, Through: 9000, IDs: []event.Hash{hid(1), hid(2)}}
	b, err := r.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b)
	if err != nil || !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip: %v\n got %+v\nwant %+v", err, got, r)
	}
	for i := 0; i < len(b); i++ {
		if _, err := Decode(b[:i]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d accepted", i)
		}
	}
	if _, err := Decode(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func FuzzDecode(f *testing.F) {
	r := Record{Kind: KindTakeover, Epoch: 3, Writer: "w", Time: time.UnixMilli(5), IDs: []event.Hash{hid(9)}}
	b, _ := r.Append(nil)
	f.Add(b)
	f.Add([]byte("OC\x01\x01"))
	f.Add([]byte{})
	r2 := Record{Kind: KindTakeover, Epoch: 4, Writer: "w", Time: time.UnixMilli(6), IDs: []event.Hash{hid(9)}, Source: "in@1", Owed: []event.Hash{hid(10)}}
	b2, _ := r2.Append(nil)
	f.Add(b2)
	c2 := Record{Kind: KindClaim, Epoch: 4, Writer: "w", Time: time.UnixMilli(7), IDs: []event.Hash{hid(11), hid(12)}, Seq: 300, Reruns: 1}
	b3, _ := c2.Append(nil)
	f.Add(b3)
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := Decode(in)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error not ErrCorrupt: %v", err)
			}
			return
		}
		out, err := r.Append(nil)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		back, err := Decode(out)
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !reflect.DeepEqual(back, r) {
			t.Fatalf("record changed through a round trip:\n got %+v\nwant %+v", back, r)
		}
		if !bytes.Equal(canonical(t, out), out) {
			t.Fatalf("encoding is not canonical")
		}
	})
}

// canonical re-decodes and re-encodes, since varints have several encodings.
func canonical(t *testing.T, b []byte) []byte {
	r, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := r.Append(nil)
	return out
}

func TestClassifyPaths(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s := New(Options{})
	paths := s.Classify([]event.Hash{hid(1), hid(2), hid(1)}, now, nil)
	want := []Path{PathBloomNegative, PathBloomNegative, PathInBatch}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("paths %v", paths)
	}
	rec := s.Claim([]event.Hash{hid(1), hid(2)}, "a")
	if !rec.Time.Equal(now) {
		t.Fatalf("claim time %v, want the batch's ingest time %v", rec.Time, now)
	}
	s.Apply(1, rec, time.Time{})
	paths = s.Classify([]event.Hash{hid(1), hid(3)}, now, nil)
	if paths[0] != PathExactHit || !paths[1].First() {
		t.Fatalf("after claim: %v", paths)
	}
	// A new owner takes over before the batch is marked done: both IDs are uncertain.
	n := New(Options{})
	n.Apply(1, rec, now)
	tk := n.Takeover("b")
	n.Apply(2, tk, time.Time{})
	if n.Uncertain() != 2 || n.Epoch() != 1 {
		t.Fatalf("uncertain=%d epoch=%d", n.Uncertain(), n.Epoch())
	}
	if p := n.Classify([]event.Hash{hid(2)}, now, nil); p[0] != PathUncertainRerun {
		t.Fatalf("uncertain path %v", p)
	}
	skip := New(Options{Policy: PolicySkip})
	skip.Apply(1, rec, now)
	skip.Apply(2, skip.Takeover("c"), time.Time{})
	if p := skip.Classify([]event.Hash{hid(2)}, now, nil); p[0] != PathUncertainSkip {
		t.Fatalf("skip path %v", p)
	}
	// With the batch marked done in the log, a takeover finds nothing uncertain.
	s.MarkDone(1, 10)
	d, ok := s.Done("a")
	if !ok {
		t.Fatal("no done record")
	}
	m := New(Options{})
	m.Apply(1, rec, now)
	m.Apply(3, d, now)
	m.Apply(4, m.Takeover("b"), time.Time{})
	if m.Uncertain() != 0 {
		t.Fatalf("uncertain after done: %d", m.Uncertain())
	}
}

// TestOwnersWithCrashesModel drives owners through random crashes against a
// modelled log and broker and checks G1 against the model's own account, not
// the code's: every ID's handler runs at least once; an extra run is allowed
// only for an ID whose batch was in flight at a crash (claimed, and not yet
// recorded done in the log by a later record of its owner), once per such
// crash; a crash leaves at most two batches in flight; and decisions with
// and without the Bloom pre-check are identical.
func TestOwnersWithCrashesModel(t *testing.T) {
	for seed := uint64(0); seed < 40; seed++ {
		runModel(t, seed)
	}
}

func FuzzOwnersModel(f *testing.F) {
	f.Add(uint64(1))
	f.Add(uint64(99))
	f.Fuzz(func(t *testing.T, seed uint64) { runModel(t, seed) })
}

// modelStream is n messages of one partition: IDs 0..unique-1 first, then
// IDs drawn again at random (re-sends).
func modelStream(r *rand.Rand, unique, n int) []int {
	msgs := make([]int, 0, n)
	for i := range n {
		id := r.IntN(unique)
		if i < unique {
			id = i
		}
		msgs = append(msgs, id)
	}
	return msgs
}

// nextModelBatch cuts the next batch of up to maxBatch messages at
// *cursor: their indexes, ID hashes and ingest sequences (index+1).
func nextModelBatch(r *rand.Rand, msgs []int, cursor *int, maxBatch int) (idx []int, hs []event.Hash, seqs []uint64) {
	for n := 1 + r.IntN(maxBatch); n > 0 && *cursor < len(msgs); n-- {
		idx = append(idx, *cursor)
		*cursor++
	}
	for _, j := range idx {
		hs, seqs = append(hs, hid(msgs[j])), append(seqs, uint64(j+1))
	}
	return idx, hs, seqs
}

func runModel(t *testing.T, seed uint64) {
	r := rand.New(rand.NewPCG(seed, 7))
	const unique, maxBatch = 400, 20
	// msgs models one partition of the ingest stream (sequence = index+1); a
	// new owner consumes after the Through position recorded in the log.
	msgs := modelStream(r, unique, 1000)
	finished := false
	var log []Record
	runs := map[int]int{}
	excused := map[int]int{} // extra runs the model allows, from its own in-flight account
	now := time.Unix(1_700_000_000, 0)
	for owner := 0; owner < 60 && !finished; owner++ {
		name := fmt.Sprintf("o%d", owner)
		on, off := New(Options{}), New(Options{NoBloom: true})
		for i, rec := range log {
			on.Apply(uint64(i+1), rec, now)
			off.Apply(uint64(i+1), rec, now)
		}
		tk := on.Takeover(name)
		log = append(log, tk)
		on.Apply(uint64(len(log)), tk, time.Time{})
		off.Apply(uint64(len(log)), tk, time.Time{})
		// The uncertain set the code carried forward must come from the
		// model's own in-flight account.
		for i := 0; i < unique; i++ {
			if on.IsUncertain(hid(i)) && excused[i] == 0 {
				t.Fatalf("seed %d: owner %d: id %d uncertain, never in flight at a crash", seed, owner, i)
			}
		}
		if on.Uncertain() > 2*maxBatch {
			t.Fatalf("seed %d: owner %d: %d uncertain > two batches", seed, owner, on.Uncertain())
		}
		crashAt := r.IntN(30)
		cursor := int(on.Through())
		// inFlight: IDs of this owner's batches that are claimed but whose
		// finish no later record of this owner has carried to the log yet.
		var inFlight []int
		crash := func() {
			seen := map[int]bool{}
			for _, id := range inFlight {
				if !seen[id] {
					seen[id] = true
					excused[id]++
				}
			}

		}
		appendRec := func(rec Record) uint64 {
			log = append(log, rec)
			seq := uint64(len(log))
			on.Apply(seq, rec, time.Time{})
			off.Apply(seq, rec, time.Time{})
			return seq
		}
		for step := 0; ; step++ {
			idx, hs, seqs := nextModelBatch(r, msgs, &cursor, maxBatch)
			if len(idx) == 0 {
				finished = true
				break
			}
			now = now.Add(time.Millisecond)
			// The batch steps the edge takes (Decide, Committed, Finished),
			// with and without the Bloom pre-check.
			var bOn, bOff Batch
			on.Decide(hs, seqs, now, name, &bOn)
			off.Decide(hs, seqs, now, name, &bOff)
			pOn := bOn.Paths
			var firstIDs []int
			for i := range pOn {
				if pOn[i].First() != bOff.Paths[i].First() {
					t.Fatalf("seed %d: bloom changed a decision: %v vs %v", seed, pOn[i], bOff.Paths[i])
				}
			}
			for _, i := range bOn.Run {
				firstIDs = append(firstIDs, msgs[idx[i]])
			}
			if bOn.Claims != bOff.Claims || !reflect.DeepEqual(bOn.Claim, bOff.Claim) {
				t.Fatalf("seed %d: bloom changed the claim record: %+v vs %+v", seed, bOn.Claim, bOff.Claim)
			}
			if step == crashAt && r.IntN(2) == 0 {
				crash() // crash before the claim
				break
			}
			// The claim, when the batch runs anything; the record carries
			// the previous batch's finish to the log.
			if bOn.Claims {
				log = append(log, bOn.Claim)
				seq := uint64(len(log))
				on.Committed(&bOn, seq)
				off.Committed(&bOff, seq)
				inFlight = append([]int(nil), firstIDs...)
			}
			// Handler: with a crash, only a prefix of the first-time events runs.
			limit := len(idx)
			if step == crashAt {
				limit = r.IntN(len(idx) + 1)
			}
			for i := 0; i < limit; i++ {
				if pOn[i].First() {
					runs[msgs[idx[i]]]++
				}
			}
			if step == crashAt {
				crash() // crash before the ack
				break
			}
			through := uint64(idx[len(idx)-1] + 1)
			on.Finished(&bOn, through)
			off.Finished(&bOff, through)
			// Acked, but in flight until a later record tells the log.
			// Sometimes the partition goes idle and writes a done record.
			if r.IntN(4) == 0 {
				if d, ok := on.Done(name); ok {
					appendRec(d)
					inFlight = nil
				}
			}
		}
	}
	if !finished {
		t.Fatalf("seed %d: no owner finished", seed)
	}
	for i := 0; i < unique; i++ {
		if runs[i] == 0 {
			t.Fatalf("seed %d: id %d lost", seed, i)
		}
		if runs[i] > 1+excused[i] {
			t.Fatalf("seed %d: id %d ran %d times; the model's in-flight account allows %d", seed, i, runs[i], 1+excused[i])
		}
	}
}

// TestRemoteMergeModel checks merging other regions' claims against a model:
// an ID claimed only elsewhere is a remote-claim duplicate, an ID claimed
// here is an exact hit, and the conflicts reported over the run are exactly
// the IDs claimed both here and elsewhere, whichever came first.
func TestRemoteMergeModel(t *testing.T) {
	for seed := range uint64(50) {
		runRemoteModel(t, seed)
	}
}

func FuzzRemoteMergeModel(f *testing.F) {
	f.Add(uint64(1))
	f.Fuzz(func(t *testing.T, seed uint64) { runRemoteModel(t, seed) })
}

func runRemoteModel(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 7))
	now := time.Unix(1_700_000_000, 0)
	st := New(Options{Window: time.Hour, NoBloom: rng.IntN(2) == 0})
	local, remote := map[int]bool{}, map[int]bool{}
	both := map[int]bool{} // claimed on both sides, the second inside the first's window
	reported := map[event.Hash]string{}
	collect := func() {
		for _, c := range st.Conflicts() {
			if c.Region == "" {
				t.Fatalf("seed %d: conflict without a region", seed)
			}
			reported[c.Hash] = c.Region
		}
	}
	regions := []string{"eu-west", "ap-south"}
	var seq uint64
	localAt, remoteAt := map[int]time.Time{}, map[int]time.Time{}
	for step := range 200 {
		now = now.Add(time.Millisecond)
		if rng.IntN(40) == 0 {
			// Jump past the window (and the exact set's extra slice): every
			// claim so far is forgotten, and a new claim of the same ID on
			// either side is a first time, not a conflict.
			now = now.Add(2 * time.Hour)
		}
		for n, at := range localAt {
			if now.Sub(at) >= time.Hour {
				delete(local, n)
				delete(localAt, n)
			}
		}
		for n, at := range remoteAt {
			if now.Sub(at) >= time.Hour {
				delete(remote, n)
				delete(remoteAt, n)
			}
		}
		if rng.IntN(3) == 0 {
			var ids []event.Hash
			var ns []int
			for range 1 + rng.IntN(5) {
				n := rng.IntN(60)
				ids, ns = append(ids, hid(n)), append(ns, n)
			}
			seq++
			st.MergeRemote(regions[rng.IntN(2)], seq, Record{Kind: KindClaim, Writer: "w", Epoch: 1, Time: now, IDs: ids}, now)
			for _, n := range ns {
				remote[n], remoteAt[n] = true, now
				if local[n] {
					both[n] = true
				}
			}
			collect()
			continue
		}
		var hs []event.Hash
		var ns []int
		for range 1 + rng.IntN(6) {
			n := rng.IntN(60)
			hs, ns = append(hs, hid(n)), append(ns, n)
		}
		paths := st.Classify(hs, now, nil)
		var first []event.Hash
		seen := map[int]bool{}
		for i, n := range ns {
			var want Path
			switch {
			case seen[n]:
				want = PathInBatch
			case local[n]:
				want = PathExactHit
			case remote[n]:
				want = PathRemoteHit
			default:
				want = PathExactMiss
			}
			seen[n] = true
			got := paths[i]
			if got == PathBloomNegative {
				got = PathExactMiss
			}
			if got != want {
				t.Fatalf("seed %d step %d: id %d path %v, want %v", seed, step, n, paths[i], want)
			}
			if paths[i].First() {
				first = append(first, hs[i])
				local[n], localAt[n] = true, now
			}
		}
		if len(first) > 0 {
			rec := st.Claim(first, "me")
			st.Apply(st.LastSeq()+1, rec, time.Time{})
		}
		// A local claim that lands after a remote one (an owner that took
		// over without having merged it yet) is a conflict too.
		if rng.IntN(10) == 0 {
			n := rng.IntN(60)
			if !local[n] {
				st.Apply(st.LastSeq()+1, Record{Kind: KindClaim, Writer: "other-owner", Time: now, IDs: []event.Hash{hid(n)}}, now)
				local[n], localAt[n] = true, now
				if remote[n] {
					both[n] = true
				}
			}
		}
		collect()
	}
	for n := range 60 {
		if _, ok := reported[hid(n)]; ok != both[n] {
			t.Fatalf("seed %d: id %d claimed on both sides inside the window=%v, reported=%v", seed, n, both[n], ok)
		}
	}
}

// TestCarry: a failback carries the superseded claims (IDs and time) into
// the failover's epoch, nothing done, no watermark moved; a replay then
// holds them claimed and pending, so the next owner's takeover makes them
// uncertain.
func TestCarry(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	x, y := event.HashID("x"), event.HashID("y")
	sup := []Record{
		{Kind: KindClaim, Epoch: 3, Writer: "a", Time: at, IDs: []event.Hash{x}, Through: 40, DoneThrough: 9},
		{Kind: KindDone, Epoch: 3, Writer: "a", Time: at, DoneThrough: 10, Through: 41},
		{Kind: KindTakeover, Epoch: 4, Writer: "a", Time: at, IDs: []event.Hash{y}},
		{Kind: KindClaim, Epoch: 4, Writer: "a", Time: at.Add(time.Second), IDs: []event.Hash{y}},
	}
	got := Carry(sup, Record{Kind: KindClaim, Epoch: 9, Through: 30})
	if len(got) != 2 {
		t.Fatalf("carried %d records, want 2: %+v", len(got), got)
	}
	for i, want := range []Record{{Kind: KindClaim, Epoch: 9, Writer: CarryWriter, Time: at, IDs: []event.Hash{x}}, {Kind: KindClaim, Epoch: 9, Writer: CarryWriter, Time: at.Add(time.Second), IDs: []event.Hash{y}}} {
		g := got[i]
		if g.Kind != want.Kind || g.Epoch != want.Epoch || g.Writer != want.Writer || !g.Time.Equal(want.Time) || g.Through != 0 || g.DoneThrough != 0 || len(g.IDs) != 1 || g.IDs[0] != want.IDs[0] {
			t.Fatalf("carried record %d: %+v, want %+v", i, g, want)
		}
	}
}
