package sim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/regionwatch"
	"github.com/onceplane/onceplane/testbed/deploy"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/topology"
)

// RegionLoss is what the region-loss drill measured. Times are since the
// start of the load, zero for a step not reached.
type RegionLoss struct {
	Region, Standby string
	// Killed: every core node and edge of Region gone at once. Detected:
	// Standby and a majority of the other regions have heard nothing from
	// Region for 2 s (regionwatch, core -failover-after). Declared: Standby's copy of Region's claim log promoted.
	// Consuming: Standby's failover edges own all of Region's partitions.
	// Returned: Region's core nodes back, its claim log fenced. FailedBack:
	// Region's log is its own again, its edges resume.
	Killed, Detected, Declared, Consuming, Returned, FailedBack time.Duration
	// Superseded counts Region's claims that never reached Standby (its
	// last before the loss): the failover handled their events again.
	Superseded int
	// Repeated counts IDs handled more than once in Region, every repeat
	// flagged uncertain; Flagged the runs flagged there.
	Repeated, Flagged int
	// Err is why the drill stopped short ("" when it ran to the end).
	Err string
	// claimed are the hashes of the IDs in Region's superseded claims.
	claimed map[string]bool
}

// silentFor is how long the standby and a majority of the other regions
// must hear nothing from a region before it is declared lost (core
// -failover-after).
const silentFor = 2 * time.Second

// loseRegion runs the region-loss drill on d: l.Region's core nodes and
// edges killed at once, detection (its standby and a majority of the other
// regions silent: regionwatch, as core -failover-after), the
// declaration (streams.Promote, as `core region-failover`), the standby's
// failover edges, the region back and fenced after failedOver, and the
// failback (streams.FailBack superseding what never reached the standby,
// as `core region-failback -supersede`). It fills l's times, measured from
// start, and marks each step (markAt: the time it happened).
func loseRegion(ctx context.Context, d *deploy.Deployment, l *RegionLoss, failedOver time.Duration, start time.Time, markAt func(time.Duration, string)) error {
	mark := func(what string) { markAt(time.Since(start), what) }
	since := func() time.Duration { return time.Since(start) }
	r, s := l.Region, l.Standby
	nc, admin, err := d.Connect(s)
	if err != nil {
		return err
	}
	defer nc.Close()
	rn := d.Names(r)

	// The region is gone from the moment its links and connections are cut
	// (KillRegion's first steps); its in-process nodes and edges finish
	// shutting down meanwhile, which detection does not wait for.
	l.Killed = since()
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		d.KillRegion(r)
	}()
	defer func() { <-killed }()
	mark(fmt.Sprintf("killed every core node and edge of %s at once", r))

	// Detection and declaration: what a standby's core does with
	// -failover-after (regionwatch): the standby and a majority of the
	// other regions heard nothing from the region for silentFor.
	var others []string
	for _, q := range d.Topology().RegionNames() {
		if q != r && q != s {
			others = append(others, q)
		}
	}
	if _, err := regionwatch.Watch(ctx, admin, regionwatch.Options{Region: r, Standby: s, Others: others, Strict: d.Topology().Mode == topology.Strict, After: silentFor, Every: 100 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler), OnLost: func(vs []regionwatch.View) {
			l.Detected = since()
			mark(fmt.Sprintf("detected: %s (the standby and a majority silent for %s)", regionwatch.Describe(vs), silentFor))
		}}); err != nil {
		return fmt.Errorf("declare: %w", err)
	}
	l.Declared = since()
	mark(fmt.Sprintf("declared %s lost: %s continues its claim log", r, s))

	if err := d.StartFailover(s, r); err != nil {
		return fmt.Errorf("failover edges: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err = d.WaitReady(wctx)
	cancel()
	if err != nil {
		return fmt.Errorf("failover edges: %w", err)
	}
	l.Consuming = since()
	mark(fmt.Sprintf("%s's failover edges own %s's partitions", s, r))
	if err := poll.Sleep(ctx, failedOver); err != nil {
		return err
	}

	// The region returns: its core nodes provision as the binary does at
	// start, find the failover and fence the region's claim log.
	<-killed
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	err = d.ReturnRegion(pctx, r)
	cancel()
	if err != nil {
		return fmt.Errorf("restart %s: %w", r, err)
	}
	l.Returned = since()
	mark(fmt.Sprintf("%s's core nodes back, its claim log fenced", r))
	top := d.Topology()
	reg, _ := top.Region(r)
	for _, e := range reg.Edges {
		if err := d.StartEdge(r, e.Name); err != nil {
			return fmt.Errorf("restart %s: %w", e.Name, err)
		}
	}
	d.StopFailover(r)
	mark(fmt.Sprintf("%s's failover edges for %s stopped", s, r))
	if err := attempts(ctx, mark, 15*time.Second, func(actx context.Context) error {
		_, err := streams.FailBack(actx, admin, s, rn, streams.FailBackOptions{Supersede: true, Carry: claimlog.CarrySuperseded})
		return err
	}); err != nil {
		return fmt.Errorf("fail back: %w", err)
	}
	// What was superseded, from where it is kept: an attempt cut short
	// and run again counts only what it found left. Their IDs were claimed
	// in the region (their runs may have been cut short by the kill).
	var kept []verify.Msg
	if err := attempts(ctx, mark, 15*time.Second, func(actx context.Context) (err error) {
		kept, err = verify.ReadStream(actx, admin, rn.SupersededStream())
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return nil // nothing superseded
		}
		return err
	}); err != nil {
		return fmt.Errorf("superseded claims: %w", err)
	}
	l.Superseded = len(kept)
	l.claimed = map[string]bool{}
	for _, m := range kept {
		if rec, err := dedupe.Decode(m.Data); err == nil && rec.Kind == dedupe.KindClaim {
			for _, h := range rec.IDs {
				l.claimed[h.Hex()] = true
			}
		}
	}
	l.FailedBack = since()
	mark(fmt.Sprintf("failed back %s (%d of its claims never reached %s: superseded)", r, l.Superseded, s))
	return nil
}

