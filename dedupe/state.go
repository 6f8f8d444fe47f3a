// Package dedupe is the pure decision core of a partition owner: classify a
// batch of event IDs as first-time or duplicate, build the claim-log record
// that claims them, apply committed records (live or replayed), track the done
// watermark and the uncertain set. It does no I/O; the edge drives it.
package dedupe

import (
	"time"

	"github.com/onceplane/onceplane/bloom"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/idset"
)

// Policy says what to do with an uncertain ID when it is delivered again.
type Policy int

const (
	// PolicyRerun runs the handler again for an uncertain ID (the default):
	// no event is lost; an idempotent sink absorbs the possible repeat.
	PolicyRerun Policy = iota
	// PolicySkip treats an uncertain ID as done: at most once for those IDs.
	PolicySkip
)

// Path says how a decision was reached.
type Path uint8

const (
	PathBloomNegative  Path = iota // first time: the Bloom pre-check was negative
	PathExactMiss                  // first time: Bloom positive (or off), exact set miss
	PathUncertainRerun             // claimed by an owner that did not finish; run again
	PathExactHit                   // duplicate: in the exact set
	PathInBatch                    // duplicate: earlier in the same batch
	PathUncertainSkip              // uncertain and PolicySkip: not run
	PathRemoteHit                  // duplicate: claimed in another region (replicated claim log)
	NumPaths                       // the number of paths
)

var pathNames = [...]string{"bloom-negative", "exact-miss", "uncertain-rerun", "exact-hit", "in-batch", "uncertain-skip", "remote-claim"}

func (p Path) String() string {
	if int(p) < len(pathNames) {
		return pathNames[p]
	}
	return "unknown"
}

// First reports whether the path hands the event to the handler.
func (p Path) First() bool { return p <= PathUncertainRerun }

// Paths lists every decision path, for metrics.
func Paths() []Path {
	ps := make([]Path, NumPaths)
	for i := range ps {
		ps[i] = Path(i)
	}
	return ps
}

// Options configures a State. The zero value is usable.
type Options struct {
	// Window is how long a claimed ID is remembered. Zero means 24 h.
	Window time.Duration
	// Slices is the number of expiry generations per window. Zero means 8.
	Slices int
	// ExpectedIDs pre-sizes the exact set and the Bloom filter. Zero means grow as needed.
	ExpectedIDs int
	// NoBloom turns the Bloom pre-check off (decisions are identical; only cost changes).
	NoBloom bool
	// Policy applies to uncertain IDs. Zero means PolicyRerun.
	Policy Policy
}

// Conflict is an ID claimed both in this region's claim log and in another
// region's: in asynchronous mode, a race inside the replication lag. Both
// regions ran the handler.
type Conflict struct {
	Hash event.Hash
	// Region is the other region; Writer, Epoch and Time describe its claim
	// (Time is the other writer's clock), Seq its position in this region's
	// xclaims stream. They are zero when the local claim came second and the
	// remote claim's details are not kept (Region is still set).
	Region string
	Writer string
	Epoch  uint64
	Time   time.Time
	Seq    uint64
}

// State is one partition's dedupe state. It is not safe for concurrent use.
type State struct {
	opt        Options
	set        *idset.Set
	remote     map[string]*idset.Set // other regions' claims, merged from their replicated logs
	conflicts  []Conflict
	bloom      *bloom.Filter
	pending    map[uint64][]event.Hash // claim seq -> IDs claimed there, not yet done
	uncertain  map[event.Hash]struct{}
	batch      map[event.Hash]struct{}
	lastSeq    uint64
	epoch      uint64
	doneLocal  uint64 // highest own claim seq whose batch finished
	doneLog    uint64 // highest DoneThrough written to the log
	through    uint64 // highest ingest seq decided, handled and acked
	throughLog uint64 // highest Through written to the log
}

// New returns an empty State.
func New(o Options) *State {
	if o.Window <= 0 {
		o.Window = 24 * time.Hour
	}
	if o.Slices <= 0 {
		o.Slices = 8
	}
	s := &State{
		opt:       o,
		set:       idset.New(idset.Options{Window: o.Window, Slices: o.Slices, ExpectedIDs: o.ExpectedIDs}),
		remote:    map[string]*idset.Set{},
		pending:   map[uint64][]event.Hash{},
		uncertain: map[event.Hash]struct{}{},
		batch:     map[event.Hash]struct{}{},
	}
	if !o.NoBloom {
		// The filter must remember at least as long as the exact set (Window
		// plus one slice) so that a Bloom negative is always right.
		exp := uint(o.ExpectedIDs)
		s.bloom = bloom.New(bloom.Options{Period: o.Window + o.Window/time.Duration(o.Slices), ExpectedIDs: exp})
	}
	return s
}

