package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
//
// Each copy is promoted in two updates, its mirror removed and then its
// input set, so that the sequence where the mirror stopped is recorded
// (PromotedLast). In strict mode it first promotes the standby's copies of
// of's home streams (see promoteHomes).
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
	// Strict mode: the home streams first, so that a failover edge, which
	// waits for the claim log's promotion, finds them sourcing.
	done, err := promoteHomes(ctx, js, n, of)
	if err != nil {
		return done, err
	}
	for t, cfg := range cfgs {
		name := cfg.Name
		if cfg.Mirror != nil {
			// First the mirror alone, so that where it stopped is known.
			if cfgs[t], err = stopMirror(ctx, js, cfg, stoppedSubject(n, "claims", of, t)); err != nil {
				return done, fmt.Errorf("promote %s: %w", of, err)
			}
			cfg = cfgs[t]
		}
		if cfg.Metadata[metaPromoted] == "" {
			last, err := lastSeq(ctx, js, name)
			if err != nil {
				return done, fmt.Errorf("promote %s: %w", of, err)
			}
			promoted := cfg
			// A mirror answers direct gets for its origin (nats-server sets
			// MirrorDirect from the origin's AllowDirect); a log of its own
			// must stop, or reads of the region's log get this one's records.
			promoted.Mirror, promoted.MirrorDirect = nil, false
			promoted.Metadata = maps.Clone(cfg.Metadata)
			delete(promoted.Metadata, metaPromoting)
			promoted.Metadata[metaPromoted] = time.Now().UTC().Format(time.RFC3339Nano)
			promoted.Metadata[metaPromotedLast] = strconv.FormatUint(last, 10)
			promoted.Subjects = nil
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

// ErrNotFailedOver is returned by FailBack when the region's log cannot be
// given back as it is: not fenced, and holding less than the standby's
// continuation of it.
var ErrNotFailedOver = errors.New("the region's log was not fenced")

// metaFenced, on a region's claim stream, names the region its claim log
// was failed over to (Fence): the stream takes no appends and the
// region's edges own nothing until FailBack.
const metaFenced = "onceplane.fenced"

// FailedOverTo returns the peer whose standby claim streams of region n
// are promoted (Promote), "" when none is; an error when one does not
// answer.
func FailedOverTo(ctx context.Context, js jetstream.JetStream, n Names, peers []string) (string, error) {
	for _, peer := range peers {
		name := Names{Region: peer}.StandbyClaimShard(n.region(), 0)
		s, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("failed over? %s: %w", name, err)
		}
		if cfg := s.CachedInfo().Config; cfg.Mirror == nil && cfg.Metadata[metaPromoted] != "" {
			return peer, nil
		}
	}
	return "", nil
}

// FencedBy returns the region a claim stream's log was failed over to
// ("" when it is not fenced), or "failing back" for a log being made
// again (a mirror).
func FencedBy(cfg jetstream.StreamConfig) string {
	if by := cfg.Metadata[metaFenced]; by != "" {
		return by
	}
	if cfg.Mirror != nil {
		return "failing back"
	}
	return ""
}

// Fence stops region n's claim log taking appends after a failover to
// host: each claim shard keeps its records (other regions go on sourcing
// them) but loses its input subjects, so an append finds no stream, and
// names host in its metadata, which the region's edges read before they
// own anything. Provisioning leaves a fenced stream alone. It is
// idempotent.
//
// A shard that does not exist (a failback cut short after deleting it) is
// made, empty and fenced, from its configuration among like when given
// (Config.StreamConfigs): left missing, provisioning would make it empty
// and unfenced, and an edge would own a log that forgot the failover's
// claims. FailBack makes it again from the failover's log.
func Fence(ctx context.Context, js jetstream.JetStream, n Names, host string, like ...jetstream.StreamConfig) error {
	for t := range n.ShardCount() {
		s, err := js.Stream(ctx, n.ClaimShard(t))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			i := slices.IndexFunc(like, func(c jetstream.StreamConfig) bool { return c.Name == n.ClaimShard(t) })
			if i < 0 {
				continue
			}
			fenced := like[i]
			fenced.Metadata = maps.Clone(fenced.Metadata)
			fenced.Metadata[metaFenced] = host
			fenced.Subjects = []string{fencedSubject(n, t)}
			if _, err := js.CreateStream(ctx, fenced); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				return fmt.Errorf("fence %s: make it fenced: %w", n.ClaimShard(t), err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("fence %s: %w", n.ClaimShard(t), err)
		}
		cfg := s.CachedInfo().Config
		if FencedBy(cfg) == host {
			continue
		}
		cfg.Metadata = maps.Clone(cfg.Metadata)
		cfg.Metadata[metaFenced] = host
		cfg.Subjects = []string{fencedSubject(n, t)}
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("fence %s: %w", n.ClaimShard(t), err)
		}
	}
	return nil
}

