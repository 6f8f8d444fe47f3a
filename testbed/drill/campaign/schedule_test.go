package campaign

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func planOpts() PlanOptions {
	return PlanOptions{Duration: 2 * time.Minute, Warmup: 5 * time.Second, MeanGap: 2 * time.Second, Edges: 3, Cores: 3}
}

func TestPlanReplaysFromItsSeed(t *testing.T) {
	a, b := Plan(42, planOpts()), Plan(42, planOpts())
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 42 gave two schedules (%d, %d faults)", len(a), len(b))
	}
	if c := Plan(43, planOpts()); reflect.DeepEqual(a, c) {
		t.Fatal("seeds 42 and 43 gave the same schedule")
	}
}

func TestPlanShape(t *testing.T) {
	o := planOpts()
	seen := map[FaultKind]int{}
	shortPause, longPause := 0, 0
	for seed := uint64(1); seed <= 20; seed++ {
		s := Plan(seed, o)
		if len(s) < 30 || len(s) > 90 {
			t.Fatalf("seed %d: %d faults in 2 min at a 2 s mean gap", seed, len(s))
		}
		for i, f := range s {
			seen[f.Kind]++
			if f.At < o.Warmup || f.At+f.Hold > o.Duration {
				t.Fatalf("seed %d: %s outside [warmup, duration]", seed, f)
			}
			if i > 0 && f.At < s[i-1].At {
				t.Fatalf("seed %d: out of order at %d", seed, i)
			}
			if f.Target < 0 || f.Target >= o.Edges || (f.Kind == FaultCore && f.Target >= o.Cores) {
				t.Fatalf("seed %d: target of %s", seed, f)
			}
			switch f.Kind {
			case FaultPause:
				if f.Hold < gossipTimeout {
					shortPause++
				} else {
					longPause++
				}
			case FaultSink:
				if f.Fail+f.Hang+f.Panic > 1 || f.Fail <= 0 {
					t.Fatalf("seed %d: rates of %s", seed, f)
				}
			case FaultHostile:
				if !slices.Contains(hostileVariants, f.Hostile) || f.Count < 1 {
					t.Fatalf("seed %d: %s", seed, f)
				}
			}
		}
	}
	for _, k := range AllKinds() {
		if seen[k] == 0 {
			t.Fatalf("no %s in 20 schedules: %v", k, seen)
		}
	}
	if shortPause == 0 || longPause == 0 {
		t.Fatalf("pauses %d shorter and %d longer than the gossip timeout", shortPause, longPause)
	}
}

func TestPlanKinds(t *testing.T) {
	o := planOpts()
	o.Kinds = []FaultKind{FaultFlap, FaultKill}
	for _, f := range Plan(7, o) {
		if f.Kind != FaultFlap && f.Kind != FaultKill {
			t.Fatalf("%s drawn with kinds %v", f, o.Kinds)
		}
	}
	if _, err := ParseKinds("kill,nope"); err == nil {
		t.Fatal("an unknown kind parsed")
	}
	if ks, err := ParseKinds(" kill, flap ,"); err != nil || !slices.Equal(ks, []FaultKind{FaultKill, FaultFlap}) {
		t.Fatalf("%v %v", ks, err)
	}
}

func TestByTargetKeepsOrderPerTarget(t *testing.T) {
	s := Plan(9, planOpts())
	queues := byTarget(s)
	n := 0
	for _, q := range queues {
		n += len(q)
		for i := 1; i < len(q); i++ {
			if q[i].At < q[i-1].At {
				t.Fatal("a queue is out of order")
			}
		}
	}
	if n != len(s) {
		t.Fatalf("%d of %d faults queued", n, len(s))
	}
}
