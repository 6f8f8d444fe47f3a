// Package idset is the exact, time-windowed set of claimed event-ID hashes that
// an owner keeps per partition: one open-addressing table of 16-byte slots,
// with expiry by generation and compaction, and no I/O.
//
// A slot stores 112 bits of the ID's 128-bit hash and a 16-bit generation tag
// (the claim time divided by the slice length). An ID is live while its
// generation is at most Slices generations old, so it is remembered for at
// least Window and at most Window+Window/Slices.
package idset

import (
	"math/bits"
	"time"

	"github.com/onceplane/onceplane/event"
)

const (
	tagMask  = 0xFFFF
	maxLoad  = 0.80
	minSlots = 1024
	// sweepAfterGens forces a compaction before 16-bit tags could wrap.
	sweepAfterGens = 32768
)

// Options configures a Set. The zero value is usable.
type Options struct {
	// Window is how long an ID is remembered. Zero means 24 h.
	Window time.Duration
	// Slices is the number of generations in a window. Zero means 8.
	Slices int
	// ExpectedIDs is the number of IDs added per Window. The table is sized
	// for the live set at steady state, which spans Window plus one slice
	// (ExpectedIDs*(Slices+1)/Slices IDs, 20 bytes each at the 0.8 load
	// limit), and does not grow at that rate: a full table drops its expired
	// IDs before it grows. Zero means start small and grow by 1.5x.
	ExpectedIDs int
}

type slot struct{ hi, lo uint64 }

// Set is an exact set of event-ID hashes with windowed expiry.
// It is not safe for concurrent use.
type Set struct {
	slots   []slot
	used    int // occupied slots, live or expired-not-swept
	expired int // occupied slots known to be expired
	slice   int64
	slices  int64
	counts  map[int64]int // generation -> slots tagged with it (live gens only)
	oldest  int64         // oldest expired generation not yet swept, or -1
	nowGen  int64
}

// New returns an empty Set.
func New(o Options) *Set {
	if o.Window <= 0 {
		o.Window = 24 * time.Hour
	}
	if o.Slices <= 0 {
		o.Slices = 8
	}
	slice := int64(o.Window) / int64(o.Slices)
	if slice <= 0 {
		slice = 1
	}
	n := minSlots
	live := float64(o.ExpectedIDs) * float64(o.Slices+1) / float64(o.Slices)
	if want := int(live/maxLoad) + 1; want > n {
		n = want
	}
	return &Set{slots: make([]slot, n), slice: slice, slices: int64(o.Slices), counts: map[int64]int{}, oldest: -1}
}

func (s *Set) gen(t time.Time) int64 { return t.UnixNano() / s.slice }

func fingerprint(h event.Hash) (hi, lo uint64) {
	hi = h.Hi
	if hi == 0 {
		hi = 1
	}
	return hi, h.Lo &^ tagMask
}

func (s *Set) live(tag uint64) bool {
	age := uint16(uint64(s.nowGen) - tag)
	return int64(age) <= s.slices
}

// find returns the index of h's slot, or of the empty slot that ends its probe.
func (s *Set) find(hi, lo uint64) (int, bool) {
	n := uint64(len(s.slots))
	i, _ := bits.Mul64(hi, n)
	for {
		sl := &s.slots[i]
		if sl.hi == 0 {
			return int(i), false
		}
		if sl.hi == hi && sl.lo&^tagMask == lo {
			return int(i), true
		}
		i++
		if i == n {
			i = 0
		}
	}
}

// Advance moves the set's clock to now, expiring whole generations and
// compacting the table when enough of it is expired.
func (s *Set) Advance(now time.Time) {
	g := s.gen(now)
	if g <= s.nowGen {
		return
	}
	s.nowGen = g
	for gen, c := range s.counts {
		if g-gen > s.slices {
			s.expired += c
			delete(s.counts, gen)
			if s.oldest < 0 || gen < s.oldest {
				s.oldest = gen
			}
		}
	}
	if s.expired > 0 && (s.expired*4 > s.used || g-s.oldest > sweepAfterGens) {
		s.rehash(len(s.slots))
	}
}

