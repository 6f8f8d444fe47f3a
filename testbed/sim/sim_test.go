package sim

import (
	"context"
	"testing"
	"time"
)

// TestRunExactlyOnce runs the one-region simulation (on deploy: a real
// core node, two edges, the output sink) and checks its own verdict and
// the counts behind it.
func TestRunExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a core node and two edges")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := Run(ctx, Config{Events: 4000, Partitions: 4, Dir: t.TempDir(), Seed: 7}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.ExactlyOnce || r.Output != r.Unique || r.Decided != int64(r.Stored) || r.First != int64(r.Unique) || r.Dups != r.Decided-r.First {
		t.Fatalf("not exactly once: %+v", r)
	}
}
