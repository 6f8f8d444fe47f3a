package sim

import (
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestRegionLossSpans: the drill's steps are one trace, a child per step
// reached, on the drill's times; a step not reached has no span.
func TestRegionLossSpans(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	start := time.Unix(1_700_000_000, 0)
	l := &RegionLoss{Region: "ap-south", Standby: "us-east", Killed: time.Second, Detected: 3 * time.Second,
		Declared: 3100 * time.Millisecond, Consuming: 4 * time.Second, Err: "restart: refused"}
	l.spans(tp.Tracer("test"), start)
	got := map[string][2]time.Duration{}
	var root sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		got[s.Name()] = [2]time.Duration{s.StartTime().Sub(start), s.EndTime().Sub(start)}
		if s.Name() == "onceplane.region_loss" {
			root = s
		}
	}
	want := map[string][2]time.Duration{
		"onceplane.region_loss":          {time.Second, 4 * time.Second},
		"onceplane.region_loss.detect":   {time.Second, 3 * time.Second},
		"onceplane.region_loss.declare":  {3 * time.Second, 3100 * time.Millisecond},
		"onceplane.region_loss.takeover": {3100 * time.Millisecond, 4 * time.Second},
	}
	if len(got) != len(want) {
		t.Fatalf("spans %v, want %v", got, want)
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: %v, want %v", name, got[name], w)
		}
	}
	for _, s := range rec.Ended() {
		if s != root && (s.Parent().SpanID() != root.SpanContext().SpanID() || !strings.HasPrefix(s.Name(), "onceplane.region_loss.")) {
			t.Errorf("%s is not a step of the drill's span", s.Name())
		}
	}
	if root.Status().Description != l.Err {
		t.Errorf("root status %v, want the drill's error", root.Status())
	}
}
