// Package rehome moves a strict-mode partition's home from one region to
// another by command, without re-sourcing from the wrong place and without
// deciding an event twice or never.
//
// A move of partition p from region H to region S runs five steps, each
// idempotent, so a move cut short (a kill between two steps) is finished
// by running it again:
//
//  1. release: H's home streams record that H no longer homes p and that a
//     move to S is under way; H's edges, which follow the record, let p go
//     (their batch in hand finishes and is recorded done);
//  2. fence: a MoveAway record in H's claim log of p (dedupe.State.MoveAway)
//     fences any owner still holding p at its next append, and no owner
//     takes p back after it;
//  3. carry: H's claims of p, with their times, and a MoveIn record (H's
//     uncertain set, the position S's consumer starts after) go into S's
//     claim log of p;
//  4. adopt: S's home streams record p, with one source per origin region
//     for p, each starting after the last of that origin's events H decided
//     (streams.MoveStarts), unless S's sources carry p already (S homed p
//     before: its stream has every event of p, and what H decided since is
//     in the carried claims); S's edges take p over;
//  5. end: the move is no longer recorded under way.
package rehome

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// Options tune a move. The zero value is usable.
type Options struct {
	// ReleaseWait is how long the move waits for the old home's edges to
	// let the partition go (their consumer of it deleted) before it fences
	// it anyway: a fenced owner's batch in hand is carried as uncertain.
	// Zero means 15 s.
	ReleaseWait time.Duration
	// Logger reports the steps. Nil means slog.Default().
	Logger *slog.Logger
}

// Result is what a move did.
type Result struct {
	Partition int
	From, To  string
	Version   int
	// Through is the old home's position (its home stream sequence) the
	// move fenced at.
	Through uint64
	// Starts are the new sources' origin positions (region → last
	// sequence of its ingest decided by the old home); nil when the new
	// home's sources carried the partition already.
	Starts map[string]uint64
	// Carried is how many claimed IDs went into the new home's log, in
	// CarriedRecords records; Uncertain how many of them the old home had
	// not finished.
	Carried, CarriedRecords, Uncertain int
	// Position is where the new home's consumer of the partition starts
	// after (its home stream sequence).
	Position uint64
}

// ErrNoHome is returned when no region homes the partition.
var ErrNoHome = errors.New("no region homes the partition")

