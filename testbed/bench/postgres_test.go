package bench

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink/pgsink"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/pgtest"
	"github.com/onceplane/onceplane/testbed/sim"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

var pgEvents = flag.Int("pg-events", 100_000, "events in the PostgresSink load (20% duplicates, 128-byte payloads)")

// countedTx counts and times a transactional sink's batches; embedding
// keeps its Fence, so the edge still sees the contract.
type countedTx struct {
	*pgsink.Sink
	timed *timedSink
}

func (c countedTx) Handle(ctx context.Context, evs []event.Event) []error {
	return c.timed.Handle(ctx, evs)
}

// userDedupe is the consumer a user would write on the same database
// without onceplane: per batch, one transaction that inserts the batch's IDs
// into a table of processed IDs (INSERT … ON CONFLICT DO NOTHING RETURNING)
// and applies the effect for those that were new. Exactly once, at the cost
// of a table of every ID ever processed.
type userDedupe struct {
	pool             *pgxpool.Pool
	processed, table string
}

func (u *userDedupe) Handle(ctx context.Context, evs []event.Event) []error {
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	err := pgx.BeginFunc(ctx, u.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `INSERT INTO `+u.processed+` (id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING RETURNING id`, ids)
		if err != nil {
			return err
		}
		fresh := map[string]bool{}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			fresh[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		b := &pgx.Batch{}
		for _, ev := range evs {
			if !fresh[ev.ID] {
				continue
			}
			delete(fresh, ev.ID)
			hdr, _ := json.Marshal(ev.Headers)
			b.Queue(`INSERT INTO `+u.table+` AS t (tenant, id, partition, seq, epoch, payload, headers, uncertain) VALUES ($1, $2, $3, $4, 0, $5, $6, false)
ON CONFLICT (tenant, id) DO UPDATE SET applies = t.applies + 1`, ev.Tenant, ev.ID, ev.Partition, int64(ev.StreamSeq), ev.Data, string(hdr))
		}
		return tx.SendBatch(ctx, b).Close()
	})
	if err != nil {
		errs := make([]error, len(evs))
		for i := range errs {
			errs[i] = fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
		}
		return errs
	}
	return nil
}

// pgResult is one consumer's run against PostgreSQL.
type pgResult struct {
	runResult
	txns    int64
	rows    int64
	applies int64
	bytesID float64 // bytes of dedupe state per unique ID (claim log, or the processed-IDs table)
}

// BenchmarkPostgresSink publishes one load (128-byte events, 20 % re-sent)
// and consumes it three ways into one PostgreSQL server, in one run: the
// edge with the transactional postgres sink; the consumer a user would
// write (a raw JetStream consumer, an INSERT … ON CONFLICT DO NOTHING of
// the batch's IDs and the effect in one transaction); and the raw consumer
// with the same sink and no dedupe. Each writes its own table.
func BenchmarkPostgresSink(b *testing.B) {
	for range b.N {
		comparePostgres(b)
	}
}

