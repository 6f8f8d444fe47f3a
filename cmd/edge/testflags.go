package main

import (
	"flag"
	"log/slog"
	"time"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/sink"
)

// testFlags are the flags drills use to make an edge misbehave: the chaos
// sink's rates and a skewed wall clock. Their zero values change nothing.
type testFlags struct {
	chaos       sink.ChaosOptions
	clockOffset time.Duration
}

func (t *testFlags) register(fs *flag.FlagSet) {
	fs.Float64Var(&t.chaos.Fail, "chaos-fail", 0, "chaos sink (drills): share of events failed on purpose, 0..1")
	fs.Float64Var(&t.chaos.Hang, "chaos-hang", 0, "chaos sink (drills): share of events that hang up to -chaos-hang-max, 0..1")
	fs.Float64Var(&t.chaos.Panic, "chaos-panic", 0, "chaos sink (drills): share of events that panic, 0..1")
	fs.DurationVar(&t.chaos.HangMax, "chaos-hang-max", time.Second, "chaos sink (drills): longest hang")
	fs.Uint64Var(&t.chaos.Seed, "chaos-seed", 0, "chaos sink (drills): seed of its draws (0: random)")
	fs.DurationVar(&t.clockOffset, "test-clock-offset", 0, "TEST ONLY: skew this edge's wall clock by this much (drills; decisions must not depend on it)")
}

// apply sets the options the flags ask for and warns about a skewed clock.
func (t *testFlags) apply(o *edge.Options, log *slog.Logger) {
	if off := t.clockOffset; off != 0 {
		o.Clock = func() time.Time { return time.Now().Add(off) }
		log.Warn("TEST ONLY: the edge's wall clock is skewed", "offset", off)
	}
}

// chaosSink returns the chaos sink the flags describe, logging to log.
func (t *testFlags) chaosSink(log *slog.Logger) (*sink.Chaos, error) {
	o := t.chaos
	o.Logger = log
	return sink.NewChaos(o)
}