// claimSubjects are the input subjects of shard t's claim stream (as
// StreamConfigs makes them), with the partition count from its metadata.
func (n Names) claimSubjects(t int, meta map[string]string) []string {
	if n.ShardCount() == 1 {
		return []string{n.prefix() + ".claims.*"}
	}
	partitions, _ := strconv.Atoi(meta[metaPartitions])
	var subs []string
	for _, p := range n.ShardPartitions(t, partitions) {
		subs = append(subs, n.Claims(p))
	}
	return subs
}

// fencedSubject is the only input subject of a fenced claim shard: one no
// edge appends on (a stream cannot have none).
func fencedSubject(n Names, t int) string {
	return n.prefix() + ".fenced." + strconv.Itoa(t)
}

// FailBack ends a failover of region of (Shards set) to host, in two
// phases so that of stays failed over (FailedOverTo) until every shard of
// its log is back. First, for each claim shard: host's promoted stream,
// which continued it with its sequences, stops taking appends (host's
// failover edges stall; stop them); of's shard, fenced since the region
// returned, must be a prefix of it (a log that appended after the failover
// began is refused, ErrNotFailedOver, never overwritten); it is made again
// as a mirror of host's stream (still fenced while it catches up) and
// promoted back to its own subjects. Then host's standby claim streams
// become mirrors of of's again. Other regions' sources of of's claim log
// resume at their stored positions: the sequences are the same. Every step
// can be cut short: running FailBack again finishes it.
//
// A region lost abruptly has claims its standby never mirrored: its log
// parts from the failover's after the last record mirrored. FailBack
// refuses such a log unless o.Supersede is set; then those records are
// kept in of's SupersededStream and the failover's log replaces them. It
// returns the number of records superseded.
func FailBack(ctx context.Context, js jetstream.JetStream, host string, of Names, o FailBackOptions) (int, error) {
	superseded := 0
	err := failBack(ctx, js, host, of, o, &superseded)
	return superseded, err
}

// FailBackOptions configure FailBack. The zero value refuses a log that
// parted from the failover's.
type FailBackOptions struct {
	// Supersede gives the region the failover's log even where its own log
	// parted from it: its records after the parting (claims it made that
	// its standby never mirrored, or made unfenced after the failover
	// began) are moved to SupersededStream. Their events were handled
	// again by the failover, flagged uncertain.
	Supersede bool
	// Carry, required with Supersede, keeps what the region claimed in its
	// superseded records claimed: given partition p's superseded records
	// (their data, in log order) and the data of p's last record in the
	// failover's log (nil when it has none), it returns the records to
	// append there before the log is given back
	// (claimlog.CarrySuperseded: their IDs, claimed and never done, so the
	// region's next owner re-runs any that arrive again flagged uncertain).
	// Without it the region's edges would handle those events again as new.
	Carry func(p int, superseded [][]byte, last []byte) ([][]byte, error)
}

