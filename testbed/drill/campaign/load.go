package campaign

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/healconn"
	"github.com/onceplane/onceplane/jetstream/streams"
)

func newRand(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 0x10ad)) }

// resendShare is the share of the background load that re-sends an acked
// ID; diffShare the share of those sent with another payload.
const (
	resendShare = 0.2
	diffShare   = 0.1
	workers     = 8
)

// job is one event to publish until it is acked (or refused, for a hostile one).
type job struct {
	msg *nats.Msg
	rec Publish
}

type acked struct {
	id string
	at time.Duration
}

// load is the campaign's producer: a steady background load of unique IDs
// and re-sends, and the hostile producers' events, published with a stock
// JetStream client straight to the core (not through the edges' links). It
// records every ack.
type load struct {
	r      *region
	cfg    Config
	nc     *nats.Conn
	js     jetstream.JetStream
	heal   *healconn.Healer
	names  streams.Names
	prefix string
	rng    *rand.Rand // the pacer's

	giveUp context.Context // retries end with it
	cancel context.CancelFunc
	jobs   chan job
	wg     sync.WaitGroup

	mu      sync.Mutex
	pubs    []Publish
	races   []Publish // IDs also sent to another region (KindRace)
	refused map[string]int
	unacked int
	valid   []acked // acked valid IDs, for re-sends
	next    int     // IDs made so far
	connErr error
}

func newLoad(r *region, cfg Config) *load {
	l := &load{r: r, cfg: cfg, names: r.names, prefix: fmt.Sprintf("c%d", cfg.Seed), rng: newRand(cfg.Seed ^ 0x9e37),
		refused: map[string]int{}, jobs: make(chan job, 1024)}
	l.giveUp, l.cancel = context.WithCancel(context.Background())
	nc, err := nats.Connect(r.cores.URL(), nats.Name("campaign-producer"), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { r.log.Debug("producer connection", "err", err) }))
	if err != nil {
		l.connErr = err
		return l
	}
	l.nc = nc
	l.js, _ = jetstream.New(nc)
	l.heal = healconn.New(nc, 0)
	return l
}

// run publishes the background load at cfg.Rate until ctx ends.
func (l *load) run(ctx context.Context) {
	if l.connErr != nil {
		l.r.fail(fmt.Errorf("producer connect: %w", l.connErr))
		return
	}
	for range workers {
		l.wg.Go(func() {
			for j := range l.jobs {
				l.publish(l.giveUp, j)
			}
		})
	}
	defer close(l.jobs)
	const tick = 20 * time.Millisecond
	perTick := float64(l.cfg.Rate) * tick.Seconds()
	owed := 0.0
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for owed += perTick; owed >= 1; owed-- {
			select {
			case l.jobs <- l.nextJob():
			case <-ctx.Done():
				return
			}
		}
	}
}

// finish waits for the publishes still being retried, for at most within,
// then gives up on the rest (they are not checked).
func (l *load) finish(ctx context.Context, within time.Duration) {
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(within):
	case <-ctx.Done():
	}
	l.cancel()
	<-done
}

// close closes the producer's connection.
func (l *load) close() {
	if l.nc != nil {
		l.nc.Close()
	}
}

func digest(b []byte) uint64 {
	h := fnv.New64a()
	_, _ = h.Write(b)
	return h.Sum64()
}

func (l *load) newID(tag string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.next++
	return fmt.Sprintf("%s-%s%07d", l.prefix, tag, l.next)
}

// payload returns n bytes that start with id and vary with salt.
func payload(id string, n int, salt uint64) []byte {
	b := make([]byte, n)
	r := newRand(salt)
	for i := range b {
		b[i] = 'a' + byte(r.IntN(26))
	}
	copy(b, id)
	return b
}

// pickResend returns an acked valid ID young enough to re-send inside the
// window, or "" when there is none.
func (l *load) pickResend(r *rand.Rand) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.valid) == 0 {
		return ""
	}
	lo := max(0, len(l.valid)-5000)
	a := l.valid[lo+r.IntN(len(l.valid)-lo)]
	if l.cfg.Window > 0 && l.r.since()-a.at > l.cfg.Window/4 {
		return "" // a re-send after the window is a legitimate second effect
	}
	return a.id
}

