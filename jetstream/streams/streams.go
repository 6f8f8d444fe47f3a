// Package streams names and provisions a region's JetStream streams: ingest
// (partitioned by a subject transform), claim log, dead-letter queue and output.
package streams

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
)

// Names derives every subject and stream name of one region.
//
//	producers publish    onceplane.<region>.in.<tenant>.<ID>   (header Onceplane-Id: <ID>)
//	                     onceplane.<region>.in.<ID>            (before tenants: mapped by the
//	                                                           accounts to tenant "default")
//	stored as            onceplane.<region>.part.<p>.<tenant>  p = FNV-1a(ID) mod partitions
//	                     onceplane.<region>.part.<p>           (stored before tenants: "default")
//	claim log            onceplane.<region>.claims.<p>
//	dead letters         onceplane.<region>.dlq.<p>
//	outputs (nats sink)  onceplane.<region>.out.<p>
//	conflicts            onceplane.<region>.conflicts.<ID hash, hex>.<peer region>.<claim generation>
//
// Across regions, a region's xclaims stream sources every other region's
// claim log (subjects kept: onceplane.<other>.claims.<p>), and in strict mode
// its home stream sources every region's ingest for its home partitions
// (onceplane.<any>.part.<p>).
//
// A region of more than one shard spreads these streams (ingest, claims,
// xclaims, home) over its shards (see ShardOf); the subjects stay the same.
type Names struct {
	Region string
	// Shards is how many shards the region's partitions are spread over:
	// partition p lives in shard p mod Shards, each shard with its own
	// ingest, claim, xclaims and home streams. Zero means 1, the layout of
	// before shards. Edges read it from the streams (ReadSettings).
	Shards int
}

func (n Names) region() string {
	if n.Region == "" {
		return "local"
	}
	return n.Region
}

func (n Names) prefix() string { return "onceplane." + n.region() }

// Ingest is the subject a producer of the default tenant publishes event
// id to.
func (n Names) Ingest(id string) string { return n.IngestOf(event.DefaultTenant, id) }

// IngestOf is the subject tenant's producers publish event id to. A
// tenant's producer user may publish only under its tenant's token
// (package auth), which the stream keeps in the stored subject: the edge
// reads the tenant from there, never from anything a producer sets.
func (n Names) IngestOf(tenant, id string) string {
	return n.prefix() + ".in." + tenant + "." + id
}

// LegacyIngest is the ingest subject of event id before tenants; the
// accounts map it to the default tenant's (LegacyIngestMapping).
func (n Names) LegacyIngest(id string) string { return n.prefix() + ".in." + id }

// LegacyIngestMapping is the account subject mapping that keeps producers
// written before tenants working: onceplane.<region>.in.<ID> becomes
// onceplane.<region>.in.default.<ID>, before permissions are checked.
func LegacyIngestMapping() (src, dest string) {
	return "onceplane.*.in.*", "onceplane.{{wildcard(1)}}.in." + event.DefaultTenant + ".{{wildcard(2)}}"
}

// IngestWildcard matches every ingest subject.
func (n Names) IngestWildcard() string { return n.prefix() + ".in.*.*" }

// Partition is the stored subject of partition p's events stored before
// tenants; PartitionOf is a tenant's.
func (n Names) Partition(p int) string { return n.prefix() + ".part." + strconv.Itoa(p) }

// PartitionOf is the stored subject of tenant's events in partition p.
func (n Names) PartitionOf(p int, tenant string) string { return n.Partition(p) + "." + tenant }

// PartitionFilters match every event of partition p: every tenant's, and
// those stored before tenants.
func (n Names) PartitionFilters(p int) []string {
	return []string{n.Partition(p), n.Partition(p) + ".*"}
}

// TenantOf returns the tenant of an event stored on subject (a partition
// subject of any region): its last token after the partition, or
// DefaultTenant for an event stored before tenants.
func TenantOf(subject string) string {
	// onceplane.<region>.part.<p>[.<tenant>], read on every event: no
	// allocation. More tokens than that are not a tenant (event.Check
	// refuses what is returned then: it holds a '.').
	at, dots := 0, 0
	for i := 0; i < len(subject); i++ {
		if subject[i] == '.' {
			if dots++; dots == 4 {
				at = i + 1
			}
		}
	}
	if dots < 4 {
		return event.DefaultTenant
	}
	return subject[at:]
}

// Claims is partition p's claim-log subject.
func (n Names) Claims(p int) string { return n.prefix() + ".claims." + strconv.Itoa(p) }

// DLQ is partition p's dead-letter subject.
func (n Names) DLQ(p int) string { return n.prefix() + ".dlq." + strconv.Itoa(p) }

// Output is partition p's output subject.
func (n Names) Output(p int) string { return n.prefix() + ".out." + strconv.Itoa(p) }