// carryOver checks region of's claim shard t against host's promoted copy
// src, which still takes appends: a log that parted from it is refused
// (ErrNotFailedOver) unless o.Supersede, and then its records after the
// parting are kept in SupersededStream and carried into src (o.Carry).
func carryOver(ctx context.Context, js jetstream.JetStream, src jetstream.Stream, of Names, t int, host string, o FailBackOptions) error {
	own, err := js.Stream(ctx, of.ClaimShard(t))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fail back %s: %s: %w", of.region(), of.ClaimShard(t), err)
	}
	if own.CachedInfo().Config.Mirror != nil {
		return nil // being made again from src: nothing of its own
	}
	ownInfo, err := own.Info(ctx)
	if err != nil {
		return fmt.Errorf("fail back %s: %s: %w", of.region(), of.ClaimShard(t), err)
	}
	srcInfo, err := src.Info(ctx)
	if err != nil {
		return fmt.Errorf("fail back %s: %s: %w", of.region(), src.CachedInfo().Config.Name, err)
	}
	ownLast, srcLast := ownInfo.State.LastSeq, srcInfo.State.LastSeq
	same, err := samePrefix(ctx, own, src, ownLast)
	if err != nil {
		return fmt.Errorf("fail back %s: %w", of.region(), err)
	}
	if same && ownLast <= srcLast {
		return nil
	}
	fork, err := forkPoint(ctx, own, src, min(ownLast, srcLast))
	if err != nil {
		return fmt.Errorf("fail back %s: %w", of.region(), err)
	}
	name := of.ClaimShard(t)
	if !o.Supersede {
		return fmt.Errorf("fail back %s: %w: %s has %d records after %d that the failover's log in %s lacks (claims never mirrored, or made after the failover began)", of.region(), ErrNotFailedOver, name, ownLast-fork, fork, srcInfo.Config.Name)
	}
	if o.Carry == nil {
		return fmt.Errorf("fail back %s: superseding %s needs FailBackOptions.Carry", of.region(), name)
	}
	recs, err := supersede(ctx, js, own, of, t, fork, ownLast)
	if err != nil {
		return fmt.Errorf("fail back %s: %w", of.region(), err)
	}
	byPartition := map[int][][]byte{}
	var parts []int
	for _, r := range recs {
		p, err := strconv.Atoi(r.subject[strings.LastIndexByte(r.subject, '.')+1:])
		if err != nil {
			continue // not a claim subject
		}
		if _, ok := byPartition[p]; !ok {
			parts = append(parts, p)
		}
		byPartition[p] = append(byPartition[p], r.data)
	}
	hn := Names{Region: host}
	for _, p := range parts {
		stored := of.Claims(p)
		var lastSeq uint64
		var lastData []byte
		m, err := src.GetLastMsgForSubject(ctx, stored)
		switch {
		case err == nil:
			lastSeq, lastData = m.Sequence, m.Data
		case !errors.Is(err, jetstream.ErrMsgNotFound):
			return fmt.Errorf("fail back %s: last record of %s: %w", of.region(), stored, err)
		}
		carried, err := o.Carry(p, byPartition[p], lastData)
		if err != nil {
			return fmt.Errorf("fail back %s: carry partition %d: %w", of.region(), p, err)
		}
		for i, data := range carried {
			ack, err := js.Publish(ctx, hn.FailoverClaims(of.region(), p), data, jetstream.WithExpectLastSequencePerSubject(lastSeq),
				jetstream.WithMsgID(fmt.Sprintf("failback-%d-%d-%d-%d", t, fork, p, i)))
			if err != nil {
				return fmt.Errorf("fail back %s: carry partition %d into %s: %w", of.region(), p, srcInfo.Config.Name, err)
			}
			lastSeq = ack.Sequence
		}
	}
	return nil
}