// Move moves partition p's home to region to. regions names every region
// of the deployment; js is an admin connection to any of its core nodes.
func Move(ctx context.Context, js jetstream.JetStream, regions []string, p int, to string, o Options) (Result, error) {
	lg := o.Logger
	if lg == nil {
		lg = slog.Default()
	}
	if o.ReleaseWait <= 0 {
		o.ReleaseWait = 15 * time.Second
	}
	res := Result{Partition: p, To: to}
	if !slices.Contains(regions, to) {
		return res, fmt.Errorf("move p%d: %s is not one of the regions %v", p, to, regions)
	}
	names := map[string]streams.Names{}
	sets := map[string]streams.Settings{}
	for _, r := range regions {
		s, err := streams.ReadSettings(ctx, js, streams.Names{Region: r})
		if err != nil {
			return res, fmt.Errorf("move p%d: region %s: %w", p, r, err)
		}
		names[r], sets[r] = streams.Names{Region: r, Shards: s.Shards}, s
	}
	set := sets[to]
	if p < 0 || p >= set.Partitions {
		return res, fmt.Errorf("move p%d: partitions are 0..%d", p, set.Partitions-1)
	}
	// Who homes p, or is moving it (a move cut short: finish it).
	version, adopted, resuming := 0, false, false
	for _, r := range regions {
		rec, err := streams.ReadHomes(ctx, js, names[r])
		if err != nil {
			return res, fmt.Errorf("move p%d: %w", p, err)
		}
		version = max(version, rec.Version)
		if r == to {
			adopted = slices.Contains(rec.Homes, p)
		}
		switch {
		case rec.Moving == p:
			if rec.MovingTo != to {
				return res, fmt.Errorf("move p%d: a move from %s to %s is under way: finish it first", p, r, rec.MovingTo)
			}
			res.From, res.Version, resuming = r, rec.Version, true
		case rec.Moving >= 0 && res.From == "":
			return res, fmt.Errorf("move p%d: %s is moving p%d to %s: finish that move first", p, r, rec.Moving, rec.MovingTo)
		case slices.Contains(rec.Homes, p) && res.From == "":
			res.From = r
		}
	}
	if res.From == "" {
		return res, fmt.Errorf("move p%d: %w", p, ErrNoHome)
	}
	if res.From == to || (adopted && !resuming) {
		return res, fmt.Errorf("move p%d: already homed in %s", p, to)
	}
	if res.Version == 0 {
		res.Version = version + 1
	}
	from, dest := names[res.From], names[to]
	if resuming && adopted {
		// Cut short after the new home adopted p (its edges may own it
		// already): only the record of the move under way is left.
		return res, streams.EndMove(ctx, js, from)
	}

	lg.Info("home move: release", "partition", p, "from", res.From, "to", to, "version", res.Version)
	if err := streams.ReleaseHome(ctx, js, from, p, to, res.Version); err != nil {
		return res, fmt.Errorf("move p%d: release: %w", p, err)
	}
	if err := awaitReleased(ctx, js, from, p, o.ReleaseWait); err != nil {
		lg.Warn("home move: the old home's edges did not let the partition go in time; fencing it", "partition", p, "err", err)
	}

	lg.Info("home move: fence", "partition", p, "from", res.From)
	away, old, err := fence(ctx, js, from, sets[res.From], p, to)
	if err != nil {
		return res, fmt.Errorf("move p%d: fence: %w", p, err)
	}
	res.Through, res.Uncertain = away.Through, len(away.IDs)

	carried, err := streams.SourcesCarry(ctx, js, dest, p)
	if err != nil {
		return res, fmt.Errorf("move p%d: %w", p, err)
	}
	if !carried {
		if res.Starts, err = streams.MoveStarts(ctx, js.Conn(), from, p, away.Through, regions); err != nil {
			return res, err
		}
	}

	lg.Info("home move: carry", "partition", p, "to", to, "records", len(old))
	if err := carry(ctx, js, dest, set, p, res.From, away, old, carried, &res); err != nil {
		return res, fmt.Errorf("move p%d: carry: %w", p, err)
	}

	lg.Info("home move: adopt", "partition", p, "to", to, "starts", res.Starts)
	cfg := streams.Config{Names: dest, Partitions: set.Partitions, PeerShards: map[string]int{}}
	for _, r := range regions {
		if r != to {
			cfg.Peers = append(cfg.Peers, r)
			cfg.PeerShards[r] = names[r].Shards
		}
	}
	if err := streams.AdoptHome(ctx, js, cfg, p, res.Starts, res.Version); err != nil {
		return res, fmt.Errorf("move p%d: adopt: %w", p, err)
	}
	if err := streams.EndMove(ctx, js, from); err != nil {
		return res, fmt.Errorf("move p%d: end: %w", p, err)
	}
	lg.Info("home move: done", "partition", p, "from", res.From, "to", to, "carried", res.Carried, "uncertain", res.Uncertain, "position", res.Position)
	return res, nil
}

// awaitReleased waits until region n's home stream has no consumer of
// partition p (its owner let it go and deleted it), within limit.
func awaitReleased(ctx context.Context, js jetstream.JetStream, n streams.Names, p int, limit time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		held, err := consumersOf(ctx, js, n.HomeStreamOf(p), p)
		if err == nil && held == 0 {
			return nil
		}
		if poll.Sleep(ctx, 200*time.Millisecond) != nil {
			if err == nil {
				err = fmt.Errorf("%d consumers of p%d still on %s", held, p, n.HomeStreamOf(p))
			}
			return err
		}
	}
}

