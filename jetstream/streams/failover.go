package streams

import (
	"context"
	"errors"
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
// in the JetStream meta group. It is idempotent, and returns the streams
// promoted.
func Promote(ctx context.Context, js jetstream.JetStream, n Names, of string) ([]string, error) {
	var done []string
	for t := 0; ; t++ {
		name := n.StandbyClaimShard(of, t)
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) && t > 0 {
			return done, nil
		}
		if err != nil {
			return done, fmt.Errorf("promote %s's standby claims %s: %w", of, name, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Metadata[metaStandbyOf] != of {
			return done, fmt.Errorf("promote %s: stream %s is not a standby claim stream of %s", of, name, of)
		}
		if cfg.Mirror != nil {
			promoted := cfg
			promoted.Mirror = nil
			promoted.Metadata = maps.Clone(cfg.Metadata)
			promoted.Metadata[metaPromoted] = time.Now().UTC().Format(time.RFC3339Nano)
			for f := range strings.SplitSeq(cfg.Metadata[metaStandbyPartitions], ",") {
				p, err := strconv.Atoi(f)
				if err != nil {
					return done, fmt.Errorf("promote %s: stream %s partitions %q: %w", of, name, cfg.Metadata[metaStandbyPartitions], err)
				}
				promoted.Subjects = append(promoted.Subjects, n.FailoverClaims(of, p))
			}
			promoted.SubjectTransform = &jetstream.SubjectTransformConfig{
				Source: n.prefix() + ".claims." + of + ".*", Destination: Names{Region: of}.prefix() + ".claims.{{wildcard(1)}}"}
			if _, err := js.UpdateStream(ctx, promoted); err != nil {
				return done, fmt.Errorf("promote %s's standby claims %s: %w", of, name, err)
			}
		}
		done = append(done, name)
	}
}