func failBack(ctx context.Context, js jetstream.JetStream, host string, of Names, o FailBackOptions, superseded *int) error {
	hn := Names{Region: host}
	// A promotion cut short, or a log that parted from the failover's, is
	// refused before anything changes (with Supersede the parted records
	// are kept aside below instead).
	for t := range of.ShardCount() {
		src, err := js.Stream(ctx, hn.StandbyClaimShard(of.region(), t))
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("fail back %s: %s: %w", of.region(), hn.StandbyClaimShard(of.region(), t), err)
		}
		cfg := src.CachedInfo().Config
		switch {
		case cfg.Mirror != nil:
			continue // not failed over, or failed back
		case cfg.Metadata[metaPromoted] == "":
			return fmt.Errorf("fail back %s: %s is being promoted (run region-failover again to finish it)", of.region(), cfg.Name)
		case o.Supersede || claimCopyStopped(cfg, hn, of.region(), t):
			continue // kept aside below, or its appends already stopped by a failback cut short
		}
		if err := carryOver(ctx, js, src, of, t, host, o); err != nil {
			return err
		}
	}
	// Strict mode: the home streams first, while the claim log is still
	// fenced: its edges resume after the failover's records, whose
	// positions name the copy's sequences.
	homes, err := failBackHomes(ctx, js, host, of)
	if err != nil {
		return err
	}
	type promotedCopy struct {
		cfg   jetstream.StreamConfig
		shard int
	}
	var copies []promotedCopy // host's promoted copies, to mirror of's log again
	for t := range of.ShardCount() {
		name, standby := of.ClaimShard(t), hn.StandbyClaimShard(of.region(), t)
		src, err := js.Stream(ctx, standby)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // the standby's provisioning makes its mirror again
		}
		if err != nil {
			return fmt.Errorf("fail back %s: %s: %w", of.region(), standby, err)
		}
		scfg := src.CachedInfo().Config
		if scfg.Mirror != nil {
			continue // not failed over, or failed back
		}
		copies = append(copies, promotedCopy{scfg, t})
		// No more appends there: what it holds now is the whole log.
		if !claimCopyStopped(scfg, hn, of.region(), t) {
			// While it still takes appends: what the region claimed that
			// never reached it is carried over, or the failback refused.
			if err := carryOver(ctx, js, src, of, t, host, o); err != nil {
				return err
			}
			stopped := scfg
			stopped.Subjects, stopped.SubjectTransform = []string{stoppedSubject(hn, "claims", of.region(), t)}, nil
			if _, err := js.UpdateStream(ctx, stopped); err != nil {
				return fmt.Errorf("fail back %s: stop appends to %s: %w", of.region(), standby, err)
			}
		}
		srcInfo, err := src.Info(ctx)
		if err != nil {
			return fmt.Errorf("fail back %s: %s: %w", of.region(), standby, err)
		}
		srcLast := srcInfo.State.LastSeq
		own, err := js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			// Deleted by a failback cut short before its mirror was made.
			if err := remake(ctx, js, scfg, name, of, t, host); err != nil {
				return fmt.Errorf("fail back %s: %w", of.region(), err)
			}
			if own, err = js.Stream(ctx, name); err != nil {
				return fmt.Errorf("fail back %s: %s: %w", of.region(), name, err)
			}
		} else if err != nil {
			return fmt.Errorf("fail back %s: %s: %w", of.region(), name, err)
		}
		cfg := own.CachedInfo().Config
		if cfg.Mirror == nil {
			ownInfo, err := own.Info(ctx)
			if err != nil {
				return fmt.Errorf("fail back %s: %s: %w", of.region(), name, err)
			}
			ownLast := ownInfo.State.LastSeq
			if cfg.Metadata[metaFenced] == "" && ownLast >= srcLast {
				// Promoted back already (a failback cut short), and its
				// edges may have appended since: it must hold all of
				// host's log.
				same, err := samePrefix(ctx, src, own, srcLast)
				if err != nil {
					return fmt.Errorf("fail back %s: %w", of.region(), err)
				}
				if !same {
					return fmt.Errorf("fail back %s: %w: %s and %s part before %d", of.region(), ErrNotFailedOver, name, standby, srcLast)
				}
				continue
			}
			// Fenced (or behind and never fenced): it must be a prefix of
			// host's log, whatever wrote it.
			same, err := samePrefix(ctx, own, src, ownLast)
			if err != nil {
				return fmt.Errorf("fail back %s: %w", of.region(), err)
			}
			if by := cfg.Metadata[metaFenced]; by != "" && by != host {
				return fmt.Errorf("fail back %s: %s is fenced by %q, not %s", of.region(), name, by, host)
			}
			if !same || ownLast > srcLast {
				fork, err := forkPoint(ctx, own, src, min(ownLast, srcLast))
				if err != nil {
					return fmt.Errorf("fail back %s: %w", of.region(), err)
				}
				if !o.Supersede {
					return fmt.Errorf("fail back %s: %w: %s has %d records after %d that the failover's log in %s lacks (claims never mirrored, or made after the failover began)", of.region(), ErrNotFailedOver, name, ownLast-fork, fork, standby)
				}
				recs, err := supersede(ctx, js, own, of, t, fork, ownLast)
				*superseded += len(recs)
				if err != nil {
					return fmt.Errorf("fail back %s: %w", of.region(), err)
				}
			}
			if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				return fmt.Errorf("fail back %s: delete %s: %w", of.region(), name, err)
			}
			if err := remake(ctx, js, scfg, name, of, t, host, cfg); err != nil {
				return fmt.Errorf("fail back %s: %w", of.region(), err)
			}
			if own, err = js.Stream(ctx, name); err != nil {
				return fmt.Errorf("fail back %s: %s: %w", of.region(), name, err)
			}
			cfg = own.CachedInfo().Config
		}
		for {
			info, err := own.Info(ctx)
			if err == nil && info.State.LastSeq >= srcLast {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("fail back %s: %s catching up with %s: %w", of.region(), name, standby, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		want := cfg
		want.Mirror, want.SubjectTransform, want.MirrorDirect = nil, nil, false
		want.Subjects = of.claimSubjects(t, cfg.Metadata)
		want.Metadata = maps.Clone(cfg.Metadata)
		delete(want.Metadata, metaFenced)
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return fmt.Errorf("fail back %s: promote %s back: %w", of.region(), name, err)
		}
	}
	// Every shard is back: host mirrors of's log again (until this is
	// done, of still counts as failed over to host).
	for _, c := range copies {
		if err := remirror(ctx, js, c.cfg, of.ClaimShard(c.shard)); err != nil {
			return fmt.Errorf("fail back %s: %w", of.region(), err)
		}
	}
	if err := remirrorHomes(ctx, js, homes, of); err != nil {
		return fmt.Errorf("fail back %s: %w", of.region(), err)
	}
	return nil
}

