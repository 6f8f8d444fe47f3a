package edge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// inMsg is one delivered event and when the edge received it.
type inMsg struct {
	m  jetstream.Msg
	at time.Time
}

// errGap means the client missed a delivery (consumer sequence jumped):
// nothing after the gap may be processed or acknowledged.
var errGap = errors.New("delivery gap")

// errConsumerGone means the partition's consumer no longer exists: deleted
// by a newer owner (then the claim log has moved on and the partition is
// fenced), or lost by a core node (then it is made again).
var errConsumerGone = errors.New("consumer gone")

// checkDelivery is the gap check: every delivery of a consumer this
// ownership made fresh must be the next consumer sequence, starting at 1.
// A first delivery above 1 means the answer to an earlier pull was lost
// (AckAll would acknowledge it unhandled); a sequence going back means a
// redelivery. Either way the caller rewinds.
func checkDelivery(last, d uint64) error {
	if d != last+1 {
		return fmt.Errorf("delivery %d after %d: %w", d, last, errGap)
	}
	return nil
}

// pull feeds msgs from it until stop is closed, checking that consumer
// sequences are contiguous from 1; it reports on lost why the partition
// must rewind (a gap, a delivery without metadata, an iterator that ended
// by itself) or that the consumer is gone, and returns.
func (pt *partition) pull(it jetstream.MessagesContext, msgs chan<- inMsg, lost chan<- error, stop <-chan struct{}) {
	c, p := pt.c, pt.p
	var lastDelivered uint64
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				lost <- fmt.Errorf("p%d: %w: %w", p, errConsumerGone, err)
				return
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				select {
				case <-stop: // we stopped it
				default:
					// The iterator stopped itself (a terminal status such
					// as 400 Bad Request, or its connection closed): no
					// more pulls would ever be sent, and the partition
					// would sit owned and idle. Rewind to a new consumer.
					lost <- fmt.Errorf("p%d: message iterator ended: %v: %w", p, err, errGap)
				}
				return
			}
			c.lg.Debug("pull", "partition", p, "err", err)
			if errors.Is(err, jetstream.ErrBadRequest) {
				c.lg.Warn("pull refused", "partition", p, "err", err)
			}
			continue
		}
		md, err := m.Metadata()
		if err != nil {
			lost <- fmt.Errorf("p%d: delivery without metadata: %v: %w", p, err, errGap)
			return
		}
		if err := checkDelivery(lastDelivered, md.Sequence.Consumer); err != nil {
			lost <- fmt.Errorf("p%d: %w", p, err)
			return
		}
		lastDelivered = md.Sequence.Consumer
		select {
		case msgs <- inMsg{m, c.now()}:
		case <-stop:
			return
		}
	}
}

// checkConsumer asks an idle partition's consumer how it is. An idle owner
// appends nothing, so the claim log cannot fence it, and a pull iterator
// whose consumer was deleted between pulls may never hear of it (its pulls
// meet no responders): a missing consumer is errConsumerGone. A paused
// consumer delivers nothing while its pending grows: the partition is as
// good as stuck, and says so (readiness, after StuckAfter) until it is
// resumed. Edges may not pause consumers; an operator can.
func (pt *partition) checkConsumer(ctx context.Context) error {
	c, p := pt.c, pt.p
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	info, err := pt.cons.Info(ictx)
	cancel()
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("p%d: %w: %w", p, errConsumerGone, err)
	}
	if err == nil {
		c.notePaused(p, info)
	}
	return nil
}

// notePaused marks p stuck while its consumer is paused, and idle again
// once it is not.
func (c *Consumer) notePaused(p int, info *jetstream.ConsumerInfo) {
	c.mu.Lock()
	s, marked := c.steps[p]
	marked = marked && strings.HasPrefix(s.what, pausedStep)
	c.mu.Unlock()
	switch {
	case info.Paused && !marked:
		c.o.Logger.Warn("consumer paused: partition stopped until it is resumed", "partition", p, "consumer", info.Name, "until", info.Config.PauseUntil, "pending", info.NumPending)
		c.busy(p, fmt.Sprintf("%s (consumer %s paused until %v, %d pending)", pausedStep, info.Name, info.Config.PauseUntil, info.NumPending))
	case !info.Paused && marked:
		c.o.Logger.Info("consumer resumed", "partition", p, "consumer", info.Name)
		c.idle(p)
	}
}

const pausedStep = "waiting on a paused consumer"
