package regionwatch

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/jetstream/streams"
)

// GuardOptions configure Guard. Zero values are the documented defaults.
type GuardOptions struct {
	// Every is the time between looks. Zero means 2 s.
	Every time.Duration
	// OnFenced, when set, is called with the standby when Guard finds the
	// region failed over and its claim log fenced (once per failover).
	OnFenced func(standby string)
	// Logger receives the fencing. Nil means slog.Default().
	Logger *slog.Logger
}

// Guard fences region c's claim log (streams.FenceIfFailedOver) as soon as
// its standby c.Standby has failed it over while it ran: a region declared
// lost while it was cut off from its standby and a majority of the
// regions, but not dead, that reconnects. Its core nodes fence its log when
// they start after a failover; without Guard a region that never stopped
// would go on claiming in a log the failover continues elsewhere, its
// edges and the standby's failover edges both handling its events. Its
// edges' appends then fail as fenced (claimlog.ErrFenced) until `core
// region-failback`. It returns when ctx ends.
func Guard(ctx context.Context, js jetstream.JetStream, c streams.Config, o GuardOptions) {
	if c.Standby == "" {
		return
	}
	if o.Every <= 0 {
		o.Every = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	t := time.NewTicker(o.Every)
	defer t.Stop()
	fenced := "" // the standby it was last found failed over to
	for {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		host, err := streams.FenceIfFailedOver(actx, js, c)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			o.Logger.Debug("guard: asking the standby whether this region was failed over", "standby", c.Standby, "err", err)
		case err == nil && host != fenced:
			fenced = host
			if host == "" {
				break // failed back (or failing back)
			}
			o.Logger.Warn("this region is failed over to its standby: its claim log is fenced until `core region-failback` (a region that never stopped was declared lost while cut off)", "region", c.Names.Region, "standby", host)
			if o.OnFenced != nil {
				o.OnFenced(host)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
