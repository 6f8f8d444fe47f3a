package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/dockerapi"
	"github.com/onceplane/onceplane/testbed/verify"
)

// regionLoss is the region-loss step's account. Times are since the
// drill's start, zero for a step not reached.
type regionLoss struct {
	Region, Standby string
	// Killed: Region's core node and edges SIGKILLed at once. Declared:
	// Standby's core promoted its copy of Region's claim log (core
	// -failover-after: Standby and a majority of the other regions heard
	// nothing from Region for that long). Consuming: Standby's failover
	// edge owns every partition (its /readyz). Returned: Region's core and
	// edges running again, its claim log fenced. FailedBack: Region's log
	// its own again (core region-failback -supersede).
	Killed, Declared, Consuming, Returned, FailedBack time.Duration
	// Superseded counts Region's claim records that never reached Standby
	// (kept in its superseded stream, their claims carried over).
	Superseded int
}

// print writes the step's account.
func (l *regionLoss) print() {
	if l == nil || l.Killed == 0 {
		return
	}
	after := func(a, b time.Duration) string {
		if a == 0 || b == 0 {
			return "not reached"
		}
		return fmt.Sprintf("%.1fs", (b - a).Seconds())
	}
	fmt.Printf("region loss         %s killed at %.1fs; declared lost by %s %s later (detection: core -failover-after), its failover edge owned every partition %s after that (takeover), back and fenced %s later, failed back %s after that; %d claim records superseded\n",
		l.Region, l.Killed.Seconds(), l.Standby, after(l.Killed, l.Declared), after(l.Declared, l.Consuming), after(l.Consuming, l.Returned), after(l.Returned, l.FailedBack), l.Superseded)
}