// remake makes region of's claim shard t (name) again as a mirror of
// host's copy (scfg), fenced while it catches up, from the configuration
// it had (like, when known) or host's copy's.
func remake(ctx context.Context, js jetstream.JetStream, scfg jetstream.StreamConfig, name string, of Names, t int, host string, like ...jetstream.StreamConfig) error {
	m := scfg
	if len(like) > 0 {
		m = like[0]
	}
	m.Name = name
	m.Subjects, m.SubjectTransform, m.MirrorDirect = nil, nil, false
	if m.Placement != nil {
		m.Placement = &jetstream.Placement{Cluster: of.region()} // the region's cluster is named after it
	}
	m.Mirror = &jetstream.StreamSource{Name: scfg.Name, OptStartSeq: 1}
	m.Metadata = maps.Clone(m.Metadata)
	for _, k := range []string{metaPromoted, metaStandbyOf, metaStandbyPartitions} {
		delete(m.Metadata, k)
	}
	m.Metadata[metaFenced] = host
	if _, err := js.CreateStream(ctx, m); err != nil {
		return fmt.Errorf("mirror %s of %s: %w", name, scfg.Name, err)
	}
	return nil
}

// forkPoint returns the last sequence at or below hi where a and b hold
// the same record: where a log and its failover continuation parted.
// Records are the same up to the parting and differ after it (a record
// names its writer and epoch), so a binary search finds it.
func forkPoint(ctx context.Context, a, b jetstream.Stream, hi uint64) (uint64, error) {
	lo := uint64(0) // the same up to lo
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		same, err := samePrefix(ctx, a, b, mid)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			same, err = true, nil // aged out of a: older than any parting
		}
		if err != nil {
			return 0, err
		}
		if same {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo, nil
}

