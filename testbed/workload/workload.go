// Package workload generates and publishes deterministic event loads with a
// chosen share of duplicates, for tests, the simulation and benchmarks.
package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/producer"
)

// Plan describes a load. The zero value is 1,000 events, 30 % duplicates.
type Plan struct {
	// Events is the total number of events published, duplicates included.
	Events int
	// DupRate is the share of events that re-send an earlier ID.
	DupRate float64
	// Gap is the minimum distance, in events, between an ID and its re-send
	// (keeps re-sends outside the ingest stream's own duplicate window).
	Gap int
	// Seed makes the plan reproducible.
	Seed uint64
	// Prefix starts every ID.
	Prefix string
	// PayloadSize is the payload length in bytes. Zero means 128.
	PayloadSize int
}

// IDs returns the plan's event IDs in publish order and the number of unique IDs.
func (p Plan) IDs() (ids []string, unique int) {
	if p.Events == 0 {
		p.Events, p.DupRate = 1000, 0.3
	}
	r := rand.New(rand.NewPCG(p.Seed, 0x0ce))
	ids = make([]string, 0, p.Events)
	for i := 0; i < p.Events; i++ {
		if i > p.Gap && r.Float64() < p.DupRate {
			ids = append(ids, ids[r.IntN(i-p.Gap)])
			continue
		}
		ids = append(ids, fmt.Sprintf("%s%08d-%04x", p.Prefix, unique, r.Uint32()&0xffff))
		unique++
	}
	return ids, unique
}

// Payload returns a payload of the plan's size for id.
func (p Plan) Payload(id string) []byte {
	n := p.PayloadSize
	if n <= 0 {
		n = 128
	}
	b := make([]byte, n)
	copy(b, id)
	return b
}

// Publish publishes ids as an at-least-once producer does: asynchronously,
// at most window in flight, retrying every publish that is not acked (core
// node down, timeout) until it is or ctx ends. progress, if set, is called
// with the number of events acked so far.
func Publish(ctx context.Context, pr *producer.Producer, p Plan, ids []string, window int, progress func(acked int)) error {
	return PublishFailover(ctx, []*producer.Producer{pr}, p, ids, window, progress)
}

// PublishFailover is Publish through the producers of several regions in
// order of preference, as producer.Failover does one event at a time: a
// round of which nothing is acked moves to the next region, and a region
// other than the first is left for the first again every 5 s (a probe, its
// round bounded to 1 s). An event whose ack was lost may be stored in two
// regions: they dedupe it across regions, as any producer retry.
func PublishFailover(ctx context.Context, prs []*producer.Producer, p Plan, ids []string, window int, progress func(acked int)) error {
	if window <= 0 {
		window = 4096
	}
	if len(prs) == 0 {
		return fmt.Errorf("publish: no producers")
	}
	acked, cur := 0, 0
	var probeAt time.Time
	for start := 0; start < len(ids); start += window {
		pending := ids[start:min(start+window, len(ids))]
		for b := poll.Backoff(20*time.Millisecond, time.Second); len(pending) > 0; {
			wait := 5 * time.Second
			if cur != 0 && time.Now().After(probeAt) {
				cur, wait = 0, time.Second
			}
			pr := prs[cur]
			futs := make([]jetstream.PubAckFuture, len(pending))
			for i, id := range pending {
				futs[i], _ = pr.PublishAsync(ctx, id, p.Payload(id))
			}
			// An ack can be lost with the connection it was due on (a core
			// node killed): what is not acked in time is published again.
			var failed []string
			deadline := time.After(wait)
			expired := false
			for i, f := range futs {
				if f == nil {
					failed = append(failed, pending[i])
					continue
				}
				if expired {
					select {
					case <-f.Ok():
						acked++
					default:
						failed = append(failed, pending[i])
					}
					continue
				}
				select {
				case <-f.Ok():
					acked++
				case err := <-f.Err():
					pr.Observe(err)
					failed = append(failed, pending[i])
				case <-deadline:
					expired = true
					failed = append(failed, pending[i])
				case <-ctx.Done():
					return fmt.Errorf("publish: %w", ctx.Err())
				}
			}
			if len(failed) == len(pending) && len(prs) > 1 {
				// Nothing acked here: the next region, at once.
				if cur = (cur + 1) % len(prs); cur != 0 {
					probeAt = time.Now().Add(5 * time.Second)
					continue
				}
				// Every region refused: wait before the next round.
			}
			pending = failed
			if len(failed) > 0 && poll.Sleep(ctx, b.NextBackOff()) != nil {
				return fmt.Errorf("publish: %w", ctx.Err())
			}
		}
		if progress != nil {
			progress(acked)
		}
	}
	return nil
}
