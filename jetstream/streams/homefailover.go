package streams

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Strict mode's region failover moves a lost region's home streams, not
// its homes: the standby's copy of region R's home stream (StandbyHomeShard,
// a mirror with R's sequences) is promoted to a stream that sources R's
// home partitions from every region, as R's home stream did, and R's
// failover edges decide them there. Each region's source resumes where R's
// home stream had reached as far as the copy holds it: nats-server resumes
// a source after the last message whose Nats-Stream-Source header names
// it, and the copy's messages carry R's headers. R's own ingest is gone
// with R, so that source reads the standby's mirror of it (same
// sequences), starting after the last of R's events the copy holds.
// Whatever R's home stream held beyond the copy comes again, and R's claims
// that reached the standby make its events repeats.

const (
	// metaStandbyLayout, on a standby home stream, lists every region of
	// the deployment with its shard count ("r=2,s=1"): with the other
	// regions' homes (read from their home streams) it gives the lost
	// region's home partitions and its home stream's sources.
	metaStandbyLayout = "onceplane.standby.layout"
	// metaPromoting marks a standby copy whose mirror is removed and whose
	// promotion is not finished (Promote finishes it).
	metaPromoting = "onceplane.promoting"
	// metaPromotedLast, on a promoted copy, is its last sequence when its
	// mirror stopped: positions in the lost region's records beyond it name
	// messages the copy never received (see PromotedLast).
	metaPromotedLast = "onceplane.promoted.last"
	// metaFailedBackFrom, on a region's home stream made again by FailBack,
	// is the promotion time of the copy it was made from.
	metaFailedBackFrom = "onceplane.failedback.from"
)

// standbyLayout is metaStandbyLayout for c's deployment.
func (c Config) standbyLayout() string {
	var s []string
	for _, r := range slices.Sorted(slices.Values(append([]string{c.Region}, c.Peers...))) {
		s = append(s, r+"="+strconv.Itoa(c.peer(r).ShardCount()))
	}
	return strings.Join(s, ",")
}

func parseLayout(v string) (map[string]int, error) {
	out := map[string]int{}
	for f := range strings.SplitSeq(v, ",") {
		r, n, ok := strings.Cut(f, "=")
		k, err := strconv.Atoi(n)
		if !ok || err != nil || r == "" || k < 1 {
			return nil, fmt.Errorf("bad standby layout %q", v)
		}
		out[r] = k
	}
	return out, nil
}

// stoppedSubject is the only subject of host n's copy of region of's
// shard t (kind "claims" or "home") while it takes nothing: being
// promoted, or failing back (a stream needs a subject, a mirror or a
// source). One per region, kind and shard: a host standing by for two
// regions, or fenced itself, has no two streams on one subject.
func stoppedSubject(n Names, kind, of string, t int) string {
	return n.prefix() + ".stopped." + kind + "." + of + "." + strconv.Itoa(t)
}

// claimCopyStopped reports whether host n's copy of region of's claim
// shard t (cfg) takes nothing: its appends stopped by a failback (or by a
// failback of before per-region stopped subjects, on fencedSubject).
func claimCopyStopped(cfg jetstream.StreamConfig, n Names, of string, t int) bool {
	return len(cfg.Subjects) == 1 && (cfg.Subjects[0] == stoppedSubject(n, "claims", of, t) || cfg.Subjects[0] == fencedSubject(n, t))
}

// PromotedLast returns, for each shard t of region of's log, the last
// sequence host's copies held when their mirrors stopped: of's claim log
// (claims[t]) and, in strict mode, its home stream (homes[t]; nil in
// asynchronous mode). A record at or below claims[t] is of's own; its
// position (Record.Through) names a message of of's home stream, which the
// copy holds only up to homes[t]: beyond it the copy holds what the
// promotion sourced, so a failover edge resumes there at the latest.
func PromotedLast(ctx context.Context, js jetstream.JetStream, host Names, of string, shards int) (claims, homes []uint64, err error) {
	read := func(name string) (uint64, error) {
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, fmt.Errorf("standby copy %s: %w", name, err)
		}
		v := s.CachedInfo().Config.Metadata[metaPromotedLast]
		if v == "" {
			return 0, fmt.Errorf("standby copy %s is not promoted", name)
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("standby copy %s: %s %q: %w", name, metaPromotedLast, v, err)
		}
		return n, nil
	}
	strict := true
	for t := range shards {
		c, err := read(host.StandbyClaimShard(of, t))
		if err != nil {
			return nil, nil, err
		}
		claims = append(claims, c)
		if !strict {
			continue
		}
		h, err := read(host.StandbyHomeShard(of, t))
		if errors.Is(err, jetstream.ErrStreamNotFound) && t == 0 {
			strict = false
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		homes = append(homes, h)
	}
	return claims, homes, nil
}