func consumersOf(ctx context.Context, js jetstream.JetStream, stream string, p int) (int, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, err
	}
	lister := s.ConsumerNames(ctx)
	held := 0
	for name := range lister.Name() {
		if q, _, _, ok := streams.ParseConsumer(name); ok && q == p {
			held++
		}
	}
	return held, lister.Err()
}

// replayed is a partition's claim log read into a state, with its claim
// records at the times the state holds them at (dedupe.State.RecordTime).
type replayed struct {
	st     *dedupe.State
	claims []dedupe.Record
	away   dedupe.Record // the last MoveAway record
}

func (r *replayed) apply(seq uint64, rec dedupe.Record, stored time.Time) {
	if _, ok := dedupe.IsMoveAway(rec); ok {
		r.away = rec
	}
	if rec.Kind == dedupe.KindClaim {
		c := rec
		c.Time = r.st.RecordTime(rec, stored)
		r.claims = append(r.claims, c)
	}
	r.st.Apply(seq, rec, stored)
}

// fence appends the MoveAway record to region n's log of p, conditional
// on its tail (again after another writer's append, up to ten times),
// unless it is there already, and returns it with the log's claim records.
func fence(ctx context.Context, js jetstream.JetStream, n streams.Names, set streams.Settings, p int, to string) (dedupe.Record, []dedupe.Record, error) {
	l, err := claimlog.Open(ctx, js, n)
	if err != nil {
		return dedupe.Record{}, nil, err
	}
	r := &replayed{st: dedupe.New(dedupe.Options{Window: set.Window})}
	for attempt := 0; ; attempt++ {
		last, err := l.Replay(ctx, p, r.st.LastSeq(), r.apply)
		if err != nil {
			return dedupe.Record{}, nil, err
		}
		r.st.Foreign(last)
		if r.st.MovedTo() == to {
			return r.away, r.claims, nil // fenced already (a move cut short)
		}
		away := r.st.MoveAway(to)
		seq, err := l.Append(ctx, p, r.st.LastSeq(), away)
		if errors.Is(err, claimlog.ErrFenced) && attempt < 10 {
			continue
		}
		if err != nil {
			return dedupe.Record{}, nil, err
		}
		r.st.Apply(seq, away, time.Time{})
		return away, r.claims, nil
	}
}

// carry appends the old home's claims and the MoveIn record to region n's
// log of p, unless a MoveIn from the same region is its last takeover
// already (a move cut short after it).
func carry(ctx context.Context, js jetstream.JetStream, n streams.Names, set streams.Settings, p int, from string, away dedupe.Record, old []dedupe.Record, carried bool, res *Result) error {
	l, err := claimlog.Open(ctx, js, n)
	if err != nil {
		return err
	}
	st := dedupe.New(dedupe.Options{Window: set.Window})
	last, err := l.Replay(ctx, p, 0, st.Apply)
	if err != nil {
		return err
	}
	st.Foreign(last)
	if f, ok := st.MovedFrom(); ok && f == from {
		res.Position = st.Through()
		return nil
	}
	// Where the new home's consumer starts after: its home stream's last
	// message now, before any source carries p there (messages of p below
	// it, from a stint here before, were decided then or carried onward);
	// or, when its sources carried p all along, its own position of then
	// (what the old home decided since is in the carried claims).
	position := st.Through()
	if !carried {
		s, err := js.Stream(ctx, n.HomeStreamOf(p))
		if err != nil {
			return err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return err
		}
		position = info.State.LastSeq
	}
	maxIDs := max(1, (int(set.MaxMsgSize)-(8<<10))/16)
	epoch := dedupe.Record{Epoch: st.Epoch()}
	recs := append(dedupe.MoveClaims(old, epoch, from, maxIDs), dedupe.MoveIn(away, epoch, from, position))
	expected := st.LastSeq()
	for _, rec := range recs {
		seq, err := l.Append(ctx, p, expected, rec)
		if err != nil {
			return err
		}
		expected = seq
		if rec.Kind == dedupe.KindClaim {
			res.Carried += len(rec.IDs)
			res.CarriedRecords++
		}
	}
	res.Position = position
	return nil
}