func (l *load) msg(token, id string, data []byte) *nats.Msg {
	m := &nats.Msg{Subject: l.names.Ingest(token), Header: nats.Header{}, Data: data}
	if id != "" {
		m.Header.Set(event.HeaderID, id)
	}
	return m
}

func (l *load) nextJob() job {
	if l.rng.Float64() < resendShare {
		if id := l.pickResend(l.rng); id != "" {
			kind, salt := KindResend, uint64(0)
			if l.rng.Float64() < diffShare {
				kind, salt = KindResendDiff, l.rng.Uint64()|1
			}
			data := payload(id, 64+int(digest([]byte(id))%448), salt)
			return job{msg: l.msg(id, id, data), rec: Publish{ID: id, Token: id, Digest: digest(data), Kind: kind}}
		}
	}
	id := l.newID("u")
	data := payload(id, 64+int(digest([]byte(id))%448), 0)
	return job{msg: l.msg(id, id, data), rec: Publish{ID: id, Token: id, Digest: digest(data), Kind: KindUnique}}
}

// probes publishes one new event per partition and waits for their acks
// (bounded): once the faults stop, every partition must still handle new
// events, which draining alone cannot show.
func (l *load) probes(ctx context.Context) {
	if l.js == nil {
		return
	}
	parts := l.cfg.Partitions
	var jobs []job
	for seen := map[int]bool{}; len(seen) < parts; {
		id := l.newID("probe")
		if p := event.Partition(id, parts); !seen[p] {
			seen[p] = true
			data := payload(id, 64, 0)
			jobs = append(jobs, job{msg: l.msg(id, id, data), rec: Publish{ID: id, Token: id, Digest: digest(data), Kind: KindProbe}})
		}
	}
	l.giveUp, l.cancel = context.WithTimeout(ctx, 30*time.Second)
	defer l.cancel()
	var wg sync.WaitGroup
	for _, j := range jobs {
		wg.Go(func() { l.publish(l.giveUp, j) })
	}
	wg.Wait()
}

// publish publishes j until it is acked, refused (a hostile event the
// ingest stream rejects) or ctx ends, and records the outcome.
func (l *load) publish(ctx context.Context, j job) bool {
	for b := poll.Backoff(50*time.Millisecond, time.Second); ; {
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		ack, err := l.js.PublishMsg(pctx, j.msg)
		cancel()
		l.heal.Observe(err)
		if err == nil {
			j.rec.Seq, j.rec.Duplicate, j.rec.At = ack.Sequence, ack.Duplicate, l.r.since()
			l.mu.Lock()
			if j.rec.Kind == KindRace {
				// Checked across regions: the other region may handle it.
				l.races = append(l.races, j.rec)
				l.mu.Unlock()
				return true
			}
			l.pubs = append(l.pubs, j.rec)
			if !j.rec.DeadLetter && j.rec.ID != "" {
				l.valid = append(l.valid, acked{id: j.rec.ID, at: j.rec.At})
			}
			l.mu.Unlock()
			return true
		}
		if j.rec.Hostile != "" && refusal(err) {
			l.mu.Lock()
			l.refused[j.rec.Hostile]++
			l.mu.Unlock()
			l.r.log.Info("hostile publish refused", "variant", j.rec.Hostile, "err", err)
			return false
		}
		if poll.Sleep(ctx, b.NextBackOff()) != nil {
			l.mu.Lock()
			l.unacked++
			l.mu.Unlock()
			return false
		}
	}
}

// refusal reports whether a hostile publish's error is final: the stream
// rejected the message (an API error other than 503: "rollup not permitted"
// comes as a 500) or the client refused to send it.
func refusal(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode != 0 && apiErr.Code != 503 {
		return true
	}
	return errors.Is(err, nats.ErrMaxPayload)
}

// hostile publishes f.Count events of f.Hostile's variant and returns how
// many were acked.
func (l *load) hostile(ctx context.Context, f Fault) int {
	if l.js == nil {
		return 0
	}
	r := newRand(f.Seed)
	n := 0
	for range f.Count {
		j, ok := l.hostileJob(f.Hostile, r)
		if !ok || ctx.Err() != nil {
			continue
		}
		// Bounded: the fault phase waits for it.
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		if l.publish(pctx, j) {
			n++
		}
		cancel()
	}
	return n
}

