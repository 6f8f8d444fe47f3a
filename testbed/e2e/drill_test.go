package e2e

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/onceplane/onceplane/testbed/drill"
)

var drills = flag.Bool("drills", false, "run the failover drills")

// TestDrills runs every failover drill in its short form against real edge
// processes sharing partitions by gossip: kill -9 under load, SIGSTOP past
// failure detection then SIGCONT, rolling restart, scale 2 -> 4 -> 2. Each
// must lose nothing, duplicate no effect, and explain every extra handler
// run by the uncertain set.
//
// The drills run when -drills is given (.ci/run runs them in a separate,
// bounded step without the race detector): they start many processes and
// time failures, which the race detector's slowdown distorts.
func TestDrills(t *testing.T) {
	if !*drills {
		t.Skip("drills run with -drills (see .ci/run)")
	}
	for _, name := range drill.Names {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// ONCEPLANE_DRILL_DIR keeps the drills' logs, ledgers and stats.
			dir := t.TempDir()
			if keep := os.Getenv("ONCEPLANE_DRILL_DIR"); keep != "" {
				dir = filepath.Join(keep, name)
				if err := os.MkdirAll(dir, 0o750); err != nil {
					t.Fatal(err)
				}
			}
			r, err := drill.Run(ctx, drill.Config{EdgeBin: bins.edge, CoreBin: bins.core, Dir: dir, Events: 8_000, Rate: 4_000}, name)
			if r != nil {
				r.Print(os.Stdout)
			}
			if err != nil {
				t.Fatal(err)
			}
			if !r.OK() {
				t.Fatalf("drill %s failed G1", name)
			}
			if name == "pause" && r.Fenced == 0 {
				t.Fatal("the paused owner was not fenced after it resumed")
			}
			if (name == "kill" || name == "pause") && r.Detected > 2*time.Second {
				t.Logf("note: detection took %v (> 2 s goal) on this loaded machine", r.Detected)
			}
		})
	}
}