// stopMirror removes cfg's mirror, leaving the stream taking nothing
// (stoppedSubject) and marked metaPromoting, and returns the new config.
func stopMirror(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, subject string) (jetstream.StreamConfig, error) {
	cfg.Mirror, cfg.MirrorDirect = nil, false
	cfg.Subjects, cfg.SubjectTransform, cfg.Sources = []string{subject}, nil, nil
	cfg.Metadata = maps.Clone(cfg.Metadata)
	cfg.Metadata[metaPromoting] = time.Now().UTC().Format(time.RFC3339Nano)
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return cfg, fmt.Errorf("stop mirroring %s: %w", cfg.Name, err)
	}
	return cfg, nil
}

// lastSeq reads a stream's last sequence.
func lastSeq(ctx context.Context, js jetstream.JetStream, name string) (uint64, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", name, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", name, err)
	}
	return info.State.LastSeq, nil
}

// promoteHomes promotes host's standby home streams of region of (strict
// mode; none in asynchronous mode), each in two updates so that the
// sequence where its mirror stopped is known exactly: the mirror removed
// (metaPromoting), then its sources set (metaPromoted). It is idempotent.
func promoteHomes(ctx context.Context, js jetstream.JetStream, host Names, of string) ([]string, error) {
	first, err := js.Stream(ctx, host.StandbyHomeShard(of, 0))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, nil // asynchronous mode
	}
	if err != nil {
		return nil, fmt.Errorf("promote %s's standby home %s: %w", of, host.StandbyHomeShard(of, 0), err)
	}
	meta := first.CachedInfo().Config.Metadata
	layout, err := parseLayout(meta[metaStandbyLayout])
	if err != nil {
		return nil, fmt.Errorf("promote %s's standby home: %w", of, err)
	}
	partitions, err := strconv.Atoi(meta[metaPartitions])
	if err != nil || partitions <= 0 {
		return nil, fmt.Errorf("promote %s's standby home: no partition count", of)
	}
	rc, version, err := homeConfigOf(ctx, js, of, layout, partitions)
	if err != nil {
		return nil, fmt.Errorf("promote %s's standby home: %w", of, err)
	}
	var done []string
	for t := range rc.ShardCount() {
		name := host.StandbyHomeShard(of, t)
		s, err := js.Stream(ctx, name)
		if err != nil {
			return done, fmt.Errorf("promote %s's standby home %s: %w", of, name, err)
		}
		cfg := s.CachedInfo().Config
		if cfg.Mirror != nil {
			if cfg, err = stopMirror(ctx, js, cfg, stoppedSubject(host, "home", of, t)); err != nil {
				return done, fmt.Errorf("promote %s: %w", of, err)
			}
		}
		if len(cfg.Sources) == 0 {
			last, err := lastSeq(ctx, js, name)
			if err != nil {
				return done, fmt.Errorf("promote %s: %w", of, err)
			}
			// Each region's events after the last of them the copy holds;
			// the lost region's own from the standby's mirror of its ingest.
			srcs, err := resumeSources(ctx, js.Conn(), name, rc, t, func(r string, shard int) string {
				if r == of {
					return host.StandbyShard(of, shard)
				}
				return rc.peer(r).IngestShard(shard)
			})
			if err != nil {
				return done, fmt.Errorf("promote %s: %w", of, err)
			}
			cfg.Subjects, cfg.Sources = nil, srcs
			cfg.Metadata = maps.Clone(cfg.Metadata)
			delete(cfg.Metadata, metaPromoting)
			cfg.Metadata[metaPromoted] = time.Now().UTC().Format(time.RFC3339Nano)
			cfg.Metadata[metaPromotedLast] = strconv.FormatUint(last, 10)
			cfg.Metadata[metaHome] = partitionList(rc.Home)
			if version > 0 {
				cfg.Metadata[metaHomeVersion] = strconv.Itoa(version)
			}
			if _, err := js.UpdateStream(ctx, cfg); err != nil {
				return done, fmt.Errorf("promote %s's standby home %s: %w", of, name, err)
			}
		}
		done = append(done, name)
	}
	return done, nil
}