// maxMsg is the largest message (headers and payload) the client and the
// streams accept.
const maxMsg = 1 << 20

// headerLen is the size of h on the wire (NATS/1.0 header block).
func headerLen(h nats.Header) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": ") + len(v) + len("\r\n")
		}
	}
	return n
}

func (l *load) hostileJob(variant string, r *rand.Rand) (job, bool) {
	parts := l.cfg.Partitions
	// ingestOf in a header stands for the ingest stream (its shard's) the
	// message's subject token is stored in.
	const ingestOf = "\x00ingest"
	set := func(m *nats.Msg, token string, hdr map[string]string) {
		for k, v := range hdr {
			if v == ingestOf {
				v = l.names.IngestStreamOf(event.Partition(token, parts))
			}
			m.Header.Set(k, v)
		}
	}
	valid := func(data []byte, hdr map[string]string) job {
		id := l.newID("h")
		m := l.msg(id, id, data)
		set(m, id, hdr)
		return job{msg: m, rec: Publish{ID: id, Token: id, Digest: digest(data), Kind: KindHostileValid, Hostile: variant}}
	}
	invalid := func(token, id string, data []byte, hdr map[string]string) job {
		m := l.msg(token, id, data)
		set(m, token, hdr)
		return job{msg: m, rec: Publish{ID: id, Token: token, Digest: digest(data), Kind: KindInvalid, Hostile: variant, DeadLetter: true}}
	}
	small := func() []byte { return payload(variant, 32+r.IntN(200), r.Uint64()) }
	switch variant {
	case "ctrl-headers":
		return valid(small(), map[string]string{
			"Nats-Expected-Stream": ingestOf, // true at ingest, false anywhere else
			event.HeaderReason:     "forged", event.HeaderUncertain: "true", event.HeaderPartition: "9999",
			event.HeaderStreamSeq: "1", "Onceplane-Event-Id": "forged",
		}), true
	case "ctrl-ttl":
		return valid(small(), map[string]string{"Nats-TTL": "1s"}), true
	case "ctrl-rollup":
		return valid(small(), map[string]string{"Nats-Rollup": "sub"}), true
	case "ctrl-expect-seq":
		return valid(small(), map[string]string{"Nats-Expected-Last-Sequence": "1"}), true
	case "ctrl-noid":
		return invalid(l.newID("noid"), "", small(), map[string]string{"Nats-Expected-Stream": ingestOf}), true
	case "max-valid":
		return valid(payload(variant, event.DefaultMaxPayload, r.Uint64()), nil), true
	case "max-size":
		// Payload and headers just under 1 MiB (the client's and the
		// streams' limit): over the edge's payload limit, so dead-lettered,
		// and a dead letter that copies it with more headers is too big.
		id := l.newID("big")
		hdr := map[string]string{"X-Pad": strings.Repeat("p", 1000+r.IntN(1000))}
		j := invalid(id, id, nil, hdr)
		j.msg.Data = payload(id, maxMsg-headerLen(j.msg.Header)-16-r.IntN(48), r.Uint64())
		j.rec.Digest = digest(j.msg.Data)
		return j, true
	case "missing-id":
		return invalid(l.newID("noid"), "", small(), nil), true
	case "long-id":
		id := l.newID("long")
		id += strings.Repeat("x", event.MaxIDLen+1+r.IntN(170)-len(id))
		return invalid(id, id, small(), nil), true
	case "bad-charset":
		bad := []string{" ", "\t", "é", ".", "*", ">"}[r.IntN(6)]
		id := l.newID("bc")
		return invalid(l.newID("bctok"), id[:5]+bad+id[5:], small(), nil), true
	case "misrouted":
		if parts < 2 {
			return job{}, false
		}
		id := l.newID("mr")
		token := l.newID("mrtok")
		for event.Partition(token, parts) == event.Partition(id, parts) {
			token = l.newID("mrtok")
		}
		return invalid(token, id, small(), nil), true
	case "resend-diff-late":
		id := l.pickResend(r)
		if id == "" {
			return job{}, false
		}
		data := payload(id, 64+r.IntN(400), r.Uint64()|1)
		j := job{msg: l.msg(id, id, data), rec: Publish{ID: id, Token: id, Digest: digest(data), Kind: KindResendDiff, Hostile: variant}}
		return j, true
	}
	return job{}, false
}
