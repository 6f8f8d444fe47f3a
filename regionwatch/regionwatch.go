// Package regionwatch declares a region lost without an operator: the
// region's standby watches how long each region has heard nothing from it
// and, once the standby and a majority of the other regions agree it has
// been silent for a configured time, promotes its copy of the region's
// claim log (streams.Promote, what `core region-failover` does). Failover
// edges already running in the standby (edge -failover-of) then take the
// region's partitions over.
//
// A region cut off from its standby alone is not lost: the other regions
// still hear it, so no majority agrees, and nothing is declared (a region
// that still runs would go on deciding its own events while the standby
// decided its mirror). The decision (Lost) is pure; Watch reads the views
// and acts.
package regionwatch

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// View is what one region knows of the watched region: whether it
// answered (its streams could be read), and for how long its replication
// from the watched region has heard nothing.
type View struct {
	Observer string
	Answered bool
	Silent   time.Duration
	// Never: the observer answered, but its replication has not heard from
	// the region since it was set up (the observer's core restarted while
	// the region was gone): silent for an unknown time, at least since
	// the watcher first saw it so (Unheard).
	Never bool
}

// Unheard turns the views that never heard from the region (View.Never)
// into silences counted from when the watcher first saw each so: first
// maps an observer to that time and is updated (an observer that hears the
// region again is forgotten). The silence is a lower bound, so a region
// whose observers restarted while it was gone is declared lost at most
// After later than otherwise, never sooner.
func Unheard(views []View, first map[string]time.Time, now time.Time) []View {
	out := slices.Clone(views)
	for i, v := range out {
		if !v.Answered || !v.Never {
			delete(first, v.Observer)
			continue
		}
		since, ok := first[v.Observer]
		if !ok {
			since = now
			first[v.Observer] = now
		}
		out[i].Silent = now.Sub(since)
	}
	return out
}

// Lost reports whether the watched region is to be declared lost: the
// standby's own view (standby) silent for at least after, and more than
// half of the observers (every region but the watched one, the standby
// among them: observers) answering and silent for at least after. A region
// that does not answer does not agree.
func Lost(views []View, standby string, observers int, after time.Duration) bool {
	agree, standbyAgrees := 0, false
	for _, v := range views {
		if !v.Answered || v.Silent < after {
			continue
		}
		agree++
		if v.Observer == standby {
			standbyAgrees = true
		}
	}
	return standbyAgrees && 2*agree > observers
}

// Options configure Watch. Region, Standby and After are required.
type Options struct {
	// Region is the watched region; Standby the region watching it (its
	// standby: the one that mirrors it and takes it over).
	Region, Standby string
	// Others are the regions other than Region and Standby: their views
	// count toward the majority.
	Others []string
	// Strict is strict mode: the other regions' views come from their home
	// streams, which source Region's ingest (there are no xclaims).
	Strict bool
	// After is how long the majority must have heard nothing from Region.
	After time.Duration
	// Every is how often the views are read. Zero means 1 s.
	Every time.Duration
	// Logger receives the decision. Nil means slog.Default().
	Logger *slog.Logger
	// OnLost, when set, is called with the views once the region is found
	// lost, before the promotion.
	OnLost func([]View)
}

