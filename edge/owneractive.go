package edge

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/jetstream/streams"
)

// namesTTL is how long one listing of a stream's consumer names answers
// every partition's "is another owner consuming?" (ownerActive), and how
// often a handover asks. Without sharing, an edge taking over hundreds of
// partitions would list the whole stream (every partition's consumer) for
// each of them, each time.
const namesTTL = 200 * time.Millisecond

// consumerNames remembers, per stream, its consumers' names by partition,
// as last listed.
type consumerNames struct {
	mu      sync.Mutex
	streams map[string]*namesList
}

type namesList struct {
	mu  sync.Mutex // held while listing: one listing at a time per stream
	at  time.Time
	byP map[int][]string
	err error
}

// of returns the names of partition p's consumers on stream, listing the
// stream's consumer names again when the last listing is older than
// namesTTL.
func (cn *consumerNames) of(ctx context.Context, js jetstream.JetStream, stream string, p int) ([]string, error) {
	cn.mu.Lock()
	if cn.streams == nil {
		cn.streams = map[string]*namesList{}
	}
	l := cn.streams[stream]
	if l == nil {
		l = &namesList{}
		cn.streams[stream] = l
	}
	cn.mu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.at) >= namesTTL {
		l.byP, l.err = listNames(ctx, js, stream)
		l.at = time.Now()
	}
	return l.byP[p], l.err
}

// listNames lists stream's consumer names (names only: the server need not
// build every consumer's info) to the end — nats.go's lister sends each
// page from a goroutine of its own on an unbuffered channel, so a caller
// that stops reading early leaves it blocked for good — by partition.
func listNames(ctx context.Context, js jetstream.JetStream, stream string) (map[int][]string, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err
	}
	byP := map[int][]string{}
	lister := s.ConsumerNames(ctx)
	for name := range lister.Name() {
		if p, _, _, ok := streams.ParseConsumer(name); ok {
			byP[p] = append(byP[p], name)
		}
	}
	return byP, lister.Err()
}

// ownerActive reports whether another ownership of p is consuming now: a
// consumer of p has pull requests waiting (a paused or dead owner's
// expire; a released one deletes its consumer).
func (c *Consumer) ownerActive(ctx context.Context, p int) bool {
	stream := c.inputStream(p)
	names, err := c.consumers.of(ctx, c.js, stream, p)
	if err != nil {
		return true // cannot tell: do not fight for it
	}
	for _, name := range names {
		info, err := c.consumerInfo(ctx, stream, name)
		switch {
		case errors.Is(err, jetstream.ErrConsumerNotFound):
		case err != nil:
			return true
		case info.NumWaiting > 0:
			return true
		}
	}
	return false
}

func (c *Consumer) consumerInfo(ctx context.Context, stream, name string) (*jetstream.ConsumerInfo, error) {
	cons, err := c.js.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return cons.CachedInfo(), nil
}
