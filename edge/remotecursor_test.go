package edge

import (
	"math/rand/v2"
	"testing"
)

// checkCursor delivers the origin sequences recs along two paths in the
// order steps picks (true: the xclaims stream's next record; false: the
// tail reads from next() what it would find, up to three records), and
// checks that every record is merged exactly once, in origin order.
func checkCursor(t *testing.T, recs []uint64, steps []bool) {
	t.Helper()
	var c remoteCursor
	merged := map[uint64]int{}
	var last uint64
	xi := 0
	merge := func(seq uint64) {
		merged[seq]++
		if seq <= last {
			t.Fatalf("merged %d after %d (steps %v)", seq, last, steps)
		}
		last = seq
	}
	for _, x := range steps {
		if x {
			if xi == len(recs) {
				continue
			}
			if c.fromXClaims(recs[xi]) {
				merge(recs[xi])
			}
			xi++
			continue
		}
		from, n := c.next(), 0
		for _, seq := range recs {
			if seq >= from && n < 3 {
				n++
				if c.fromTail(seq) {
					merge(seq)
				}
			}
		}
	}
	for ; xi < len(recs); xi++ { // xclaims catches up in the end
		if c.fromXClaims(recs[xi]) {
			merge(recs[xi])
		}
	}
	for _, seq := range recs {
		if merged[seq] != 1 {
			t.Fatalf("record %d merged %d times (steps %v)", seq, merged[seq], steps)
		}
	}
}

func TestRemoteCursorMergesEachRecordOnce(t *testing.T) {
	recs := []uint64{3, 4, 9, 10, 11, 20, 21, 40}
	r := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		steps := make([]bool, r.IntN(20))
		for i := range steps {
			steps[i] = r.IntN(2) == 0
		}
		checkCursor(t, recs, steps)
	}
}

// TestRemoteCursorRestartedLog: the region's log sourced again from its
// start (a failback remakes it with the same sequences) is merged as it
// comes (as before the tail), and the tail reads only beyond the highest
// sequence ever seen; a log made anew with low sequences is merged whole
// by the xclaims stream.
func TestRemoteCursorRestartedLog(t *testing.T) {
	var c remoteCursor
	for _, s := range []uint64{5, 6} {
		if !c.fromXClaims(s) {
			t.Fatalf("%d skipped", s)
		}
	}
	if !c.fromTail(7) || !c.fromTail(8) {
		t.Fatal("tail beyond xclaims skipped")
	}
	if c.fromXClaims(7) {
		t.Fatal("a record the tail merged merged again")
	}
	// Sourced again from its start: xclaims merges it again; the tail
	// reads after 8, never from 1.
	if !c.fromXClaims(1) || c.next() != 9 {
		t.Fatalf("after a restart from 1: merged? next %d, want 9", c.next())
	}
	if c.fromTail(3) {
		t.Fatal("the tail merged an old record of a log sourced again")
	}
	if !c.fromTail(9) || !c.fromXClaims(2) || !c.fromXClaims(8) || c.fromXClaims(9) || !c.fromXClaims(10) {
		t.Fatal("after the restart: xclaims must merge 2..8 again, skip 9 (tailed) and merge 10")
	}
}

func FuzzRemoteCursor(f *testing.F) {
	f.Add(uint64(0b1011), uint8(12))
	f.Fuzz(func(t *testing.T, pattern uint64, n uint8) {
		steps := make([]bool, n%64)
		for i := range steps {
			steps[i] = pattern&(1<<i) != 0
		}
		checkCursor(t, []uint64{1, 2, 5, 6, 7, 12, 13, 30, 31, 32}, steps)
	})
}