// OutputPosition is the subject, in the output stream, of the positions a
// positioned nats sink commits with each batch of partition p's outputs
// consumed from input source (one token: a hash of the source's name).
func (n Names) OutputPosition(source string, p int) string {
	h := fnv.New64a()
	h.Write([]byte(source))
	return n.prefix() + ".outpos." + strconv.FormatUint(h.Sum64(), 36) + "." + strconv.Itoa(p)
}

// Conflict is the subject of the record of a conflict on ID hash hexHash
// with region peer, raced by the local claim of generation gen
// (dedupe.Conflict.ClaimGen): one per race, so that a three-region race
// keeps both of its pairs, an owner that finds a race again records it
// once, and the same ID racing again a window later is a new record.
func (n Names) Conflict(hexHash, peer string, gen uint16) string {
	return n.prefix() + ".conflicts." + hexHash + "." + peer + "." + strconv.Itoa(int(gen))
}

// Conflicts matches the records of every race of ID hash hexHash with
// region peer, whatever the generation.
func (n Names) Conflicts(hexHash, peer string) string {
	return n.prefix() + ".conflicts." + hexHash + "." + peer + ".*"
}

// RemoteClaims matches every other region's claim-log subject of partition p
// in the xclaims stream.
func (n Names) RemoteClaims(p int) string { return "onceplane.*.claims." + strconv.Itoa(p) }

// AnyPartitionFilters match partition p's events from every region (every
// tenant's, and those stored before tenants) in the home stream.
func (n Names) AnyPartitionFilters(p int) []string {
	return []string{"onceplane.*.part." + strconv.Itoa(p), "onceplane.*.part." + strconv.Itoa(p) + ".*"}
}

// RegionOf returns the region token of a onceplane subject ("" if none).
func RegionOf(subject string) string {
	const pre = "onceplane."
	if !strings.HasPrefix(subject, pre) {
		return ""
	}
	r, _, ok := strings.Cut(subject[len(pre):], ".")
	if !ok {
		return ""
	}
	return r
}

// Stream names.
func (n Names) IngestStream() string   { return "onceplane-" + n.region() + "-in" }
func (n Names) ClaimStream() string    { return "onceplane-" + n.region() + "-claims" }
func (n Names) DLQStream() string      { return "onceplane-" + n.region() + "-dlq" }
func (n Names) OutputStream() string   { return "onceplane-" + n.region() + "-out" }
func (n Names) XClaimStream() string   { return "onceplane-" + n.region() + "-xclaims" }
func (n Names) ConflictStream() string { return "onceplane-" + n.region() + "-conflicts" }
func (n Names) HomeStream() string     { return "onceplane-" + n.region() + "-home" }

// StandbyShard is the stream of this region that mirrors shard s of
// region of's ingest (see Config.StandbyFor).
func (n Names) StandbyShard(of string, s int) string {
	return shardName("onceplane-"+n.region()+"-standby-"+of, s)
}

// StandbyClaimShard is the stream of this region that mirrors shard s of
// region of's claim log, with its sequences (see Config.StandbyFor), and
// once promoted (Promote) continues it while of is failed over here.
func (n Names) StandbyClaimShard(of string, s int) string {
	return shardName("onceplane-"+n.region()+"-claimstandby-"+of, s)
}

// StandbyHomeShard is the stream of this region that mirrors shard s of
// region of's home stream (strict mode), with its sequences, and once
// promoted (Promote) continues it here, sourcing of's home partitions from
// every region while of is failed over.
func (n Names) StandbyHomeShard(of string, s int) string {
	return shardName("onceplane-"+n.region()+"-homestandby-"+of, s)
}

// SupersededStream is the stream that keeps the records a failback took
// out of this region's claim log: claims the region made before it was
// lost that never reached its standby, so the failover's log continued
// without them (FailBackOptions.Supersede). Their events may have been
// handled twice: here, and by the failover, which flagged its runs.
func (n Names) SupersededStream() string { return "onceplane-" + n.region() + "-superseded" }

// Superseded is the subject shard s's superseded claim records are kept on.
func (n Names) Superseded(s int) string { return n.prefix() + ".superseded." + strconv.Itoa(s) }

// FailoverClaims is the subject this region's edges append region of's
// partition p's claims on while of is failed over here: the promoted
// standby claim stream stores them as of's (Claims of of's Names).
func (n Names) FailoverClaims(of string, p int) string {
	return n.prefix() + ".claims." + of + "." + strconv.Itoa(p)
}

// Streams lists every stream a region may have, whether or not its mode
// provisions it: every shard's.
func (n Names) Streams() []string {
	var all []string
	for s := range n.ShardCount() {
		all = append(all, n.IngestShard(s), n.ClaimShard(s), n.XClaimShard(s), n.HomeShard(s))
	}
	return append(all, n.DLQStream(), n.OutputStream(), n.ConflictStream())
}