// supersede copies own's records after fork up to last (shard t of region
// of's claim log) into of's SupersededStream, each once (its message ID is
// its shard and sequence, so a failback run again copies nothing twice),
// and returns them. The records stream through one ordered
// consumer and are published asynchronously: the region is across the WAN
// from the failback's connection, and a round trip per record would not
// finish a tail of thousands.
func supersede(ctx context.Context, js jetstream.JetStream, own jetstream.Stream, of Names, t int, fork, last uint64) ([]kept, error) {
	cfg := own.CachedInfo().Config
	keep := jetstream.StreamConfig{
		Name: of.SupersededStream(), Subjects: []string{of.prefix() + ".superseded.*"},
		Storage: cfg.Storage, Replicas: cfg.Replicas, Placement: cfg.Placement, MaxAge: cfg.MaxAge,
		Duplicates: 24 * time.Hour, Metadata: map[string]string{"onceplane.superseded.of": of.region()},
	}
	if cfg.MaxAge > 0 && cfg.MaxAge < keep.Duplicates {
		keep.Duplicates = cfg.MaxAge
	}
	if _, err := js.CreateOrUpdateStream(ctx, keep); err != nil {
		return nil, fmt.Errorf("stream %s: %w", keep.Name, err)
	}
	cons, err := own.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: fork + 1})
	if err != nil {
		return nil, fmt.Errorf("supersede %s after %d: %w", cfg.Name, fork, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("supersede %s after %d: %w", cfg.Name, fork, err)
	}
	defer it.Stop()
	var acks []jetstream.PubAckFuture
	var out []kept
	for {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return out, fmt.Errorf("supersede %s after %d: %w", cfg.Name, fork, err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return out, fmt.Errorf("supersede %s: %w", cfg.Name, err)
		}
		seq := meta.Sequence.Stream
		if seq > last {
			break
		}
		msg := nats.NewMsg(of.Superseded(t))
		msg.Data = m.Data()
		msg.Header.Set(HeaderSupersededSubject, m.Subject())
		msg.Header.Set(HeaderSupersededSeq, strconv.FormatUint(seq, 10))
		f, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(fmt.Sprintf("%d-%d", t, seq)))
		if err != nil {
			return out, fmt.Errorf("supersede %s at %d: %w", cfg.Name, seq, err)
		}
		acks = append(acks, f)
		out = append(out, kept{m.Subject(), m.Data()})
		if seq == last || meta.NumPending == 0 {
			break
		}
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return out, fmt.Errorf("supersede %s: keep %s: %w", cfg.Name, f.Msg().Header.Get(HeaderSupersededSeq), err)
		case <-ctx.Done():
			return out, fmt.Errorf("supersede %s: %w", cfg.Name, ctx.Err())
		}
	}
	return out, nil
}

// kept is a superseded record: its subject in the claim log, its data.
type kept struct {
	subject string
	data    []byte
}

// Headers of a superseded claim record: the subject and sequence it had in
// the region's claim log.
const (
	HeaderSupersededSubject = "Onceplane-Superseded-Subject"
	HeaderSupersededSeq     = "Onceplane-Superseded-Seq"
)

// samePrefix reports whether a's first last records are b's: the same
// record at a's last sequence (sequences are shared, so one record says
// where they would have parted).
func samePrefix(ctx context.Context, a, b jetstream.Stream, last uint64) (bool, error) {
	if last == 0 {
		return true, nil
	}
	ma, err := getMsg(ctx, a, last)
	if err != nil {
		return false, fmt.Errorf("%s at %d: %w", a.CachedInfo().Config.Name, last, err)
	}
	mb, err := getMsg(ctx, b, last)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s at %d: %w", b.CachedInfo().Config.Name, last, err)
	}
	return ma.Subject == mb.Subject && bytes.Equal(ma.Data, mb.Data), nil
}

// getMsg reads s's record at seq, the request bounded to 3 s: right after
// a region restarts, a read can go unanswered (its servers' interest not
// yet known across the gateways), and a failback should fail fast and be
// run again rather than wait for its whole deadline.
func getMsg(ctx context.Context, s jetstream.Stream, seq uint64) (*jetstream.RawStreamMsg, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	return s.GetMsg(ctx, seq)
}

// remirror makes a promoted standby claim stream (configured as promoted)
// a mirror of origin again, from origin's first record.
func remirror(ctx context.Context, js jetstream.JetStream, promoted jetstream.StreamConfig, origin string) error {
	if err := js.DeleteStream(ctx, promoted.Name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("delete %s: %w", promoted.Name, err)
	}
	again := promoted
	again.Subjects, again.SubjectTransform, again.MirrorDirect = nil, nil, false
	again.Metadata = maps.Clone(promoted.Metadata)
	delete(again.Metadata, metaPromoted)
	delete(again.Metadata, metaPromotedLast)
	again.Mirror = &jetstream.StreamSource{Name: origin, OptStartSeq: 1}
	if _, err := js.CreateStream(ctx, again); err != nil {
		return fmt.Errorf("mirror %s again: %w", promoted.Name, err)
	}
	return nil
}
