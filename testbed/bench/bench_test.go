package bench

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/sim"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

var (
	events     = flag.Int("events", 1_000_000, "events in the EdgeVsRaw load (20% duplicates, 128-byte payloads)")
	partitions = flag.Int("partitions", 8, "partitions")
	batchSize  = flag.Int("batch", 1000, "events per batch")
	memIDs     = flag.Int("mem-ids", 10_000_000, "IDs for the bytes-per-ID measurement")
	replayIDs  = flag.Int("replay-ids", 1_000_000, "IDs in one partition's claim log for the restart measurement")
	mergeIDs   = flag.Int("merge-ids", 1_000_000, "another region's IDs in one partition for the takeover merge measurement")
)

type runResult struct {
	name     string
	events   int64
	elapsed  time.Duration
	batch    sim.Quantiles // batch start -> acked
	decision sim.Quantiles // batch start -> claim durable (edge only)
	appends  int64
	runs     *verify.Runs // handler runs after the sink succeeded (edge only)
}

func (r runResult) rate() float64 { return float64(r.events) / r.elapsed.Seconds() }

// rawRun consumes every partition with a plain pull consumer (AckAll, same
// batching), hands each batch to the same NATS sink and acks it: JetStream
// with no dedupe.
func rawRun(ctx context.Context, b *testing.B, js jetstream.JetStream, names, out streams.Names, total int64) runResult {
	return consumeRaw(ctx, b, js, names, &sink.NATS{JS: js, Names: out}, "raw", total)
}

// consumeRaw consumes every partition with a plain pull consumer (durables
// <durable>-<p>, AckAll, the edge's batching), hands each batch to s until
// it succeeds, and acks it.
func consumeRaw(ctx context.Context, b *testing.B, js jetstream.JetStream, names streams.Names, s edge.Handler, durable string, total int64) runResult {
	lat := sim.NewLatency()
	var done atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for p := 0; p < *partitions; p++ {
		cons, err := js.CreateOrUpdateConsumer(ctx, names.IngestStream(), jetstream.ConsumerConfig{
			Durable: fmt.Sprintf("%s-%d", durable, p), FilterSubjects: names.PartitionFilters(p), AckPolicy: jetstream.AckAllPolicy,
			MaxAckPending: 8 * *batchSize, AckWait: time.Minute,
		})
		if err != nil {
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			it, err := cons.Messages(jetstream.PullMaxMessages(*batchSize))
			if err != nil {
				b.Error(err)
				return
			}
			defer it.Stop()
			msgs := make(chan jetstream.Msg, *batchSize)
			go func() {
				for {
					m, err := it.Next()
					if err != nil {
						if rctx.Err() != nil {
							return
						}
						continue
					}
					select {
					case msgs <- m:
					case <-rctx.Done():
						return
					}
				}
			}()
			evs := make([]event.Event, 0, *batchSize)
			for {
				var first jetstream.Msg
				select {
				case first = <-msgs:
				case <-rctx.Done():
					return
				}
				batch := []jetstream.Msg{first}
			drain:
				for len(batch) < *batchSize {
					select {
					case m := <-msgs:
						batch = append(batch, m)
					default:
						break drain
					}
				}
				t0 := time.Now()
				evs = evs[:0]
				for _, m := range batch {
					id := m.Headers().Get(event.HeaderID)
					var seq uint64
					if md, err := m.Metadata(); err == nil {
						seq = md.Sequence.Stream
					}
					evs = append(evs, event.Event{ID: id, Tenant: event.DefaultTenant, Partition: p, Data: m.Data(), StreamSeq: seq})
				}
				for errs := s.Handle(ctx, evs); errs != nil; errs = s.Handle(ctx, evs) {
				}
				_ = batch[len(batch)-1].Ack()
				lat.Record(time.Since(t0))
				if done.Add(int64(len(batch))) >= total {
					cancel()
				}
			}
		}()
	}
	wg.Wait()
	return runResult{name: "raw JetStream consumer", events: done.Load(), elapsed: time.Since(start), batch: lat.Quantiles()}
}

