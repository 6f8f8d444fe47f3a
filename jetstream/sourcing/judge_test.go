package sourcing

import (
	"testing"
	"time"
)

// run feeds the judge one look every 250 ms for d, built by look(t), and
// returns the times (since the start) of the restarts it ordered.
func run(j *Judge, d time.Duration, look func(t time.Duration) Source) []time.Duration {
	t0 := time.Unix(1_700_000_000, 0)
	var out []time.Duration
	for t := time.Duration(0); t <= d; t += 250 * time.Millisecond {
		for _, v := range j.Step(t0.Add(t), []Source{look(t)}) {
			if v.Restart {
				out = append(out, t)
			}
		}
	}
	return out
}

func src(heard time.Duration, up bool, originLast, sourced uint64) Source {
	return Source{Stream: "x", Origin: "o", Key: "o k", Heard: heard, OriginUp: up, OriginLast: originLast, Sourced: sourced}
}

// A source under steady load is always a little behind its origin, and
// always moving: never restarted.
func TestJudgeLeavesASteadySourceAlone(t *testing.T) {
	got := run(NewJudge(Options{}), time.Minute, func(t time.Duration) Source {
		n := uint64(t / time.Millisecond) // 1,000 claims a second
		return src(100*time.Millisecond, true, n, n-min(n, 80))
	})
	if len(got) != 0 {
		t.Fatalf("restarted at %v", got)
	}
}

// A source that still hears its origin's heartbeats but receives nothing
// while the origin moves on (flow control stuck) is restarted once what the
// origin held 2 s ago is still missing and nothing moved for 1 s, and not
// again before the backoff.
func TestJudgeRestartsAStalledSource(t *testing.T) {
	got := run(NewJudge(Options{}), 5*time.Second, func(t time.Duration) Source {
		return src(500*time.Millisecond, true, 1000+uint64(t/time.Millisecond), 1000)
	})
	if len(got) != 2 || got[0] < 2*time.Second || got[0] > 2500*time.Millisecond || got[1]-got[0] < 2*time.Second {
		t.Fatalf("restarts at %v: want the first 2-2.5 s in, the next one backoff (2 s) later", got)
	}
}

// A silent source is not restarted while its origin cannot be reached, and
// is restarted a grace after the origin answers again unless it recovered
// by itself within the grace.
func TestJudgeWaitsForTheOrigin(t *testing.T) {
	cut := func(t time.Duration) Source {
		if t < 3*time.Second {
			return src(t, false, 0, 0)
		}
		return src(t, true, 10, 5)
	}
	got := run(NewJudge(Options{}), 6*time.Second, cut)
	if len(got) != 1 || got[0] < 5*time.Second || got[0] > 5250*time.Millisecond {
		t.Fatalf("restarts at %v: want one, a grace (2 s) after the origin answered at 3 s", got)
	}
	recovered := func(t time.Duration) Source {
		switch {
		case t < 3*time.Second:
			return src(t, false, 0, 0)
		case t < 4500*time.Millisecond:
			return src(t, true, 10, 5)
		}
		return src(100*time.Millisecond, true, 10, 10)
	}
	if got := run(NewJudge(Options{}), 10*time.Second, recovered); len(got) != 0 {
		t.Fatalf("restarted at %v a source that recovered within the grace", got)
	}
}

// A source that restarts do not bring back is restarted less and less
// often: the waits double (2, 4, 8, 16 s), instead of a restart every few
// seconds for as long as it stays stuck.
func TestJudgeBacksOff(t *testing.T) {
	got := run(NewJudge(Options{}), 40*time.Second, func(t time.Duration) Source {
		return src(500*time.Millisecond, true, 1000+uint64(t/time.Millisecond), 1000)
	})
	if len(got) < 3 || len(got) > 6 {
		t.Fatalf("%d restarts in 40 s (at %v): want the waits to double", len(got), got)
	}
	for i := 2; i < len(got); i++ {
		if got[i]-got[i-1] < got[i-1]-got[i-2] {
			t.Fatalf("restarts at %v: the waits shrink", got)
		}
	}
}

func TestOriginLabels(t *testing.T) {
	w := &watcher{o: WatchOptions{Origins: map[string]string{"onceplane-b-claims": "b"}}}
	for stream, want := range map[string]string{
		"onceplane-b-claims": "b", "onceplane-eu-west-claims-2": "eu-west", "onceplane-ap-south-in-1": "ap-south",
		"onceplane-us-east-in": "us-east", "other-stream": "other-stream",
	} {
		if got := w.origin(stream); got != want {
			t.Errorf("origin(%s) = %s, want %s", stream, got, want)
		}
	}
}
