package streams

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Metadata of a standby claim stream (StandbyClaimShard).
const (
	// metaStandbyOf is the region whose claim log it mirrors.
	metaStandbyOf = "onceplane.standby.of"
	// metaStandbyPartitions lists the partitions of the mirrored shard.
	metaStandbyPartitions = "onceplane.standby.partitions"
	// metaPromoted is set, to the time of the failover, once Promote has
	// made the mirror a log: provisioning leaves it alone.
	metaPromoted = "onceplane.promoted"
)

// Promote makes this region's standby claim streams of region of (one per
// shard of of's) continue of's claim log here: a region failover. Each
// mirror is removed (JetStream "promotes" a mirror whose mirror
// configuration is removed) and the stream takes appends on
// FailoverClaims(of, p) for its partitions, stored on of's own subjects
// (Names{Region: of}.Claims(p)) after of's last mirrored record, with of's
// sequences: a conditional append on the stored subject's last sequence
// continues of's log exactly. Its input subjects are this region's, so
// they do not overlap of's claim stream, which still exists (unreachable)
// in the JetStream meta group. It promotes every shard of of's (their count
// is in the first one's metadata), and none when one is missing; it is
// idempotent, so running it again finishes a promotion cut short. It
// returns the streams promoted.
func Promote(ctx context.Context, js jetstream.JetStream, n Names, of string) ([]string, error) {
	first, err := js.Stream(ctx, n.StandbyClaimShard(of, 0))
	if err != nil {
		return nil, fmt.Errorf("promote %s's standby claims %s: %w", of, n.StandbyClaimShard(of, 0), err)
	}
	// Every shard of of's, or none: a partition whose shard was not
	// promoted would have no claim log here.
	shards := shardsOf(first.CachedInfo().Config.Metadata)
	cfgs := make([]jetstream.StreamConfig, shards)
	for t := range shards {
		name := n.StandbyClaimShard(of, t)
		s, err := js.Stream(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("promote %s's standby claims %s (shard %d of %d): %w", of, name, t, shards, err)
		}
		cfgs[t] = s.CachedInfo().Config
		if cfgs[t].Metadata[metaStandbyOf] != of || shardsOf(cfgs[t].Metadata) != shards {
			return nil, fmt.Errorf("promote %s: stream %s is not shard %d of %d of %s's standby claims", of, name, t, shards, of)
		}
	}
	var done []string
	for _, cfg := range cfgs {
		name := cfg.Name
		if cfg.Mirror != nil {
			promoted := cfg
			promoted.Mirror = nil
			promoted.Metadata = maps.Clone(cfg.Metadata)
			promoted.Metadata[metaPromoted] = time.Now().UTC().Format(time.RFC3339Nano)
			if ps := cfg.Metadata[metaStandbyPartitions]; ps != "" {
				for f := range strings.SplitSeq(ps, ",") {
					p, err := strconv.Atoi(f)
					if err != nil {
						return done, fmt.Errorf("promote %s: stream %s partitions %q: %w", of, name, ps, err)
					}
					promoted.Subjects = append(promoted.Subjects, n.FailoverClaims(of, p))
				}
			}
			promoted.SubjectTransform = &jetstream.SubjectTransformConfig{
				Source: n.prefix() + ".claims." + of + ".*", Destination: Names{Region: of}.prefix() + ".claims.{{wildcard(1)}}"}
			if _, err := js.UpdateStream(ctx, promoted); err != nil {
				return done, fmt.Errorf("promote %s's standby claims %s: %w", of, name, err)
			}
		}
		done = append(done, name)
	}
	return done, nil
}

// ReadFailoverSettings reads the settings of region of's streams as its
// standby host holds them (its promoted or still mirroring standby claim
// streams): of's partition and shard counts, window and largest record.
func ReadFailoverSettings(ctx context.Context, js jetstream.JetStream, host Names, of string) (Settings, error) {
	name := host.StandbyClaimShard(of, 0)
	s, err := js.Stream(ctx, name)
	if err != nil {
		return Settings{}, fmt.Errorf("standby claim stream %s: %w", name, err)
	}
	cfg := s.CachedInfo().Config
	if cfg.Metadata[metaStandbyOf] != of {
		return Settings{}, fmt.Errorf("stream %s is not a standby claim stream of %s", name, of)
	}
	l, err := layoutOf(name, cfg.Metadata)
	if err != nil {
		return Settings{}, err
	}
	w, err := time.ParseDuration(cfg.Metadata[metaWindow])
	if err != nil || w <= 0 {
		return Settings{}, fmt.Errorf("standby claim stream %s: no dedupe window", name)
	}
	return Settings{Partitions: l.Partitions, Shards: l.Shards, Window: w, MaxMsgSize: cfg.MaxMsgSize}, nil
}
