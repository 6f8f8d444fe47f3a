// Command composedrill is the drill runner of the docker-compose deployment
// (docker-compose.multiregion.yml). It runs as a service of the project,
// with the Docker socket and the edges' data volumes mounted:
//
//  1. waits until every container with a healthcheck is healthy and every
//     region's streams are provisioned;
//  2. publishes a bounded load to every region (first sends, duplicates,
//     retries, cross-region re-sends and races), under its own ID prefix;
//  3. meanwhile kills an edge (SIGKILL), pauses another (cgroup freezer),
//     disconnects a region's WAN links from its network, and kills a core
//     node (SIGKILL), each restored after -hold; then loses a whole region
//     (its core and edges SIGKILLed at once: its standby's core declares it
//     lost by itself, the standby's failover edge takes its partitions over,
//     the region returns fenced and fails back, as `core region-failback
//     -supersede`); restarted containers keep their volumes, and the
//     drill's publishers fail over to a region's standby (-failover);
//  4. waits until every ID has an effect and every race is reported, then
//     prints lost IDs, duplicate effects per region (from the edges' ledger
//     files; a failover edge's count as the lost region's), races and
//     conflicts, and exits 1 unless every count is right.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/cli"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/deploy"
	"github.com/onceplane/onceplane/testbed/dockerapi"
	"github.com/onceplane/onceplane/testbed/tracestore"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

type config struct {
	regions     cli.RegionURLs
	credentials string
	ca          string
	ledgers     string
	project     string
	socket      string
	mix         workload.Mix
	partitions  int
	batch       int
	steps       []string
	hold        time.Duration
	ready       time.Duration
	settle      time.Duration
	killEdge    string
	pauseEdge   string
	cutRegion   string
	killCore    string
	// The region-loss step: loseRegion's standby is its first region in
	// failover, failoverEdge the standby's failover edge for it (a service
	// standing by, edge -failover-of); declare bounds the wait for the
	// declaration, failedOver is how long the region stays failed over.
	loseRegion, failoverEdge string
	failover                 cli.RegionURLs
	declare, failedOver      time.Duration
	quiet                    []string
	jaeger                   string
}

