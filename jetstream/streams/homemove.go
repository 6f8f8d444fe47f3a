package streams

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A home move (strict mode, by command: rehome.Move) changes a partition's
// home without re-sourcing from the wrong place. The home streams record
// the assignment: each region's homes (metaHome), the version of the last
// move that changed them (metaHomeVersion), and, on the old home while a
// move is under way, the partition and where it goes (metaHomeMoving).
// Once a region's homes were moved, its home streams' sources are theirs:
// provisioning keeps them, whatever the core's configured homes say.
//
// The new home gets one source per origin region for the partition, each
// starting after the last of that origin's events the old home decided
// (MoveStarts), unless its home stream's own sources still carry the
// partition (it was its home before), in which case they have carried it
// all along. The old home's sources are left as they are (changing a
// source's transforms renames it, and a renamed source starts over),
// except a source that carried only the moved partition (added by an
// earlier move), which is removed.
const (
	metaHomeVersion = "onceplane.home.version"
	metaHomeMoving  = "onceplane.home.moving"
)

// ErrNotStrict is returned by home moves in a deployment without home
// streams.
var ErrNotStrict = errors.New("no home streams (not strict mode)")

// ErrMoveUnderWay is returned by a strict-mode promotion or failback while
// a home move is under way (finish it first: run it again).
var ErrMoveUnderWay = errors.New("a home move is under way")

// HomeRecord is a region's home assignment as its home streams record it.
type HomeRecord struct {
	// Homes are the partitions the region decides.
	Homes []int
	// Version is the last move that changed them (0: as provisioned).
	Version int
	// Moving is the partition a move under way takes away to MovingTo (-1: none).
	Moving   int
	MovingTo string
}

// homeRecord reads a home stream's record of its region's homes.
func homeRecord(cfg jetstream.StreamConfig) (HomeRecord, bool) {
	ps, ok := homesOf(cfg)
	if !ok {
		return HomeRecord{}, false
	}
	r := HomeRecord{Homes: ps, Moving: -1}
	r.Version, _ = strconv.Atoi(cfg.Metadata[metaHomeVersion])
	if v := cfg.Metadata[metaHomeMoving]; v != "" {
		p, to, _ := strings.Cut(v, ":")
		if n, err := strconv.Atoi(p); err == nil && to != "" {
			r.Moving, r.MovingTo = n, to
		}
	}
	return r, true
}

// ReadHomes reads region n's home assignment from its home stream (shard
// 0); ErrNotStrict when it has none.
func ReadHomes(ctx context.Context, js jetstream.JetStream, n Names) (HomeRecord, error) {
	s, err := js.Stream(ctx, n.HomeShard(0))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return HomeRecord{}, fmt.Errorf("region %s: %w", n.region(), ErrNotStrict)
	}
	if err != nil {
		return HomeRecord{}, fmt.Errorf("region %s's homes: %w", n.region(), err)
	}
	r, ok := homeRecord(s.CachedInfo().Config)
	if !ok {
		return HomeRecord{}, fmt.Errorf("region %s's home stream records no homes", n.region())
	}
	return r, nil
}

// transformPartition returns the partition a home source's transform
// carries (-1 when it names none): the token after ".part.".
func transformPartition(t jetstream.SubjectTransformConfig) int {
	i := strings.LastIndex(t.Source, ".part.")
	if i < 0 {
		return -1
	}
	tok, _, _ := strings.Cut(t.Source[i+len(".part."):], ".")
	p, err := strconv.Atoi(tok)
	if err != nil {
		return -1
	}
	return p
}

// carriesOnly reports whether src carries partition p and nothing else.
func carriesOnly(src *jetstream.StreamSource, p int) bool {
	if len(src.SubjectTransforms) == 0 {
		return false
	}
	for _, t := range src.SubjectTransforms {
		if transformPartition(t) != p {
			return false
		}
	}
	return true
}

// updateHomes applies change to every home shard of region n's config and
// updates those it changed: shard first first, shard 0 (whose record
// edges and moves read) last.
func updateHomes(ctx context.Context, js jetstream.JetStream, n Names, first int, change func(s int, cfg *jetstream.StreamConfig)) error {
	order := []int{first}
	for s := n.ShardCount() - 1; s >= 0; s-- {
		if s != first {
			order = append(order, s)
		}
	}
	for _, s := range order {
		st, err := js.Stream(ctx, n.HomeShard(s))
		if err != nil {
			return fmt.Errorf("home stream %s: %w", n.HomeShard(s), err)
		}
		have := st.CachedInfo().Config
		want := have
		want.Metadata = maps.Clone(have.Metadata)
		want.Sources = slices.Clone(have.Sources)
		change(s, &want)
		if maps.Equal(want.Metadata, have.Metadata) && sameSources(want.Sources, have.Sources) {
			continue
		}
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return fmt.Errorf("home stream %s: %w", want.Name, err)
		}
	}
	return nil
}

