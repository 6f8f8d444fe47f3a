package dedupe

import (
	"testing"
	"time"
)

// TestRebaseCarriedByTheTakeover: a lost region's records put the position
// at 500 of its home stream, whose copy stopped at 300 and holds other
// messages after it. The failover's owner rebases to 300 and its takeover
// record carries it: a replay of the log resumes after 300, not after 500
// (the largest position ever recorded), and later records count from there.
func TestRebaseCarriedByTheTakeover(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	log := []Record{
		{Kind: KindTakeover, Epoch: 1, Writer: "lost", Time: at},
		{Kind: KindClaim, Epoch: 1, Writer: "lost", Time: at, Through: 500, IDs: nil},
	}
	replay := func(recs []Record) *State {
		s := New(Options{})
		for i, r := range recs {
			s.Apply(uint64(i+1), r, at)
		}
		return s
	}
	s := replay(log)
	if s.Through() != 500 {
		t.Fatalf("replayed position %d, want 500", s.Through())
	}
	s.Rebase(700) // above: unchanged
	if s.Through() != 500 {
		t.Fatalf("rebase above moved the position to %d", s.Through())
	}
	s.Rebase(300)
	tk := s.Takeover("failover")
	if tk.Through != 300 {
		t.Fatalf("takeover record carries %d, want 300", tk.Through)
	}
	log = append(log, tk)
	if got := replay(log).Through(); got != 300 {
		t.Fatalf("replay after the rebased takeover resumes after %d, want 300", got)
	}
	s = replay(log)
	s.MarkDone(0, 320)
	log = append(log, s.Claim(nil, "failover"))
	if got := replay(log).Through(); got != 320 {
		t.Fatalf("replay after the failover's first batch resumes after %d, want 320", got)
	}
}
