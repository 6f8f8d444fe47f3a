package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
)

// A region's partitions are spread over Shards shards: partition p lives in
// shard p mod Shards. Each shard has its own ingest and claim streams (and,
// across regions, its own xclaims or home stream), so that each is a Raft
// group of its own whose leader can sit on a different core node: adding
// core nodes adds capacity. Shard 0 keeps the region's stream names
// (onceplane-<region>-in, …), so one shard is the layout of before shards,
// and every reader finds the shard count pinned there; shard s > 0 appends
// "-<s>" (onceplane-<region>-in-2).
//
// With one shard the ingest stream partitions events itself (a stream
// subject transform). With more, no stream can see every ingest subject, so
// the region's core nodes partition them with an account subject mapping
// (IngestMapping) before any stream sees them; each shard's ingest stream
// captures its partitions' stored subjects.

// ShardCount is the region's shard count (1 when Shards is zero).
func (n Names) ShardCount() int { return max(1, n.Shards) }

// ShardOf is the shard partition p lives in.
func (n Names) ShardOf(p int) int { return p % n.ShardCount() }

// ShardPartitions lists shard s's partitions among partitions.
func (n Names) ShardPartitions(s, partitions int) []int {
	var ps []int
	for p := s; p < partitions; p += n.ShardCount() {
		ps = append(ps, p)
	}
	return ps
}

// EveryShard lists one kind of stream for every shard: n.EveryShard(n.IngestShard).
func (n Names) EveryShard(name func(s int) string) []string {
	all := make([]string, n.ShardCount())
	for s := range all {
		all[s] = name(s)
	}
	return all
}

func shardName(base string, s int) string {
	if s == 0 {
		return base
	}
	return base + "-" + strconv.Itoa(s)
}

// IngestShard, ClaimShard, XClaimShard and HomeShard name shard s's streams.
func (n Names) IngestShard(s int) string { return shardName(n.IngestStream(), s) }
func (n Names) ClaimShard(s int) string  { return shardName(n.ClaimStream(), s) }
func (n Names) XClaimShard(s int) string { return shardName(n.XClaimStream(), s) }
func (n Names) HomeShard(s int) string   { return shardName(n.HomeStream(), s) }

// IngestStreamOf, ClaimStreamOf, XClaimStreamOf and HomeStreamOf name the
// streams holding partition p.
func (n Names) IngestStreamOf(p int) string { return n.IngestShard(n.ShardOf(p)) }
func (n Names) ClaimStreamOf(p int) string  { return n.ClaimShard(n.ShardOf(p)) }
func (n Names) XClaimStreamOf(p int) string { return n.XClaimShard(n.ShardOf(p)) }
func (n Names) HomeStreamOf(p int) string   { return n.HomeShard(n.ShardOf(p)) }

// ErrShardsChanged is returned when existing streams were made for a
// different shard count: a partition would move to another stream, away
// from its events and claims.
var ErrShardsChanged = errors.New("shard count differs from the existing streams")

// IngestMapping is the account subject mapping a sharded region's core
// nodes apply to its ingest subjects (ok false with one shard, where the
// ingest stream does it): onceplane.<region>.in.<tenant>.<ID> becomes
// onceplane.<region>.part.<p>.<tenant>, p = partition(Partitions, ID), the
// stored subject of before shards, so the shard stream that captures
// partition p stores it. It is applied in the account the streams live in,
// to producers' publishes arriving through its service export, before any
// stream sees them (NATS's documented way to partition across streams).
//
// The ingest subject of before tenants (onceplane.<region>.in.<ID>) is
// partitioned straight to the default tenant's stored subject: an account
// applies one mapping to a publish, so it cannot first map to the default
// tenant's ingest subject and then partition that. Apply these before the
// account's other mappings (core.Options.Mappings does).
func (c Config) IngestMapping() map[string]string {
	c = c.withDefaults()
	if c.ShardCount() == 1 {
		return nil
	}
	return map[string]string{
		c.IngestWildcard():  c.partitionDestination(),
		c.LegacyIngest("*"): fmt.Sprintf("%s.part.{{partition(%d,1)}}.%s", c.prefix(), c.Partitions, event.DefaultTenant),
	}
}

func (c Config) partitionDestination() string {
	return fmt.Sprintf("%s.part.{{partition(%d,2)}}.{{wildcard(1)}}", c.prefix(), c.Partitions)
}

// Layout is how a region's streams were made: read from its shard-0
// ingest stream.
type Layout struct {
	Partitions, Shards int
}

// ReadLayout reads region n's partition and shard counts from its streams.
func ReadLayout(ctx context.Context, js jetstream.JetStream, n Names) (Layout, error) {
	s, err := js.Stream(ctx, n.IngestStream())
	if err != nil {
		return Layout{}, fmt.Errorf("ingest stream %s: %w", n.IngestStream(), err)
	}
	return layoutOf(n.IngestStream(), s.CachedInfo().Config.Metadata)
}

func layoutOf(stream string, meta map[string]string) (Layout, error) {
	p, err := strconv.Atoi(meta[metaPartitions])
	if err != nil || p <= 0 {
		return Layout{}, fmt.Errorf("ingest stream %s has no partition count", stream)
	}
	return Layout{Partitions: p, Shards: shardsOf(meta)}, nil
}

