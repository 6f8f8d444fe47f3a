package edge_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/claimlog"
)

// TestFencedError: both ways of finding a partition fenced are one typed
// error that matches ErrFenced, keeps its cause, and says which it was (a
// deleted consumer is not reported as a refused append).
func TestFencedError(t *testing.T) {
	byAppend := error(&edge.FencedError{Partition: 3, Cause: fmt.Errorf("claim p3: expected last 5, log at 7: %w", claimlog.ErrFenced)})
	byConsumer := error(&edge.FencedError{Partition: 4, Cause: fmt.Errorf("consumer p4-t9: %w (9 -> 12)", edge.ErrConsumerDeleted)})
	for _, err := range []error{byAppend, byConsumer, fmt.Errorf("wrapped: %w", byConsumer)} {
		var fe *edge.FencedError
		if !errors.Is(err, edge.ErrFenced) || !errors.As(err, &fe) || fe.Partition < 3 {
			t.Errorf("%v: not a FencedError matching ErrFenced", err)
		}
	}
	if errors.Is(byAppend, edge.ErrConsumerDeleted) || !errors.Is(byConsumer, edge.ErrConsumerDeleted) {
		t.Error("the cause is lost or confused")
	}
	if got := byConsumer.Error(); got != "p4 fenced: consumer p4-t9: consumer deleted and the claim log moved on (9 -> 12)" {
		t.Errorf("message %q", got)
	}
}