// homeConfigOf is region of's strict Config (its home partitions, its home
// stream's sources) as the other regions' home streams give it: the
// partitions none of them homes.
func homeConfigOf(ctx context.Context, js jetstream.JetStream, of string, layout map[string]int, partitions int) (Config, int, error) {
	if _, ok := layout[of]; !ok {
		return Config{}, 0, fmt.Errorf("%s is not in the standby layout", of)
	}
	version := 0
	homes := map[string][]int{}
	var peers []string
	for _, r := range slices.Sorted(maps.Keys(layout)) {
		if r == of {
			continue
		}
		peers = append(peers, r)
		name := Names{Region: r}.HomeShard(0)
		s, err := js.Stream(ctx, name)
		if err != nil {
			return Config{}, 0, fmt.Errorf("region %s's homes: %s: %w", r, name, err)
		}
		rec, ok := homeRecord(s.CachedInfo().Config)
		if !ok {
			return Config{}, 0, fmt.Errorf("region %s's homes: %s records none", r, name)
		}
		if rec.Moving >= 0 {
			return Config{}, 0, fmt.Errorf("region %s's homes: %w (p%d to %s)", r, ErrMoveUnderWay, rec.Moving, rec.MovingTo)
		}
		homes[r], version = rec.Homes, max(version, rec.Version)
	}
	if err := ValidateHomes(partitions, homes, false); err != nil {
		return Config{}, 0, err
	}
	taken := map[int]bool{}
	for _, ps := range homes {
		for _, p := range ps {
			taken[p] = true
		}
	}
	mine := []int{}
	for p := range partitions {
		if !taken[p] {
			mine = append(mine, p)
		}
	}
	return Config{Names: Names{Region: of, Shards: layout[of]}, Partitions: partitions, Home: mine, Peers: peers, PeerShards: layout}.withDefaults(), version, nil
}

// StreamSourceHeader is the header JetStream puts on a sourced message:
// "<origin stream> <sequence there> <filters> <destinations> …".
const StreamSourceHeader = "Nats-Stream-Source"

// SourceHeader reads a sourced message's Nats-Stream-Source header: the
// origin stream and the message's sequence there (zero when malformed).
func SourceHeader(h string) (string, uint64) {
	f := strings.Fields(h)
	if len(f) < 2 {
		return "", 0
	}
	seq, err := strconv.ParseUint(f[1], 10, 64)
	if err != nil {
		return "", 0
	}
	return f[0], seq
}

// failBackHomes gives region of back its home streams (strict mode; nothing
// in asynchronous mode) before its claim log is unfenced: host's promoted
// copy stops sourcing; of's home shard is made again as a mirror of it
// (fenced while it catches up: its old contents name other sequences than
// the failover's records) and then sources as it did, each region's source
// resuming after its last header. Its own ingest's source resumes after
// the last of its events it held before the loss (nats-server takes the
// last header naming the source), so what it accepted since comes again:
// repeats, decided against the claims. host's copy mirrors of's home stream
// again once the claim log is back (remirrorHomes).
func failBackHomes(ctx context.Context, js jetstream.JetStream, host string, of Names) (map[int]jetstream.StreamConfig, error) {
	hn := Names{Region: host}
	copies := map[int]jetstream.StreamConfig{}
	for t := range of.ShardCount() {
		cname, name := hn.StandbyHomeShard(of.region(), t), of.HomeShard(t)
		cs, err := js.Stream(ctx, cname)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, nil // asynchronous mode
		}
		if err != nil {
			return nil, fmt.Errorf("fail back %s's home: %s: %w", of.region(), cname, err)
		}
		ccfg := cs.CachedInfo().Config
		if ccfg.Mirror != nil {
			continue // not failed over, or failed back
		}
		promoted := ccfg.Metadata[metaPromoted]
		if promoted == "" {
			return nil, fmt.Errorf("fail back %s's home: %s is being promoted (run region-failover again to finish it)", of.region(), cname)
		}
		copies[t] = ccfg
		if len(ccfg.Sources) > 0 {
			// No more events for the failover's edges (stopped by now).
			stopped := ccfg
			stopped.Sources, stopped.Subjects = nil, []string{stoppedSubject(hn, "home", of.region(), t)}
			if _, err := js.UpdateStream(ctx, stopped); err != nil {
				return nil, fmt.Errorf("fail back %s's home: stop sourcing into %s: %w", of.region(), cname, err)
			}
		}
		own, err := js.Stream(ctx, name)
		if err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil, fmt.Errorf("fail back %s's home: %s: %w", of.region(), name, err)
		}
		var like *jetstream.StreamConfig
		if err == nil && own.CachedInfo().Config.Mirror == nil {
			like = &own.CachedInfo().Config
		}
		want, rc, werr := homeAgain(ctx, js, ccfg, of, t, like)
		if werr != nil {
			return nil, fmt.Errorf("fail back %s's home: %w", of.region(), werr)
		}
		if err == nil {
			ocfg := own.CachedInfo().Config
			if ocfg.Mirror == nil && ocfg.Metadata[metaFailedBackFrom] == promoted {
				continue // made again from this copy already
			}
			if ocfg.Mirror == nil || ocfg.Mirror.Name != cname {
				if err := js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
					return nil, fmt.Errorf("fail back %s's home: delete %s: %w", of.region(), name, err)
				}
				err = jetstream.ErrStreamNotFound
			}
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			m := want
			m.Sources = nil
			m.Mirror = &jetstream.StreamSource{Name: cname, OptStartSeq: 1}
			m.Metadata = maps.Clone(want.Metadata)
			m.Metadata[metaFenced] = host
			delete(m.Metadata, metaFailedBackFrom)
			if _, err := js.CreateStream(ctx, m); err != nil {
				return nil, fmt.Errorf("fail back %s's home: mirror %s of %s: %w", of.region(), name, cname, err)
			}
		}
		last, err := lastSeq(ctx, js, cname)
		if err != nil {
			return nil, fmt.Errorf("fail back %s's home: %w", of.region(), err)
		}
		for {
			got, err := lastSeq(ctx, js, name)
			if err == nil && got >= last {
				break
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("fail back %s's home: %s catching up with %s: %w", of.region(), name, cname, ctx.Err())
			case <-time.After(50 * time.Millisecond):
			}
		}
		// Each region's events after the last of them the stream holds
		// now (the copy's): its own ingest's included, read again from
		// its own ingest stream.
		if want.Sources, err = resumeSources(ctx, js.Conn(), name, rc, t, func(r string, shard int) string {
			return rc.peer(r).IngestShard(shard)
		}); err != nil {
			return nil, fmt.Errorf("fail back %s's home: %w", of.region(), err)
		}
		if _, err := js.UpdateStream(ctx, want); err != nil {
			return nil, fmt.Errorf("fail back %s's home: %s sourcing again: %w", of.region(), name, err)
		}
	}
	return copies, nil
}