// Prefix is the first two tokens of every subject of the region
// (onceplane.<region>).
func (n Names) Prefix() string { return n.prefix() }

// ConsumerName is the ingest consumer of the ownership that took partition
// p over with the takeover record at claim-log sequence seq. Claim-log
// sequences never repeat, even when a partition's records all age out, so
// two ownerships never share a consumer (a shared one would let either's
// AckAll cover the other's deliveries), and the newest has the highest.
func ConsumerName(p int, seq uint64) string { return fmt.Sprintf("p%d-t%d", p, seq) }

// ParseConsumer parses a ConsumerName. Names of the earlier per-epoch scheme
// (p<p>-e<epoch>) parse with old set and seq 0: older than any current one.
func ParseConsumer(name string) (p int, seq uint64, old bool, ok bool) {
	rest, found := strings.CutPrefix(name, "p")
	if !found {
		return 0, 0, false, false
	}
	ps, tail, found := strings.Cut(rest, "-")
	if !found || len(tail) < 2 || (tail[0] != 't' && tail[0] != 'e') {
		return 0, 0, false, false
	}
	pn, err := strconv.Atoi(ps)
	if err != nil || pn < 0 || strconv.Itoa(pn) != ps {
		return 0, 0, false, false
	}
	n, err := strconv.ParseUint(tail[1:], 10, 64)
	if err != nil {
		return 0, 0, false, false
	}
	if tail[0] == 'e' {
		return pn, 0, true, true
	}
	return pn, n, false, true
}

// MinDuplicates is the shortest Nats-Msg-Id window JetStream allows; "off"
// for the ingest layer means this.
const MinDuplicates = 100 * time.Millisecond

// Stream metadata keys: the partition count and the dedupe window the
// streams were made for, which every edge must use.
const (
	metaPartitions = "onceplane.partitions"
	metaWindow     = "onceplane.window"
	// metaShards is set on every stream of a region of more than one
	// shard; absent means one.
	metaShards = "onceplane.shards"
)

// Config describes a region's streams. The zero value is usable.
type Config struct {
	Names
	// Partitions is the fixed partition count. Zero means 16.
	Partitions int
	// Replicas per stream (1 or 3). Zero means 1.
	Replicas int
	// Window is how long claims are remembered. Zero means 24 h. The claim log
	// keeps records for Window plus Window/8 plus a grace of min(Window, 1m).
	Window time.Duration
	// IngestDuplicates is the ingest stream's Nats-Msg-Id window. Zero means
	// 2 minutes; negative means off (MinDuplicates).
	IngestDuplicates time.Duration
	// IngestMaxAge is how long ingested events are kept. Zero means Window. It
	// may not exceed Window: a partition idle for longer than its claim log
	// keeps records must not find older events to re-process.
	IngestMaxAge time.Duration
	// OutputDuplicates is the output stream's Nats-Msg-Id window, which makes the
	// nats sink idempotent across uncertain re-runs. Zero means 10 minutes.
	OutputDuplicates time.Duration
	// MaxMsgSize is the largest message any stream accepts. Zero means 1 MiB.
	MaxMsgSize int32
	// Memory stores streams in memory instead of files (tests, benchmarks).
	Memory bool

	// Cluster places the region's streams in that JetStream cluster of a
	// supercluster. Zero means the cluster of the server handling the request.
	Cluster string
	// Peers are the other regions. Non-empty adds the xclaims stream, which
	// sources their claim logs (asynchronous cross-region dedupe, G2), and
	// the conflicts stream, unless Home is set (strict mode has neither:
	// every ID is decided in its home region).
	Peers []string
	// Home, when non-nil, is strict mode (G3): the partitions homed in this
	// region. The home stream sources them from every region's ingest
	// (this one's and the Peers'), and edges decide them there.
	Home []int
	// PeerShards is each peer's shard count (ReadLayout reads it from the
	// peer's streams): the xclaims and home streams source each peer shard
	// stream holding their partitions. A peer not listed has one shard.
	PeerShards map[string]int
	// StandbyFor are the regions (among Peers) this region stands by for:
	// each of their ingest shards has a mirror here (StandbyShard), with
	// the same sequences, so that the events they accepted and this region
	// mirrored survive their loss. Nil means none.
	StandbyFor []string

	// Standby is the region that stands by for this one (its StandbyFor
	// holds this region): before anything else, Provision asks it whether
	// it has taken this region's claim log over (a failover declared while
	// this region was gone) and then fences the log (Fence), so that no edge
	// of this region appends until it fails back. It waits for the
	// standby's answer: a region with a standby does not start without it.
	// Zero means none.
	Standby string
}

// peer is the Names of peer region r.
func (c Config) peer(r string) Names {
	if r == c.Region {
		return c.Names
	}
	return Names{Region: r, Shards: c.PeerShards[r]}
}

