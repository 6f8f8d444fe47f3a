package sourcing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/onceplane/onceplane/jetstream/streams"
)

// WatchOptions configure Watch. Zero values are the documented defaults.
type WatchOptions struct {
	Options
	// Streams are the sourcing streams to watch.
	Streams []string
	// Server, when set, limits restarts to the streams this server leads,
	// so that every core node of a region can run a watchdog and one acts
	// on each stream. Zero means act on every stream.
	Server string
	// Region is this region, and Origins the region of each origin stream
	// (for the metrics' labels; an origin missing there is labelled with
	// its stream name).
	Region  string
	Origins map[string]string
	// Interval is the time between looks. Zero means 250 ms.
	Interval time.Duration
	// Timeout bounds each request (the origin's answers cross the WAN).
	// Zero means 1 s.
	Timeout time.Duration
	// Metrics, when set, receives replication health per region pair.
	Metrics *Metrics
	// Logger receives restarts and their outcome. Nil means slog.Default().
	Logger *slog.Logger
}

// Metrics are the watchdog's Prometheus metrics.
type Metrics struct {
	Healthy  *prometheus.GaugeVec   // from, to: 1 while every source from region from into region to is healthy
	Silent   *prometheus.GaugeVec   // from, to: seconds the least recently heard source of the pair has been silent
	Restarts *prometheus.CounterVec // from, to, why (silent, stalled)
}

// NewMetrics registers the watchdog's metrics in r.
func NewMetrics(r prometheus.Registerer) *Metrics {
	m := &Metrics{
		Healthy: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "onceplane", Name: "replication_healthy",
			Help: "1 while every source carrying region from's claims (or ingest) into region to has been heard within the silence limit and is not behind a moving origin; 0 while one is not (the watchdog restarts it once the origin answers)."}, []string{"from", "to"}),
		Silent: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "onceplane", Name: "replication_silent_seconds",
			Help: "Seconds since the least recently heard source from region from into region to was heard of (messages or its 1 s heartbeats)."}, []string{"from", "to"}),
		Restarts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "onceplane", Name: "replication_restarts_total",
			Help: "Sources the watchdog restarted from their stored position, by reason."}, []string{"from", "to", "why"}),
	}
	r.MustRegister(m.Healthy, m.Silent, m.Restarts)
	return m
}

// Key names a source within its stream's configuration: its origin and
// what it takes from it (JetStream keys sources the same way).
func Key(s *jetstream.StreamSource) string {
	var b strings.Builder
	b.WriteString(s.Name)
	b.WriteString(" " + s.FilterSubject)
	for _, t := range s.SubjectTransforms {
		b.WriteString(" " + t.Source + ">" + t.Destination)
	}
	return b.String()
}