// loseRegion runs the region-loss step: every core node and edge of
// c.loseRegion SIGKILLed at once; its standby's core declares it lost by
// itself (regionwatch) and the standby's failover edge, standing by until
// then, takes its partitions over from the mirrored ingest; after
// c.failedOver the region's containers start again (their volumes kept:
// the core fences the region's claim log, the edges own nothing), the
// failover edge stops, and the region fails back, superseding the claims
// its standby never mirrored (as `core region-failback -supersede`). The
// failover edge is started again, standing by for the next loss.
func loseRegion(ctx context.Context, dk *dockerapi.Client, c config, start time.Time, admin map[string]jetstream.JetStream, l *regionLoss) error {
	r, s := l.Region, l.Standby
	js := admin[s]
	if js == nil {
		return fmt.Errorf("no standby region for %s (-failover %s=<standby>)", r, r)
	}
	since := func() time.Duration { return time.Since(start) }
	cs, err := dk.Project(ctx, c.project)
	if err != nil {
		return err
	}
	var region []dockerapi.Container
	var failover *dockerapi.Container
	for _, ct := range cs {
		switch svc := ct.Service(); {
		case svc == "core-"+r: // first: its death is what the others notice
			region = append([]dockerapi.Container{ct}, region...)
		case strings.HasPrefix(svc, "edge-"+r+"-"):
			region = append(region, ct)
		case svc == c.failoverEdge:
			failover = &ct
		}
	}
	if len(region) == 0 || region[0].Service() != "core-"+r || failover == nil {
		return fmt.Errorf("want core-%s, edge-%s-* and %s in project %s", r, r, c.failoverEdge, c.project)
	}
	restore := context.WithoutCancel(ctx)
	started := false
	defer func() {
		if !started { // stopped short: leave nothing killed behind
			for _, ct := range region {
				_ = dk.Start(restore, ct.ID)
			}
		}
		_ = dk.Start(restore, failover.ID)
	}()
	for i, ct := range region {
		if err := dk.Kill(ctx, ct.ID, "SIGKILL"); err != nil {
			return err
		}
		if i == 0 {
			// Detection counts from the core's death (the engine can take
			// seconds per kill on a loaded host).
			l.Killed = since()
		}
	}
	logf(start, "drill: SIGKILL %d containers of %s at once (its core node at %.1fs, then its edges)", len(region), r, l.Killed.Seconds())

	rn := streams.Names{Region: r}
	if err := until(ctx, c.declare, "declared lost", func(actx context.Context) (bool, error) {
		host, err := streams.FailedOverTo(actx, js, rn, []string{s})
		return host == s, err
	}); err != nil {
		return err
	}
	l.Declared = since()
	logf(start, "drill: %s declared %s lost (%.1fs after the kill) and continues its claim log", s, r, (l.Declared - l.Killed).Seconds())
	readyz := "http://" + c.failoverEdge + ":9222/readyz"
	if err := until(ctx, time.Minute, c.failoverEdge+" owning every partition", func(actx context.Context) (bool, error) {
		return ready(actx, readyz)
	}); err != nil {
		return err
	}
	l.Consuming = since()
	logf(start, "drill: %s owns %s's partitions (%.1fs after the declaration)", c.failoverEdge, r, (l.Consuming - l.Declared).Seconds())
	if err := poll.Sleep(ctx, c.failedOver); err != nil {
		return err
	}

	// The region returns on its volumes: its core fences its claim log
	// (it asks the standby at start), its edges own nothing until the
	// failback.
	for _, ct := range region {
		if err := dk.Start(restore, ct.ID); err != nil {
			return fmt.Errorf("start %s again: %w", ct.Service(), err)
		}
	}
	started = true
	if err := until(ctx, 3*time.Minute, r+"'s claim log fenced", func(actx context.Context) (bool, error) {
		st, err := js.Stream(actx, rn.ClaimStream())
		if err != nil {
			return false, err
		}
		return streams.FencedBy(st.CachedInfo().Config) == s, nil
	}); err != nil {
		return err
	}
	l.Returned = since()
	logf(start, "drill: %s back on its volumes, its claim log fenced", r)
	if err := dk.Stop(ctx, failover.ID, 15*time.Second); err != nil {
		return fmt.Errorf("stop %s: %w", c.failoverEdge, err)
	}
	logf(start, "drill: stopped %s", c.failoverEdge)
	var layout streams.Layout
	if err := poll.Retry(ctx, poll.Attempts{Each: 15 * time.Second, Wait: 250 * time.Millisecond}, func(actx context.Context) (err error) {
		layout, err = streams.ReadLayout(actx, js, rn)
		return err
	}); err != nil {
		return fmt.Errorf("%s's layout: %w", r, err)
	}
	rn.Shards = layout.Shards
	fctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	// The superseded stream keeps earlier drills' records too: this
	// failback's are what it adds.
	before, err := superseded(fctx, js, rn)
	if err != nil {
		return fmt.Errorf("%s's superseded claims: %w", r, err)
	}
	if err := poll.Retry(fctx, poll.Attempts{Each: 15 * time.Second, Wait: 250 * time.Millisecond,
		Failed: func(err error) { logf(start, "drill: failback attempt failed, again: %v", err) }}, func(actx context.Context) error {
		_, err := streams.FailBack(actx, js, s, rn, streams.FailBackOptions{Supersede: true, Carry: claimlog.CarrySuperseded})
		return err
	}); err != nil {
		return fmt.Errorf("fail back %s: %w", r, err)
	}
	l.FailedBack = since()
	after, err := superseded(fctx, js, rn)
	if err != nil {
		return fmt.Errorf("%s's superseded claims: %w", r, err)
	}
	l.Superseded = int(after - before)
	logf(start, "drill: %s failed back from %s (%d claim records never reached %s: superseded); %s stands by again", r, s, l.Superseded, s, c.failoverEdge)
	return nil
}

// superseded counts the records in region n's superseded stream (none
// when it has none yet), each read bounded to 15 s and retried.
func superseded(ctx context.Context, js jetstream.JetStream, n streams.Names) (uint64, error) {
	var msgs uint64
	err := poll.Retry(ctx, poll.Attempts{Each: 15 * time.Second, Wait: 250 * time.Millisecond}, func(actx context.Context) (err error) {
		msgs, err = verify.StreamMsgs(actx, js, n.SupersededStream())
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			msgs, err = 0, nil
		}
		return err
	})
	return msgs, err
}

// until polls cond every 250 ms, each call bounded to 5 s, until it holds
// or within has passed.
func until(ctx context.Context, within time.Duration, what string, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	err := poll.Retry(ctx, poll.Attempts{Each: 5 * time.Second, Wait: 250 * time.Millisecond}, func(actx context.Context) error {
		ok, err := cond(actx)
		if err == nil && !ok {
			err = errors.New("not yet")
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("not %s after %v: %w", what, within, err)
	}
	return nil
}

// ready asks an edge's /readyz (open without the admin token).
func ready(ctx context.Context, url string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}