// attempts runs an idempotent step, each attempt bounded to each (a reply
// lost while a region goes away, or while the meta group elects a leader
// after it went, would otherwise hold it to ctx's end), until it succeeds
// or ctx ends. A failed attempt is marked with its error.
func attempts(ctx context.Context, mark func(string), each time.Duration, step func(context.Context) error) error {
	return poll.Retry(ctx, poll.Attempts{Each: each, Wait: 250 * time.Millisecond, Failed: func(err error) { mark("attempt failed, again: " + err.Error()) }}, step)
}

// spans records the drill's steps as one trace, times from start: a root
// span onceplane.region_loss (the region and its standby) from the kill to
// the failback, and a child per step reached: detect, declare, takeover
// (the failover edges' own takeovers are spans of the edges' service),
// failed_over, failback.
func (l *RegionLoss) spans(tr trace.Tracer, start time.Time) {
	at := func(d time.Duration) time.Time { return start.Add(d) }
	steps := []struct {
		name     string
		from, to time.Duration
	}{
		{"detect", l.Killed, l.Detected}, {"declare", l.Detected, l.Declared}, {"takeover", l.Declared, l.Consuming},
		{"failed_over", l.Consuming, l.Returned}, {"failback", l.Returned, l.FailedBack},
	}
	end := l.Killed
	for _, s := range steps {
		if s.to > end {
			end = s.to
		}
	}
	ctx, root := tr.Start(context.Background(), "onceplane.region_loss", trace.WithTimestamp(at(l.Killed)), trace.WithAttributes(
		attribute.String("onceplane.region", l.Region), attribute.String("onceplane.standby", l.Standby),
		attribute.Int("onceplane.superseded", l.Superseded)))
	for _, s := range steps {
		if s.to == 0 {
			break // not reached
		}
		_, sp := tr.Start(ctx, "onceplane.region_loss."+s.name, trace.WithTimestamp(at(s.from)))
		sp.End(trace.WithTimestamp(at(s.to)))
	}
	if l.Err != "" {
		root.SetStatus(codes.Error, l.Err)
	}
	root.End(trace.WithTimestamp(at(end)))
}

// print writes the drill's account (nothing without the drill).
func (l *RegionLoss) print(w io.Writer) {
	if l == nil {
		return
	}
	step := func(d time.Duration) string {
		if d == 0 {
			return "not reached"
		}
		return fmt.Sprintf("%.1fs", d.Seconds())
	}
	after := func(a, b time.Duration) string {
		if a == 0 || b == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2fs", (b - a).Seconds())
	}
	fmt.Fprintf(w, "region loss: %s killed at %s, standby %s\n", l.Region, step(l.Killed), l.Standby)
	fmt.Fprintf(w, "  detection %s (the standby and a majority silent %s), declaration %s, takeover %s (failover edges owning every partition after the declaration)\n",
		after(l.Killed, l.Detected), silentFor, after(l.Detected, l.Declared), after(l.Declared, l.Consuming))
	fmt.Fprintf(w, "  back and fenced at %s, failed back at %s: %d claims never reached %s (superseded)\n", step(l.Returned), step(l.FailedBack), l.Superseded, l.Standby)
	fmt.Fprintf(w, "  %s: %d IDs handled more than once, every repeat flagged uncertain (%d runs flagged)\n", l.Region, l.Repeated, l.Flagged)
	if l.Err != "" {
		fmt.Fprintf(w, "  drill stopped short: %s\n", l.Err)
	}
}
