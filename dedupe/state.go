// Package dedupe is the pure decision core of a partition owner: classify a
// batch of event IDs as first-time or duplicate, build the claim-log record
// that claims them, apply committed records (live or replayed), track the done
// watermark and the uncertain set. It does no I/O; the edge drives it.
//
// Time has one authority: JetStream's stored timestamps. A State's clock is
// the latest ingest time it has decided (Classify) or applied (a record's
// Time, which is its batch's ingest time, clamped on replay to the claim
// stream's own timestamp of the record). An ID's age, the window and the
// Bloom generations run on that clock; no writer's wall clock enters a
// decision, and other regions' times never move it (their claims are timed
// by this region's xclaims stream).
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
	PathOwed                       // claimed by an owner whose transactional sink had not applied it: a first run
	PathUncertainRerun             // claimed by an owner that did not finish; run again
	PathExactHit                   // duplicate: in the exact set
	PathInBatch                    // duplicate: earlier in the same batch
	PathUncertainSkip              // uncertain and PolicySkip: not run
	PathRemoteHit                  // duplicate: claimed in another region (replicated claim log)
	NumPaths                       // the number of paths
)

var pathNames = [...]string{"bloom-negative", "exact-miss", "owed", "uncertain-rerun", "exact-hit", "in-batch", "uncertain-skip", "remote-claim"}

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
	// ExpectedIDs is the number of IDs claimed per Window that the exact set
	// and the Bloom filter are sized for (the live set spans a window and a
	// slice). Zero means grow as needed.
	ExpectedIDs int
	// RemoteExpectedIDs is the number of IDs per Window each other region
	// claims in the partition: the set of that region's merged claims is
	// made that size when its first record arrives, so that a takeover's
	// merge (a window of every other region's IDs) does not rehash the set
	// again and again. Zero means ExpectedIDs (regions of similar traffic);
	// negative means grow as needed.
	RemoteExpectedIDs int
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
	// (Time is the record's own time, from the other region's servers), Seq
	// its position in this region's xclaims stream. They are zero when the
	// local claim came second and the remote claim's details are not kept
	// (Region is still set).
	Region string
	Writer string
	Epoch  uint64
	Time   time.Time
	Seq    uint64
	// ClaimGen is the generation tag of the local claim that raced (see
	// idset.Set.Generation): with Hash and Region it names one race, found
	// the same by every owner that rebuilds it, and new when the ID races
	// again a window later. The live apply and a replay of the same claim
	// can tag it a slice or more apart (SameClaim).
	ClaimGen uint16
}

// remoteLog is what one other region's log of this partition says.
type remoteLog struct {
	set *idset.Set // claimed IDs, timed by this region's xclaims stream
	// open are the IDs of the region's last claim record while no record has
	// followed it: its batch may not have been handled yet.
	open map[event.Hash]struct{}
	// uncertain are IDs the region's takeover records listed as claimed and
	// not known done, until the region claims them again.
	uncertain map[event.Hash]struct{}
	clock     time.Time // latest xclaims stored time merged
}

// done reports whether the region claimed h and its handler is known to have finished.
func (r *remoteLog) done(h event.Hash) bool {
	if _, ok := r.open[h]; ok {
		return false
	}
	_, unc := r.uncertain[h]
	return !unc
}

// State is one partition's dedupe state. It is not safe for concurrent use.
type State struct {
	opt        Options
	set        *idset.Set
	remote     map[string]*remoteLog // other regions' claims, merged from their replicated logs
	conflicts  []Conflict
	bloom      *bloom.Filter           // local claims only
	pending    map[uint64]pendingClaim // claim seq -> the claim there, not yet done
	uncertain  map[event.Hash]struct{}
	owed       map[event.Hash]struct{} // claimed, known not applied by the sink (Resolve): first runs
	sources    map[uint64]string       // epoch -> the input its claims' Seq count (Record.Source)
	resolved   *resolution             // the last Resolve's result, until a record is applied
	batch      map[event.Hash]struct{}
	clock      time.Time // latest JetStream stored time decided or applied
	lastSeq    uint64
	epoch      uint64
	doneLocal  uint64 // highest own claim seq whose batch finished
	doneLog    uint64 // highest DoneThrough written to the log
	through    uint64 // highest ingest seq decided, handled and acked
	throughLog uint64 // highest Through written to the log
	movedTo    string // the region the last takeover (a MoveAway) moved the partition to
	movedFrom  string // the region the last takeover (a MoveIn) moved the partition from
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
		remote:    map[string]*remoteLog{},
		pending:   map[uint64]pendingClaim{},
		uncertain: map[event.Hash]struct{}{},
		owed:      map[event.Hash]struct{}{},
		sources:   map[uint64]string{},
		batch:     map[event.Hash]struct{}{},
	}
	return s
}

