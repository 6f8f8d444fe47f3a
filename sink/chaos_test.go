package sink_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/sink"
)

func chaosEvents(n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = event.Event{ID: fmt.Sprintf("ev-%d", i)}
	}
	return evs
}

func TestChaosZeroNeverMisbehaves(t *testing.T) {
	c, err := sink.NewChaos(sink.ChaosOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Handle(context.Background(), chaosEvents(1000)); errs != nil {
		t.Fatalf("zero rates failed events: %v", errs)
	}
	if s := c.Stats(); s != (sink.ChaosStats{}) {
		t.Fatalf("stats %+v", s)
	}
}

func TestChaosFailIsTheEventsError(t *testing.T) {
	c, err := sink.NewChaos(sink.ChaosOptions{Fail: 1})
	if err != nil {
		t.Fatal(err)
	}
	errs := c.Handle(context.Background(), chaosEvents(3))
	if len(errs) != 3 {
		t.Fatalf("errors %v", errs)
	}
	for _, e := range errs {
		if e == nil || errors.Is(e, edge.ErrUnavailable) {
			t.Fatalf("want a plain failure (dead-lettered after retries), got %v", e)
		}
	}
}

func TestChaosPanics(t *testing.T) {
	c, err := sink.NewChaos(sink.ChaosOptions{Panic: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
		if c.Stats().Panics != 1 {
			t.Fatalf("stats %+v", c.Stats())
		}
	}()
	c.Handle(context.Background(), chaosEvents(2))
}

func TestChaosHangHonoursContext(t *testing.T) {
	c, err := sink.NewChaos(sink.ChaosOptions{Hang: 1, HangMax: time.Hour, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	t0 := time.Now()
	errs := c.Handle(ctx, chaosEvents(1))
	if time.Since(t0) > 10*time.Second {
		t.Fatalf("a hang ignored its context (%v)", time.Since(t0))
	}
	if len(errs) != 1 || !errors.Is(errs[0], context.DeadlineExceeded) {
		t.Fatalf("errors %v", errs)
	}
}

func TestChaosHangIsBoundedThenSucceeds(t *testing.T) {
	c, err := sink.NewChaos(sink.ChaosOptions{Hang: 1, HangMax: 5 * time.Millisecond, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	if errs := c.Handle(context.Background(), chaosEvents(4)); errs != nil {
		t.Fatalf("a finished hang failed: %v", errs)
	}
	if c.Stats().Hangs != 4 {
		t.Fatalf("stats %+v", c.Stats())
	}
}

func TestChaosSeeded(t *testing.T) {
	run := func() []bool {
		c, err := sink.NewChaos(sink.ChaosOptions{Fail: 0.3, Seed: 42})
		if err != nil {
			t.Fatal(err)
		}
		errs := c.Handle(context.Background(), chaosEvents(200))
		out := make([]bool, 200)
		for i := range out {
			out[i] = errs != nil && errs[i] != nil
		}
		return out
	}
	a, b := run(), run()
	n := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed, different draw at %d", i)
		}
		if a[i] {
			n++
		}
	}
	if n < 30 || n > 90 {
		t.Fatalf("%d of 200 failed at rate 0.3", n)
	}
}

func TestChaosRefusesBadRates(t *testing.T) {
	for _, o := range []sink.ChaosOptions{{Fail: -0.1}, {Hang: 1.5}, {Fail: 0.6, Panic: 0.6}, {HangMax: -time.Second}} {
		if _, err := sink.NewChaos(o); err == nil {
			t.Fatalf("%+v accepted", o)
		}
	}
}
