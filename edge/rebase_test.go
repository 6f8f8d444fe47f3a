package edge

import (
	"testing"
	"time"

	"github.com/onceplane/onceplane/dedupe"
)

// TestStrictFailoverRebase: a strict failover edge moves a partition back
// to where the home copy stopped only while its last record is the lost
// region's (at or below where the claim copy stopped); once the failover
// has appended, its own position stands.
func TestStrictFailoverRebase(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	state := func(lastSeq, through uint64) *dedupe.State {
		st := dedupe.New(dedupe.Options{})
		st.Apply(lastSeq, dedupe.Record{Kind: dedupe.KindClaim, Epoch: 1, Writer: "w", Time: at, Through: through}, at)
		return st
	}
	p := &promotedCopies{claims: []uint64{10}, homes: []uint64{300}}
	for _, c := range []struct {
		lastSeq, through, want uint64
	}{
		{10, 500, 300}, // the lost region's record, beyond the copy: rebased
		{9, 200, 200},  // the lost region's, within the copy: unchanged
		{11, 500, 500}, // the failover's own record: unchanged
	} {
		st := state(c.lastSeq, c.through)
		p.rebase(st, 0)
		if st.Through() != c.want {
			t.Errorf("last record %d at %d: resumes after %d, want %d", c.lastSeq, c.through, st.Through(), c.want)
		}
	}
	var none *promotedCopies
	st := state(1, 500)
	none.rebase(st, 0)
	if st.Through() != 500 {
		t.Errorf("no promoted copies moved the position to %d", st.Through())
	}
}
