package sim

import (
	"sort"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"

	"github.com/onceplane/onceplane/testbed/report"
)

// Latency is a concurrency-safe HDR histogram of durations (1 µs to 1 min, 3 digits).
type Latency struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
}

// NewLatency returns an empty histogram.
func NewLatency() *Latency {
	return &Latency{h: hdrhistogram.New(1, int64(time.Minute/time.Microsecond), 3)}
}

// Record adds one observation.
func (l *Latency) Record(d time.Duration) {
	us := d.Microseconds()
	if us < 1 {
		us = 1
	}
	l.mu.Lock()
	_ = l.h.RecordValue(us)
	l.mu.Unlock()
}

// Quantiles summarises the histogram.
type Quantiles struct {
	Count              int64
	P50, P90, P99, Max time.Duration
}

// Quantiles returns p50, p90, p99 and max.
func (l *Latency) Quantiles() Quantiles {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := func(p float64) time.Duration { return time.Duration(l.h.ValueAtQuantile(p)) * time.Microsecond }
	return Quantiles{Count: l.h.TotalCount(), P50: q(50), P90: q(90), P99: q(99), Max: time.Duration(l.h.Max()) * time.Microsecond}
}

// histUpperMs are the report's latency bucket bounds, in milliseconds.
var histUpperMs = []float64{0.5, 1, 2, 5, 10, 20, 50, 100, 150, 200, 300, 500, 1000, 2000, 5000, 60000}

// Histogram returns the distribution in the report's buckets.
func (l *Latency) Histogram(name string) report.Histogram {
	l.mu.Lock()
	defer l.mu.Unlock()
	h := report.Histogram{Name: name, UpperMs: histUpperMs, Counts: make([]int64, len(histUpperMs)), Total: l.h.TotalCount(),
		P50: float64(l.h.ValueAtQuantile(50)) / 1000, P99: float64(l.h.ValueAtQuantile(99)) / 1000}
	for _, bar := range l.h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		ms := float64(bar.To) / 1000
		i := sort.SearchFloat64s(histUpperMs, ms)
		if i >= len(histUpperMs) {
			i = len(histUpperMs) - 1
		}
		h.Counts[i] += bar.Count
	}
	return h
}