// edgeRun consumes the same stream with the edge library and the same sink.
func edgeRun(ctx context.Context, b *testing.B, js jetstream.JetStream, region string, out streams.Names, total int64, noBloom bool) runResult {
	decision, batchLat := sim.NewLatency(), sim.NewLatency()
	var mu sync.Mutex
	batchStart := map[time.Time]bool{}
	name := "edge, Bloom pre-check on"
	if noBloom {
		name = "edge, Bloom pre-check off"
	}
	// Handler runs are counted after the sink, in process: the output
	// stream's Nats-Msg-Id window would hide a second effect.
	runs := verify.NewRuns()
	s := &timedSink{inner: sink.NewChain(&sink.NATS{JS: js, Names: out}, runs), lat: batchLat}
	c, err := edge.New(js, s, edge.Options{
		Region: region, Name: name, BatchSize: *batchSize, NoBloom: noBloom, ExpectedIDs: int(total) / *partitions,
		Metrics: telemetry.NewMetrics(), Logger: coretest.Quiet,
		OnDecision: func(d edge.Decision) {
			mu.Lock()
			if !batchStart[d.Started] {
				batchStart[d.Started] = true
				decision.Record(d.Committed.Sub(d.Started))
			}
			mu.Unlock()
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	errc := make(chan error, 1)
	go func() { errc <- c.Run(rctx) }()
	deadline := time.Now().Add(10 * time.Minute)
	for c.Stats().Done < total {
		select {
		case err := <-errc:
			b.Fatalf("edge stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: decided %d of %d in 10 minutes", name, c.Stats().Done, total)
		}
	}
	elapsed := time.Since(start)
	st := c.Stats()
	cancel()
	<-errc
	return runResult{name: name, events: st.Done, elapsed: elapsed, decision: decision.Quantiles(), batch: batchLat.Quantiles(), appends: st.ClaimAppends, runs: runs}
}

// timedSink records the sink's time per batch (the edge's handler span)
// and counts its calls (lat may be nil).
type timedSink struct {
	inner edge.Handler
	lat   *sim.Latency
	calls atomic.Int64
}

func (t *timedSink) Handle(ctx context.Context, evs []event.Event) []error {
	t.calls.Add(1)
	if t.lat == nil {
		return t.inner.Handle(ctx, evs)
	}
	t0 := time.Now()
	errs := t.inner.Handle(ctx, evs)
	t.lat.Record(time.Since(t0))
	return errs
}

// BenchmarkEdgeVsRaw publishes one load (128-byte events, 20 % re-sent) and
// consumes it, in one process, with a raw JetStream pull consumer and with
// the edge (Bloom on, then off), all with the same NATS sink.
func BenchmarkEdgeVsRaw(b *testing.B) {
	for i := 0; i < b.N; i++ {
		compare(b)
	}
}

func compare(b *testing.B) {
	ctx := context.Background()
	n := coretest.Start(b)
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192), jetstream.WithPublishAsyncTimeout(5*time.Second))
	// Each run reads the same ingest stream (region "bench") and writes to an
	// output stream of its own, so no run's outputs are another's duplicates.
	in := streams.Config{Names: streams.Names{Region: "bench"}, Partitions: *partitions, IngestDuplicates: -1}
	outs := []streams.Names{{Region: "out-raw"}, {Region: "out-bloom"}, {Region: "out-nobloom"}}
	for _, c := range append([]streams.Config{in}, streams.Config{Names: outs[0]}, streams.Config{Names: outs[1]}, streams.Config{Names: outs[2]}) {
		c.Partitions = *partitions
		if err := streams.Provision(ctx, js, c); err != nil {
			b.Fatal(err)
		}
	}
	plan := workload.Plan{Events: *events, DupRate: 0.2, Gap: min(*events/10, 50_000), Seed: 7, PayloadSize: 128}
	ids, unique := plan.IDs()
	t0 := time.Now()
	if err := workload.Publish(ctx, producer.New(js, "bench"), plan, ids, 8192, nil); err != nil {
		b.Fatal(err)
	}
	pub := time.Since(t0)
	stored, _ := verify.StreamMsgs(ctx, js, in.IngestStream())
	b.ResetTimer()
	raw := rawRun(ctx, b, js, in.Names, outs[0], int64(stored))
	on := edgeRun(ctx, b, js, "bench", outs[1], int64(stored), false)
	// The second edge run takes the partitions over from the first: clear
	// its claims so it decides the same load from scratch.
	purgeClaims(ctx, b, js, in)
	off := edgeRun(ctx, b, js, "bench", outs[2], int64(stored), true)
	b.StopTimer()

	for _, o := range outs[1:] {
		got, _ := verify.StreamMsgs(ctx, js, o.OutputStream())
		if got != uint64(unique) {
			b.Fatalf("%s: %d outputs for %d unique IDs", o.OutputStream(), got, unique)
		}
	}
	// Each edge run handled every unique ID exactly once: nothing fails in
	// a benchmark, so even a flagged re-run is wrong.
	for _, r := range []runResult{on, off} {
		if err := r.runs.Account(ids).Check(0); err != nil {
			b.Fatalf("%s: handler runs: %v", r.name, err)
		}
		if n := r.runs.Total(); n != unique {
			b.Fatalf("%s: %d handler runs for %d unique IDs", r.name, n, unique)
		}
	}
	b.ReportMetric(raw.rate(), "raw-ev/s")
	b.ReportMetric(on.rate(), "edge-ev/s")
	b.ReportMetric(on.rate()/raw.rate(), "edge/raw")
	b.ReportMetric(float64(on.decision.P50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(on.decision.P99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(on.appends)*1000/float64(on.events), "appends/1k")

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nload: %d events published in %.1fs (%d stored, %d unique, %d re-sent), 128-byte payloads, %d partitions, batch %d, R1 file storage, GOMAXPROCS %d\n",
		*events, pub.Seconds(), stored, unique, *events-unique, *partitions, *batchSize, runtime.GOMAXPROCS(0))
	fmt.Fprintln(w, "consumer\tevents/s\tvs raw\tdecision p50\tdecision p99\tsink p50\tsink p99\tclaim appends / 1k events")
	for _, r := range []runResult{raw, on, off} {
		dec50, dec99, app := "-", "-", "-"
		if r.decision.Count > 0 {
			dec50, dec99 = ms(r.decision.P50), ms(r.decision.P99)
			app = fmt.Sprintf("%.2f", float64(r.appends)*1000/float64(r.events))
		}
		fmt.Fprintf(w, "%s\t%.0f\t%.2f\t%s\t%s\t%s\t%s\t%s\n", r.name, r.rate(), r.rate()/raw.rate(), dec50, dec99, ms(r.batch.P50), ms(r.batch.P99), app)
	}
	w.Flush()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

// purgeClaims deletes and re-creates the claim stream (it denies purges)
// and deletes the edge's ingest consumers.
func purgeClaims(ctx context.Context, b *testing.B, js jetstream.JetStream, c streams.Config) {
	if err := js.DeleteStream(ctx, c.ClaimStream()); err != nil {
		b.Fatal(err)
	}
	if s, err := js.Stream(ctx, c.IngestStream()); err == nil {
		names := s.ConsumerNames(ctx)
		for name := range names.Name() {
			_ = s.DeleteConsumer(ctx, name)
		}
	}
	if err := streams.Provision(ctx, js, c); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkBytesPerID measures resident heap per tracked ID in one
// partition's dedupe state, Bloom on and off, pre-sized and grown.
func BenchmarkBytesPerID(b *testing.B) {
	for _, tc := range []struct {
		name    string
		noBloom bool
		presize bool
	}{{"bloom+presized", false, true}, {"nobloom+presized", true, true}, {"bloom+grown", false, false}, {"nobloom+grown", true, false}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				runtime.GC()
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				o := dedupe.Options{NoBloom: tc.noBloom}
				if tc.presize {
					o.ExpectedIDs = *memIDs
				}
				st := dedupe.New(o)
				now := time.Now()
				ids := make([]event.Hash, 0, 1000)
				for k := 0; k < *memIDs; k += 1000 {
					ids = ids[:0]
					for j := k; j < k+1000; j++ {
						ids = append(ids, event.HashID(fmt.Sprintf("id-%d", j)))
					}
					st.Apply(uint64(k/1000+1), dedupe.Record{Kind: dedupe.KindClaim, Time: now, IDs: ids, DoneThrough: uint64(k / 1000)}, now)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				exact, bl := st.Bytes()
				b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(*memIDs), "heapB/id")
				b.ReportMetric(float64(exact+bl)/float64(*memIDs), "tableB/id")
				runtime.KeepAlive(st)
			}
		})
	}
}

// BenchmarkClassify measures the pure decision cost per event at a large
// exact set, with the Bloom pre-check on and off, for first-time IDs (the
// common case) and for duplicates.
func BenchmarkClassify(b *testing.B) {
	const n = 2_000_000
	for _, noBloom := range []bool{false, true} {
		st := dedupe.New(dedupe.Options{NoBloom: noBloom, ExpectedIDs: n})
		now := time.Now()
		hs := make([]event.Hash, n)
		for i := range hs {
			hs[i] = event.HashID(fmt.Sprintf("id-%d", i))
		}
		for k := 0; k < n; k += 1000 {
			st.Apply(uint64(k/1000+1), dedupe.Record{Kind: dedupe.KindClaim, Time: now, IDs: hs[k : k+1000]}, now)
		}
		fresh := make([]event.Hash, 1000)
		for i := range fresh {
			fresh[i] = event.HashID(fmt.Sprintf("fresh-%d", i))
		}
		var out []dedupe.Path
		for _, kind := range []string{"first-time", "duplicate"} {
			batch := fresh
			if kind == "duplicate" {
				batch = hs[:1000]
			}
			b.Run(fmt.Sprintf("bloom=%v/%s", !noBloom, kind), func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					out = st.Classify(batch, now, out[:0])
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/event")
			})
		}
	}
}

