package dedupe

import (
	"slices"
	"strings"
	"time"
)

// A home move (strict mode) hands a partition from the region that decides
// it to another by command. Three records carry it, all pure:
//
//   - MoveAway, appended to the old home's log, is a takeover by no edge:
//     its writer ("moved-to:<region>") names the new home, it fences the
//     old home's owner at its next append, and an owner that replays it
//     refuses the partition (State.MovedTo) instead of taking it back;
//   - MoveClaims, appended to the new home's log, carry the old home's
//     claims with their times, so an ID the old home decided stays claimed
//     for the rest of its window;
//   - MoveIn, appended after them, opens the new home's epoch at the
//     position its consumer starts after, with the old home's uncertain set.
const (
	movedToPrefix   = "moved-to:"
	movedFromPrefix = "moved-from:"
)

// MoveAway returns the record that fences s's partition for a move to
// region to: a takeover record carrying s's uncertain set and position.
func (s *State) MoveAway(to string) Record {
	return s.Takeover(movedToPrefix + to)
}

// MovedTo returns the region the partition was moved to when the last
// takeover in the log is a MoveAway record, else "".
func (s *State) MovedTo() string { return s.movedTo }

// MovedFrom returns the region the partition was moved from when the last
// takeover in the log is a MoveIn record.
func (s *State) MovedFrom() (string, bool) {
	return s.movedFrom, s.movedFrom != ""
}

// MoveClaims returns the claim records that carry old's claims (the old
// home's claim records, in log order) into a log whose last record is last.
// Consecutive records are merged, up to maxIDs IDs and a second of record
// time, into one at the latest of their times: an ID is remembered at most
// a second longer, never shorter. Records in the new log's epoch, they
// move no watermark and mark nothing done.
func MoveClaims(old []Record, last Record, from string, maxIDs int) []Record {
	maxIDs = max(1, min(maxIDs, MaxIDsPerRecord))
	var out []Record
	var cur *Record
	var first time.Time
	flush := func() {
		if cur != nil && len(cur.IDs) > 0 {
			out = append(out, *cur)
		}
		cur = nil
	}
	for _, r := range old {
		if r.Kind != KindClaim || len(r.IDs) == 0 {
			continue
		}
		if cur != nil && (r.Time.Sub(first) > time.Second || r.Time.Before(first)) {
			flush()
		}
		for _, h := range r.IDs {
			if cur == nil {
				cur = &Record{Kind: KindClaim, Epoch: last.Epoch, Writer: movedFromPrefix + from, Time: r.Time}
				first = r.Time
			}
			cur.IDs = append(cur.IDs, h)
			if r.Time.After(cur.Time) {
				cur.Time = r.Time
			}
			if len(cur.IDs) >= maxIDs {
				flush()
			}
		}
	}
	flush()
	return out
}

// MoveIn returns the record that opens the new home's epoch after a move
// from region from: its position is through (the new home's consumer
// starts after it), its uncertain set the old home's (away's IDs), its
// epoch one past last's.
func MoveIn(away, last Record, from string, through uint64) Record {
	// The old home's owed IDs (its sink had not applied them) travel as
	// uncertain: the new home's sink may be another, and a flagged run is
	// never a silent second effect.
	ids := append(slices.Clone(away.IDs), away.Owed...)
	return Record{Kind: KindTakeover, Epoch: last.Epoch + 1, Writer: movedFromPrefix + from, Time: away.Time, Through: through, IDs: ids}
}

// IsMoveAway reports whether r is a MoveAway record, and to where.
func IsMoveAway(r Record) (string, bool) { return takeoverBy(r, movedToPrefix) }

// IsMoveIn reports whether r is a MoveIn record, and from where.
func IsMoveIn(r Record) (string, bool) { return takeoverBy(r, movedFromPrefix) }

// takeoverBy returns what follows prefix in the writer of takeover record r.
func takeoverBy(r Record, prefix string) (string, bool) {
	if r.Kind != KindTakeover {
		return "", false
	}
	rest, ok := strings.CutPrefix(r.Writer, prefix)
	if !ok {
		return "", false
	}
	return rest, true
}