func (c Config) withDefaults() Config {
	c.Region = c.region()
	if c.Partitions <= 0 {
		c.Partitions = 16
	}
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.Window <= 0 {
		c.Window = 24 * time.Hour
	}
	switch {
	case c.IngestDuplicates == 0:
		c.IngestDuplicates = 2 * time.Minute
	case c.IngestDuplicates < 0:
		c.IngestDuplicates = MinDuplicates
	}
	if c.IngestMaxAge <= 0 {
		c.IngestMaxAge = c.Window
	}
	if c.OutputDuplicates <= 0 {
		c.OutputDuplicates = 10 * time.Minute
	}
	if c.MaxMsgSize <= 0 {
		c.MaxMsgSize = 1 << 20
	}
	return c
}

// Own is c without the streams that source other regions (xclaims, home):
// provision it first everywhere, since a source whose origin stream does
// not exist yet backs off for tens of seconds.
func (c Config) Own() Config {
	c.Peers, c.Home, c.StandbyFor = nil, nil, nil
	return c
}

// Defaults returns c with every zero field set to its default.
func (c Config) Defaults() Config { return c.withDefaults() }

// StreamConfigs returns the stream configurations of c: each shard's
// ingest and claim streams, the dead-letter and output streams, and across
// regions each shard's xclaims stream and the conflicts stream (async) or
// each shard's home stream (strict).
func (c Config) StreamConfigs() []jetstream.StreamConfig {
	c = c.withDefaults()
	storage := jetstream.FileStorage
	if c.Memory {
		storage = jetstream.MemoryStorage
	}
	meta := map[string]string{metaPartitions: strconv.Itoa(c.Partitions), metaWindow: c.Window.String()}
	if c.ShardCount() > 1 {
		meta[metaShards] = strconv.Itoa(c.ShardCount())
	}
	keep := claimAge(c.Window)
	base := func(name string, subjects ...string) jetstream.StreamConfig {
		return jetstream.StreamConfig{
			Name: name, Subjects: subjects, Storage: storage, Replicas: c.Replicas,
			Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
			MaxMsgSize: c.MaxMsgSize, Metadata: meta, AllowDirect: true,
			MaxAge: 7 * 24 * time.Hour, Duplicates: 2 * time.Minute,
			MaxConsumers: MaxConsumers(c.Partitions),
		}
	}
	var ins, claims []jetstream.StreamConfig
	for s := range c.ShardCount() {
		in := base(c.IngestShard(s))
		if c.ShardCount() == 1 {
			in.Subjects = []string{c.IngestWildcard()}
			in.SubjectTransform = &jetstream.SubjectTransformConfig{Source: c.IngestWildcard(), Destination: c.partitionDestination()}
		} else {
			// The core nodes' account mapping (IngestMapping) has
			// partitioned the ingest subjects already.
			for _, p := range c.ShardPartitions(s, c.Partitions) {
				in.Subjects = append(in.Subjects, c.PartitionFilters(p)...)
			}
		}
		in.Duplicates, in.MaxAge = c.IngestDuplicates, c.IngestMaxAge
		if in.Duplicates > in.MaxAge {
			in.Duplicates = in.MaxAge
		}
		ins = append(ins, in)
		cl := base(c.ClaimShard(s), c.prefix()+".claims.*")
		if c.ShardCount() > 1 {
			cl.Subjects = nil
			for _, p := range c.ShardPartitions(s, c.Partitions) {
				cl.Subjects = append(cl.Subjects, c.Claims(p))
			}
		}
		cl.MaxAge, cl.Duplicates = keep, MinDuplicates
		cl.DenyDelete, cl.DenyPurge = true, true
		claims = append(claims, cl)
	}
	dlq := base(c.DLQStream(), c.prefix()+".dlq.*")
	out := base(c.OutputStream(), c.prefix()+".out.*", c.prefix()+".outpos.*.*")
	out.Duplicates = c.OutputDuplicates
	// A positioned nats sink commits a batch's outputs and its position
	// together (atomic batch publish); each position replaces the last on
	// its subject (rollup) and never ages out (a per-message TTL of
	// "never"), so a quiet partition's position outlives its claims.
	out.AllowAtomicPublish, out.AllowRollup, out.AllowMsgTTL = true, true, true
	cfgs := append(append(ins, claims...), dlq, out)
	if len(c.Peers) > 0 && c.Home == nil {
		for s := range c.ShardCount() {
			x := base(c.XClaimShard(s))
			x.MaxAge, x.Duplicates = keep, MinDuplicates
			x.Sources = c.xclaimSources(s)
			cfgs = append(cfgs, x)
		}
		// One record per race: a per-subject unique constraint, so that
		// every owner that rediscovers a conflict (after a takeover, on
		// replay) records it once.
		// conflicts.> takes the subjects of edges of before the claim
		// generation (hash.peer) too, so a rolling upgrade loses no record.
		cf := base(c.ConflictStream(), c.prefix()+".conflicts.>")
		cf.MaxAge, cf.Duplicates = keep, MinDuplicates
		cf.MaxMsgsPerSubject, cf.Discard, cf.DiscardNewPerSubject = 1, jetstream.DiscardNew, true
		cfgs = append(cfgs, cf)
	}
	for _, r := range c.StandbyFor {
		rn := c.peer(r)
		for t := range rn.ShardCount() {
			m := base(c.StandbyShard(r, t))
			// A mirror has no subjects and keeps its origin's sequences
			// (a claim record's Through means the same here); it does not
			// dedupe. From the origin's first message, whenever it starts.
			m.Subjects, m.Duplicates, m.MaxAge = nil, 0, ins[0].MaxAge
			m.Mirror = &jetstream.StreamSource{Name: rn.IngestShard(t), OptStartSeq: 1}
			cfgs = append(cfgs, m)
			// Its claim log too, with its sequences: a failover continues
			// it here (Promote).
			cm := base(c.StandbyClaimShard(r, t))
			cm.Metadata = maps.Clone(meta)
			cm.Metadata[metaStandbyOf], cm.Metadata[metaStandbyPartitions] = r, partitionList(rn.ShardPartitions(t, c.Partitions))
			// r's layout, not this region's: a failover's edges read it here.
			delete(cm.Metadata, metaShards)
			if rn.ShardCount() > 1 {
				cm.Metadata[metaShards] = strconv.Itoa(rn.ShardCount())
			}
			cm.Subjects, cm.Duplicates, cm.MaxAge = nil, 0, keep
			cm.DenyDelete, cm.DenyPurge = true, true
			cm.Mirror = &jetstream.StreamSource{Name: rn.ClaimShard(t), OptStartSeq: 1}
			cfgs = append(cfgs, cm)
			if c.Home != nil {
				// Strict mode: its home stream too, and what a promotion
				// needs to source it here when r is gone (standbyLayout).
				hm := base(c.StandbyHomeShard(r, t))
				hm.Metadata = maps.Clone(cm.Metadata)
				hm.Metadata[metaStandbyLayout] = c.standbyLayout()
				hm.Subjects, hm.Duplicates, hm.MaxAge = nil, 0, ins[0].MaxAge
				hm.Mirror = &jetstream.StreamSource{Name: rn.HomeShard(t), OptStartSeq: 1}
				cfgs = append(cfgs, hm)
			}
		}
	}
	if c.Home != nil {
		for s := range c.ShardCount() {
			h := base(c.HomeShard(s))
			h.Metadata = maps.Clone(meta)
			h.Metadata[metaHome] = partitionList(c.Home)
			h.Duplicates, h.MaxAge = ins[0].Duplicates, ins[0].MaxAge
			h.Sources = c.homeSources(s)
			cfgs = append(cfgs, h)
		}
	}
	if c.Cluster != "" {
		for i := range cfgs {
			cfgs[i].Placement = &jetstream.Placement{Cluster: c.Cluster}
		}
	}
	return cfgs
}

