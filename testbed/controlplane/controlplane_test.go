package controlplane

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestControlPlaneShort is the short form: 3 regions × 4 edges over 64
// partitions each; one edge per region crashed. Every partition is owned
// exactly once before and after, the split is within one of fair, the
// crash is detected and taken over, and an edge's goroutines stay within
// a few per owned partition (a listing of a stream's consumers left
// half-read once leaked one per handover poll: ~90 per owned partition).
func TestControlPlaneShort(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three regions of edges")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	r, err := Run(ctx, Config{Regions: 3, Edges: 4, Partitions: 64, Kill: 0.25, Dir: t.TempDir(), Settle: 2 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	Table(os.Stdout, []Result{r})
	if r.MaxOwned > r.Fair+1 {
		t.Errorf("an edge owns %d partitions, fair is %d", r.MaxOwned, r.Fair)
	}
	if r.Killed != 1 || r.Detect <= 0 || r.Takeover < r.Detect {
		t.Errorf("kill: %+v", r)
	}
	if bound := float64(10*r.Fair + 100); r.GoroutinesPerEdge > bound {
		t.Errorf("%.0f goroutines per edge owning at most %d partitions: want at most %.0f", r.GoroutinesPerEdge, r.MaxOwned, bound)
	}
}
