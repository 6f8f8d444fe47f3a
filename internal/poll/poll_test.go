package poll

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestRetry: attempts until success, each bounded; a final error stops at
// once; every failed attempt is seen.
func TestRetry(t *testing.T) {
	ctx := context.Background()
	calls, failed := 0, 0
	err := Retry(ctx, Attempts{Each: 20 * time.Millisecond, Wait: time.Millisecond, Failed: func(error) { failed++ }}, func(actx context.Context) error {
		calls++
		if calls < 3 {
			<-actx.Done() // a lost reply: the attempt's bound ends it
			return actx.Err()
		}
		return nil
	})
	if err != nil || calls != 3 || failed != 2 {
		t.Fatalf("Retry = %v after %d calls, %d failed; want nil after 3, 2 failed", err, calls, failed)
	}
	final := errors.New("refused")
	calls = 0
	err = Retry(ctx, Attempts{Final: func(err error) bool { return errors.Is(err, final) }}, func(context.Context) error { calls++; return final })
	if !errors.Is(err, final) || calls != 1 {
		t.Fatalf("Retry = %v after %d calls; want the final error after 1", err, calls)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := Retry(cctx, Attempts{Wait: 10 * time.Millisecond}, func(context.Context) error { return errors.New("down") }); err == nil {
		t.Fatal("Retry succeeded against a step that always fails")
	}
}
