// Package healconn repairs a client connection that a restarted core node
// keeps answering with "no responders" for stream subjects. A client that
// reconnects while the node is still starting JetStream can stay in that
// state (other connections to the same node publish fine; see
// deploy.TestRegionCoreRestart, and nats-server issue #5738 for the same
// symptom elsewhere); a forced reconnect clears it.
package healconn

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Healer watches publish results on one connection. A nil Healer does nothing.
type Healer struct {
	nc    *nats.Conn
	grace time.Duration
	mu    sync.Mutex
	since time.Time // first "no responders" of the current run, zero when healthy
	last  time.Time // last forced reconnect
}

// New returns a Healer for nc that forces a reconnect after grace of
// uninterrupted "no responders" (zero means 3 s), at most once per grace.
func New(nc *nats.Conn, grace time.Duration) *Healer {
	if nc == nil {
		return nil
	}
	if grace <= 0 {
		grace = 3 * time.Second
	}
	return &Healer{nc: nc, grace: grace}
}

// Observe records one publish result and reports whether it forced a reconnect.
func (h *Healer) Observe(err error) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !errors.Is(err, jetstream.ErrNoStreamResponse) && !errors.Is(err, nats.ErrNoResponders) {
		if err == nil {
			h.since = time.Time{}
		}
		return false
	}
	now := time.Now()
	if h.since.IsZero() {
		h.since = now
		return false
	}
	if now.Sub(h.since) < h.grace || now.Sub(h.last) < h.grace {
		return false
	}
	h.last = now
	return h.nc.ForceReconnect() == nil
}
