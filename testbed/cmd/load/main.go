// Command load is onceplane's load generator: it publishes IDs to every
// region's ingest as a producer, first sends plus the re-sends real
// producers make (duplicates, retries, cross-region re-sends, races).
//
//	load -regions 'us-east=nats://core-us-east:4222;eu-west=nats://core-eu-west:4222' \
//	     -nats-user producer -nats-password-file /secrets/credentials/producer.password -tls-ca /secrets/tls/ca.pem
//
// It runs rounds of -events IDs at -rate, with a fresh ID prefix each round,
// until -rounds are done (0: until stopped).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/workload"
)

func main() {
	var (
		conn        cli.NATSFlags
		regions     string
		m           workload.Mix
		rounds      int
		prefix      string
		logLevel    string
		tenant      string
		traceSample float64
		failover    string
	)
	flag.StringVar(&regions, "regions", "local=nats://127.0.0.1:4222", "regions and their core URLs: 'region=url,url;region2=url'")
	conn.Register(flag.CommandLine, "producer")
	flag.StringVar(&failover, "failover", "", "regions each region's publisher fails over to when it acks nothing, in order (its standby first): 'ap-south=us-east;eu-west=us-east,ap-south' (producer.Failover does this per event)")
	flag.IntVar(&m.Events, "events", 10000, "unique IDs per round")
	flag.IntVar(&m.Rate, "rate", 500, "first sends per second across the regions")
	flag.Float64Var(&m.DupRate, "dup", 0.2, "share of IDs re-sent to the same region within 2 s")
	flag.Float64Var(&m.RetryRate, "retry", 0.05, "share of IDs re-sent at once (a lost ack)")
	flag.Float64Var(&m.CrossRate, "cross", 0.1, "share of IDs re-sent to another region 1.5 s later")
	flag.Float64Var(&m.RaceRate, "race", 0.005, "share of IDs sent to two regions at once (conflicts in asynchronous mode)")
	flag.IntVar(&rounds, "rounds", 0, "rounds to run (0: until stopped)")
	flag.StringVar(&prefix, "prefix", "", "ID prefix (default load-<start time>-); round N adds rN-")
	flag.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	flag.Float64Var(&traceSample, "trace-sample", 0, "share of events traced from their publish (0: the OTEL_TRACES_SAMPLER variables decide); OTEL_EXPORTER_OTLP_ENDPOINT says where traces go")
	flag.StringVar(&tenant, "tenant", "", "tenant to publish as (default: the -nats-user's, producer-<tenant>, else \"default\")")
	flag.Parse()
	if tenant == "" {
		tenant = event.DefaultTenant
		if u, err := auth.ParseUser(conn.User); err == nil && u.Role == auth.Producer {
			tenant = u.Tenant()
		}
	}
	log := cli.Logger(logLevel)
	urls, err := cli.Regions(regions)
	if err != nil {
		cli.Fatal(log, "bad -regions", err)
	}
	to, err := cli.Regions(failover)
	if err != nil {
		cli.Fatal(log, "bad -failover", err)
	}
	for r, fs := range to.URLs {
		for _, x := range append([]string{r}, fs...) {
			if _, ok := urls.URLs[x]; !ok {
				cli.Fatal(log, "bad -failover", fmt.Errorf("%s is not among -regions", x))
			}
		}
	}
	opts, err := conn.Options("onceplane-load")
	if err != nil {
		cli.Fatal(log, "connect", err)
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	// Each region's producer is a service of its own in the traces
	// (onceplane-producer-<region>), as the edges are (OTEL_SERVICE_NAME).
	tracing, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{Sample: traceSample})
	if err != nil {
		cli.Fatal(log, "tracing", err)
	}
	producers := map[string]*producer.Producer{}
	for _, r := range urls.Names {
		nc, err := connect(ctx, strings.Join(urls.URLs[r], ","), opts)
		if err != nil {
			cli.Fatal(log, "connect to "+r, err)
		}
		defer nc.Close()
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
		if err != nil {
			cli.Fatal(log, "jetstream", err)
		}
		tp, err := tracing.Provider(ctx, "onceplane-producer-"+r)
		if err != nil {
			cli.Fatal(log, "tracing", err)
		}
		producers[r] = producer.NewWith(js, r, producer.Options{Tenant: tenant, TracerProvider: tp})
		m.Regions = append(m.Regions, r)
	}
	if prefix == "" {
		prefix = fmt.Sprintf("load-%d-", time.Now().Unix())
	}
	var acked atomic.Int64
	go func() {
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		last := int64(0)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n := acked.Load()
				log.Info("load", "published", n, "per_second", (n-last)/5)
				last = n
			}
		}
	}()
	for round := 1; rounds == 0 || round <= rounds; round++ {
		m.Prefix, m.Seed = fmt.Sprintf("%sr%d-", prefix, round), uint64(round)
		sends, kinds := m.Schedule()
		log.Info("round", "n", round, "prefix", m.Prefix, "sends", len(sends), "kinds", kinds)
		err := workload.PublishPaced(ctx, sends, workload.Fallbacks(producers, to.URLs), func(n int) { acked.Add(int64(n)) })
		if ctx.Err() != nil {
			break
		}
		if err != nil {
			cli.Fatal(log, "publish", err)
		}
	}
	log.Info("done", "published", acked.Load())
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	if err := tracing.Shutdown(sctx); err != nil {
		log.Warn("flushing traces", "err", err)
	}
	cancel()
	os.Exit(0)
}

// connect dials url until it answers (the core may still be starting) or ctx ends.
func connect(ctx context.Context, url string, opts []nats.Option) (*nats.Conn, error) {
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		if poll.Sleep(ctx, time.Second) != nil {
			return nil, fmt.Errorf("%s: %w", url, err)
		}
	}
}