// BenchmarkRestart measures rebuilding one partition holding replay-ids IDs
// from its claim log (replay + takeover), Bloom on and off.
func BenchmarkRestart(b *testing.B) {
	ctx := context.Background()
	n := coretest.Start(b)
	_, js := coretest.Connect(b, n.ClientURL())
	cfg := streams.Config{Partitions: 1}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		b.Fatal(err)
	}
	l, err := claimlog.Open(ctx, js, cfg.Names)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	var last uint64
	ids := make([]event.Hash, 1000)
	for k := 0; k < *replayIDs; k += 1000 {
		for j := range ids {
			ids[j] = event.HashID(fmt.Sprintf("r-%d", k+j))
		}
		if last, err = l.Append(ctx, 0, last, dedupe.Record{Kind: dedupe.KindClaim, Writer: "w", Time: now, IDs: ids, DoneThrough: last}); err != nil {
			b.Fatal(err)
		}
	}
	for _, noBloom := range []bool{false, true} {
		b.Run(fmt.Sprintf("bloom=%v", !noBloom), func(b *testing.B) {
			var took []time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				st := dedupe.New(dedupe.Options{NoBloom: noBloom, ExpectedIDs: *replayIDs})
				if _, err := l.Replay(ctx, 0, 0, st.Apply); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
				if st.Tracked() != *replayIDs {
					b.Fatalf("tracked %d", st.Tracked())
				}
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "rebuild-ms")
		})
	}
}