// addBloom adds a local claim to the Bloom filter, made at the first one:
// a partition that never claims anything (an idle one among thousands an
// edge owns) holds no filter. Every local claim enters the exact set here
// and nowhere else, so a filter made late still holds every live local
// claim, and a Bloom negative stays right.
func (s *State) addBloom(h event.Hash, at time.Time) {
	if s.opt.NoBloom {
		return
	}
	if s.bloom == nil {
		// The filter must remember at least as long as the exact set
		// (Window plus one slice) so that a Bloom negative is always
		// right; a period of that length sees ExpectedIDs*(Slices+1)/Slices
		// IDs.
		o := s.opt
		period := o.Window + o.Window/time.Duration(o.Slices)
		exp := uint(o.ExpectedIDs + o.ExpectedIDs/o.Slices)
		s.bloom = bloom.New(bloom.Options{Period: period, ExpectedIDs: exp})
	}
	s.bloom.Add(h, at)
}

// LastSeq is the claim-log sequence of the last record applied: the expected
// last subject sequence of the next conditional append.
func (s *State) LastSeq() uint64 { return s.lastSeq }

// Epoch is the highest owner epoch seen.
func (s *State) Epoch() uint64 { return s.epoch }

// Clock is the latest JetStream stored time the state has decided or
// applied: the time its window is measured on.
func (s *State) Clock() time.Time { return s.clock }

// Uncertain returns the number of IDs currently uncertain.
func (s *State) Uncertain() int { return len(s.uncertain) }

// IsUncertain reports whether h is in the uncertain set.
func (s *State) IsUncertain(h event.Hash) bool { _, ok := s.uncertain[h]; return ok }

// Tracked returns the number of live IDs in the exact set.
func (s *State) Tracked() int { return s.set.Len() }

// Bytes returns the memory held by the exact sets (local and merged remote
// claims) and the Bloom filter.
func (s *State) Bytes() (exact, bloom int) {
	if s.bloom != nil {
		bloom = s.bloom.Bytes()
	}
	exact = s.set.Bytes()
	for _, r := range s.remote {
		exact += r.set.Bytes()
	}
	return exact, bloom
}

// observe moves the clock forward to t (never back).
func (s *State) observe(t time.Time) {
	if t.After(s.clock) {
		s.clock = t
	}
}

// remoteNow is the time a region's merged claims expire on: the later of its
// xclaims clock and this state's clock (both this region's servers), so that
// a region that went quiet is still forgotten a window later.
func (s *State) remoteNow(r *remoteLog) time.Time {
	if s.clock.After(r.clock) {
		return s.clock
	}
	return r.clock
}

// remoteClaimer returns the region whose merged claims hold h ("" if none).
func (s *State) remoteClaimer(h event.Hash) string {
	for region, r := range s.remote {
		if r.set.Contains(h, s.remoteNow(r)) {
			return region
		}
	}
	return ""
}

// remoteDone reports whether some region claimed h and is known to have
// finished handling it.
func (s *State) remoteDone(h event.Hash) bool {
	for _, r := range s.remote {
		if r.set.Contains(h, s.remoteNow(r)) && r.done(h) {
			return true
		}
	}
	return false
}

// remoteExpected is the size each other region's merged set is made for.
func (s *State) remoteExpected() int {
	switch {
	case s.opt.RemoteExpectedIDs < 0:
		return 0
	case s.opt.RemoteExpectedIDs == 0:
		return s.opt.ExpectedIDs
	}
	return s.opt.RemoteExpectedIDs
}

// MergeRemote merges a record of partition p from another region's
// replicated claim log: seq is its position in this region's xclaims stream
// and stored the time that stream stored it (this region's servers: the
// record's own Time is another region's and is not used). IDs it claims
// become duplicates here (PathRemoteHit); any already claimed in this region
// are conflicts, returned by Conflicts. Takeover records say which of the
// region's claims are uncertain there, so that an ID uncertain on both sides
// is run again rather than skipped by both.
//
// A claim stored more than a window before the latest one merged from that
// region is ignored: its IDs are no longer remembered anywhere.
func (s *State) MergeRemote(region string, seq uint64, r Record, stored time.Time) {
	rl := s.remote[region]
	if rl == nil {
		rl = &remoteLog{set: idset.New(idset.Options{Window: s.opt.Window, Slices: s.opt.Slices, ExpectedIDs: s.remoteExpected()}),
			open: map[event.Hash]struct{}{}, uncertain: map[event.Hash]struct{}{}}
		s.remote[region] = rl
	}
	if stored.After(rl.clock) {
		rl.clock = stored
	}
	// Records of one region's partition log arrive in its order, and an
	// owner finishes a batch before it appends again: any record after a
	// claim closes it, unless it is a new owner's takeover, which lists
	// what it did not know to be done.
	clear(rl.open)
	switch r.Kind {
	case KindTakeover:
		for _, h := range r.IDs {
			rl.uncertain[h] = struct{}{}
		}
		return
	case KindClaim:
	default:
		return
	}
	if len(r.IDs) == 0 || s.remoteNow(rl).Sub(stored) >= s.opt.Window {
		return
	}
	for _, h := range r.IDs {
		// Claimed here and still remembered when the other region's claim
		// reached this region: a race inside the lag. The question is asked
		// at the xclaims time without moving the local clock, which runs on
		// ingest times.
		if s.set.LiveAt(h, stored) {
			gen, _ := s.set.Generation(h)
			s.conflicts = append(s.conflicts, Conflict{Hash: h, Region: region, Writer: r.Writer, Epoch: r.Epoch, Time: r.Time, Seq: seq, ClaimGen: gen})
		}
		rl.set.Add(h, stored)
		rl.open[h] = struct{}{}
		delete(rl.uncertain, h)
	}
}

