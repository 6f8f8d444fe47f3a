package sim

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/onceplane/onceplane/telemetry/tracefile"
	"github.com/onceplane/onceplane/testbed/report"
)

// The spans a sampled event's journey is made of.
const (
	spanPublish = "onceplane.publish"
	spanDecide  = "onceplane.decide"
	spanBatch   = "onceplane.batch"
	spanClaim   = "onceplane.claim_append"
	spanMerge   = "onceplane.merge_remote"
)

// traceCollector keeps the recorded spans of an event's journey (publish,
// decide, batch, claim append, merges) for the report: a span processor
// every region's provider shares, bounded to max spans.
type traceCollector struct {
	mu      sync.Mutex
	max     int
	spans   []tracefile.Span
	dropped int
}

func newTraceCollector(max int) *traceCollector { return &traceCollector{max: max} }

func (c *traceCollector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

func (c *traceCollector) OnEnd(s sdktrace.ReadOnlySpan) {
	switch s.Name() {
	case spanPublish, spanDecide, spanBatch, spanClaim, spanMerge:
	default:
		return
	}
	sp := tracefile.FromSDK(s)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.spans) >= c.max {
		c.dropped++
		return
	}
	c.spans = append(c.spans, sp)
}

func (c *traceCollector) Shutdown(context.Context) error   { return nil }
func (c *traceCollector) ForceFlush(context.Context) error { return nil }

func (c *traceCollector) snapshot() []tracefile.Span {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.spans)
}

// EventTrace is one sampled event followed across regions: its publish,
// its decision (in the deciding region), the claim append of its batch,
// and that claim's merges in the other regions.
type EventTrace struct {
	TraceID, ID       string
	Origin, Decider   string
	Path              string
	Publish, Decide   tracefile.Span
	Claim             *tracefile.Span // nil: a duplicate (nothing claimed), or its batch's spans were not recorded
	Merges            []tracefile.Span
	ToDecision, Total time.Duration // publish start -> decision end; -> the last merge (or the decision)
}

// slowestMerge returns the region whose merge of the claim came last, and
// when, since the publish.
func (e EventTrace) slowestMerge() (string, time.Duration) {
	var region string
	var at time.Duration
	for _, m := range e.Merges {
		if d := m.End.Sub(e.Publish.Start); d >= at {
			region, at = m.Str("onceplane.region"), d
		}
	}
	return region, at
}

// FollowEvents joins spans into event journeys: each publish with its
// decisions (children of the publish, in whichever region decided), the
// claim append of the decision's batch (the batch the decide span links
// to) and the merges that continue that claim's trace elsewhere. Pure.
func FollowEvents(spans []tracefile.Span) []EventTrace {
	byID := make(map[string]tracefile.Span, len(spans))
	children := map[string][]tracefile.Span{}
	for _, s := range spans {
		byID[s.TraceID+"/"+s.SpanID] = s
		if s.ParentID != "" {
			k := s.TraceID + "/" + s.ParentID
			children[k] = append(children[k], s)
		}
	}
	childNamed := func(s tracefile.Span, name string) []tracefile.Span {
		var out []tracefile.Span
		for _, c := range children[s.TraceID+"/"+s.SpanID] {
			if c.Name == name {
				out = append(out, c)
			}
		}
		return out
	}
	var out []EventTrace
	for _, pub := range spans {
		if pub.Name != spanPublish {
			continue
		}
		for _, dec := range childNamed(pub, spanDecide) {
			e := EventTrace{TraceID: pub.TraceID, ID: pub.Str("onceplane.event_id"), Origin: pub.Str("onceplane.region"),
				Decider: dec.Str("onceplane.region"), Path: dec.Str("onceplane.path"), Publish: pub, Decide: dec}
			e.ToDecision = dec.End.Sub(pub.Start)
			e.Total = e.ToDecision
			for _, l := range dec.Links {
				batch, ok := byID[l.TraceID+"/"+l.SpanID]
				if !ok || batch.Name != spanBatch {
					continue
				}
				if claims := childNamed(batch, spanClaim); len(claims) > 0 && pathClaims(e.Path) {
					claim := claims[0]
					e.Claim = &claim
					e.Merges = childNamed(claim, spanMerge)
					slices.SortFunc(e.Merges, func(a, b tracefile.Span) int { return a.Start.Compare(b.Start) })
				}
			}
			if _, at := e.slowestMerge(); at > e.Total {
				e.Total = at
			}
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b EventTrace) int { return a.Publish.Start.Compare(b.Publish.Start) })
	return out
}

