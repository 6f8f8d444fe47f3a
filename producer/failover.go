package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
)

// Region is the region a Producer publishes to.
func (p *Producer) Region() string { return p.names.Region }

// FailoverOptions configure a Failover. Zero values are the documented
// defaults.
type FailoverOptions struct {
	// Attempt bounds one publish to one region. Zero means 2 s.
	Attempt time.Duration
	// Probe is how often, while publishing to a fallback, the preferred
	// region is tried again. Zero means 5 s.
	Probe time.Duration
	// Logger receives region switches. Nil means slog.Default().
	Logger *slog.Logger
}

// Failover publishes through the first region that accepts: the preferred
// region (the first Producer) while it answers, else the next one in order
// that does, returning to the preferred region once it answers again.
//
// An event whose publish timed out in one region and was then stored in
// another may be stored in both (the first region's ack may have been lost,
// not its write): the regions' edges dedupe it across regions, as for any
// producer retry (asynchronous mode: a duplicate, or a reported conflict if
// both regions decide it inside the replication lag, which for a region that
// was unreachable lasts until it is back; strict mode: decided once, at its
// home). Errors no region would answer differently (a message too large, a
// bad subject) are returned at once.
type Failover struct {
	regions []*Producer
	o       FailoverOptions

	mu      sync.Mutex
	current int       // index of the region publishes go to
	probeAt time.Time // when to try the preferred region again
}

// NewFailover returns a Failover over the producers of several regions, in
// order of preference (each connected to its region's core nodes).
func NewFailover(regions []*Producer, o FailoverOptions) *Failover {
	if o.Attempt == 0 {
		o.Attempt = 2 * time.Second
	}
	if o.Probe == 0 {
		o.Probe = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return &Failover{regions: regions, o: o}
}

// Region is the region publishes go to now.
func (f *Failover) Region() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.regions[f.current].Region()
}

// Publish publishes one event to the region in use, failing over to the
// next region (and around) until one acknowledges it or ctx ends. It
// returns the ack and the region that stored the event.
func (f *Failover) Publish(ctx context.Context, id string, data []byte) (*jetstream.PubAck, string, error) {
	if len(f.regions) == 0 {
		return nil, "", errors.New("failover: no regions")
	}
	f.mu.Lock()
	start := f.current
	if start != 0 && time.Now().After(f.probeAt) {
		start, f.probeAt = 0, time.Now().Add(f.o.Probe)
	}
	f.mu.Unlock()
	var errs []error
	for i := 0; ; i++ {
		k := (start + i) % len(f.regions)
		p := f.regions[k]
		actx, cancel := context.WithTimeout(ctx, f.o.Attempt)
		ack, err := p.Publish(actx, id, data)
		cancel()
		if err == nil {
			f.use(k)
			return ack, p.Region(), nil
		}
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("failover: %w (tried: %w)", ctx.Err(), errors.Join(errs...))
		}
		if refusedEverywhere(err) {
			return nil, "", err
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.Region(), err))
		if len(errs) > 2*len(f.regions) {
			errs = errs[1:]
		}
		if (i+1)%len(f.regions) == 0 {
			// Every region refused: wait a little before the next round
			// (a refusal can be immediate: no responders).
			if err := poll.Sleep(ctx, min(time.Duration(i+1)*50*time.Millisecond, time.Second)); err != nil {
				return nil, "", fmt.Errorf("failover: %w (tried: %w)", err, errors.Join(errs...))
			}
		}
	}
}

// use makes region k the one publishes go to.
func (f *Failover) use(k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if k == f.current {
		return
	}
	f.o.Logger.Warn("producer failed over", "from", f.regions[f.current].Region(), "to", f.regions[k].Region())
	f.current = k
	if k != 0 {
		f.probeAt = time.Now().Add(f.o.Probe)
	}
}

// refusedEverywhere reports an error no other region would answer
// differently: the event itself is refused (a bad ID or tenant, too large,
// a bad subject or header, a request the stream rejects as malformed).
func refusedEverywhere(err error) bool {
	for _, bad := range []error{event.ErrMissingID, event.ErrIDTooLong, event.ErrIDCharset, event.ErrTenant} {
		if errors.Is(err, bad) {
			return true
		}
	}
	if errors.Is(err, nats.ErrMaxPayload) || errors.Is(err, nats.ErrBadSubject) || errors.Is(err, nats.ErrInvalidMsg) || errors.Is(err, nats.ErrBadHeaderMsg) {
		return true
	}
	var api *jetstream.APIError
	return errors.As(err, &api) && api.Code == 400
}