// PendingConflicts is the number of conflicts Conflicts would return.
func (s *State) PendingConflicts() int { return len(s.conflicts) }

// Conflicts returns and forgets the conflicts found since the last call.
// The same ID may be reported again after a rebuild: recording must be
// idempotent (the conflicts stream keeps one record per race).
func (s *State) Conflicts() []Conflict {
	out := s.conflicts
	s.conflicts = nil
	return out
}

// SameClaim reports whether claim generations a and b (Conflict.ClaimGen)
// may tag the same local claim: less than a window apart, modulo 2^16. A
// claim applied live is timed by its record, and read back by the earlier
// of that and the time the claim stream stored it (RecordTime): when the
// ingest and claim-stream leaders' clocks disagree across a slice
// boundary, the two tags differ. A race of the same ID a window or more
// later is a new race.
func (s *State) SameClaim(a, b uint16) bool {
	d := a - b
	return min(d, -d) < uint16(s.opt.Slices)
}

// Classify decides each hash of a batch, in order, appending one Path per
// hash to out. at is the time the ingest stream stored the batch's latest
// event: it moves the clock forward, never back. Classify does not change
// the claimed set.
func (s *State) Classify(hs []event.Hash, at time.Time, out []Path) []Path {
	s.observe(at)
	now := s.clock
	clear(s.batch)
	for _, h := range hs {
		if _, dup := s.batch[h]; dup {
			out = append(out, PathInBatch)
			continue
		}
		s.batch[h] = struct{}{}
		// No filter yet: no local claim yet, so every ID is a negative.
		bloomNegative := !s.opt.NoBloom && (s.bloom == nil || !s.bloom.MayContain(h, now))
		switch {
		case bloomNegative || !s.set.Contains(h, now):
			// The Bloom filter holds local claims only: a negative still
			// has to ask the other regions' claims.
			switch {
			case len(s.remote) > 0 && s.remoteClaimer(h) != "":
				out = append(out, PathRemoteHit)
			case bloomNegative:
				out = append(out, PathBloomNegative)
			default:
				out = append(out, PathExactMiss)
			}
		default:
			_, owed := s.owed[h]
			if _, unc := s.uncertain[h]; unc || owed {
				// Claimed in another region too, and handled there: running
				// it again here could only add a second effect (the double
				// claim is already a recorded conflict). Not known done
				// there (its owner died too), it runs here again.
				if len(s.remote) > 0 && s.remoteDone(h) {
					out = append(out, PathRemoteHit)
					continue
				}
				switch {
				case owed:
					out = append(out, PathOwed)
				case s.opt.Policy == PolicySkip:
					out = append(out, PathUncertainSkip)
				default:
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
// at the state's clock (the batch's ingest time) and carries the done
// watermark. Append it conditionally on LastSeq, then Apply it.
func (s *State) Claim(ids []event.Hash, writer string) Record {
	return Record{Kind: KindClaim, Epoch: s.epoch, Writer: writer, Time: s.clock, DoneThrough: s.doneLocal, Through: s.through, IDs: ids}
}

// Takeover returns the record that opens a new epoch for writer. It carries
// the uncertain set (IDs claimed by earlier owners and not known done) and
// the owed set (claimed, and known not applied: see Resolve), and the
// source of the last Resolve.
func (s *State) Takeover(writer string) Record {
	var ids, owed []event.Hash
	seen := map[event.Hash]struct{}{}
	add := func(to *[]event.Hash, h event.Hash) {
		if _, ok := seen[h]; !ok && s.set.Contains(h, s.clock) {
			seen[h] = struct{}{}
			*to = append(*to, h)
		}
	}
	source := ""
	if r := s.resolved; r != nil {
		source = r.source
		for h := range r.unsure {
			add(&ids, h)
		}
		for h := range r.owed {
			add(&owed, h)
		}
	} else {
		for h := range s.uncertain {
			add(&ids, h)
		}
		for _, c := range s.pending {
			for _, h := range c.ids {
				add(&ids, h)
			}
		}
		for h := range s.owed {
			add(&owed, h)
		}
	}
	return Record{Kind: KindTakeover, Epoch: s.epoch + 1, Writer: writer, Time: s.clock, Through: s.through, IDs: ids, Owed: owed, Source: source}
}

// Done returns a done-only record when the done watermark is ahead of the log.
func (s *State) Done(writer string) (Record, bool) {
	if s.doneLocal <= s.doneLog && s.through <= s.throughLog {
		return Record{}, false
	}
	return Record{Kind: KindDone, Epoch: s.epoch, Writer: writer, Time: s.clock, DoneThrough: s.doneLocal, Through: s.through}, true
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

// Rebase lowers the position to at most through: the input stream's
// sequences after through were continued elsewhere and name other events
// (a strict-mode failover's copy of a lost region's home stream, which
// holds the region's messages only up to where its mirror stopped). The
// next takeover record carries it. Positions below it are unchanged.
func (s *State) Rebase(through uint64) {
	if s.through > through {
		s.through = through
	}
}

// Through is the ingest sequence through which the partition is done: a new
// owner resumes consuming after it.
func (s *State) Through() uint64 { return s.through }

// RecordTime is the time a record's IDs are claimed at. A record this owner
// just appended (stored zero) is at its own Time, the state's clock. A
// record read back from the log is at its Time clamped into the window
// before stored, the claim stream's timestamp: an honest record's Time (its
// batch's ingest time) is never later than the stream stored it, so a
// writer whose clock ran ahead, or an older writer that stamped its own
// wall clock, cannot move the window forward, and cannot backdate IDs past it.
func (s *State) RecordTime(r Record, stored time.Time) time.Time {
	if stored.IsZero() {
		return r.Time
	}
	switch {
	case r.Time.After(stored):
		return stored
	case stored.Sub(r.Time) > s.opt.Window:
		return stored.Add(-s.opt.Window)
	}
	return r.Time
}

// Foreign notes a claim-log message at seq that is not a record
// (ErrForeign): it holds no claim, so it changes nothing but the log
// position the next append is conditional on.
func (s *State) Foreign(seq uint64) {
	if seq > s.lastSeq {
		s.lastSeq = seq
	}
}

// Apply applies a record committed at claim-log sequence seq: one this owner
// just appended (stored zero), or one read back from the log with the time
// the claim stream stored it.
func (s *State) Apply(seq uint64, r Record, stored time.Time) {
	s.resolved = nil
	at := s.RecordTime(r, stored)
	s.observe(at)
	if seq > s.lastSeq {
		s.lastSeq = seq
	}
	if r.Epoch > s.epoch {
		s.epoch = r.Epoch
	}
	switch r.Kind {
	case KindClaim:
		for _, h := range r.IDs {
			raced := ""
			if len(s.remote) > 0 && !s.set.Contains(h, at) {
				raced = s.remoteClaimer(h)
			}
			s.set.Add(h, at)
			if raced != "" {
				// The live entry's generation; a claim too old to be kept
				// (outside the window) is still a race on record.
				gen, ok := s.set.Generation(h)
				if !ok {
					gen = s.set.GenerationAt(at)
				}
				s.conflicts = append(s.conflicts, Conflict{Hash: h, Region: raced, ClaimGen: gen})
			}
			s.addBloom(h, at)
			delete(s.uncertain, h)
			delete(s.owed, h)
		}
		if len(r.IDs) > 0 {
			s.pending[seq] = pendingClaim{ids: r.IDs, seq: r.Seq, reruns: r.Reruns, epoch: r.Epoch}
		}
	case KindTakeover:
		clear(s.pending)
		clear(s.uncertain)
		clear(s.owed)
		for _, h := range r.IDs {
			s.uncertain[h] = struct{}{}
		}
		for _, h := range r.Owed {
			if _, unc := s.uncertain[h]; !unc {
				s.owed[h] = struct{}{}
			}
		}
		if r.Source != "" {
			s.sources[r.Epoch] = r.Source
		}
		s.doneLocal, s.doneLog = 0, 0
		s.movedTo, _ = IsMoveAway(r)
		s.movedFrom, _ = IsMoveIn(r)
		// A takeover sets the position: an owner's takeover record
		// carries the replayed one (the largest so far), or a rebased one
		// (Rebase) that later records count from.
		s.through, s.throughLog = r.Through, r.Through
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