func comparePostgres(b *testing.B) {
	ctx := context.Background()
	db := pgtest.Start(b)
	n := coretest.Start(b)
	nc, err := nats.Connect(n.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(8192), jetstream.WithPublishAsyncTimeout(5*time.Second))
	in := streams.Config{Names: streams.Names{Region: "bench"}, Partitions: *partitions, IngestDuplicates: -1}
	if err := streams.Provision(ctx, js, in); err != nil {
		b.Fatal(err)
	}
	plan := workload.Plan{Events: *pgEvents, DupRate: 0.2, Gap: min(*pgEvents/10, 50_000), Seed: 7, PayloadSize: 128}
	ids, unique := plan.IDs()
	if err := workload.Publish(ctx, producer.New(js, "bench"), plan, ids, 8192, nil); err != nil {
		b.Fatal(err)
	}
	stored, _ := verify.StreamMsgs(ctx, js, in.IngestStream())
	pool, err := pgxpool.New(ctx, db.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	open := func(table string) *pgsink.Sink {
		s, err := pgsink.Open(ctx, pgsink.Options{URL: db.URL, Table: table, Prefix: table, Logger: coretest.Quiet})
		if err != nil {
			b.Fatal(err)
		}
		return s
	}
	count := func(table string) (rows, applies int64) {
		if err := pool.QueryRow(ctx, `SELECT count(*), coalesce(sum(applies), 0) FROM `+table).Scan(&rows, &applies); err != nil {
			b.Fatal(err)
		}
		return
	}
	b.ResetTimer()

	// The edge with the transactional sink.
	pg := open("bench_edge")
	defer pg.Close()
	es := countedTx{Sink: pg, timed: &timedSink{inner: pg, lat: sim.NewLatency()}}
	c, err := edge.New(js, es, edge.Options{Region: "bench", Name: "edge-pg", BatchSize: *batchSize, ExpectedIDs: int(stored) / *partitions,
		Metrics: telemetry.NewMetrics(), Logger: coretest.Quiet})
	if err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	start := time.Now()
	go func() { errc <- c.Run(rctx) }()
	for deadline := time.Now().Add(10 * time.Minute); c.Stats().Done < int64(stored); {
		select {
		case err := <-errc:
			b.Fatalf("edge stopped: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("edge: %d of %d in 10 minutes", c.Stats().Done, stored)
		}
	}
	edgeRes := pgResult{runResult: runResult{name: "edge + postgres sink (exactly once)", events: int64(stored), elapsed: time.Since(start), batch: es.timed.lat.Quantiles()}, txns: es.timed.calls.Load()}
	cancel()
	<-errc
	if si, err := js.Stream(ctx, in.ClaimStream()); err == nil {
		edgeRes.bytesID = float64(si.CachedInfo().State.Bytes) / float64(unique)
	}
	edgeRes.rows, edgeRes.applies = count("bench_edge")

	// The user's consumer: dedupe table and effect in one transaction.
	us := open("bench_user") // makes the effects table
	us.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_user_processed (id text PRIMARY KEY)`); err != nil {
		b.Fatal(err)
	}
	uh := &timedSink{inner: &userDedupe{pool: pool, processed: "bench_user_processed", table: "bench_user"}}
	userRes := pgResult{runResult: consumeRaw(ctx, b, js, in.Names, uh, "user", int64(stored)), txns: uh.calls.Load()}
	userRes.name = "raw consumer + ON CONFLICT DO NOTHING (exactly once)"
	userRes.rows, userRes.applies = count("bench_user")
	var processedBytes int64
	pool.QueryRow(ctx, `SELECT pg_total_relation_size('bench_user_processed')`).Scan(&processedBytes)
	userRes.bytesID = float64(processedBytes) / float64(unique)

	// The raw consumer with the same sink, no dedupe: every re-send is a
	// second effect.
	rs := open("bench_raw")
	defer rs.Close()
	rh := &timedSink{inner: rs}
	rawRes := pgResult{runResult: consumeRaw(ctx, b, js, in.Names, rh, "rawpg", int64(stored)), txns: rh.calls.Load()}
	rawRes.name = "raw consumer + same sink (no dedupe)"
	rawRes.rows, rawRes.applies = count("bench_raw")
	b.StopTimer()

	for _, r := range []pgResult{edgeRes, userRes} {
		if r.rows != int64(unique) || r.applies != int64(unique) {
			b.Fatalf("%s: %d rows, %d applies for %d unique IDs", r.name, r.rows, r.applies, unique)
		}
	}
	if rawRes.rows != int64(unique) || rawRes.applies != int64(stored) {
		b.Fatalf("raw: %d rows, %d applies for %d unique IDs, %d events", rawRes.rows, rawRes.applies, unique, stored)
	}
	b.ReportMetric(rawRes.rate(), "raw-ev/s")
	b.ReportMetric(userRes.rate(), "user-ev/s")
	b.ReportMetric(edgeRes.rate(), "edge-ev/s")
	b.ReportMetric(edgeRes.rate()/rawRes.rate(), "edge/raw")
	b.ReportMetric(edgeRes.rate()/userRes.rate(), "edge/user")

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(w, "\nload: %d events (%d stored, %d unique, %d re-sent), 128-byte payloads, %d partitions, batch %d, PostgreSQL %s on loopback, GOMAXPROCS %d\n",
		*pgEvents, stored, unique, int(stored)-unique, *partitions, *batchSize, pgVersion(ctx, pool), runtime.GOMAXPROCS(0))
	fmt.Fprintln(w, "consumer\tevents/s\tvs raw\tvs user\ttransactions/s\tbatch p50\tbatch p99\teffects applied\tdedupe bytes / ID")
	for _, r := range []pgResult{edgeRes, userRes, rawRes} {
		bytes := "-"
		if r.bytesID > 0 {
			bytes = fmt.Sprintf("%.0f", r.bytesID)
		}
		fmt.Fprintf(w, "%s\t%.0f\t%.2f\t%.2f\t%.0f\t%s\t%s\t%d\t%s\n", r.name, r.rate(), r.rate()/rawRes.rate(), r.rate()/userRes.rate(),
			float64(r.txns)/r.elapsed.Seconds(), ms(r.batch.P50), ms(r.batch.P99), r.applies, bytes)
	}
	w.Flush()
}

func pgVersion(ctx context.Context, pool *pgxpool.Pool) string {
	var v string
	_ = pool.QueryRow(ctx, `SHOW server_version`).Scan(&v)
	return v
}
