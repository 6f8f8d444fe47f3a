package sim

import (
	"fmt"
	"testing"
	"time"

	"github.com/onceplane/onceplane/telemetry/tracefile"
)

// journey builds the spans of one event published in origin, decided in
// decider on path, and (when claimed) merged in each of mergedIn after
// lag. The batch lives in its own trace (linked from the decide span), as
// when the event is not its batch's first traced one.
func journey(n int, origin, decider, path string, decideAt time.Duration, lag time.Duration, mergedIn ...string) []tracefile.Span {
	t0 := time.Unix(1000, 0).Add(time.Duration(n) * time.Second)
	tr, btr := fmt.Sprintf("%032x", n+1), fmt.Sprintf("%032x", n+1000)
	id := func(k int) string { return fmt.Sprintf("%016x", n*100+k) }
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	sp := func(trace, span, parent, name, region string, from, to time.Duration, attrs map[string]any) tracefile.Span {
		a := map[string]any{"onceplane.region": region}
		for k, v := range attrs {
			a[k] = v
		}
		return tracefile.Span{TraceID: trace, SpanID: span, ParentID: parent, Name: name, Start: at(from), End: at(to), Attrs: a}
	}
	pub := sp(tr, id(1), "", spanPublish, origin, 0, time.Millisecond, map[string]any{"onceplane.event_id": fmt.Sprintf("ev-%d", n)})
	dec := sp(tr, id(2), id(1), spanDecide, decider, decideAt-5*time.Millisecond, decideAt, map[string]any{"onceplane.path": path})
	dec.Links = []tracefile.SpanRef{{TraceID: btr, SpanID: id(3)}}
	out := []tracefile.Span{pub, dec, sp(btr, id(3), "", spanBatch, decider, decideAt-5*time.Millisecond, decideAt, nil)}
	if pathClaims(path) {
		out = append(out, sp(btr, id(4), id(3), spanClaim, decider, decideAt-3*time.Millisecond, decideAt-time.Millisecond, nil))
		for i, r := range mergedIn {
			m := decideAt + lag*time.Duration(i+1)
			out = append(out, sp(btr, id(5+i), id(4), spanMerge, r, m, m+time.Millisecond, map[string]any{"onceplane.from_region": decider}))
		}
	}
	return out
}

func TestFollowEvents(t *testing.T) {
	var spans []tracefile.Span
	spans = append(spans, journey(0, "us-east", "us-east", "exact-miss", 10*time.Millisecond, 40*time.Millisecond, "eu-west", "ap-south")...)
	spans = append(spans, journey(1, "us-east", "eu-west", "bloom-negative", 90*time.Millisecond, 0)...) // strict: decided at home
	spans = append(spans, journey(2, "eu-west", "eu-west", "exact-hit", 5*time.Millisecond, 0)...)       // a duplicate claims nothing
	// A decide span whose publish was not recorded is no journey.
	orphan := journey(3, "ap-south", "ap-south", "exact-miss", 5*time.Millisecond, 10*time.Millisecond, "us-east")
	spans = append(spans, orphan[1:]...)

	evs := FollowEvents(spans)
	if len(evs) != 3 {
		t.Fatalf("%d journeys, want 3: %+v", len(evs), evs)
	}
	e := evs[0]
	if e.ID != "ev-0" || e.Origin != "us-east" || e.Decider != "us-east" || e.Claim == nil || len(e.Merges) != 2 {
		t.Fatalf("journey 0: %+v", e)
	}
	if e.ToDecision != 10*time.Millisecond || e.Total != 91*time.Millisecond {
		t.Fatalf("journey 0 times: to decision %v, total %v", e.ToDecision, e.Total)
	}
	if evs[1].Decider != "eu-west" || evs[1].Claim == nil || len(evs[1].Merges) != 0 {
		t.Fatalf("journey 1: %+v", evs[1])
	}
	if evs[2].Claim != nil || evs[2].Path != "exact-hit" {
		t.Fatalf("a duplicate's journey shows a claim: %+v", evs[2])
	}

	w := e.Waterfall("x")
	kinds := ""
	for _, b := range w.Bars {
		kinds += b.Kind + " "
		if b.End < b.Start {
			t.Fatalf("bar %+v ends before it starts", b)
		}
	}
	if kinds != "publish wait decide claim replicate merge replicate merge " {
		t.Fatalf("waterfall bars: %s", kinds)
	}
	if last := w.Bars[len(w.Bars)-1]; last.End != 91 {
		t.Fatalf("last merge ends at %v ms, want 91", last.End)
	}
	if w := evs[1].Waterfall("y"); w.Bars[1].Row != "routed to eu-west, queued" {
		t.Fatalf("cross-region wait row %q", w.Bars[1].Row)
	}
}

func TestPickTraces(t *testing.T) {
	var spans []tracefile.Span
	spans = append(spans, journey(0, "us-east", "us-east", "exact-miss", 10*time.Millisecond, 40*time.Millisecond, "eu-west")...)
	spans = append(spans, journey(1, "us-east", "us-east", "exact-miss", 30*time.Millisecond, 20*time.Millisecond, "eu-west")...)
	spans = append(spans, journey(2, "us-east", "us-east", "exact-miss", 20*time.Millisecond, 90*time.Millisecond, "eu-west")...)
	spans = append(spans, journey(3, "eu-west", "eu-west", "exact-miss", 5*time.Millisecond, 10*time.Millisecond, "us-east")...)
	evs := FollowEvents(spans)
	picked := PickTraces(evs, 8)
	ids := map[string]bool{}
	for _, e := range picked {
		if ids[e.ID] {
			t.Fatalf("%s picked twice", e.ID)
		}
		ids[e.ID] = true
	}
	// Slowest us-east decision: ev-1 (30 ms); slowest us-east -> eu-west
	// merge: ev-2 (20 + 90 ms); eu-west's only: ev-3.
	for _, want := range []string{"ev-1", "ev-2", "ev-3"} {
		if !ids[want] {
			t.Errorf("%s not picked: %v", want, ids)
		}
	}
	if n := len(PickTraces(evs, 2)); n != 2 {
		t.Fatalf("picked %d of at most 2", n)
	}
	if len(PickTraces(nil, 8)) != 0 {
		t.Fatal("picked from nothing")
	}
}