// LastSeq is the claim-log sequence of the last record applied: the expected
// last subject sequence of the next conditional append.
func (s *State) LastSeq() uint64 { return s.lastSeq }

// Epoch is the highest owner epoch seen.
func (s *State) Epoch() uint64 { return s.epoch }

// Uncertain returns the number of IDs currently uncertain.
func (s *State) Uncertain() int { return len(s.uncertain) }

// IsUncertain reports whether h is in the uncertain set.
func (s *State) IsUncertain(h event.Hash) bool { _, ok := s.uncertain[h]; return ok }

// Tracked returns the number of live IDs in the exact set.
func (s *State) Tracked() int { return s.set.Len() }

// RemoteTracked returns the number of live IDs merged from other regions.
func (s *State) RemoteTracked() int {
	n := 0
	for _, r := range s.remote {
		n += r.Len()
	}
	return n
}

// Bytes returns the memory held by the exact sets (local and merged remote
// claims) and the Bloom filter.
func (s *State) Bytes() (exact, bloom int) {
	if s.bloom != nil {
		bloom = s.bloom.Bytes()
	}
	exact = s.set.Bytes()
	for _, r := range s.remote {
		exact += r.Bytes()
	}
	return exact, bloom
}

// remoteClaimer returns the region whose merged claims hold h ("" if none).
func (s *State) remoteClaimer(h event.Hash, now time.Time) string {
	for region, r := range s.remote {
		if r.Contains(h, now) {
			return region
		}
	}
	return ""
}

// MergeRemote merges a claim record of partition p from another region's
// replicated claim log (seq is its position in the xclaims stream). IDs it
// claims become duplicates here (PathRemoteHit); any already claimed in this
// region are conflicts, returned by Conflicts. Takeover and done records
// claim nothing new and are ignored. now is the local clock, for expiry.
//
// A record older than the window is ignored: its IDs are no longer
// remembered anywhere, and an ID claimed here later than a window after it
// is a legitimate new first time, not a conflict. (A race is only detected
// when the replication lag is shorter than the window.)
func (s *State) MergeRemote(region string, seq uint64, r Record, now time.Time) {
	if r.Kind != KindClaim || len(r.IDs) == 0 || now.Sub(r.Time) >= s.opt.Window {
		return
	}
	set := s.remote[region]
	if set == nil {
		set = idset.New(idset.Options{Window: s.opt.Window, Slices: s.opt.Slices})
		s.remote[region] = set
	}
	for _, h := range r.IDs {
		if s.set.Contains(h, now) {
			s.conflicts = append(s.conflicts, Conflict{Hash: h, Region: region, Writer: r.Writer, Epoch: r.Epoch, Time: r.Time, Seq: seq})
		}
		set.Add(h, r.Time)
		if s.bloom != nil {
			s.bloom.Add(h, r.Time)
		}
	}
}

// PendingConflicts is the number of conflicts Conflicts would return.
func (s *State) PendingConflicts() int { return len(s.conflicts) }

// Conflicts returns and forgets the conflicts found since the last call.
// The same ID may be reported again after a rebuild: recording must be
// idempotent (the conflicts stream keeps one record per ID).
func (s *State) Conflicts() []Conflict {
	out := s.conflicts
	s.conflicts = nil
	return out
}

// Classify decides each hash of a batch, in order, at time now, appending one
// Path per hash to out. It does not change the claimed set.
func (s *State) Classify(hs []event.Hash, now time.Time, out []Path) []Path {
	clear(s.batch)
	for _, h := range hs {
		if _, dup := s.batch[h]; dup {
			out = append(out, PathInBatch)
			continue
		}
		s.batch[h] = struct{}{}
		switch {
		case s.bloom != nil && !s.bloom.MayContain(h, now):
			out = append(out, PathBloomNegative)
		case !s.set.Contains(h, now):
			if len(s.remote) > 0 && s.remoteClaimer(h, now) != "" {
				out = append(out, PathRemoteHit)
			} else {
				out = append(out, PathExactMiss)
			}
		default:
			if _, unc := s.uncertain[h]; unc {
				// Claimed in another region too: its effect happened there
				// (and the double claim is already a recorded conflict), so
				// running it again here could only add a second effect.
				if len(s.remote) > 0 && s.remoteClaimer(h, now) != "" {
					out = append(out, PathRemoteHit)
					continue
				}
				if s.opt.Policy == PolicySkip {
					out = append(out, PathUncertainSkip)
				} else {
					out = append(out, PathUncertainRerun)
				}
			} else {
				out = append(out, PathExactHit)
			}
		}
	}
	return out
}

