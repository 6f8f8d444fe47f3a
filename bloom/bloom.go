// Package bloom is a time-windowed Bloom filter: two generations of
// bits-and-blooms/bloom/v3 filters that rotate every period, so an ID added at
// time t tests positive until at least t+Period. It does no I/O.
package bloom

import (
	"encoding/binary"
	"fmt"
	"io"
	"time"

	bbloom "github.com/bits-and-blooms/bloom/v3"

	"github.com/onceplane/onceplane/event"
)

// Options configures a Filter. The zero value is usable.
type Options struct {
	// Period is the minimum time an added ID keeps testing positive. Zero means 24 h.
	Period time.Duration
	// ExpectedIDs is the number of IDs added per period at which the false
	// positive rate is FPRate. Zero means 100,000.
	ExpectedIDs uint
	// FPRate is the target false-positive rate. Zero means 0.01.
	FPRate float64
}

func (o Options) withDefaults() Options {
	if o.Period <= 0 {
		o.Period = 24 * time.Hour
	}
	if o.ExpectedIDs == 0 {
		o.ExpectedIDs = 100_000
	}
	if o.FPRate <= 0 {
		o.FPRate = 0.01
	}
	return o
}

// Filter is a windowed Bloom filter. It is not safe for concurrent use.
type Filter struct {
	opt       Options
	gen       int64 // generation of cur
	cur, prev *bbloom.BloomFilter
}

// New returns an empty Filter.
func New(o Options) *Filter {
	o = o.withDefaults()
	return &Filter{opt: o, cur: bbloom.NewWithEstimates(o.ExpectedIDs, o.FPRate), prev: bbloom.NewWithEstimates(o.ExpectedIDs, o.FPRate)}
}

func (f *Filter) advance(t time.Time) {
	g := t.UnixNano() / int64(f.opt.Period)
	switch {
	case g <= f.gen:
	case g == f.gen+1:
		f.prev, f.cur = f.cur, f.prev
		f.cur.ClearAll()
		f.gen = g
	default:
		f.cur.ClearAll()
		f.prev.ClearAll()
		f.gen = g
	}
}

func key(h event.Hash, b *[16]byte) []byte {
	binary.LittleEndian.PutUint64(b[:8], h.Hi)
	binary.LittleEndian.PutUint64(b[8:], h.Lo)
	return b[:]
}

// Add records h as seen at time at. Adds older than the previous generation are ignored.
func (f *Filter) Add(h event.Hash, at time.Time) {
	f.advance(at)
	g := at.UnixNano() / int64(f.opt.Period)
	var b [16]byte
	switch g {
	case f.gen:
		f.cur.Add(key(h, &b))
	case f.gen - 1:
		f.prev.Add(key(h, &b))
	}
}

// MayContain reports whether h may have been added within the window ending
// at now. A false answer is certain.
func (f *Filter) MayContain(h event.Hash, now time.Time) bool {
	f.advance(now)
	var b [16]byte
	k := key(h, &b)
	return f.cur.Test(k) || f.prev.Test(k)
}

// Bytes returns the memory held by the bit arrays.
func (f *Filter) Bytes() int { return int(f.cur.Cap()+f.prev.Cap()) / 8 }

// WriteTo writes a snapshot of the filter.
func (f *Filter) WriteTo(w io.Writer) (int64, error) {
	var hdr [8]byte
	binary.LittleEndian.PutUint64(hdr[:], uint64(f.gen))
	n, err := w.Write(hdr[:])
	if err != nil {
		return int64(n), err
	}
	total := int64(n)
	for _, bf := range []*bbloom.BloomFilter{f.cur, f.prev} {
		m, err := bf.WriteTo(w)
		total += m
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

// ReadFrom restores a snapshot written by WriteTo.
func (f *Filter) ReadFrom(r io.Reader) (int64, error) {
	var hdr [8]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, fmt.Errorf("bloom snapshot header: %w", err)
	}
	cur, prev := &bbloom.BloomFilter{}, &bbloom.BloomFilter{}
	total := int64(8)
	for _, bf := range []*bbloom.BloomFilter{cur, prev} {
		m, err := bf.ReadFrom(r)
		total += m
		if err != nil {
			return total, fmt.Errorf("bloom snapshot: %w", err)
		}
	}
	f.gen, f.cur, f.prev = int64(binary.LittleEndian.Uint64(hdr[:])), cur, prev
	return total, nil
}