// SourcingStreams are the region's streams that source from other regions:
// its xclaims shards (asynchronous mode) or its home shards (strict mode).
func (c Config) SourcingStreams() []string {
	var out []string
	for s := range c.ShardCount() {
		switch {
		case c.Home != nil:
			out = append(out, c.HomeShard(s))
		case len(c.Peers) > 0:
			out = append(out, c.XClaimShard(s))
		}
	}
	return out
}

// Origins maps each stream the region's sourcing streams source from (the
// peers' claim shards; in strict mode every region's ingest shards) to its
// region.
func (c Config) Origins() map[string]string {
	out := map[string]string{}
	for _, r := range append([]string{c.Region}, c.Peers...) {
		n := c.peer(r)
		for t := range n.ShardCount() {
			if r != c.Region {
				out[n.ClaimShard(t)] = r
			}
			out[n.IngestShard(t)] = r
		}
	}
	return out
}

// overlap lists the partitions in this region's shard s and in shard t of
// region other, among ps (nil: all), and whether that is all of other's
// shard t.
func (c Config) overlap(s int, other Names, t int, ps []int) (both []int, whole bool) {
	whole = true
	for p := range c.Partitions {
		if other.ShardOf(p) != t {
			continue
		}
		if c.ShardOf(p) == s && (ps == nil || slices.Contains(ps, p)) {
			both = append(both, p)
		} else {
			whole = false
		}
	}
	return both, whole
}

