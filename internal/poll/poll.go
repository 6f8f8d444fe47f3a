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
