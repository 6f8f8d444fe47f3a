package edge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
)

// Transactional is a Handler that keeps, atomically with its effects, the
// position it has applied per partition: the highest ingest sequence, and
// the owner epoch that applied it. With it, a takeover leaves nothing
// uncertain that the sink can answer for (dedupe.State.Resolve): an event
// an earlier owner claimed is done when the sink's position covers its
// batch, and a first run, not flagged, when it does not.
//
// Handle receives one partition's batch; each event carries its Source,
// Partition, Epoch and StreamSeq. In one transaction per call, the sink
// must:
//
//   - refuse every event, with an error wrapping ErrSinkFenced, when it
//     holds a later epoch for (Source, Partition) than the events': a
//     stale owner's effects never land after a takeover fenced the sink;
//   - skip an event at or below its position that it has applied (a retry
//     after a commit whose reply was lost), and apply the others;
//   - raise the position to the highest StreamSeq of the call.
//
// A call either commits whole or not at all; an error for an event the
// sink could not reach wraps ErrUnavailable (the batch is retried until it
// clears). A call holding an event the sink refuses for good (a constraint
// it breaks) must commit nothing: it fails that event (not ErrUnavailable)
// and the others with ErrUnavailable. The edge retries the event, and when
// it gives up dead-letters it before it hands the others again without it,
// so the position never passes an event that is neither applied nor
// dead-lettered.
type Transactional interface {
	Handler
	// Fence makes epoch the owner epoch of (source, partition) unless the
	// sink holds a later one, and returns the position: the sink's epoch
	// and the highest ingest sequence applied. No transaction of an earlier
	// epoch commits after Fence returns. A later epoch held returns the
	// position with an error wrapping ErrSinkFenced.
	Fence(ctx context.Context, source string, partition int, epoch uint64) (Position, error)
}

// Position is what a transactional sink holds for one partition of one
// input.
type Position struct {
	// Epoch is the latest owner epoch that fenced or wrote the sink.
	Epoch uint64
	// Applied is the highest ingest sequence applied.
	Applied uint64
}

// ErrSinkFenced marks a transactional sink's refusal of an owner whose
// epoch a later owner has fenced. A partition that meets it stops, as when
// its claim log refuses an append.
var ErrSinkFenced = errors.New("fenced: the sink holds a later owner's epoch")

// source names the input partition p is consumed from, for the sink's
// positions: the stream and when it was created, so that a recreated
// stream (or a mirror, or a promoted copy), whose sequences name other
// events, never counts against another's position.
func (pt *partition) inputSource(ctx context.Context) (string, error) {
	name := pt.c.inputStream(pt.p)
	s, err := pt.c.js.Stream(ctx, name)
	if err != nil {
		return "", fmt.Errorf("input %s: %w", name, err)
	}
	return fmt.Sprintf("%s@%d", name, s.CachedInfo().Created.UnixNano()), nil
}

// fenceSink fences the transactional sink with the coming takeover's
// epoch and resolves the pending claims against its position. A sink that
// cannot be reached is waited for: without its position nothing the last
// owner claimed can be settled, and nothing can be applied anyway.
func (pt *partition) fenceSink(ctx context.Context) error {
	c, p, st := pt.c, pt.p, pt.st
	if pt.source == "" {
		var err error
		if pt.source, err = pt.inputSource(ctx); err != nil {
			return err
		}
	}
	b := poll.Backoff(50*time.Millisecond, 2*time.Second)
	for raised := 0; ; {
		epoch := st.Epoch() + 1
		pos, err := c.tx.Fence(ctx, pt.source, p, epoch)
		switch {
		case err == nil:
			pt.resolved = st.Resolve(pt.source, pos.Applied)
			return nil
		case errors.Is(err, ErrSinkFenced) && pos.Epoch >= epoch && raised < 3:
			// The sink saw a later epoch than the log shows: a log aged
			// out entirely, or an owner whose takeover this replay has not
			// read (its append, or ours, is then refused by the log).
			st.RaiseEpoch(pos.Epoch)
			raised++
		case errors.Is(err, ErrUnavailable):
			c.lg.Warn("sink unavailable at takeover; waiting", "partition", p, "err", err)
			if poll.Sleep(ctx, b.NextBackOff()) != nil {
				return ctx.Err()
			}
		default:
			return fmt.Errorf("sink fence p%d epoch %d: %w", p, epoch, err)
		}
	}
}

// resolvedCounts is what the last takeover's Resolve settled.
type resolvedCounts = dedupe.Resolution