// xclaimSources are the sources of shard s's xclaims stream: each peer's
// claim shards holding shard s's partitions (the whole stream when its
// partitions are all shard s's, else those partitions' subjects).
func (c Config) xclaimSources(s int) []*jetstream.StreamSource {
	var srcs []*jetstream.StreamSource
	for _, peer := range c.Peers {
		pn := c.peer(peer)
		for t := range pn.ShardCount() {
			both, whole := c.overlap(s, pn, t, nil)
			if len(both) == 0 {
				continue
			}
			// From the peer's first claim: a source with no stored position
			// would otherwise start at this stream's last-message time once
			// it has dropped its first message, skipping a newly added
			// peer's earlier claims. (A position, once stored, wins.)
			src := &jetstream.StreamSource{Name: pn.ClaimShard(t), OptStartSeq: 1}
			if whole {
				src.FilterSubject = pn.prefix() + ".claims.*"
			} else {
				for _, p := range both {
					src.SubjectTransforms = append(src.SubjectTransforms, jetstream.SubjectTransformConfig{Source: pn.Claims(p), Destination: pn.Claims(p)})
				}
			}
			srcs = append(srcs, src)
		}
	}
	return srcs
}

// homeSources are the sources of shard s's home stream: the partitions
// homed here in shard s, from every region's ingest shard holding them.
func (c Config) homeSources(s int) []*jetstream.StreamSource {
	var srcs []*jetstream.StreamSource
	for _, r := range append([]string{c.Region}, c.Peers...) {
		rn := c.peer(r)
		for t := range rn.ShardCount() {
			both, _ := c.overlap(s, rn, t, c.Home)
			if len(both) == 0 {
				continue
			}
			src := &jetstream.StreamSource{Name: rn.IngestShard(t)}
			for _, p := range both {
				src.SubjectTransforms = append(src.SubjectTransforms, homeTransforms(rn, p)...)
			}
			srcs = append(srcs, src)
		}
	}
	return srcs
}

// homeTransforms carry region rn's events of partition p into a home
// stream, as they are: every tenant's, and those stored before tenants.
func homeTransforms(rn Names, p int) []jetstream.SubjectTransformConfig {
	return []jetstream.SubjectTransformConfig{
		{Source: rn.Partition(p), Destination: rn.Partition(p)},
		{Source: rn.Partition(p) + ".*", Destination: rn.Partition(p) + ".{{wildcard(1)}}"},
	}
}

// ErrPartitionsChanged is returned when existing streams were made for a
// different partition count: remapping IDs mid-window would break dedupe.
var ErrPartitionsChanged = errors.New("partition count differs from the existing streams")

// Provision creates the region's streams or updates them in place. It is
// idempotent and safe to run from every core node at once. It refuses to
// change the partition count and reports any change JetStream cannot make.
func Provision(ctx context.Context, js jetstream.JetStream, c Config) error {
	if d := c.withDefaults(); d.IngestMaxAge > d.Window {
		return fmt.Errorf("provision: ingest max age %v exceeds the dedupe window %v", d.IngestMaxAge, d.Window)
	}
	if c.Home != nil {
		if err := checkHomes(ctx, js, c); err != nil {
			return err
		}
	}
	if err := fenceIfFailedOver(ctx, js, c); err != nil {
		return err
	}
	for _, want := range c.StreamConfigs() {
		if want.Metadata[metaStandbyLayout] != "" && !exists(ctx, js, want.Name) {
			// A new mirror of a peer's home stream, which that peer makes
			// in its own second pass, maybe at this moment: a mirror made
			// before its origin backs off for tens of seconds. (An existing
			// one is left as it is: the peer may be lost.)
			awaitStream(ctx, js, want.Mirror.Name, 30*time.Second)
		}
		if err := provisionOne(ctx, js, want); err != nil {
			return err
		}
	}
	if c.Home != nil {
		// Again, now that this region's home streams exist: two regions
		// starting for the first time at once each see the other's.
		return checkHomes(ctx, js, c)
	}
	return nil
}

// exists reports whether stream name answers as existing within a second.
func exists(ctx context.Context, js jetstream.JetStream, name string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	_, err := js.Stream(ctx, name)
	return err == nil
}