// shardsOf reads the shard count from stream metadata: streams of before
// shards have none, and are one shard.
func shardsOf(meta map[string]string) int {
	if s, err := strconv.Atoi(meta[metaShards]); err == nil && s > 0 {
		return s
	}
	return 1
}

// CheckLayout refuses a core node whose configuration disagrees with the
// region's existing streams: a node partitioning ingest with another
// partition or shard count than its peers would put copies of an ID in
// different partitions. It returns nil when the region has no streams yet.
func CheckLayout(ctx context.Context, js jetstream.JetStream, c Config) error {
	c = c.withDefaults()
	have, err := ReadLayout(ctx, js, c.Names)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if have.Partitions != c.Partitions {
		return fmt.Errorf("region %s: %w (have %d, want %d)", c.Region, ErrPartitionsChanged, have.Partitions, c.Partitions)
	}
	if have.Shards != c.ShardCount() {
		return fmt.Errorf("region %s: %w (have %d, want %d)", c.Region, ErrShardsChanged, have.Shards, c.ShardCount())
	}
	return nil
}

// SpreadLeaders moves the leaders of a replicated region's shard streams
// onto different core nodes: shard s's streams are led by the s-th of
// their peers in name order (mod their number), asking the current leader
// to step down in its favour. A region of one replica has nothing to move
// (the server places each one-replica stream on the node with the fewest
// streams). Best effort: a stream whose leader cannot move now keeps its
// leader and is reported.
func SpreadLeaders(ctx context.Context, js jetstream.JetStream, c Config) error {
	c = c.withDefaults()
	if c.Replicas < 3 {
		return nil
	}
	var errs []error
	for s := range c.ShardCount() {
		for _, name := range c.shardStreams(s) {
			if err := leadFrom(ctx, js, name, s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// shardStreams names shard s's streams under c.
func (c Config) shardStreams(s int) []string {
	names := []string{c.IngestShard(s), c.ClaimShard(s)}
	if len(c.Peers) > 0 && c.Home == nil {
		names = append(names, c.XClaimShard(s))
	}
	if c.Home != nil {
		names = append(names, c.HomeShard(s))
	}
	return names
}

// leadFrom moves stream's leader to its s-th peer in name order.
func leadFrom(ctx context.Context, js jetstream.JetStream, stream string, s int) error {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return fmt.Errorf("spread %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil || info.Cluster == nil || info.Cluster.Leader == "" {
		return fmt.Errorf("spread %s: no leader yet (%v)", stream, err)
	}
	peers := []string{info.Cluster.Leader}
	for _, r := range info.Cluster.Replicas {
		peers = append(peers, r.Name)
	}
	slices.Sort(peers)
	want := peers[s%len(peers)]
	if info.Cluster.Leader == want {
		return nil
	}
	req, _ := json.Marshal(map[string]any{"placement": map[string]string{"preferred": want}})
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := js.Conn().RequestWithContext(rctx, apiSubject(js, "STREAM.LEADER.STEPDOWN."+stream), req)
	if err != nil {
		return fmt.Errorf("spread %s to %s: %w", stream, want, err)
	}
	var r struct {
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return fmt.Errorf("spread %s to %s: %w", stream, want, err)
	}
	if r.Error != nil {
		return fmt.Errorf("spread %s to %s: %s", stream, want, r.Error.Description)
	}
	return nil
}

// apiSubject is a JetStream API subject under js's prefix.
func apiSubject(js jetstream.JetStream, suffix string) string {
	prefix := js.Options().APIPrefix
	if prefix == "" {
		prefix = jetstream.DefaultAPIPrefix
	}
	return prefix + suffix
}

// SourcedShards returns how many claim shards of region peer this region's
// xclaims streams source (every one of them: each holds some partitions):
// the shard count its streams were provisioned with, read from this region
// alone. Zero means none is sourced yet (a first start, or strict mode,
// which has no xclaims and whose home sources name only the home
// partitions' shards). A core restarting while peer is lost provisions
// with it instead of peer's own layout, which nobody can read until peer
// is back.
func SourcedShards(ctx context.Context, js jetstream.JetStream, c Config, peer string) (int, error) {
	if c.Home != nil {
		return 0, nil
	}
	base := Names{Region: peer}.ClaimStream()
	n := 0
	for t := range c.ShardCount() {
		name := c.XClaimShard(t)
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("sourced shards of %s: %s: %w", peer, name, err)
		}
		for _, src := range s.CachedInfo().Config.Sources {
			if i, ok := ShardIndex(src.Name, base); ok {
				n = max(n, i+1)
			}
		}
	}
	return n, nil
}

// ShardIndex returns which shard of stream base name is (base itself is
// shard 0, base-<n> shard n), and false when name is no shard of base (a
// name prefix alone is not: another region may be named "<region>-claims…").
func ShardIndex(name, base string) (int, bool) {
	rest, ok := strings.CutPrefix(name, base)
	switch {
	case !ok:
		return 0, false
	case rest == "":
		return 0, true
	}
	digits, ok := strings.CutPrefix(rest, "-")
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	t, err := strconv.Atoi(digits)
	return t, err == nil && t > 0
}
