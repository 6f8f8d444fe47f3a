package dedupe

import (
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
)

// A move hands the partition over with its claims: the old home's owner
// refuses it after the MoveAway record, the new home decides the old
// home's claims as duplicates, re-runs its uncertain IDs flagged, and
// starts at the MoveIn record's position.
func TestMoveHandsClaimsOver(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	replay := func(recs []Record, stored time.Time) *State {
		s := New(Options{Window: time.Hour})
		for i, r := range recs {
			s.Apply(uint64(i+1), r, stored)
		}
		return s
	}
	old := []Record{
		{Kind: KindTakeover, Epoch: 1, Writer: "h-0", Time: at},
		{Kind: KindClaim, Epoch: 1, Writer: "h-0", Time: at, Through: 10, IDs: []event.Hash{hid(1), hid(2)}},
		{Kind: KindClaim, Epoch: 1, Writer: "h-0", Time: at.Add(200 * time.Millisecond), DoneThrough: 2, Through: 20, IDs: []event.Hash{hid(3)}},
		{Kind: KindClaim, Epoch: 1, Writer: "h-0", Time: at.Add(5 * time.Second), DoneThrough: 3, Through: 30, IDs: []event.Hash{hid(4)}},
	}
	h := replay(old, at.Add(6*time.Second))
	away := h.MoveAway("eu-west")
	if away.Epoch != 2 || away.Through != 30 || len(away.IDs) != 1 || away.IDs[0] != hid(4) {
		t.Fatalf("move-away record %+v: want epoch 2, position 30, uncertain [4] (its batch not done)", away)
	}
	if to, ok := IsMoveAway(away); !ok || to != "eu-west" {
		t.Fatalf("IsMoveAway = %q, %v", to, ok)
	}
	old = append(old, away)
	if got := replay(old, at).MovedTo(); got != "eu-west" {
		t.Fatalf("the old home's replay says moved to %q, want eu-west: its owner would take the partition back", got)
	}

	// The new home's log: one record of its own (an earlier stint), then the move.
	mine := []Record{{Kind: KindTakeover, Epoch: 4, Writer: "s-0", Time: at}}
	carried := MoveClaims(old, mine[0], "us-east", 2)
	// [1 2] at +0, [3] at +0.2 (merged into a record of at most 2: a new one), [4] at +5 s.
	if len(carried) != 3 || len(carried[0].IDs) != 2 || carried[1].IDs[0] != hid(3) || !carried[1].Time.Equal(at.Add(200*time.Millisecond)) || carried[2].IDs[0] != hid(4) {
		t.Fatalf("carried %+v", carried)
	}
	for _, r := range carried {
		if r.Epoch != 4 || r.Kind != KindClaim || r.DoneThrough != 0 || r.Through != 0 {
			t.Fatalf("carried record %+v moves a watermark or another epoch", r)
		}
	}
	in := MoveIn(away, mine[len(mine)-1], "us-east", 700)
	if from, ok := IsMoveIn(in); !ok || from != "us-east" || in.Epoch != 5 {
		t.Fatalf("move-in record %+v", in)
	}
	log := append(append(mine, carried...), in)
	s := replay(log, at.Add(6*time.Second))
	if s.Through() != 700 || s.MovedTo() != "" || s.Uncertain() != 1 || !s.IsUncertain(hid(4)) {
		t.Fatalf("new home: position %d, moved to %q, uncertain %d: want 700, none, [4]", s.Through(), s.MovedTo(), s.Uncertain())
	}
	paths := s.Classify([]event.Hash{hid(1), hid(3), hid(4), hid(5)}, at.Add(7*time.Second), nil)
	want := []Path{PathExactHit, PathExactHit, PathUncertainRerun, PathBloomNegative}
	for i := range want {
		if paths[i] != want[i] {
			t.Fatalf("paths %v, want %v", paths, want)
		}
	}
	// Merged records are never earlier than their members: an ID is not
	// forgotten sooner than in the old home.
	one := MoveClaims([]Record{
		{Kind: KindClaim, Time: at.Add(time.Second), IDs: []event.Hash{hid(1)}},
		{Kind: KindClaim, Time: at.Add(1500 * time.Millisecond), IDs: []event.Hash{hid(2)}},
		{Kind: KindClaim, Time: at, IDs: []event.Hash{hid(3)}}, // a clock behind: its own record
	}, Record{}, "x", 100)
	if len(one) != 2 || !one[0].Time.Equal(at.Add(1500*time.Millisecond)) || !one[1].Time.Equal(at) {
		t.Fatalf("merged %+v", one)
	}
	// A takeover after the move (the new home's edge) keeps the partition.
	s.Apply(uint64(len(log)+1), s.Takeover("s-1"), time.Time{})
	if s.MovedTo() != "" || s.Through() != 700 {
		t.Fatalf("after the new owner's takeover: moved %q, position %d", s.MovedTo(), s.Through())
	}
}