// awaitStream waits up to limit (within ctx) for stream name to exist,
// looking every 200 ms; it returns either way.
func awaitStream(ctx context.Context, js jetstream.JetStream, name string, limit time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	for {
		if exists(ctx, js, name) || ctx.Err() != nil {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// fenceIfFailedOver fences the region's claim log (Fence) when its standby
// has promoted its copy of it (a failover declared while the region was
// gone), before its edges can append again. It asks until the standby
// answers, within ctx.
func fenceIfFailedOver(ctx context.Context, js jetstream.JetStream, c Config) error {
	if c.Standby == "" {
		return nil
	}
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := FenceIfFailedOver(actx, js, c)
		cancel()
		if err == nil {
			return nil
		}
		if errors.Is(err, errFence) {
			return fmt.Errorf("provision: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provision: asking standby %s whether %s was failed over: %w", c.Standby, c.region(), err)
		case <-time.After(time.Duration(min(attempt+1, 10)) * 200 * time.Millisecond):
		}
	}
}

// errFence marks FenceIfFailedOver's failure to fence (not to ask).
var errFence = errors.New("fence")

// FenceIfFailedOver asks region c's standby (c.Standby) once whether it
// has failed c over, its copy of c's claim log taking appends, and if so
// fences c's claim log (Fence) and returns the standby. A failback under
// way (the standby's copy no longer takes appends) is left to finish: it
// remakes c's log and unfences it, so fencing then would undo it.
func FenceIfFailedOver(ctx context.Context, js jetstream.JetStream, c Config) (string, error) {
	if c.Standby == "" {
		return "", nil
	}
	host, err := FailedOverTo(ctx, js, c.Names, []string{c.Standby})
	if err != nil || host == "" {
		return "", err
	}
	hn := Names{Region: host}
	s, err := js.Stream(ctx, hn.StandbyClaimShard(c.region(), 0))
	if err != nil {
		return "", err
	}
	if claimCopyStopped(s.CachedInfo().Config, hn, c.region(), 0) {
		return "", nil // failing back
	}
	if err := Fence(ctx, js, c.Names, host, c.StreamConfigs()...); err != nil {
		return "", fmt.Errorf("%w: %w", errFence, err)
	}
	return host, nil
}

// checkHomes is CheckHomes, retried (a peer's home stream may not answer
// yet: no leader after a restart, a timeout) until it answers or refuses.
func checkHomes(ctx context.Context, js jetstream.JetStream, c Config) error {
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := CheckHomes(actx, js, c)
		cancel()
		if err == nil || errors.Is(err, ErrHomesConflict) || attempt >= 30 || ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("provision: %w", err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provision: %w", ctx.Err())
		case <-time.After(time.Duration(min(attempt+1, 10)) * 100 * time.Millisecond):
		}
	}
}

func provisionOne(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	for attempt := 0; ; attempt++ {
		err := provisionAttempt(ctx, js, want)
		if err == nil || errors.Is(err, ErrPartitionsChanged) || errors.Is(err, ErrShardsChanged) || errors.Is(err, ErrHomesChanged) || errors.Is(err, errImmutable) {
			return err
		}
		// Concurrent provisioning from several core nodes races on create (a
		// clustered create that loses the race may get no answer), and a
		// cluster still electing leaders times out. Retry both.
		if attempt >= 30 || ctx.Err() != nil {
			return fmt.Errorf("provision stream %s: %w", want.Name, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("provision stream %s: %w", want.Name, ctx.Err())
		case <-time.After(time.Duration(min(attempt+1, 10)) * 100 * time.Millisecond):
		}
	}
}

var errImmutable = errors.New("cannot change in place")

// provisionAttempt creates or updates one stream, bounded to 5 s.
func provisionAttempt(ctx context.Context, js jetstream.JetStream, want jetstream.StreamConfig) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, want)
		return err
	}
	if err != nil {
		return err
	}
	have := s.CachedInfo().Config
	if want.Mirror != nil && have.Mirror == nil && (have.Metadata[metaPromoted] != "" || have.Metadata[metaPromoting] != "") {
		return nil // a standby copy promoted by a failover (or being promoted): it is a log now
	}
	if have.Metadata[metaFenced] != "" {
		return nil // a claim log failed over to another region: FailBack ends it
	}
	if p := have.Metadata[metaPartitions]; p != "" && p != want.Metadata[metaPartitions] {
		return fmt.Errorf("stream %s: %w (have %s, want %s)", want.Name, ErrPartitionsChanged, p, want.Metadata[metaPartitions])
	}
	if h, w := shardsOf(have.Metadata), shardsOf(want.Metadata); have.Metadata[metaPartitions] != "" && h != w {
		return fmt.Errorf("stream %s: %w (have %d, want %d)", want.Name, ErrShardsChanged, h, w)
	}
	if _, home := want.Metadata[metaHome]; home {
		// Homes moved by command: the stream's record is the assignment,
		// whatever this core was configured with.
		if h, w, changed := homesChanged(have, want); changed && have.Metadata[metaHomeVersion] == "" {
			return fmt.Errorf("stream %s: %w (have %q, want %q)", want.Name, ErrHomesChanged, h, w)
		}
		if have.Metadata[metaHomeVersion] != "" || have.Metadata[metaFailedBackFrom] != "" {
			want = keepMovedHomes(have, want) // and its sources too
		}
	}
	if have.Storage != want.Storage {
		return fmt.Errorf("stream %s: storage %v %w to %v", want.Name, have.Storage, errImmutable, want.Storage)
	}
	if same(have, want) {
		return nil
	}
	_, err = js.UpdateStream(ctx, want)
	return err
}