// Claim returns the record that claims ids (the batch's first-time hashes)
// and carries the done watermark. Append it conditionally on LastSeq, then Apply it.
func (s *State) Claim(ids []event.Hash, writer string, now time.Time) Record {
	return Record{Kind: KindClaim, Epoch: s.epoch, Writer: writer, Time: now, DoneThrough: s.doneLocal, Through: s.through, IDs: ids}
}

// Takeover returns the record that opens a new epoch for writer. It carries
// the uncertain set: IDs claimed by earlier owners and not known done.
func (s *State) Takeover(writer string, now time.Time) Record {
	var ids []event.Hash
	seen := map[event.Hash]struct{}{}
	add := func(h event.Hash) {
		if _, ok := seen[h]; !ok && s.set.Contains(h, now) {
			seen[h] = struct{}{}
			ids = append(ids, h)
		}
	}
	for h := range s.uncertain {
		add(h)
	}
	for _, hs := range s.pending {
		for _, h := range hs {
			add(h)
		}
	}
	return Record{Kind: KindTakeover, Epoch: s.epoch + 1, Writer: writer, Time: now, Through: s.through, IDs: ids}
}

// Done returns a done-only record when the done watermark is ahead of the log.
func (s *State) Done(writer string, now time.Time) (Record, bool) {
	if s.doneLocal <= s.doneLog && s.through <= s.throughLog {
		return Record{}, false
	}
	return Record{Kind: KindDone, Epoch: s.epoch, Writer: writer, Time: now, DoneThrough: s.doneLocal, Through: s.through}, true
}

// MarkDone records that a batch has finished (handled and acknowledged): its
// claim at claim-log sequence seq (0 when it claimed nothing) and every event
// through ingest sequence through.
func (s *State) MarkDone(seq, through uint64) {
	if seq > s.doneLocal {
		s.doneLocal = seq
	}
	if through > s.through {
		s.through = through
	}
}

// Through is the ingest sequence through which the partition is done: a new
// owner resumes consuming after it.
func (s *State) Through() uint64 { return s.through }

// Apply applies a record committed at claim-log sequence seq: one this owner
// appended, or one read while rebuilding.
func (s *State) Apply(seq uint64, r Record) {
	if seq > s.lastSeq {
		s.lastSeq = seq
	}
	if r.Epoch > s.epoch {
		s.epoch = r.Epoch
	}
	switch r.Kind {
	case KindClaim:
		for _, h := range r.IDs {
			if len(s.remote) > 0 && !s.set.Contains(h, r.Time) {
				if region := s.remoteClaimer(h, r.Time); region != "" {
					s.conflicts = append(s.conflicts, Conflict{Hash: h, Region: region})
				}
			}
			s.set.Add(h, r.Time)
			if s.bloom != nil {
				s.bloom.Add(h, r.Time)
			}
			delete(s.uncertain, h)
		}
		if len(r.IDs) > 0 {
			s.pending[seq] = r.IDs
		}
	case KindTakeover:
		clear(s.pending)
		clear(s.uncertain)
		for _, h := range r.IDs {
			s.uncertain[h] = struct{}{}
		}
		s.doneLocal, s.doneLog = 0, 0
		s.markThrough(r.Through)
		return
	}
	s.markLogged(r.DoneThrough)
	s.markThrough(r.Through)
}

func (s *State) markThrough(t uint64) {
	if t > s.throughLog {
		s.throughLog = t
	}
	if t > s.through {
		s.through = t
	}
}

func (s *State) markLogged(through uint64) {
	if through > s.doneLog {
		s.doneLog = through
	}
	if through > s.doneLocal {
		s.doneLocal = through
	}
	for seq := range s.pending {
		if seq <= through {
			delete(s.pending, seq)
		}
	}
}

// Advance moves the window's clock to now (expiry) without a decision.
func (s *State) Advance(now time.Time) { s.set.Advance(now) }
