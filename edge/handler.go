package edge

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"time"

	"github.com/onceplane/onceplane/event"
)

// Handler processes first-time events. Handle returns one error per event,
// in order (a nil slice means all succeeded). Events whose error is non-nil
// are retried with backoff, then sent to the dead-letter stream, unless the
// error wraps ErrUnavailable, which is retried until it clears.
type Handler interface {
	Handle(ctx context.Context, events []event.Event) []error
}

// HandlerFunc adapts a per-event function to Handler. A panic fails only
// the event that caused it.
type HandlerFunc func(ctx context.Context, ev event.Event) error

// Handle calls f for each event.
func (f HandlerFunc) Handle(ctx context.Context, evs []event.Event) []error {
	var errs []error
	for i, ev := range evs {
		if err := callSafely(func() error { return f(ctx, ev) }); err != nil {
			if errs == nil {
				errs = make([]error, len(evs))
			}
			errs[i] = err
		}
	}
	return errs
}

// ErrUnavailable marks a handler error as the sink being unreachable rather
// than the event being bad: it is retried without limit and never
// dead-lettered (the partition waits for the sink).
var ErrUnavailable = errors.New("sink unavailable")

// Retry configures handler retries. The zero value is usable.
type Retry struct {
	// Attempts is the number of calls per event before it is dead-lettered. Zero means 5.
	Attempts int
	// Initial is the first backoff. Zero means 50 ms.
	Initial time.Duration
	// Max caps the backoff. Zero means 2 s.
	Max time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.Attempts <= 0 {
		r.Attempts = 5
	}
	if r.Initial <= 0 {
		r.Initial = 50 * time.Millisecond
	}
	if r.Max <= 0 {
		r.Max = 2 * time.Second
	}
	return r
}

// backoff returns the wait before attempt n (1-based), exponential with full jitter.
func (r Retry) backoff(n int) time.Duration {
	d := r.Initial << min(n-1, 20)
	if d > r.Max || d <= 0 {
		d = r.Max
	}
	return d/2 + rand.N(d/2+1)
}

func callSafely(f func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("handler panic: %v\n%s", v, debug.Stack())
		}
	}()
	return f()
}

// handlerResult counts what runHandler did beyond one call per event.
type handlerResult struct {
	retries int // calls after an event failed
	flagged int // events flagged uncertain because a call that held them panicked; every later call of them is flagged
}

// runHandler calls h for evs until each event succeeded or gave up. It returns
// the final error of every event that gave up (nil entries succeeded) and
// what it did beyond one call per event. It returns early only when ctx
// ends or the sink refuses the owner (ErrSinkFenced).
//
// gaveUp, when not nil, is told of each event that gives up as it does,
// before the next call of the others: a transactional handler's later call
// moves its position past the event, so its dead letter must be durable
// first. An error from gaveUp ends runHandler.
func runHandler(ctx context.Context, h Handler, evs []event.Event, r Retry, gaveUp func(i int, err error) error) (final []error, res handlerResult, err error) {
	final = make([]error, len(evs))
	todo := make([]int, len(evs))
	for i := range todo {
		todo[i] = i
	}
	attempts := make([]int, len(evs))
	for round := 1; len(todo) > 0; round++ {
		batch := make([]event.Event, len(todo))
		for j, i := range todo {
			batch[j] = evs[i]
		}
		errs, panicked := handleIsolated(ctx, h, batch)
		if _, tx := h.(Transactional); tx && panicked {
			// A transactional sink's call commits whole or not at all: no
			// event of it ran alone, none is flagged, and the call is
			// retried (then dead-lettered) as one.
			panicked = false
		}
		if panicked {
			// The batch call may have had effects before it panicked: every
			// later call of these events is a possible repeat, flagged.
			for _, i := range todo {
				if !evs[i].Uncertain {
					evs[i].Uncertain = true
					res.flagged++
				}
			}
		}
		for _, e := range errs {
			if errors.Is(e, ErrSinkFenced) {
				// A later owner fenced the sink: nothing of this batch
				// landed, and nothing more will; the partition stops.
				return final, res, e
			}
		}
		var next []int
		for j, i := range todo {
			var e error
			if j < len(errs) {
				e = errs[j]
			}
			if e == nil {
				final[i] = nil
				continue
			}
			final[i] = e
			if !errors.Is(e, ErrUnavailable) {
				attempts[i]++
				if attempts[i] >= r.Attempts {
					if gaveUp != nil {
						if err := gaveUp(i, e); err != nil {
							return final, res, err
						}
					}
					continue // gave up
				}
			}
			next = append(next, i)
		}
		if len(next) == 0 {
			break
		}
		res.retries += len(next)
		todo = next
		select {
		case <-ctx.Done():
			return final, res, ctx.Err()
		case <-time.After(r.backoff(min(round, 30))):
		}
	}
	return final, res, nil
}

// handleIsolated calls h for the batch; if the call panics, it calls h once
// per event, each flagged uncertain (the panicking call may have handled
// some before it panicked), so that only the event that panics fails.
//
// A transactional handler's events are never called one by one: its
// position is a high-water mark, and a call of a later event alone could
// cover an earlier one that never ran. Every event of its panicking call
// fails with the panic.
func handleIsolated(ctx context.Context, h Handler, batch []event.Event) (errs []error, panicked bool) {
	perr := callSafely(func() error { errs = h.Handle(ctx, batch); return nil })
	if perr == nil {
		return errs, false
	}
	errs = make([]error, len(batch))
	if _, tx := h.(Transactional); tx || len(batch) == 1 {
		for i := range errs {
			errs[i] = perr
		}
		return errs, true
	}
	for i := range batch {
		ev := batch[i]
		ev.Uncertain = true
		var one []error
		if err := callSafely(func() error { one = h.Handle(ctx, []event.Event{ev}); return nil }); err != nil {
			errs[i] = err
		} else if len(one) > 0 {
			errs[i] = one[0]
		}
	}
	return errs, true
}