func main() {
	var (
		c                      config
		regions, steps, prefix string
	)
	flag.StringVar(&regions, "regions", "", "regions and their core URLs: 'region=url;region2=url'")
	flag.StringVar(&c.credentials, "credentials", "/secrets/credentials", "directory of <role>.password files (producer and admin are used)")
	flag.StringVar(&c.ca, "tls-ca", "", "PEM CA of the core nodes' certificates (empty: plain text)")
	flag.StringVar(&c.ledgers, "ledgers", "/ledgers", "directory of <region>/<edge>/ledger.jsonl files (the edges' volumes)")
	flag.StringVar(&c.project, "project", "", "Compose project (default: this container's own)")
	flag.StringVar(&c.socket, "docker-socket", "/var/run/docker.sock", "Docker Engine API socket")
	flag.IntVar(&c.partitions, "partitions", 8, "partitions of the deployment (to check every input consumer drained)")
	flag.IntVar(&c.batch, "batch", 500, "the edges' batch size (bounds the uncertain re-runs a disruption can cause)")
	flag.IntVar(&c.mix.Events, "events", 12000, "unique IDs in the load")
	flag.IntVar(&c.mix.Rate, "rate", 600, "first sends per second")
	flag.StringVar(&prefix, "prefix", "", "ID prefix (default drill-<start time>-)")
	flag.StringVar(&steps, "steps", "region-loss,kill-edge,pause-edge,disconnect,kill-core", "drill steps in order, spread over the load (each starts when the one before it is done)")
	flag.DurationVar(&c.hold, "hold", 4*time.Second, "how long each failure lasts")
	flag.DurationVar(&c.ready, "ready-timeout", 4*time.Minute, "how long to wait for a healthy cluster")
	flag.DurationVar(&c.settle, "settle-timeout", 4*time.Minute, "how long to wait for every effect and conflict after the load")
	flag.StringVar(&c.killEdge, "kill-edge", "edge-us-east-1", "service of the kill-edge step")
	flag.StringVar(&c.pauseEdge, "pause-edge", "edge-eu-west-2", "service of the pause-edge step")
	flag.StringVar(&c.cutRegion, "disconnect-region", "ap-south", "region whose WAN links (services wan-*) the disconnect step cuts from its network")
	flag.StringVar(&c.killCore, "kill-core", "core-eu-west", "service of the kill-core step")
	flag.StringVar(&c.loseRegion, "lose-region", "ap-south", "region the region-loss step kills whole (its core and edges, services core-<region> and edge-<region>-*); its standby is its first region in -failover")
	flag.StringVar(&c.failoverEdge, "failover-edge", "", "service of the standby's failover edge for -lose-region (default edge-<standby>-failover-<region>)")
	flag.DurationVar(&c.declare, "declare-timeout", 2*time.Minute, "how long the region-loss step waits for the standby's core to declare the region lost (its -failover-after and more)")
	flag.DurationVar(&c.failedOver, "failed-over", 10*time.Second, "how long the region-loss step leaves the region failed over before it starts it again")
	failover := flag.String("failover", "ap-south=us-east", "regions each region's publishers fail over to when it acks nothing, in order (its standby first): 'ap-south=us-east;...'")
	flag.StringVar(&c.jaeger, "jaeger", "", "Jaeger query URL (http://jaeger:16686): check that a trace follows an event across regions (empty: no check)")
	quiet := flag.String("quiet", "load", "comma-separated services stopped during the drill and started again after it (other loads would keep the inputs from ever draining)")
	flag.Parse()
	var err error
	if c.regions, err = cli.Regions(regions); err != nil || len(c.regions.Names) == 0 {
		fmt.Fprintln(os.Stderr, "composedrill: -regions is required: 'region=url;...'", err)
		os.Exit(2)
	}
	c.steps = strings.Split(steps, ",")
	if c.failover, err = cli.Regions(*failover); err != nil {
		fmt.Fprintln(os.Stderr, "composedrill: bad -failover:", err)
		os.Exit(2)
	}
	if c.failoverEdge == "" && len(c.failover.URLs[c.loseRegion]) > 0 {
		c.failoverEdge = fmt.Sprintf("edge-%s-failover-%s", c.failover.URLs[c.loseRegion][0], c.loseRegion)
	}
	if *quiet != "" {
		c.quiet = strings.Split(*quiet, ",")
	}
	c.mix.Regions = c.regions.Names
	c.mix.DupRate, c.mix.RetryRate, c.mix.CrossRate, c.mix.RaceRate = 0.2, 0.05, 0.1, 0.01
	c.mix.Prefix = prefix
	if c.mix.Prefix == "" {
		c.mix.Prefix = fmt.Sprintf("drill-%d-", time.Now().Unix())
	}
	ctx, stop := cli.SignalContext()
	defer stop()
	ok, err := run(ctx, c)
	if err != nil {
		fmt.Fprintln(os.Stderr, "composedrill:", err)
		os.Exit(1)
	}
	if !ok {
		os.Exit(1)
	}
}

