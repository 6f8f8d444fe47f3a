package sim

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/tracestore"
)

// TestTracesReachJaeger runs a short three-region simulation that sends its
// traces over OTLP/HTTP to a real Jaeger, then asks Jaeger's HTTP API for a
// journey the report drew: one trace holding the publish (the origin
// region's producer service), the decision (the deciding region's edge
// service), the claim append, and its merge in another region's edge
// service with the replication lag. It skips when no jaeger binary is
// built, unless ONCEPLANE_REQUIRE_JAEGER is set (CI sets it).
func TestTracesReachJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three regions and Jaeger")
	}
	if _, err := tracestore.Binary(tracestore.Options{}); err != nil {
		if os.Getenv("ONCEPLANE_REQUIRE_JAEGER") != "" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	j, err := tracestore.Start(ctx, tracestore.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Stop()
	rep, err := RunMulti(ctx, MultiConfig{Events: 3000, Rate: 3000, Drill: "none", TraceSample: 0.05, OTLPEndpoint: j.OTLPEndpoint, Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Fatalf("simulation failed: lost %d, spurious %d, missed %d", rep.Lost, rep.Spurious, rep.Missed)
	}
	var journey *EventTrace
	for i, e := range rep.Traces {
		if len(e.Merges) > 0 {
			journey = &rep.Traces[i]
			break
		}
	}
	if journey == nil {
		t.Fatalf("no traced journey replicated (%d traced)", rep.Traced)
	}

	var services []string
	coretest.Eventually(t, 30*time.Second, "every region's producer and edge services in Jaeger", func() bool {
		services, _ = j.Services(ctx)
		for _, r := range []string{"us-east", "eu-west", "ap-south"} {
			if !slices.Contains(services, "onceplane-producer-"+r) || !slices.Contains(services, "onceplane-edge-"+r) {
				return false
			}
		}
		return true
	})
	// Each service exports its spans in batches of its own: wait for the
	// whole journey, not only its merges (a CI run under -race read the
	// trace when the merges had arrived and the publish, decide and claim
	// spans had not).
	var tr tracestore.Trace
	found := map[string]string{} // operation -> service
	coretest.Eventually(t, 30*time.Second, "trace "+journey.TraceID+" with its publish, decide, claim and merges in Jaeger", func() bool {
		tr, err = j.Trace(ctx, journey.TraceID)
		n := 0
		clear(found)
		for _, s := range tr.Spans {
			switch s.OperationName {
			case spanMerge:
				n++
			case spanPublish, spanDecide, spanClaim:
				found[s.OperationName] = tr.Service(s)
			}
		}
		return err == nil && n >= len(journey.Merges) && len(found) == 3
	})
	if found[spanPublish] != "onceplane-producer-"+journey.Origin || found[spanDecide] != "onceplane-edge-"+journey.Decider || found[spanClaim] != "onceplane-edge-"+journey.Decider {
		t.Fatalf("trace %s in Jaeger: %v, want publish by %s's producer, decide and claim by %s's edges", journey.TraceID, found, journey.Origin, journey.Decider)
	}
	merge, ok := tr.MergedElsewhere(journey.Decider)
	if !ok {
		t.Fatalf("trace %s in Jaeger has no merge with a replication lag in another region", journey.TraceID)
	}
	t.Logf("Jaeger has services %s; trace %s: publish in %s, decided in %s, merged by %s", strings.Join(services, ", "), journey.TraceID, journey.Origin, journey.Decider, tr.Service(merge))
}
