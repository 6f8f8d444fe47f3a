package edge_test

import (
	"context"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestSpansAndMetrics: the data path emits its spans, a producer's trace
// context reaches the edge's decide span under the same trace ID, and the
// admin endpoint serves the decision counters.
func TestSpansAndMetrics(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 2, IngestDuplicates: -1})
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	m := telemetry.NewMetrics()
	c := r.startEdge(t, edge.Options{Name: "edge-t", TracerProvider: tp, Metrics: m}, filepath.Join(t.TempDir(), "l.jsonl"))
	admin, err := telemetry.StartAdmin(telemetry.AdminOptions{Addr: "127.0.0.1:0", Metrics: m, Ready: c.Ready, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })

	ctx, span := tp.Tracer("producer").Start(context.Background(), "produce")
	pr := producer.New(r.js, "local")
	for _, id := range []string{"t-1", "t-2", "t-1"} {
		if _, err := pr.Publish(ctx, id, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	span.End()
	coretest.Eventually(t, 10*time.Second, "decisions", func() bool { return c.Stats().Done >= 2 })
	coretest.Eventually(t, 10*time.Second, "spans", func() bool {
		names := map[string]bool{}
		for _, s := range rec.Ended() {
			names[s.Name()] = true
		}
		for _, want := range []string{"onceplane.takeover", "onceplane.batch", "onceplane.precheck", "onceplane.claim_append", "onceplane.handler", "onceplane.ack", "onceplane.decide"} {
			if !names[want] {
				return false
			}
		}
		return true
	})
	for _, s := range rec.Ended() {
		if s.Name() == "onceplane.decide" && s.SpanContext().TraceID() != span.SpanContext().TraceID() {
			t.Fatalf("decide span in trace %s, producer trace %s", s.SpanContext().TraceID(), span.SpanContext().TraceID())
		}
	}
	// The batch joins its first traced event's trace, so that trace shows the
	// claim append (and, in other regions, its merges).
	joined := false
	for _, s := range rec.Ended() {
		if s.Name() == "onceplane.claim_append" && s.SpanContext().TraceID() == span.SpanContext().TraceID() {
			joined = true
		}
	}
	if !joined {
		t.Fatal("no claim append in the producer's trace: the batch did not join its traced event's trace")
	}
	coretest.Eventually(t, 10*time.Second, "ready", func() bool { return c.Ready() == nil })
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + admin.Addr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/readyz"); code != 200 {
		t.Fatalf("/readyz %d", code)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, `onceplane_decisions_total{path="bloom-negative",region="local"} 2`) {
		t.Fatalf("/metrics %d:\n%s", code, grep(body, "onceplane_decisions"))
	}
	// The exact set's size per owned partition (registered and never set
	// before issue 12): the two IDs, and bytes beside them.
	ids, bytes := 0.0, 0.0
	for _, l := range strings.Split(body, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case strings.HasPrefix(l, "onceplane_tracked_ids{"):
			ids += v
		case strings.HasPrefix(l, "onceplane_tracked_bytes{"):
			bytes += v
		}
	}
	if ids != 2 || bytes <= 0 {
		t.Fatalf("tracked ids %v, bytes %v:\n%s", ids, bytes, grep(body, "onceplane_tracked"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
