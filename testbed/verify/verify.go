// Package verify reads what a run left in the output and dead-letter streams
// and the ledger, so tests, drills and the simulation count effects exactly.
package verify

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// Msg is one stored message's ID and headers.
type Msg struct {
	ID      string
	Subject string
	Header  map[string][]string
	Data    []byte
}

// ReadStream returns every message currently in stream. A read that stalls
// (an ordered consumer placed while a clustered region is still noticing a
// dead node) is retried with a fresh consumer, up to ctx's deadline.
func ReadStream(ctx context.Context, js jetstream.JetStream, stream string) ([]Msg, error) {
	var lastErr error
	for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 15*time.Second)
		out, err := readOnce(actx, js, stream)
		cancel()
		if err == nil {
			return out, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

func readOnce(ctx context.Context, js jetstream.JetStream, stream string) ([]Msg, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	n := info.State.Msgs
	if n == 0 {
		return nil, nil
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	defer it.Stop()
	out := make([]Msg, 0, n)
	for uint64(len(out)) < n {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return out, fmt.Errorf("read %s after %d of %d: %w", stream, len(out), n, err)
		}
		h := m.Headers()
		id := h.Get(event.HeaderMsgID)
		if id == "" { // a positioned nats sink's output carries no Nats-Msg-Id
			id = event.Key(h.Get(event.HeaderTenant), h.Get(event.HeaderID))
		}
		out = append(out, Msg{ID: id, Subject: m.Subject(), Header: h, Data: m.Data()})
	}
	return out, nil
}

// OutputCounts returns how many times each event ID is in the region's output stream.
func OutputCounts(ctx context.Context, js jetstream.JetStream, n streams.Names) (map[string]int, error) {
	msgs, err := ReadStream(ctx, js, n.OutputStream())
	if err != nil {
		return nil, err
	}
	counts := make(map[string]int, len(msgs))
	for _, m := range msgs {
		if m.ID == "" && strings.Contains(m.Subject, ".outpos.") {
			continue // a positioned nats sink's position, not an output
		}
		counts[m.ID]++
	}
	return counts, nil
}

// StreamMsgs returns the number of messages stored in stream.
func StreamMsgs(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return info.State.Msgs, nil
}

// StreamsMsgs is the number of messages in the named streams together (a
// region's shards of one kind: Names.EveryShard).
func StreamsMsgs(ctx context.Context, js jetstream.JetStream, names []string) (uint64, error) {
	var total uint64
	for _, name := range names {
		n, err := StreamMsgs(ctx, js, name)
		if err != nil {
			return 0, err
		}
		total += n
	}
	return total, nil
}

// Drained reports whether, for every partition, the newest ownership's input
// consumer (on the ingest stream, or in strict mode, homes non-nil, the
// home stream's for each home partition) has nothing pending and nothing
// awaiting acknowledgement, and every partition has such a consumer.
func Drained(ctx context.Context, js jetstream.JetStream, n streams.Names, partitions int, homes []int) (bool, error) {
	left, err := Undrained(ctx, js, n, partitions, homes)
	return err == nil && len(left) == 0, err
}

// Undrained returns, in order, the partitions whose newest-epoch input
// consumer has events pending or awaiting acknowledgement, or that have no
// such consumer: what keeps Drained false. Partitions are [0, partitions),
// or in strict mode (homes non-nil) homes.
func Undrained(ctx context.Context, js jetstream.JetStream, n streams.Names, partitions int, homes []int) ([]int, error) {
	names := n.EveryShard(n.IngestShard)
	parts := make([]int, partitions)
	for p := range parts {
		parts[p] = p
	}
	if homes != nil {
		names, parts = n.EveryShard(n.HomeShard), slices.Sorted(slices.Values(homes))
	}
	newest := map[int]*jetstream.ConsumerInfo{}
	for _, stream := range names {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, err
		}
		lister := s.ListConsumers(ctx)
		for ci := range lister.Info() {
			p, seq, _, ok := streams.ParseConsumer(ci.Name)
			if !ok {
				continue
			}
			if cur, seen := newest[p]; seen {
				if _, cs, _, _ := streams.ParseConsumer(cur.Name); cs > seq {
					continue
				}
			}
			newest[p] = ci
		}
		if err := lister.Err(); err != nil {
			return nil, err
		}
	}
	var left []int
	for _, p := range parts {
		ci, ok := newest[p]
		if !ok || ci.NumPending > 0 || ci.NumAckPending > 0 {
			left = append(left, p)
		}
	}
	return left, nil
}