// ReleaseHome is a move's first step: region from no longer homes p (its
// edges let it go), the move to region to is recorded under way, and a
// source of from's home stream that carried only p is removed. Idempotent.
func ReleaseHome(ctx context.Context, js jetstream.JetStream, from Names, p int, to string, version int) error {
	return updateHomes(ctx, js, from, from.ShardOf(p), func(s int, cfg *jetstream.StreamConfig) {
		ps, _ := homesOf(*cfg)
		ps = slices.DeleteFunc(ps, func(q int) bool { return q == p })
		cfg.Metadata[metaHome] = partitionList(ps)
		cfg.Metadata[metaHomeVersion] = strconv.Itoa(version)
		cfg.Metadata[metaHomeMoving] = strconv.Itoa(p) + ":" + to
		if s == from.ShardOf(p) {
			cfg.Sources = slices.DeleteFunc(cfg.Sources, func(src *jetstream.StreamSource) bool { return carriesOnly(src, p) })
		}
	})
}

// EndMove clears region from's record of a move under way. Idempotent.
func EndMove(ctx context.Context, js jetstream.JetStream, from Names) error {
	return updateHomes(ctx, js, from, from.ShardCount()-1, func(_ int, cfg *jetstream.StreamConfig) {
		delete(cfg.Metadata, metaHomeMoving)
	})
}

// SourcesCarry reports whether region n's home stream sources carry
// partition p (its sources from before, or a move's).
func SourcesCarry(ctx context.Context, js jetstream.JetStream, n Names, p int) (bool, error) {
	s, err := js.Stream(ctx, n.HomeStreamOf(p))
	if err != nil {
		return false, fmt.Errorf("home stream %s: %w", n.HomeStreamOf(p), err)
	}
	for _, src := range s.CachedInfo().Config.Sources {
		for _, t := range src.SubjectTransforms {
			if transformPartition(t) == p {
				return true, nil
			}
		}
	}
	return false, nil
}

// AdoptHome is a move's last stream step: region c (its config names
// every region of the deployment: Peers, PeerShards) homes p from now on.
// Unless its home stream's sources carry p already, it gets one source
// per origin region for p, from that region's ingest shard holding p,
// starting after starts[region] (MoveStarts; absent: from its first
// message). Each such source carries, besides p's subjects, one that no
// event has (…part.<p>.moved.v<version>): a source made again with the
// same transforms as one an earlier move removed would resume after the
// last message that one delivered, whatever its start sequence says
// (nats-server matches a source to its messages' Nats-Stream-Source
// headers). p's shard is updated first and shard 0 (which edges read the
// homes from) last, so that a region whose record shows p also sources it.
// Idempotent.
func AdoptHome(ctx context.Context, js jetstream.JetStream, c Config, p int, starts map[string]uint64, version int) error {
	carried, err := SourcesCarry(ctx, js, c.Names, p)
	if err != nil {
		return err
	}
	return updateHomes(ctx, js, c.Names, c.ShardOf(p), func(s int, cfg *jetstream.StreamConfig) {
		ps, _ := homesOf(*cfg)
		cfg.Metadata[metaHome] = partitionList(append(ps, p))
		cfg.Metadata[metaHomeVersion] = strconv.Itoa(version)
		if s != c.ShardOf(p) || carried {
			return
		}
		for _, r := range append([]string{c.Region}, c.Peers...) {
			rn := c.peer(r)
			never := rn.Partition(p) + ".moved.v" + strconv.Itoa(version)
			cfg.Sources = append(cfg.Sources, &jetstream.StreamSource{
				Name: rn.IngestShard(rn.ShardOf(p)), OptStartSeq: starts[r] + 1,
				SubjectTransforms: append(homeTransforms(rn, p), jetstream.SubjectTransformConfig{Source: never, Destination: never}),
			})
		}
	})
}

// MoveStarts returns, for each of regions, the sequence in its ingest of
// the last event of partition p that region from's home stream holds at or
// below through (the position its owner decided through): a new home's
// source of that region's ingest starts after it. Keyed by the event's
// region (its subject), not by the stream its header names: after a strict
// failback a lost region's events name its standby's mirror of its ingest,
// with the same sequences. Nothing when through is 0.
func MoveStarts(ctx context.Context, nc *nats.Conn, from Names, p int, through uint64, regions []string) (map[string]uint64, error) {
	starts := map[string]uint64{}
	if through == 0 {
		return starts, nil
	}
	lasts, err := lastsOf(ctx, nc, from.HomeStreamOf(p), []int{p}, regions, through)
	if err != nil {
		return nil, fmt.Errorf("move p%d: where %s stopped: %w", p, from.region(), err)
	}
	for k, l := range lasts {
		starts[k.region] = max(starts[k.region], l.seq)
	}
	return starts, nil
}

// keepMovedHomes returns want with have's home record and sources: a home
// stream whose homes were moved, or that a failback made again (sources
// that resume partition by partition: resumeSources), keeps them through
// provisioning.
func keepMovedHomes(have, want jetstream.StreamConfig) jetstream.StreamConfig {
	want.Metadata = maps.Clone(want.Metadata)
	for _, k := range []string{metaHome, metaHomeVersion, metaHomeMoving, metaFailedBackFrom} {
		if v, ok := have.Metadata[k]; ok {
			want.Metadata[k] = v
		} else {
			delete(want.Metadata, k)
		}
	}
	want.Sources = have.Sources
	return want
}
