// Package poll waits for a condition by polling it with a deadline: what
// tests use instead of sleeping for a fixed time; and the one backoff
// onceplane's retry loops share (the product's and the testbed's).
package poll

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// Interval is how often Until evaluates its condition.
const Interval = 10 * time.Millisecond

// Until evaluates cond every Interval until it is true (true) or within has
// passed (false).
func Until(within time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(Interval)
	}
	return true
}

// Sleep waits for d or until ctx ends, whichever is first, and returns
// ctx's error in the second case. A d of zero or less returns at once.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Backoff returns the retry delays onceplane's loops wait between attempts:
// exponential from initial, doubling up to max, each ±20 % (so that edges
// retrying the same failure do not retry in step). NextBackOff gives the
// next delay; Reset starts again from initial.
func Backoff(initial, max time.Duration) *backoff.ExponentialBackOff {
	return &backoff.ExponentialBackOff{InitialInterval: initial, MaxInterval: max, Multiplier: 2, RandomizationFactor: 0.2}
}

// Attempts configure Retry. Zero values are the documented defaults.
type Attempts struct {
	// Each bounds one attempt: a request whose reply is lost (right after a
	// region went away, say) would otherwise hold the caller until ctx's
	// deadline. Zero means 15 s.
	Each time.Duration
	// Wait is the pause between attempts. Zero means 500 ms.
	Wait time.Duration
	// Final, when set, reports an error no further attempt would change:
	// Retry returns it at once.
	Final func(error) bool
	// Failed, when set, sees each failed attempt's error before the next.
	Failed func(error)
}

// Retry runs an idempotent step, each attempt bounded to a.Each, until it
// succeeds, fails finally (a.Final), or ctx ends; it returns the last error.
func Retry(ctx context.Context, a Attempts, step func(context.Context) error) error {
	if a.Each <= 0 {
		a.Each = 15 * time.Second
	}
	if a.Wait <= 0 {
		a.Wait = 500 * time.Millisecond
	}
	for {
		actx, cancel := context.WithTimeout(ctx, a.Each)
		err := step(actx)
		cancel()
		if err == nil || ctx.Err() != nil || a.Final != nil && a.Final(err) {
			return err
		}
		if a.Failed != nil {
			a.Failed(err)
		}
		if Sleep(ctx, a.Wait) != nil {
			return err
		}
	}
}