func logf(start time.Time, format string, a ...any) {
	fmt.Printf("[%6.1fs] %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, a...))
}

func run(ctx context.Context, c config) (bool, error) {
	start := time.Now()
	dk := dockerapi.New(c.socket)
	if c.project == "" {
		host, _ := os.Hostname()
		self, err := dk.Inspect(ctx, host)
		if err != nil {
			return false, fmt.Errorf("find the compose project (or pass -project): %w", err)
		}
		c.project = self.Project()
	}
	// Other loads (the steady load service) stop for the drill, so that
	// "every input drained" can become true; they start again after it.
	if cs, err := dk.Project(ctx, c.project); err == nil {
		for _, ct := range cs {
			if slices.Contains(c.quiet, ct.Service()) && ct.State == "running" {
				if err := dk.Kill(ctx, ct.ID, "SIGTERM"); err != nil {
					return false, fmt.Errorf("quiet %s: %w", ct.Service(), err)
				}
				logf(start, "stopped %s for the drill", ct.Service())
				defer func() {
					if err := dk.Start(context.WithoutCancel(ctx), ct.ID); err != nil {
						logf(start, "could not start %s again: %v", ct.Service(), err)
					}
				}()
			}
		}
	}
	logf(start, "project %s: waiting for a healthy cluster", c.project)
	if err := waitHealthy(ctx, dk, c.project, c.ready); err != nil {
		return false, err
	}
	// The drill's producers trace as the load's do (OTEL_* variables: the
	// compose file points them at Jaeger), a service per region.
	tracing, err := telemetry.NewTracing(ctx, telemetry.TracingOptions{})
	if err != nil {
		return false, err
	}
	defer tracing.Shutdown(context.WithoutCancel(ctx))
	admin, prods := map[string]jetstream.JetStream{}, map[string]*producer.Producer{}
	for _, r := range c.regions.Names {
		url := strings.Join(c.regions.URLs[r], ",")
		js, err := dial(url, auth.Admin, c.credentials, c.ca)
		if err != nil {
			return false, fmt.Errorf("admin %s: %w", r, err)
		}
		admin[r] = js
		pjs, err := dial(url, auth.Producer, c.credentials, c.ca)
		if err != nil {
			return false, fmt.Errorf("producer %s: %w", r, err)
		}
		tp, err := tracing.Provider(ctx, "onceplane-producer-"+r)
		if err != nil {
			return false, err
		}
		prods[r] = producer.NewWith(pjs, r, producer.Options{TracerProvider: tp})
	}
	if err := waitProvisioned(ctx, admin, c.ready); err != nil {
		return false, err
	}
	logf(start, "cluster healthy and provisioned")

	sends, kinds := c.mix.Schedule()
	loadFor := sends[len(sends)-1].At
	logf(start, "load: %d sends over %.0fs (%v), prefix %s", len(sends), loadFor.Seconds(), kinds, c.mix.Prefix)
	var published atomic.Int64
	// A failed step stops the load; the load finishing does not stop a step
	// mid-hold (it undoes its failure first).
	lctx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	loadErr, stepErr := make(chan error, 1), make(chan error, 1)
	go func() {
		loadErr <- workload.PublishPaced(lctx, sends, workload.Fallbacks(prods, c.failover.URLs),
			func(n int) { published.Add(int64(n)) })
	}()
	var loss *regionLoss
	if slices.Contains(c.steps, "region-loss") {
		loss = &regionLoss{Region: c.loseRegion}
		if to := c.failover.URLs[c.loseRegion]; len(to) > 0 {
			loss.Standby = to[0]
		}
	}
	go func() {
		err := drill(ctx, dk, c, start, loadFor, admin, loss)
		if err != nil {
			stopLoad()
		}
		stepErr <- err
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	var lerr error
load:
	for {
		select {
		case lerr = <-loadErr:
			break load
		case <-tick.C:
			logf(start, "published %d/%d", published.Load(), len(sends))
		}
	}
	if err := <-stepErr; err != nil {
		return false, err
	}
	if lerr != nil {
		return false, fmt.Errorf("load: %w", lerr)
	}
	logf(start, "load done; waiting for every ID's effect and every conflict")

	ids := make([]string, c.mix.Events)
	for i := range ids {
		ids[i] = c.mix.ID(i)
	}
	// The conflicts streams also hold other loads' conflicts (the load
	// service): count this run's IDs only.
	mine := map[string]bool{}
	for _, id := range ids {
		mine[event.HashID(id).Hex()] = true
	}
	// Settled: every region's input consumers drained (nothing pending,
	// nothing awaiting an ack, so no redelivery can still come), the
	// ledgers unchanged for a few seconds, and the account exact. Claims
	// replicate once the sources notice healed links (up to minutes after a
	// disconnect), so an inexact account is polled until the deadline.
	deadline := time.Now().Add(c.settle)
	// Re-runs: each step disrupts one region (an edge killed or paused, a
	// core killed; a disconnect moves no ownership), and per disruption each
	// of its partitions has at most one batch not known done: its last
	// claimed one (the next claim record carries the previous batch's done
	// mark).
	bound := c.batch * c.partitions * disruptions(c.steps)
	var (
		runs             map[string]*verify.Runs
		effects          map[string]map[string]int
		ra               runsAccount
		acct             verify.Account
		lastLines        = -1
		stableSince      time.Time
		drained, settled bool
	)
	for {
		var lines int
		runs, lines = readLedgers(c.ledgers, c.mix.Prefix)
		effects = map[string]map[string]int{}
		for r, rs := range runs {
			effects[r] = rs.Effects()
		}
		if lines != lastLines {
			lastLines, stableSince = lines, time.Now()
		}
		drained = allDrained(ctx, admin, c.partitions)
		reported := conflicts(ctx, admin, mine)
		acct = verify.Tally(ids, effects, reported)
		if acct.Spurious > 0 {
			// A conflict of an ID handled in one region only: a claim whose
			// run a kill cut short (the region loss's superseded claims
			// among them), if two regions' claim logs hold it.
			if claimed := claims(ctx, admin, mine); claimed != nil {
				acct = verify.TallyEvidence(ids, verify.Evidence{Effects: effects, Claimed: claimed, Conflicts: reported})
			}
		}
		ra = accountRuns(runs, ids, bound)
		settled = drained && time.Since(stableSince) >= 3*time.Second
		if (settled && acct.OK() && ra.err == nil) || time.Now().After(deadline) {
			break
		}
		if err := poll.Sleep(ctx, time.Second); err != nil {
			return false, err
		}
	}
	fmt.Printf("\n== compose drill: %s, %d regions ==\n", c.project, len(c.regions.Names))
	fmt.Printf("sent                %d (%v), %d unique IDs\n", len(sends), kinds, len(ids))
	fmt.Printf("lost                %d\n", acct.Lost)
	for _, r := range c.regions.Names {
		ra := ra.byRegion[r]
		fmt.Printf("effects in %-8s %d, duplicate effects %d (handler runs %d: %d extra, %d flagged uncertain)\n", r, len(effects[r]), acct.DupEffects[r], ra.Runs, ra.Extra, ra.Flagged)
	}
	fmt.Printf("uncertain re-runs   %d (batches in flight when an edge was killed or paused; the handler is told); bound %d (batch %d x %d partitions x %d disruptions)\n",
		ra.flagged, bound, c.batch, c.partitions, disruptions(c.steps))
	if ra.torn > 0 {
		fmt.Printf("torn ledger lines   %d (a write cut by SIGKILL; the batch was re-run as uncertain)\n", ra.torn)
	}
	if ra.err != nil {
		fmt.Printf("handler runs        %v\n", ra.err)
	}
	fmt.Printf("true races          %d (IDs with effects in two regions)\n", acct.TrueRaces)
	fmt.Printf("conflicts reported  %d (missed %d, spurious %d", acct.Reported, acct.Missed, acct.Spurious)
	if acct.CutShort > 0 {
		fmt.Printf("; %d of IDs claimed in two regions but handled in one: a claim whose run the kill cut short", acct.CutShort)
	}
	fmt.Println(")")
	if len(acct.MissedIDs)+len(acct.SpuriousIDs) > 0 {
		fmt.Printf("                    e.g. missed %v, spurious %v\n", acct.MissedIDs, acct.SpuriousIDs)
	}
	loss.print()
	fmt.Printf("elapsed             %.0fs\n", time.Since(start).Seconds())
	if !settled {
		fmt.Printf("not settled after %v (inputs drained: %v); the counts above may still move\n", c.settle, drained)
	}
	ok := acct.OK() && ra.err == nil && settled
	if c.jaeger != "" {
		_ = tracing.Shutdown(ctx) // flush the drill's own spans
		var line string
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; {
			if line, err = crossRegionTrace(ctx, tracestore.Query{URL: c.jaeger}, c.regions.Names); err == nil || time.Now().After(deadline) {
				break
			}
			if poll.Sleep(ctx, time.Second) != nil {
				break
			}
		}
		if err != nil {
			fmt.Printf("traces              %v\n", err)
			ok = false
		} else {
			fmt.Printf("traces              %s\n", line)
		}
	}
	if ok {
		fmt.Println("result              OK")
	} else {
		fmt.Println("result              FAILED")
	}
	return ok, nil
}

// crossRegionTrace asks Jaeger for a trace that follows one event across
// regions: published by one region's producer (the steady load), its claim
// merged by another region's edge with the replication lag.
func crossRegionTrace(ctx context.Context, q tracestore.Query, regions []string) (string, error) {
	services, err := q.Services(ctx)
	if err != nil {
		return "", fmt.Errorf("jaeger: %w", err)
	}
	for _, r := range regions {
		for _, role := range []string{"producer", "edge"} {
			if svc := "onceplane-" + role + "-" + r; !slices.Contains(services, svc) {
				return "", fmt.Errorf("jaeger has no spans of %s (services %v)", svc, services)
			}
		}
	}
	for _, r := range regions {
		traces, err := q.Traces(ctx, "onceplane-producer-"+r, 200)
		if err != nil {
			return "", fmt.Errorf("jaeger: %w", err)
		}
		for _, t := range traces {
			origin, elsewhere, ok := t.CrossRegion()
			if !ok {
				continue
			}
			if m, ok := t.MergedElsewhere(origin); ok {
				lag, _ := m.Tag("onceplane.replication_lag_ms")
				return fmt.Sprintf("trace %s: published in %s, seen by %v (%s merged its claim, replication lag %v ms); %d services in Jaeger", t.TraceID, origin, elsewhere, t.Service(m), lag, len(services)), nil
			}
		}
	}
	return "", errors.New("jaeger holds no trace of an event published in one region and merged in another")
}

// disruptions counts the ownership changes the drill steps can cause: a
// failure and its undoing each.
func disruptions(steps []string) int { return 2 * len(steps) }

// runsAccount is the drill's account of handler runs, per region and in all.
type runsAccount struct {
	byRegion      map[string]verify.RunAccount
	flagged, torn int
	err           error
}

// accountRuns checks each region's runs of ids: an ID run again there
// without the uncertain flag is a duplicate effect (Tally counts it too),
// and the flagged re-runs of every region together stay within bound. A
// lost ID is Tally's (it may have run in another region).
func accountRuns(runs map[string]*verify.Runs, ids []string, bound int) runsAccount {
	ra := runsAccount{byRegion: map[string]verify.RunAccount{}}
	var errs []error
	regions := slices.Sorted(maps.Keys(runs))
	for _, r := range regions {
		a := runs[r].Account(ids)
		a.Lost, a.Missing = 0, nil // not every ID is handled in every region
		ra.byRegion[r] = a
		ra.flagged += a.Flagged
		ra.torn += a.Torn
		if a.Unflagged > 0 {
			errs = append(errs, fmt.Errorf("%s: %d IDs handled again without the uncertain flag (e.g. %s)", r, a.Unflagged, strings.Join(a.Examples, "; ")))
		}
	}
	if ra.flagged > bound {
		errs = append(errs, fmt.Errorf("%d flagged re-runs exceed the in-flight bound %d", ra.flagged, bound))
	}
	ra.err = errors.Join(errs...)
	return ra
}

// allDrained reports whether every region's input consumers are drained.
func allDrained(ctx context.Context, admin map[string]jetstream.JetStream, partitions int) bool {
	for r, js := range admin {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := verify.Drained(dctx, js, streams.Names{Region: r}, partitions, nil)
		cancel()
		if err != nil || !ok {
			return false
		}
	}
	return true
}

// drill runs the steps, spread evenly over the load.
func drill(ctx context.Context, dk *dockerapi.Client, c config, start time.Time, loadFor time.Duration, admin map[string]jetstream.JetStream, loss *regionLoss) error {
	t0 := time.Now()
	for i, step := range c.steps {
		at := loadFor * time.Duration(i+1) / time.Duration(len(c.steps)+1)
		if err := poll.Sleep(ctx, at-time.Since(t0)); err != nil {
			return err
		}
		if step == "region-loss" {
			if err := loseRegion(ctx, dk, c, start, admin, loss); err != nil {
				return fmt.Errorf("step %s: %w", step, err)
			}
			continue
		}
		if err := runStep(ctx, dk, c, start, step); err != nil {
			return fmt.Errorf("step %s: %w", step, err)
		}
	}
	return nil
}

func runStep(ctx context.Context, dk *dockerapi.Client, c config, start time.Time, step string) error {
	find := func(service string) (dockerapi.Container, error) {
		cs, err := dk.Project(ctx, c.project)
		if err != nil {
			return dockerapi.Container{}, err
		}
		for _, ct := range cs {
			if ct.Service() == service {
				return ct, nil
			}
		}
		return dockerapi.Container{}, fmt.Errorf("no container of service %s in project %s", service, c.project)
	}
	// Each failure is undone in a defer, on a context that outlives ctx:
	// a drill that is interrupted or fails mid-hold leaves nothing killed,
	// paused or disconnected behind.
	restore := context.WithoutCancel(ctx)
	undo := func(what string, f func() error) {
		if err := f(); err != nil {
			logf(start, "drill: could not undo %s: %v", what, err)
			return
		}
		logf(start, "drill: %s", what)
	}
	kill := func(service string) error {
		ct, err := find(service)
		if err != nil {
			return err
		}
		if err := dk.Kill(ctx, ct.ID, "SIGKILL"); err != nil {
			return err
		}
		logf(start, "drill: SIGKILL %s", service)
		defer undo("started "+service+" again (same volume)", func() error { return dk.Start(restore, ct.ID) })
		return poll.Sleep(ctx, c.hold)
	}
	switch step {
	case "kill-edge":
		return kill(c.killEdge)
	case "kill-core":
		return kill(c.killCore)
	case "pause-edge":
		ct, err := find(c.pauseEdge)
		if err != nil {
			return err
		}
		// The cgroup freezer (docker pause) is missing on some hosts (nested
		// containers, cgroup v2 without it): SIGSTOP stops the process the same way.
		resume, how := dk.Unpause, "paused (cgroup freezer)"
		if err := dk.Pause(ctx, ct.ID); err != nil {
			resume = func(ctx context.Context, id string) error { return dk.Kill(ctx, id, "SIGCONT") }
			how = "stopped (SIGSTOP; docker pause failed: " + err.Error() + ")"
			if err := dk.Kill(ctx, ct.ID, "SIGSTOP"); err != nil {
				return err
			}
		}
		logf(start, "drill: %s %s", how, c.pauseEdge)
		defer undo("resumed "+c.pauseEdge, func() error { return resume(restore, ct.ID) })
		return poll.Sleep(ctx, c.hold)
	case "disconnect":
		cs, err := dk.Project(ctx, c.project)
		if err != nil {
			return err
		}
		network := c.project + "_" + c.cutRegion
		var cut []dockerapi.Container
		defer func() {
			if len(cut) == 0 {
				return
			}
			undo(fmt.Sprintf("reconnected %d WAN links to %s", len(cut), network), func() error {
				var errs []error
				for _, ct := range cut {
					errs = append(errs, dk.Connect(restore, network, ct.ID, ct.Service()))
				}
				return errors.Join(errs...)
			})
		}()
		for _, ct := range cs {
			if s := ct.Service(); strings.HasPrefix(s, "wan-") && strings.Contains(s, c.cutRegion) {
				if err := dk.Disconnect(ctx, network, ct.ID); err != nil {
					return err
				}
				cut = append(cut, ct)
			}
		}
		if len(cut) == 0 {
			return fmt.Errorf("no wan-* service of region %s", c.cutRegion)
		}
		logf(start, "drill: disconnected %d WAN links from network %s", len(cut), network)
		return poll.Sleep(ctx, c.hold)
	}
	return fmt.Errorf("unknown step (want kill-edge, pause-edge, disconnect, kill-core, region-loss)")
}

// waitHealthy waits until every running container of the project with a
// healthcheck reports healthy.
func waitHealthy(ctx context.Context, dk *dockerapi.Client, project string, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		cs, err := dk.Project(ctx, project)
		var waiting []string
		if err == nil {
			for _, ct := range cs {
				full, ierr := dk.Inspect(ctx, ct.ID)
				if ierr != nil {
					err = ierr
					break
				}
				if full.Health != "" && (full.State != "running" || full.Health != "healthy") {
					waiting = append(waiting, ct.Service()+" "+full.State+"/"+full.Health)
				}
			}
		}
		if err == nil && len(waiting) == 0 && len(cs) > 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster not healthy after %v: %v %v", within, waiting, err)
		}
		if err := poll.Sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// waitProvisioned waits until every region's xclaims stream (the last one
// a core provisions) exists.
func waitProvisioned(ctx context.Context, admin map[string]jetstream.JetStream, within time.Duration) error {
	deadline := time.Now().Add(within)
	for {
		missing := []string{}
		for r, js := range admin {
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			_, err := js.Stream(sctx, streams.Names{Region: r}.XClaimStream())
			cancel()
			if err != nil {
				missing = append(missing, r)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("streams of %v not provisioned after %v", missing, within)
		}
		if err := poll.Sleep(ctx, time.Second); err != nil {
			return err
		}
	}
}

// dial connects to url as role, with the role's password from the
// credentials directory.
func dial(url string, role auth.Role, credentials, ca string) (jetstream.JetStream, error) {
	f := cli.NATSFlags{User: string(role), PasswordFile: filepath.Join(credentials, string(role)+".password"), CA: ca}
	opts, err := f.Options("onceplane-composedrill")
	if err != nil {
		return nil, err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, err
	}
	return jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
}

// readLedgers counts, per region, the handler runs of IDs with prefix in
// the ledgers under dir (<region>/<edge>/ledger.jsonl), line by line; a
// line cut short by SIGKILL is skipped and counted (RunAccount.Torn). It
// also returns the number of lines read, to tell when the ledgers are still.
func readLedgers(dir, prefix string) (runs map[string]*verify.Runs, lines int) {
	runs = map[string]*verify.Runs{}
	files, _ := filepath.Glob(filepath.Join(dir, "*", "*", "ledger.jsonl"))
	slices.Sort(files)
	for _, f := range files {
		region := filepath.Base(filepath.Dir(filepath.Dir(f)))
		if runs[region] == nil {
			runs[region] = verify.NewRuns()
		}
		_ = runs[region].AddLedger(f, func(id string) bool {
			if !strings.HasPrefix(id, prefix) {
				return false
			}
			lines++
			return true
		})
	}
	return runs, lines
}

// claims returns, per region, the ID hashes of mine its claim log holds
// (nil when a region cannot be read: the caller polls again).
func claims(ctx context.Context, admin map[string]jetstream.JetStream, mine map[string]bool) map[string]map[string]bool {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	out := map[string]map[string]bool{}
	for r, js := range admin {
		l, err := streams.ReadLayout(ctx, js, streams.Names{Region: r})
		if err != nil {
			return nil
		}
		n := streams.Names{Region: r, Shards: l.Shards}
		out[r] = map[string]bool{}
		for _, name := range n.EveryShard(n.ClaimShard) {
			msgs, err := verify.ReadStream(ctx, js, name)
			if err != nil {
				return nil
			}
			for _, m := range msgs {
				rec, err := dedupe.Decode(m.Data)
				if err != nil || rec.Kind != dedupe.KindClaim {
					continue
				}
				for _, h := range rec.IDs {
					if hx := h.Hex(); mine[hx] {
						out[r][hx] = true
					}
				}
			}
		}
	}
	return out
}

// conflicts returns the ID hashes of mine in every region's conflicts
// stream (nil when a region cannot be read: the caller polls again).
func conflicts(ctx context.Context, admin map[string]jetstream.JetStream, mine map[string]bool) map[string]bool {
	out := map[string]bool{}
	for r, js := range admin {
		cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		recs, err := deploy.ReadConflicts(cctx, js, streams.Names{Region: r})
		cancel()
		if err != nil {
			return nil
		}
		for _, rec := range recs {
			if mine[rec.Hash] {
				out[rec.Hash] = true
			}
		}
	}
	return out
}