// Contains reports whether h was added within the window ending at now.
func (s *Set) Contains(h event.Hash, now time.Time) bool {
	s.Advance(now)
	hi, lo := fingerprint(h)
	i, ok := s.find(hi, lo)
	return ok && s.live(s.slots[i].lo&tagMask)
}

// LiveAt reports whether h would still be live at time t (or now, if t is
// earlier), without moving the set's clock: a question asked on another
// clock than the one the set runs on.
func (s *Set) LiveAt(h event.Hash, t time.Time) bool {
	hi, lo := fingerprint(h)
	i, ok := s.find(hi, lo)
	if !ok {
		return false
	}
	g := max(s.gen(t), s.nowGen)
	age := uint16(uint64(g) - s.slots[i].lo&tagMask)
	return s.live(s.slots[i].lo&tagMask) && int64(age) <= s.slices
}

// Generation is the generation tag of h's live entry: the claim time's
// window slice, modulo 2^16. It is the same however often the claim is
// added again from the same record, and differs for a claim made a window
// or more later.
func (s *Set) Generation(h event.Hash) (uint16, bool) {
	hi, lo := fingerprint(h)
	i, ok := s.find(hi, lo)
	if !ok || !s.live(s.slots[i].lo&tagMask) {
		return 0, false
	}
	return uint16(s.slots[i].lo & tagMask), true
}

// GenerationAt is the generation tag of a claim made at t (what
// Generation reports for an ID added at t).
func (s *Set) GenerationAt(t time.Time) uint16 { return uint16(uint64(s.gen(t)) & tagMask) }

// Add records h as claimed at time at. It reports whether h was not already
// live. IDs whose claim time is already outside the window are not stored.
func (s *Set) Add(h event.Hash, at time.Time) bool {
	s.Advance(at)
	g := s.gen(at)
	if s.nowGen-g > s.slices {
		return false
	}
	hi, lo := fingerprint(h)
	i, ok := s.find(hi, lo)
	if ok {
		sl := &s.slots[i]
		if s.live(sl.lo & tagMask) {
			return false
		}
		// An expired copy: re-tag it in place.
		s.expired--
		sl.lo = lo | uint64(g)&tagMask
		s.counts[g]++
		return true
	}
	if s.full() {
		// Drop the expired IDs first; grow only if the live ones need it.
		if s.expired > 0 {
			s.rehash(len(s.slots))
		}
		if s.full() {
			s.rehash(len(s.slots) + len(s.slots)/2)
		}
		i, _ = s.find(hi, lo)
	}
	s.slots[i] = slot{hi, lo | uint64(g)&tagMask}
	s.used++
	s.counts[g]++
	return true
}

// full reports whether one more slot would pass the load limit.
func (s *Set) full() bool { return float64(s.used+1) > maxLoad*float64(len(s.slots)) }

// rehash rebuilds the table with n slots (at least enough for the live IDs),
// dropping expired entries.
func (s *Set) rehash(n int) {
	live := s.used - s.expired
	if need := int(float64(live)/maxLoad) + 1; n < need {
		n = need
	}
	if n < minSlots {
		n = minSlots
	}
	old := s.slots
	s.slots = make([]slot, n)
	s.used, s.expired, s.oldest = 0, 0, -1
	for _, sl := range old {
		if sl.hi == 0 || !s.live(sl.lo&tagMask) {
			continue
		}
		i, _ := s.find(sl.hi, sl.lo&^tagMask)
		s.slots[i] = sl
		s.used++
	}
}

// Len returns the number of live IDs.
func (s *Set) Len() int { return s.used - s.expired }

// Bytes returns the memory held by the table.
func (s *Set) Bytes() int { return len(s.slots) * 16 }