// Watch reads the views every Every until the region is lost (Lost), then
// promotes Standby's copy of its claim log (retried until it succeeds) and
// returns the promoted streams; or returns when ctx ends. js must reach
// every region's streams (an admin connection to Standby's core nodes).
func Watch(ctx context.Context, js jetstream.JetStream, o Options) ([]string, error) {
	if o.Every <= 0 {
		o.Every = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Region == "" || o.Standby == "" || o.After <= 0 {
		return nil, fmt.Errorf("regionwatch: Region, Standby and After are required")
	}
	observers := 1 + len(o.Others)
	t := time.NewTicker(o.Every)
	defer t.Stop()
	unheard := map[string]time.Time{}
	for {
		views := Unheard(Views(ctx, js, o), unheard, time.Now())
		if Lost(views, o.Standby, observers, o.After) {
			o.Logger.Warn("region lost: the standby and a majority of the regions have heard nothing from it; failing it over", "region", o.Region, "standby", o.Standby, "after", o.After, "views", Describe(views))
			if o.OnLost != nil {
				o.OnLost(views)
			}
			var promoted []string
			err := poll.Retry(ctx, poll.Attempts{Each: 5 * time.Second, Wait: o.Every,
				Failed: func(err error) { o.Logger.Warn("failover: promote", "region", o.Region, "err", err) }},
				func(actx context.Context) (err error) {
					promoted, err = streams.Promote(actx, js, streams.Names{Region: o.Standby}, o.Region)
					return err
				})
			if err != nil {
				return nil, err
			}
			o.Logger.Warn("region failed over", "region", o.Region, "standby", o.Standby, "streams", promoted)
			return promoted, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

// Views reads each region's view of o.Region: the standby's from its
// mirror of the region's ingest, each other region's from its xclaims
// stream's sources of the region's claim log (in strict mode its home
// stream's sources of the region's ingest; the most recent contact of any
// of them). A request bounded to a second that fails is a region that
// did not answer.
func Views(ctx context.Context, js jetstream.JetStream, o Options) []View {
	views := []View{{Observer: o.Standby}}
	if m, ok := streamInfo(ctx, js, streams.Names{Region: o.Standby}.StandbyShard(o.Region, 0)); ok && m.Mirror != nil {
		views[0].Answered = true
		if m.Mirror.Active >= 0 {
			views[0].Silent = m.Mirror.Active
		} else {
			views[0].Never = true // JetStream's -1: not heard since set up
		}
	}
	for _, other := range o.Others {
		on, origin := streams.Names{Region: other}, streams.Names{Region: o.Region}
		if o.Strict {
			info, ok := streamInfo(ctx, js, on.HomeShard(0))
			views = append(views, sourced(other, info, ok, origin.IngestStream()))
			continue
		}
		info, ok := streamInfo(ctx, js, on.XClaimShard(0))
		views = append(views, sourced(other, info, ok, origin.ClaimStream()))
	}
	return views
}

// sourced is the view a sourcing stream's info (ok: it answered) gives of
// the region of stream origin: its sources of origin's shards (an xclaims
// stream's of the region's claim log; in strict mode a home stream's of
// its ingest), the most recent contact of any of them. Observer is named
// observer.
func sourced(observer string, info *jetstream.StreamInfo, ok bool, origin string) View {
	v := View{Observer: observer}
	if !ok {
		return v
	}
	heard := false
	for _, src := range info.Sources {
		if src == nil || !isShard(src.Name, origin) {
			continue
		}
		v.Answered = true
		if src.Active >= 0 && (!heard || src.Active < v.Silent) {
			heard, v.Silent = true, src.Active
		}
	}
	v.Never = v.Answered && !heard
	return v
}

// isShard reports whether name is a shard of stream base.
func isShard(name, base string) bool {
	_, ok := streams.ShardIndex(name, base)
	return ok
}

func streamInfo(ctx context.Context, js jetstream.JetStream, name string) (*jetstream.StreamInfo, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	s, err := js.Stream(ctx, name)
	if err != nil {
		return nil, false
	}
	return s.CachedInfo(), true
}

// Describe says what each view is: "eu-west silent 2.1s, ap-south no answer".
func Describe(vs []View) string {
	var b strings.Builder
	for i, v := range vs {
		if i > 0 {
			b.WriteString(", ")
		}
		if v.Answered {
			fmt.Fprintf(&b, "%s silent %s", v.Observer, v.Silent.Round(time.Millisecond))
			if v.Never {
				b.WriteString(" (never heard since it restarted)")
			}
		} else {
			fmt.Fprintf(&b, "%s no answer", v.Observer)
		}
	}
	return b.String()
}
