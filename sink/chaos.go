package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onceplane/onceplane/event"
)

// ChaosOptions sets how often a Chaos sink misbehaves. The zero value never
// does: every event succeeds at once.
type ChaosOptions struct {
	// Fail, Hang and Panic are per-event probabilities in [0, 1], drawn from
	// one number per event, so their sum must not exceed 1. Zero means never.
	// A failure is the event's own error (retried, then dead-lettered; not
	// edge.ErrUnavailable); a hang sleeps up to HangMax and then succeeds; a
	// panic panics inside Handle.
	Fail, Hang, Panic float64
	// HangMax bounds one hang. Zero means 1 s.
	HangMax time.Duration
	// Seed seeds the draws. Zero means a random seed.
	Seed uint64
	// Logger receives one warning per misbehaviour (drills count them). Nil
	// means none.
	Logger *slog.Logger
}

// ChaosStats counts what a Chaos sink did.
type ChaosStats struct{ Fails, Hangs, Panics int64 }

// Chaos is a handler for drills that fails on purpose: per event, with
// seeded probabilities, it returns an error, hangs for a bounded random time
// (honouring ctx) or panics. Put it first in a chain, so that a chaos
// failure happens before a later sink records an effect.
type Chaos struct {
	o   ChaosOptions
	mu  sync.Mutex
	rng *rand.Rand

	fails, hangs, panics atomic.Int64
}

// NewChaos returns a Chaos sink, or an error when the rates are not
// probabilities or sum to more than 1.
func NewChaos(o ChaosOptions) (*Chaos, error) {
	for _, r := range []float64{o.Fail, o.Hang, o.Panic} {
		if !(r >= 0 && r <= 1) {
			return nil, fmt.Errorf("chaos sink: rate %v not in [0, 1]", r)
		}
	}
	if o.Fail+o.Hang+o.Panic > 1 {
		return nil, fmt.Errorf("chaos sink: rates sum to %v > 1", o.Fail+o.Hang+o.Panic)
	}
	if o.HangMax < 0 {
		return nil, errors.New("chaos sink: negative hang bound")
	}
	if o.HangMax == 0 {
		o.HangMax = time.Second
	}
	seed := o.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &Chaos{o: o, rng: rand.New(rand.NewPCG(seed, 0xc4a05))}, nil
}

// Stats returns what the sink did so far.
func (c *Chaos) Stats() ChaosStats {
	return ChaosStats{Fails: c.fails.Load(), Hangs: c.hangs.Load(), Panics: c.panics.Load()}
}

type chaosAct int

const (
	chaosOK chaosAct = iota
	chaosFail
	chaosHang
	chaosPanic
)

// draw picks what happens to one event and, for a hang, how long it lasts.
func (c *Chaos) draw() (chaosAct, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.rng.Float64()
	switch {
	case u < c.o.Panic:
		return chaosPanic, 0
	case u < c.o.Panic+c.o.Fail:
		return chaosFail, 0
	case u < c.o.Panic+c.o.Fail+c.o.Hang:
		return chaosHang, time.Duration(c.rng.Int64N(int64(c.o.HangMax))) + 1
	}
	return chaosOK, 0
}

func (c *Chaos) warn(msg string, ev event.Event, args ...any) {
	if c.o.Logger != nil {
		c.o.Logger.Warn(msg, append([]any{"id", ev.ID, "partition", ev.Partition, "seq", ev.StreamSeq}, args...)...)
	}
}

// Handle misbehaves per event as configured; events it leaves alone succeed.
func (c *Chaos) Handle(ctx context.Context, evs []event.Event) []error {
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(evs))
		}
		errs[i] = err
	}
	for i, ev := range evs {
		act, d := c.draw()
		switch act {
		case chaosPanic:
			c.panics.Add(1)
			c.warn("chaos panic", ev)
			panic(fmt.Sprintf("chaos sink: panic on %s", ev.ID))
		case chaosFail:
			c.fails.Add(1)
			c.warn("chaos fail", ev)
			fail(i, fmt.Errorf("chaos sink: %s failed on purpose", ev.ID))
		case chaosHang:
			c.hangs.Add(1)
			c.warn("chaos hang", ev, "for", d)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				fail(i, fmt.Errorf("chaos sink: hang on %s: %w", ev.ID, ctx.Err()))
			}
		}
	}
	return errs
}