// homeAgain is region of's home shard t as it sources when not failed
// over (its sources and metadata as provisioning makes them, with
// metaFailedBackFrom naming the promotion of host's copy ccfg), on the
// configuration of the stream it replaces (like) or else of the copy.
func homeAgain(ctx context.Context, js jetstream.JetStream, ccfg jetstream.StreamConfig, of Names, t int, like *jetstream.StreamConfig) (jetstream.StreamConfig, Config, error) {
	layout, err := parseLayout(ccfg.Metadata[metaStandbyLayout])
	if err != nil {
		return jetstream.StreamConfig{}, Config{}, err
	}
	partitions, _ := strconv.Atoi(ccfg.Metadata[metaPartitions])
	rc, version, err := homeConfigOf(ctx, js, of.region(), layout, partitions)
	if err != nil {
		return jetstream.StreamConfig{}, Config{}, err
	}
	want := ccfg
	if like != nil {
		want = *like
	}
	want.Name, want.Subjects, want.Mirror, want.MirrorDirect = of.HomeShard(t), nil, nil, false
	want.Sources = rc.homeSources(t)
	if want.Placement != nil {
		want.Placement = &jetstream.Placement{Cluster: of.region()}
	}
	want.Metadata = map[string]string{metaPartitions: ccfg.Metadata[metaPartitions], metaWindow: ccfg.Metadata[metaWindow],
		metaHome: partitionList(rc.Home), metaFailedBackFrom: ccfg.Metadata[metaPromoted]}
	if rc.ShardCount() > 1 {
		want.Metadata[metaShards] = strconv.Itoa(rc.ShardCount())
	}
	if version > 0 {
		want.Metadata[metaHomeVersion] = strconv.Itoa(version)
	}
	return want, rc, nil
}

// remirrorHomes makes host's promoted home copies mirrors of region of's
// home streams again, standing by.
func remirrorHomes(ctx context.Context, js jetstream.JetStream, copies map[int]jetstream.StreamConfig, of Names) error {
	for t, c := range copies {
		again := c
		again.Sources = nil
		again.Metadata = maps.Clone(c.Metadata)
		for _, k := range []string{metaPromotedLast, metaPromoting, metaHome} {
			delete(again.Metadata, k)
		}
		if err := remirror(ctx, js, again, of.HomeShard(t)); err != nil {
			return err
		}
	}
	return nil
}