// BenchmarkMerge measures a takeover's merge phase at scale: reading
// merge-ids of another region's claims of one partition (records of 1,000
// IDs, as the xclaims stream holds them) and merging them into the
// partition's state, with that region's set pre-sized (the default) and
// grown as needed.
func BenchmarkMerge(b *testing.B) {
	ctx := context.Background()
	n := coretest.Start(b)
	_, js := coretest.Connect(b, n.ClientURL())
	other := streams.Config{Names: streams.Names{Region: "other"}, Partitions: 1}
	if err := streams.Provision(ctx, js, other); err != nil {
		b.Fatal(err)
	}
	l, err := claimlog.Open(ctx, js, other.Names)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	var last uint64
	ids := make([]event.Hash, 1000)
	for k := 0; k < *mergeIDs; k += len(ids) {
		for j := range ids {
			ids[j] = event.HashID(fmt.Sprintf("m-%d", k+j))
		}
		if last, err = l.Append(ctx, 0, last, dedupe.Record{Kind: dedupe.KindClaim, Writer: "o", Time: now, IDs: ids, DoneThrough: last}); err != nil {
			b.Fatal(err)
		}
	}
	for _, remote := range []int{0, -1} {
		b.Run(fmt.Sprintf("presized=%v", remote == 0), func(b *testing.B) {
			var took []time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				st := dedupe.New(dedupe.Options{ExpectedIDs: *mergeIDs, RemoteExpectedIDs: remote})
				merge := func(seq uint64, r dedupe.Record, stored time.Time) { st.MergeRemote("other", seq, r, stored) }
				if _, err := l.Replay(ctx, 0, 0, merge); err != nil {
					b.Fatal(err)
				}
				took = append(took, time.Since(t0))
				if got := st.Classify([]event.Hash{event.HashID("m-0")}, now, nil); got[0] != dedupe.PathRemoteHit {
					b.Fatalf("a merged ID decided %v, want %v", got[0], dedupe.PathRemoteHit)
				}
			}
			sort.Slice(took, func(i, j int) bool { return took[i] < took[j] })
			b.ReportMetric(float64(took[len(took)/2].Milliseconds()), "merge-ms")
			b.ReportMetric(float64(*mergeIDs)/took[len(took)/2].Seconds(), "ids/s")
		})
	}
}