// same reports whether have already has every setting Provision manages, so
// that restarts and concurrent provisioning make no meta-group proposals.
func same(have, want jetstream.StreamConfig) bool {
	tr := func(t *jetstream.SubjectTransformConfig) jetstream.SubjectTransformConfig {
		if t == nil {
			return jetstream.SubjectTransformConfig{}
		}
		return *t
	}
	return slices.Equal(have.Subjects, want.Subjects) && have.Replicas == want.Replicas &&
		have.MaxAge == want.MaxAge && have.Duplicates == want.Duplicates && have.MaxMsgSize == want.MaxMsgSize &&
		have.DenyDelete == want.DenyDelete && have.DenyPurge == want.DenyPurge && have.AllowDirect == want.AllowDirect &&
		tr(have.SubjectTransform) == tr(want.SubjectTransform) && have.Metadata[metaPartitions] == want.Metadata[metaPartitions] &&
		have.Metadata[metaWindow] == want.Metadata[metaWindow] && have.Metadata[metaShards] == want.Metadata[metaShards] && have.Metadata[metaHome] == want.Metadata[metaHome] &&
		have.MaxMsgsPerSubject == want.MaxMsgsPerSubject && have.MaxConsumers == want.MaxConsumers && sameSources(have.Sources, want.Sources)
}

// MaxConsumers is every stream's consumer limit for p partitions: the
// server's default (1,000 per stream, nats-server 2.11+) would stop a
// region of more than a few hundred partitions from taking them all over
// (an ingest consumer per ownership, overlapping an older one during a
// handoff or rewind; an ordered consumer per replay or remote follower).
// Four per partition, and never under the default.
func MaxConsumers(p int) int { return max(1000, 4*p) }

func sameSources(have, want []*jetstream.StreamSource) bool {
	return slices.EqualFunc(have, want, func(a, b *jetstream.StreamSource) bool {
		return a.Name == b.Name && a.FilterSubject == b.FilterSubject && slices.Equal(a.SubjectTransforms, b.SubjectTransforms) &&
			a.OptStartSeq == b.OptStartSeq
	})
}

// Settings are what an edge must agree with: read from the streams, not
// configured twice.
type Settings struct {
	Partitions int
	// Shards is the region's shard count (set it on Names to name a
	// partition's streams).
	Shards int
	// Window is the dedupe window the claim log keeps records for.
	Window time.Duration
	// MaxMsgSize is the largest record the claim stream accepts.
	MaxMsgSize int32
}

// ReadSettings reads the partition count and window pinned on the region's
// streams and the claim stream's largest message. Streams made before the
// window was pinned give it from the claim stream's max age.
func ReadSettings(ctx context.Context, js jetstream.JetStream, n Names) (Settings, error) {
	l, err := ReadLayout(ctx, js, n)
	if err != nil {
		return Settings{}, err
	}
	p := l.Partitions
	cs, err := js.Stream(ctx, n.ClaimStream())
	if err != nil {
		return Settings{}, fmt.Errorf("claim stream %s: %w", n.ClaimStream(), err)
	}
	cfg := cs.CachedInfo().Config
	w, err := time.ParseDuration(cfg.Metadata[metaWindow])
	if err != nil {
		w = windowFromClaimAge(cfg.MaxAge)
	}
	if w <= 0 {
		return Settings{}, fmt.Errorf("claim stream %s: no dedupe window (max age %v)", n.ClaimStream(), cfg.MaxAge)
	}
	return Settings{Partitions: p, Shards: l.Shards, Window: w, MaxMsgSize: cfg.MaxMsgSize}, nil
}

// claimAge is how long the claim log keeps records for window w.
func claimAge(w time.Duration) time.Duration { return w + w/8 + min(time.Minute, w) }

// windowFromClaimAge inverts claimAge (0 when age is not one it makes).
func windowFromClaimAge(age time.Duration) time.Duration {
	for _, w := range []time.Duration{(age - time.Minute) * 8 / 9, age * 8 / 17} {
		for d := time.Duration(-2); d <= 2; d++ {
			if w+d > 0 && claimAge(w+d) == age {
				return w + d
			}
		}
	}
	return 0
}

// PartitionCount reads the partition count pinned on the ingest stream.
func PartitionCount(ctx context.Context, js jetstream.JetStream, n Names) (int, error) {
	s, err := js.Stream(ctx, n.IngestStream())
	if err != nil {
		return 0, fmt.Errorf("ingest stream %s: %w", n.IngestStream(), err)
	}
	p, err := strconv.Atoi(s.CachedInfo().Config.Metadata[metaPartitions])
	if err != nil || p <= 0 {
		return 0, fmt.Errorf("ingest stream %s has no partition count", n.IngestStream())
	}
	return p, nil
}