// Watch looks at the sources of o.Streams every o.Interval and restarts
// those the Judge finds silent or stalled, until ctx ends.
func Watch(ctx context.Context, js jetstream.JetStream, o WatchOptions) error {
	if o.Interval == 0 {
		o.Interval = 250 * time.Millisecond
	}
	if o.Timeout == 0 {
		o.Timeout = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	w := &watcher{js: js, o: o, judge: NewJudge(o.Options)}
	t := time.NewTicker(o.Interval)
	defer t.Stop()
	for {
		w.step(ctx)
		select {
		case <-ctx.Done():
			// A restart cut short here is finished now if it can be, else
			// by whichever watchdog next reads the stream (PutBack).
			for _, name := range w.o.Streams {
				_ = PutBack(context.WithoutCancel(ctx), w.js, name, w.o.Timeout)
			}
			return nil
		case <-t.C:
		}
	}
}

type watcher struct {
	js    jetstream.JetStream
	o     WatchOptions
	judge *Judge
}

// step takes one look, judges it and restarts what the judge says.
func (w *watcher) step(ctx context.Context) {
	look := w.look(ctx)
	verdicts := w.judge.Step(time.Now(), look)
	w.report(verdicts)
	for _, v := range verdicts {
		if !v.Restart {
			continue
		}
		from := w.origin(v.Origin)
		err := Restart(ctx, w.js, v.Stream, v.Key, w.o.Timeout)
		if w.o.Metrics != nil && err == nil {
			w.o.Metrics.Restarts.WithLabelValues(from, w.o.Region, v.Why).Inc()
		}
		w.o.Logger.Info("replication source restarted from its stored position", "stream", v.Stream, "origin", v.Origin,
			"why", v.Why, "heard_ago", v.Heard, "origin_last", v.OriginLast, "sourced", v.Sourced, "err", err)
	}
}

// look reads every watched stream's sources, and each origin's state.
func (w *watcher) look(ctx context.Context) []Source {
	var look []Source
	var known []bool // the source's position is known: its origin's last sequence is its goal
	origins := map[string]*originState{}
	for _, name := range w.o.Streams {
		info, err := w.info(ctx, name)
		if err != nil {
			continue
		}
		if pending(info.Config) != nil {
			// A restart cut short (by a kill, a lost reply, a leader
			// change): any watchdog finishes it.
			if err := PutBack(ctx, w.js, name, w.o.Timeout); err != nil {
				w.o.Logger.Warn("replication source not put back yet (retrying)", "stream", name, "err", err)
			}
			continue
		}
		if w.o.Server != "" && (info.Cluster == nil || info.Cluster.Leader != w.o.Server) {
			continue
		}
		if info.Config.Replicas > 1 {
			// Replicated streams are left to JetStream until a restart of
			// theirs is measured: a leader stepdown restarts every source
			// at its stored position, without two updates. (A restart cut
			// short by a leader change is finished by any watchdog: see
			// Restart.)
			continue
		}
		for _, src := range info.Config.Sources {
			s := Source{Stream: name, Origin: src.Name, Key: Key(src), Heard: -1}
			if si := sourceInfo(info.Sources, src); si != nil {
				s.Heard = si.Active
			}
			if origins[src.Name] == nil {
				origins[src.Name] = &originState{}
			}
			ok := false
			if src.FilterSubject != "" && len(src.SubjectTransforms) == 0 {
				s.Sourced, ok = w.sourced(ctx, name, src)
			}
			look, known = append(look, s), append(known, ok)
		}
	}
	var wg sync.WaitGroup
	for name, st := range origins {
		wg.Go(func() {
			info, err := w.info(ctx, name)
			if err == nil {
				st.up, st.last = true, info.State.LastSeq
			}
		})
	}
	wg.Wait()
	for i := range look {
		st := origins[look[i].Origin]
		look[i].OriginUp = st.up
		if known[i] && st.up {
			look[i].OriginLast = st.last
		}
	}
	return look
}

type originState struct {
	up   bool
	last uint64
}

func (w *watcher) info(ctx context.Context, name string) (*jetstream.StreamInfo, error) {
	ictx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	s, err := w.js.Stream(ictx, name)
	if err != nil {
		return nil, err
	}
	return s.CachedInfo(), nil
}

// sourced is the origin sequence of the last message stream holds from
// src's origin, read from its Nats-Stream-Source header, and whether that
// is known. A source with a filter subject and no transforms takes every
// message of its origin (streams.Config makes them so), and is the only
// source of the stream on that filter unless the last message there came
// from another origin: then its position is not known.
func (w *watcher) sourced(ctx context.Context, stream string, src *jetstream.StreamSource) (uint64, bool) {
	gctx, cancel := context.WithTimeout(ctx, w.o.Timeout)
	defer cancel()
	s, err := w.js.Stream(gctx, stream)
	if err != nil {
		return 0, false
	}
	m, err := s.GetLastMsgForSubject(gctx, src.FilterSubject)
	if err != nil {
		// Nothing sourced from it yet, or all of it aged out: where the
		// source stands is not known (only silence is judged).
		return 0, false
	}
	origin, seq := streams.SourceHeader(m.Header.Get(streams.StreamSourceHeader))
	return seq, origin == src.Name && seq > 0
}

// sourceInfo finds src's entry among a stream's source infos.
func sourceInfo(infos []*jetstream.StreamSourceInfo, src *jetstream.StreamSource) *jetstream.StreamSourceInfo {
	for _, si := range infos {
		if si.Name == src.Name && si.FilterSubject == src.FilterSubject && slices.Equal(si.SubjectTransforms, src.SubjectTransforms) {
			return si
		}
	}
	return nil
}

// report sets the health metrics from a look's verdicts.
func (w *watcher) report(vs []Verdict) {
	m := w.o.Metrics
	if m == nil {
		return
	}
	type pair struct {
		healthy bool
		silent  time.Duration
	}
	pairs := map[string]*pair{}
	// A stream this node no longer leads is another node's to report.
	m.Healthy.Reset()
	m.Silent.Reset()
	for _, v := range vs {
		from := w.origin(v.Origin)
		p := pairs[from]
		if p == nil {
			p = &pair{healthy: true}
			pairs[from] = p
		}
		p.healthy = p.healthy && v.Healthy
		p.silent = max(p.silent, v.Heard)
	}
	for from, p := range pairs {
		h := 0.0
		if p.healthy {
			h = 1
		}
		m.Healthy.WithLabelValues(from, w.o.Region).Set(h)
		m.Silent.WithLabelValues(from, w.o.Region).Set(p.silent.Seconds())
	}
}

func (w *watcher) origin(stream string) string {
	if r, ok := w.o.Origins[stream]; ok {
		return r
	}
	// A shard Origins does not know (its region's shard count was not
	// known yet): onceplane-<region>-claims-<n> or -in-<n>.
	name := strings.TrimPrefix(stream, "onceplane-")
	if i := strings.LastIndex(name, "-"); i > 0 {
		if _, err := strconv.Atoi(name[i+1:]); err == nil {
			name = name[:i]
		}
	}
	for _, kind := range []string{"-claims", "-in"} {
		if r, ok := strings.CutSuffix(name, kind); ok && name != stream {
			return r
		}
	}
	return stream
}

// ErrNoSource is returned by Restart when the stream has no such source.
var ErrNoSource = errors.New("no such source")

// Restart restarts the source named key of stream from its stored
// position: one update without it, one with it back, each made on the
// stream's configuration as read just before (so a concurrent change is
// kept). JetStream finds a re-added source's position in the stream (the
// last message it holds from it) and asks the origin from there at once,
// without the backoff a failing source accumulates.
//
// The first update also records the source in the stream's metadata
// (restartKey), in the same write that removes it, and the second clears
// it. A restart cut short between the two (a kill, a lost reply, a leader
// change) is therefore visible to every watchdog that reads the stream,
// which finishes it (PutBack): no source stays removed.
func Restart(ctx context.Context, js jetstream.JetStream, stream, key string, timeout time.Duration) error {
	if err := remove(ctx, js, stream, key, timeout); err != nil {
		return err
	}
	if err := PutBack(ctx, js, stream, timeout); err != nil {
		return fmt.Errorf("restart source %q of %s: removed, not added back yet: %w", key, stream, err)
	}
	return nil
}

// remove is a restart's first half: the stream without the source, which
// its metadata keeps until PutBack.
func remove(ctx context.Context, js jetstream.JetStream, stream, key string, timeout time.Duration) error {
	cfg, err := config(ctx, js, stream, timeout)
	if err != nil {
		return fmt.Errorf("restart source %q of %s: %w", key, stream, err)
	}
	i := slices.IndexFunc(cfg.Sources, func(s *jetstream.StreamSource) bool { return Key(s) == key })
	if i < 0 {
		return fmt.Errorf("restart source %q of %s: %w", key, stream, ErrNoSource)
	}
	src := cfg.Sources[i]
	b, err := json.Marshal(src)
	if err != nil {
		return fmt.Errorf("restart source %q of %s: %w", key, stream, err)
	}
	cfg.Sources = slices.Delete(slices.Clone(cfg.Sources), i, i+1)
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[restartKey(key)] = string(b)
	if err := update(ctx, js, cfg, timeout); err != nil {
		return fmt.Errorf("restart source %q of %s: %w", key, stream, err)
	}
	return nil
}

// restartPrefix marks a stream's metadata entries that hold a source a
// restart removed and has not put back yet.
const restartPrefix = "onceplane.restarting."

func restartKey(key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	return restartPrefix + strconv.FormatUint(h.Sum64(), 16)
}

// pending lists the sources cfg's metadata says a restart removed.
func pending(cfg jetstream.StreamConfig) map[string]*jetstream.StreamSource {
	var out map[string]*jetstream.StreamSource
	for k, v := range cfg.Metadata {
		if !strings.HasPrefix(k, restartPrefix) {
			continue
		}
		var src jetstream.StreamSource
		if json.Unmarshal([]byte(v), &src) != nil || src.Name == "" {
			continue
		}
		if out == nil {
			out = map[string]*jetstream.StreamSource{}
		}
		out[k] = &src
	}
	return out
}

// PutBack finishes the restarts of stream's sources that were cut short:
// in one update, it adds back each source its metadata says a restart
// removed (unless present again) and clears those entries. Nothing
// pending: no update.
func PutBack(ctx context.Context, js jetstream.JetStream, stream string, timeout time.Duration) error {
	cfg, err := config(ctx, js, stream, timeout)
	if err != nil {
		return err
	}
	srcs := pending(cfg)
	if srcs == nil {
		return nil
	}
	cfg.Sources = slices.Clone(cfg.Sources)
	cfg.Metadata = maps.Clone(cfg.Metadata)
	for k, src := range srcs {
		if !slices.ContainsFunc(cfg.Sources, func(s *jetstream.StreamSource) bool { return Key(s) == Key(src) }) {
			cfg.Sources = append(cfg.Sources, src)
		}
		delete(cfg.Metadata, k)
	}
	return update(ctx, js, cfg, timeout)
}

func config(ctx context.Context, js jetstream.JetStream, stream string, timeout time.Duration) (jetstream.StreamConfig, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	s, err := js.Stream(cctx, stream)
	if err != nil {
		return jetstream.StreamConfig{}, err
	}
	return s.CachedInfo().Config, nil
}

func update(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig, timeout time.Duration) error {
	uctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := js.UpdateStream(uctx, cfg)
	return err
}
