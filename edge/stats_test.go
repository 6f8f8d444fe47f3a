package edge

import (
	"reflect"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/telemetry"
)

// TestStatsTableComplete: every int64 of Stats is in the one list, once,
// and has a tally; a field added to Stats alone fails here.
func TestStatsTableComplete(t *testing.T) {
	n := 0
	st := reflect.TypeFor[Stats]()
	for i := range st.NumField() {
		switch f := st.Field(i); f.Type.Kind() {
		case reflect.Int64:
			n++
		case reflect.Array:
			n += f.Type.Len()
		default:
			t.Fatalf("Stats.%s is a %s: the table knows int64 totals only", f.Name, f.Type)
		}
	}
	var s Stats
	fs := s.fields()
	seen := map[*int64]bool{}
	for _, f := range fs {
		if seen[f] {
			t.Fatal("a Stats field is listed twice")
		}
		seen[f] = true
	}
	if len(fs) != n {
		t.Fatalf("Stats.fields lists %d of %d totals", len(fs), n)
	}
	var c counters
	if got := len(c.tallies()); got != n {
		t.Fatalf("counters.tallies lists %d of %d totals", got, n)
	}
}

// TestCountersFeedStatsAndMetrics: one count reaches the total Stats
// reads, the field Add sums, and the Prometheus series.
func TestCountersFeedStatsAndMetrics(t *testing.T) {
	m := telemetry.NewMetrics()
	c := newCounters(m, "r1")
	c.in.add(5)
	c.dlq.addBy("invalid-id", 2)
	c.appends.addBy("claim", 3)
	c.takeovers.add(1)
	c.fenced.add(1)
	c.owned.add(2)
	c.owned.add(-1)
	c.conflicts.addBy("r2", 4)
	c.countPaths([]dedupe.Path{dedupe.PathExactHit, dedupe.PathExactHit, dedupe.PathBloomNegative})

	s := c.stats()
	want := Stats{In: 5, DLQ: 2, ClaimAppends: 3, Takeovers: 1, Fenced: 1, Owned: 1, Conflicts: 4}
	want.ByPath[dedupe.PathExactHit], want.ByPath[dedupe.PathBloomNegative] = 2, 1
	if s != want {
		t.Fatalf("stats %+v, want %+v", s, want)
	}
	var sum Stats
	sum.Add(s)
	sum.Add(s)
	if sum.In != 10 || sum.ByPath[dedupe.PathExactHit] != 4 || sum.Conflicts != 8 {
		t.Fatalf("Add: %+v", sum)
	}
	for _, x := range []struct {
		name      string
		got, want float64
	}{
		{"events_in", testutil.ToFloat64(m.EventsIn.WithLabelValues("r1")), 5},
		{"dlq", testutil.ToFloat64(m.DLQ.WithLabelValues("r1", "invalid-id")), 2},
		{"claim appends", testutil.ToFloat64(m.ClaimAppends.WithLabelValues("r1", "claim")), 3},
		{"takeover appends", testutil.ToFloat64(m.ClaimAppends.WithLabelValues("r1", "takeover")), 1},
		{"fenced", testutil.ToFloat64(m.OwnershipChanges.WithLabelValues("r1", "fenced")), 1},
		{"owned", testutil.ToFloat64(m.OwnedPartitions.WithLabelValues("r1")), 1},
		{"conflicts", testutil.ToFloat64(m.Conflicts.WithLabelValues("r1", "r2")), 4},
		{"exact-hit", testutil.ToFloat64(m.Decisions.WithLabelValues("r1", dedupe.PathExactHit.String())), 2},
	} {
		if x.got != x.want {
			t.Errorf("%s = %v, want %v", x.name, x.got, x.want)
		}
	}
}