// pathClaims reports whether a decision on path claims the ID (first time).
func pathClaims(path string) bool {
	switch path {
	case "bloom-negative", "exact-miss", "owed", "uncertain-rerun":
		return true
	}
	return false
}

// PickTraces chooses at most n journeys worth drawing: per origin and
// deciding region the slowest to its decision, per origin and merging
// region the slowest to that merge, then a typical one (the median), each
// once.
func PickTraces(evs []EventTrace, n int) []EventTrace {
	var picked []EventTrace
	seen := map[string]bool{}
	add := func(e EventTrace) {
		if len(picked) < n && !seen[e.TraceID+e.Decide.SpanID] {
			seen[e.TraceID+e.Decide.SpanID] = true
			picked = append(picked, e)
		}
	}
	slowest := map[[2]string]EventTrace{}
	merged := map[[2]string]EventTrace{}
	var withMerges []EventTrace
	for _, e := range evs {
		k := [2]string{e.Origin, e.Decider}
		if s, ok := slowest[k]; !ok || e.ToDecision > s.ToDecision {
			slowest[k] = e
		}
		for _, m := range e.Merges {
			k := [2]string{e.Origin, m.Str("onceplane.region")}
			at := m.End.Sub(e.Publish.Start)
			if s, ok := merged[k]; !ok || at > mergeAt(s, k[1]) {
				merged[k] = e
			}
		}
		if len(e.Merges) > 0 {
			withMerges = append(withMerges, e)
		}
	}
	for _, m := range []map[[2]string]EventTrace{slowest, merged} {
		keys := make([][2]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b [2]string) int { return cmp.Or(cmp.Compare(a[0], b[0]), cmp.Compare(a[1], b[1])) })
		for _, k := range keys {
			add(m[k])
		}
	}
	// And a typical journey: the median of those that replicated (of all,
	// when none did, as in strict mode).
	typical := withMerges
	if len(typical) == 0 {
		typical = slices.Clone(evs)
	}
	if len(typical) > 0 {
		slices.SortFunc(typical, func(a, b EventTrace) int { return cmp.Compare(a.Total, b.Total) })
		add(typical[len(typical)/2])
	}
	return picked
}

// mergeAt is when region merged e's claim, since the publish.
func mergeAt(e EventTrace, region string) time.Duration {
	for _, m := range e.Merges {
		if m.Str("onceplane.region") == region {
			return m.End.Sub(e.Publish.Start)
		}
	}
	return 0
}

// Waterfall draws the journey: publish, the wait until the decision
// (stored, routed, queued), the decision, the claim append, and per other
// region the replication and the merge.
func (e EventTrace) Waterfall(title string) report.Waterfall {
	t0 := e.Publish.Start
	ms := func(t time.Time) float64 { return float64(t.Sub(t0).Microseconds()) / 1000 }
	w := report.Waterfall{Title: title, TraceID: e.TraceID, Event: e.ID}
	bar := func(row, kind string, from, to time.Time) {
		if to.Before(from) {
			to = from
		}
		w.Bars = append(w.Bars, report.Bar{Row: row, Kind: kind, Start: ms(from), End: ms(to)})
	}
	bar("publish · "+e.Origin, "publish", e.Publish.Start, e.Publish.End)
	wait := "stored, queued"
	if e.Decider != e.Origin {
		wait = "routed to " + e.Decider + ", queued"
	}
	bar(wait, "wait", e.Publish.End, e.Decide.Start)
	bar(fmt.Sprintf("decide · %s · %s", e.Decider, e.Path), "decide", e.Decide.Start, e.Decide.End)
	if e.Claim != nil {
		bar("claim append · "+e.Decider, "claim", e.Claim.Start, e.Claim.End)
		for _, m := range e.Merges {
			r := m.Str("onceplane.region")
			bar("replicate → "+r, "replicate", e.Claim.End, m.Start)
			bar("merge · "+r, "merge", m.Start, m.End)
		}
	}
	return w
}

// Summary says where the event went and when, since its publish.
func (e EventTrace) Summary() string {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	s := fmt.Sprintf("published %s, decided %s (%s) at %s", e.Origin, e.Decider, e.Path, ms(e.ToDecision))
	for i, m := range e.Merges {
		sep := ", merged "
		if i > 0 {
			sep = ", "
		}
		s += sep + m.Str("onceplane.region") + " at " + ms(m.End.Sub(e.Publish.Start))
	}
	return s
}
