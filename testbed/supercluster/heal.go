package supercluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// HealOptions configure Heals. Zero values are the documented defaults.
type HealOptions struct {
	// A and B are the regions whose link is cut. Zero: the topology's
	// first two.
	A, B string
	// Heals is how many cuts to make and heal. Zero means 20.
	Heals int
	// Cut is how long each cut lasts. Zero means 3 s.
	Cut time.Duration
	// Settle is the wait between a resumption and the next cut. Zero means 1 s.
	Settle time.Duration
	// Limit fails a heal after which replication has not resumed in this
	// long. Zero means 2 minutes.
	Limit time.Duration
	// OnHeal, when set, is called with each heal's time.
	OnHeal func(time.Time)
}

// ErrCutLeaked is returned by Heals when a cut did not stop replication.
var ErrCutLeaked = errors.New("cut leaked")

// Heal is one cut and heal of a link: how long after the heal each
// direction's claims flowed again.
type Heal struct {
	Resumed map[string]time.Duration // by sourcing direction "from->to"
}

// Heals cuts the link between two regions, appends claims on both sides
// while it is cut, heals it, and measures per direction the time from the
// heal until the other side's xclaims stream holds every claim the cut held
// back (the resumption of replication), o.Heals times.
func (c *Cluster) Heals(ctx context.Context, o HealOptions) ([]Heal, error) {
	if o.A == "" {
		names := c.top.RegionNames()
		o.A, o.B = names[0], names[1]
	}
	o.Heals = cmp.Or(o.Heals, 20)
	o.Cut = cmp.Or(o.Cut, 3*time.Second)
	o.Settle = cmp.Or(o.Settle, time.Second)
	o.Limit = cmp.Or(o.Limit, 2*time.Minute)
	type side struct {
		from, to streams.Names
		js       jetstream.JetStream // connected to from
		dst      jetstream.JetStream // connected to to
		want     map[string]uint64   // origin claim stream -> its last sequence at the heal
	}
	var sides []side
	for _, d := range [][2]string{{o.A, o.B}, {o.B, o.A}} {
		nc1, js1, err := c.Connect(d[0])
		if err != nil {
			return nil, err
		}
		defer nc1.Close()
		nc2, js2, err := c.Connect(d[1])
		if err != nil {
			return nil, err
		}
		defer nc2.Close()
		sides = append(sides, side{from: c.StreamConfig(d[0]).Names, to: c.StreamConfig(d[1]).Names, js: js1, dst: js2, want: map[string]uint64{}})
	}
	var out []Heal
	for i := range o.Heals {
		c.Cut(o.A, o.B)
		deadline := time.Now().Add(o.Cut)
		for k := 0; time.Now().Before(deadline); k++ {
			for j := range sides {
				s := &sides[j]
				ack, err := s.js.Publish(ctx, s.from.Claims(k%c.top.Partitions), []byte(fmt.Sprintf("heal claim %d", k)))
				if err != nil {
					return out, fmt.Errorf("heal %d: claim in %s: %w", i, s.from.Region, err)
				}
				s.want[ack.Stream] = ack.Sequence
			}
			if err := poll.Sleep(ctx, o.Cut/10); err != nil {
				return out, err
			}
		}
		// The cut held the claims back (a gateway that dialed another
		// region's link would have carried them across).
		for _, s := range sides {
			if caughtUp(ctx, s.dst, s.to, s.from, c.top.Partitions, s.want) {
				return out, fmt.Errorf("heal %d: %s's claims reached %s across the cut link: %w", i, s.from.Region, s.to.Region, ErrCutLeaked)
			}
		}
		c.Heal(o.A, o.B)
		healed := time.Now()
		if o.OnHeal != nil {
			o.OnHeal(healed)
		}
		h := Heal{Resumed: map[string]time.Duration{}}
		for time.Since(healed) < o.Limit && len(h.Resumed) < len(sides) {
			for _, s := range sides {
				dir := s.from.Region + "->" + s.to.Region
				if _, done := h.Resumed[dir]; done {
					continue
				}
				if caughtUp(ctx, s.dst, s.to, s.from, c.top.Partitions, s.want) {
					h.Resumed[dir] = time.Since(healed)
				}
			}
			if err := poll.Sleep(ctx, 20*time.Millisecond); err != nil {
				return out, err
			}
		}
		out = append(out, h)
		if len(h.Resumed) < len(sides) {
			return out, fmt.Errorf("heal %d: replication not resumed within %v: %v", i, o.Limit, h.Resumed)
		}
		if err := poll.Sleep(ctx, o.Settle); err != nil {
			return out, err
		}
	}
	return out, nil
}

// caughtUp reports whether region to's xclaims shards hold, from region
// from, every origin claim stream's sequence in want: the highest origin
// sequence over the partitions' last sourced claims.
func caughtUp(ctx context.Context, js jetstream.JetStream, to, from streams.Names, partitions int, want map[string]uint64) bool {
	have := map[string]uint64{}
	for p := range partitions {
		st, err := js.Stream(ctx, to.XClaimShard(to.ShardOf(p)))
		if err != nil {
			return false
		}
		m, err := st.GetLastMsgForSubject(ctx, from.Claims(p))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return false
		}
		origin, seq := streams.SourceHeader(m.Header.Get(streams.StreamSourceHeader))
		have[origin] = max(have[origin], seq)
	}
	for stream, seq := range want {
		if have[stream] < seq {
			return false
		}
	}
	return true
}

// Percentile is the q-quantile (0..1) of ds by the nearest rank.
func Percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}
