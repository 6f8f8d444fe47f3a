package edge

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/telemetry"
)

// Stats are a Consumer's running totals.
type Stats struct {
	In, First, Duplicates, DLQ int64
	Done                       int64                  // events whose batch finished: handled or dead-lettered, and acked
	ByPath                     [dedupe.NumPaths]int64 // indexed by dedupe.Path
	Uncertain, UncertainReruns int64
	// ClaimAppends counts claim and done records appended; Takeovers the
	// takeover records (one per ownership).
	ClaimAppends, Takeovers int64
	HandlerRetries, Fenced  int64
	Owned                   int64
	// RemoteMerged counts other regions' claim records merged; Conflicts the
	// IDs this edge recorded as claimed here and in another region.
	RemoteMerged, Conflicts int64
	// TailMerged counts those of the merged records the tail read from the
	// other regions' claim logs before the xclaims stream brought them.
	TailMerged int64
}

// fields lists every total of s, in the order of counters.tallies: the one
// list that Stats, Add and the counters agree on.
func (s *Stats) fields() []*int64 {
	f := []*int64{&s.In, &s.First, &s.Duplicates, &s.DLQ, &s.Done}
	for i := range s.ByPath {
		f = append(f, &s.ByPath[i])
	}
	return append(f, &s.Uncertain, &s.UncertainReruns, &s.ClaimAppends, &s.Takeovers,
		&s.HandlerRetries, &s.Fenced, &s.Owned, &s.RemoteMerged, &s.Conflicts, &s.TailMerged)
}

// Add adds x's totals to s (summing several edges).
func (s *Stats) Add(x Stats) {
	xs := x.fields()
	for i, f := range s.fields() {
		*f += *xs[i]
	}
}

// counters are a Consumer's running totals, each feeding its Prometheus
// series as it counts.
type counters struct {
	in, first, dup, dlq, done tally
	byPath                    [dedupe.NumPaths]tally
	uncertain, reruns         tally
	appends, takeovers        tally
	retries, fenced, owned    tally
	remoteMerged, conflicts   tally
	tailMerged                tally
}

// tallies lists every total, in the order of Stats.fields.
func (c *counters) tallies() []*tally {
	t := []*tally{&c.in, &c.first, &c.dup, &c.dlq, &c.done}
	for i := range c.byPath {
		t = append(t, &c.byPath[i])
	}
	return append(t, &c.uncertain, &c.reruns, &c.appends, &c.takeovers,
		&c.retries, &c.fenced, &c.owned, &c.remoteMerged, &c.conflicts, &c.tailMerged)
}

// newCounters connects each total to its series in m, for region.
func newCounters(m *telemetry.Metrics, region string) *counters {
	c := &counters{}
	one := func(v *prometheus.CounterVec, lvs ...string) adder {
		return v.WithLabelValues(append([]string{region}, lvs...)...)
	}
	by := func(v *prometheus.CounterVec) func(string) adder {
		return func(lv string) adder { return v.WithLabelValues(region, lv) }
	}
	c.in.one = one(m.EventsIn)
	for p := range c.byPath {
		c.byPath[p].one = one(m.Decisions, dedupe.Path(p).String())
	}
	c.dlq.by = by(m.DLQ)
	c.uncertain.one = one(m.Uncertain)
	c.reruns.one = one(m.UncertainReruns)
	c.appends.by = by(m.ClaimAppends)
	c.takeovers.one = one(m.ClaimAppends, "takeover")
	c.retries.one = one(m.HandlerRetries)
	c.fenced.one = one(m.OwnershipChanges, "fenced")
	c.owned.one = m.OwnedPartitions.WithLabelValues(region)
	c.remoteMerged.by = by(m.RemoteMerged)
	c.conflicts.by = by(m.Conflicts)
	c.tailMerged.by = by(m.TailMerged)
	return c
}

// stats reads the totals.
func (c *counters) stats() Stats {
	var s Stats
	t := c.tallies()
	for i, f := range s.fields() {
		*f = t[i].n.Load()
	}
	return s
}

// adder is a Prometheus counter or gauge.
type adder interface{ Add(float64) }

// tally is one running total and the Prometheus series it feeds: one
// without labels beyond the region (one), or one per value of its second
// label (by), or none.
type tally struct {
	n   atomic.Int64
	one adder
	by  func(label string) adder
}

// add counts n on the total and its series.
func (t *tally) add(n int64) {
	if n == 0 {
		return
	}
	t.n.Add(n)
	if t.one != nil {
		t.one.Add(float64(n))
	}
}

// addBy counts n on the total and on its series for label.
func (t *tally) addBy(label string, n int64) {
	if n == 0 {
		return
	}
	t.n.Add(n)
	if t.by != nil {
		t.by(label).Add(float64(n))
	}
}

// countPaths adds a batch's decisions to the totals, once per path rather
// than once per event.
func (c *counters) countPaths(paths []dedupe.Path) {
	var n [dedupe.NumPaths]int64
	for _, p := range paths {
		n[p]++
	}
	for p, k := range n {
		c.byPath[p].add(k)
	}
}
