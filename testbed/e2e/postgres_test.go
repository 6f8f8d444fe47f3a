package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/sink/pgsink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/pgtest"
	"github.com/onceplane/onceplane/testbed/proc"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

// pgAccount is what the default effects table says.
type pgAccount struct {
	rows, twice, flagged int // IDs applied, applied more than once, applied flagged uncertain
}

func pgCount(t *testing.T, c *pgx.Conn) pgAccount {
	t.Helper()
	var a pgAccount
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := c.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE applies > 1), count(*) FILTER (WHERE uncertain) FROM onceplane_events`).Scan(&a.rows, &a.twice, &a.flagged)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var ownedLine = regexp.MustCompile(`partition owned.*uncertain=(\d+) owed=(\d+) resolved_done=(\d+)`)

// takeoverAccount sums, over an edge's takeovers, the IDs left uncertain,
// owed and settled done against the sink's position.
func takeoverAccount(log string) (uncertain, owed, done int) {
	for _, m := range ownedLine.FindAllStringSubmatch(log, -1) {
		u, _ := strconv.Atoi(m[1])
		o, _ := strconv.Atoi(m[2])
		d, _ := strconv.Atoi(m[3])
		uncertain, owed, done = uncertain+u, owed+o, done+d
	}
	return
}

// TestEdgeKill9PostgresExactlyOnce kills the edge process with SIGKILL 20
// times, each at a random point of a load with 30 % duplicates, with the
// PostgreSQL sink; every fifth time it first pauses the edge (SIGSTOP) and
// lets the next one take over before killing it. The table must hold every
// unique ID exactly once, none applied twice (its apply counter) and none
// flagged uncertain: every takeover settled what the dead owner claimed
// against the sink's position.
func TestEdgeKill9PostgresExactlyOnce(t *testing.T) {
	const partitions, batch = 8, 100
	kills := 20
	if n, err := strconv.Atoi(os.Getenv("ONCEPLANE_PG_KILLS")); err == nil && n > 0 {
		kills = n // a longer run: ONCEPLANE_PG_KILLS=100 (the load grows with it)
	}
	db := pgtest.Start(t)
	n := coretest.Start(t)
	r := newRun(t, n.ClientURL(), streams.Config{Partitions: partitions, IngestDuplicates: -1}, true)
	ctx := context.Background()
	c, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	// The sink's tables, as the first edge would make them.
	if s, err := pgsink.Open(ctx, pgsink.Options{URL: db.URL}); err != nil {
		t.Fatal(err)
	} else {
		s.Close()
	}
	r.publish(workload.Plan{Events: 2_000 * kills, DupRate: 0.3, Gap: 10_000, Seed: 16})
	edgeArgs := []string{"-sink", "postgres", "-pg-url", db.URL, "-batch", strconv.Itoa(batch), "-pg-idle-in-transaction", "2s"}
	logs, mid := r.killLoop(kills, 5, edgeArgs, func() int { return pgCount(t, c).rows })
	a := pgCount(t, c)
	var unc, owed, done int
	for _, p := range logs {
		u, o, d := takeoverAccount(p.Output())
		unc, owed, done = unc+u, owed+o, done+d
	}
	t.Logf("%d events, %d unique IDs, %d kills (%d with events left to apply; every 5th after a pause); rows %d, applied twice %d, flagged %d; takeovers settled %d done and %d owed, left %d uncertain",
		len(r.ids), r.unique, kills, mid, a.rows, a.twice, a.flagged, done, owed, unc)
	if a.rows != r.unique || a.twice != 0 || a.flagged != 0 || unc != 0 {
		t.Fatalf("want %d rows, none twice, none flagged, none uncertain", r.unique)
	}
	// Every published ID is there.
	rows, err := c.Query(ctx, `SELECT id FROM onceplane_events`)
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		have[id] = true
	}
	for _, id := range r.ids {
		if !have[id] {
			t.Fatalf("id %s lost", id)
		}
	}
	if done+owed == 0 {
		t.Fatal("no takeover settled anything: the kills missed every batch in flight")
	}
}

// killLoop runs the load r published through kills edges in turn, each
// killed with SIGKILL once applied() has grown by a random 200–1,400 IDs;
// every pauseEvery-th is paused instead (SIGSTOP) and killed after the next
// edge applied something. A last edge finishes the load. It returns every
// edge's process, for their logs, and how many kills came while events
// were left to apply.
func (r *run) killLoop(kills, pauseEvery int, edgeArgs []string, applied func() int) (procs []*proc.Proc, midLoad int) {
	t := r.t
	t.Helper()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 16))
	var paused *proc.Proc
	for i := range kills {
		e := r.edge(fmt.Sprintf("edge-%02d", i), edgeArgs...)
		procs = append(procs, e)
		if paused != nil {
			// The next owner took over from a paused one: let the paused
			// edge run again (its transaction in flight is refused, its
			// claims fenced), then kill it.
			was := applied()
			coretest.Eventually(t, time.Minute, "the next edge applying", func() bool { n := applied(); return n > was || n >= r.unique })
			if err := paused.Resume(); err != nil {
				t.Fatal(err)
			}
			paused.Kill9()
			paused = nil
		}
		before := applied()
		step := 200 + rng.IntN(1200)
		if before+step >= r.unique {
			step = (r.unique - before) / 2
		}
		if step > 0 { // else the load is all applied: the kill lands on an idle edge
			coretest.Eventually(t, 2*time.Minute, "the edge applying", func() bool { return applied() >= before+step })
			midLoad++
		}
		if pauseEvery > 0 && i%pauseEvery == pauseEvery-1 {
			if err := e.Pause(); err != nil {
				t.Fatal(err)
			}
			paused = e
			continue
		}
		e.Kill9()
	}
	last := r.edge("edge-last", edgeArgs...)
	procs = append(procs, last)
	if paused != nil {
		paused.Resume()
		paused.Kill9()
	}
	if err := <-r.pubDone; err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 3*time.Minute, "every unique ID applied", func() bool { return applied() >= r.unique })
	if err := last.Stop(10 * time.Second); err != nil {
		t.Fatalf("last edge exit: %v", err)
	}
	return procs, midLoad
}

// ledgerEffects reads a positioned ledger: effects per ID (runs of
// committed batches), runs in all, and flagged effects.
func ledgerEffects(t *testing.T, path string) (effects map[string]int, runs, flagged int) {
	t.Helper()
	lines, _, err := sink.ScanLedger(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	committed, err := sink.CommittedBatches(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	effects = map[string]int{}
	for _, l := range lines {
		if committed[l.Batch] {
			effects[l.ID]++
			if l.Uncertain {
				flagged++
			}
		}
	}
	return effects, len(lines), flagged
}

// TestEdgeKill9LedgerEffectsOnce: the ledger sink with positions
// (-ledger-positions), its edge process killed with SIGKILL 10 times under
// load: each unique ID takes effect exactly once (runs of batches a kill
// cut short, without their commit line, are runs, not effects), none
// flagged, and no takeover leaves anything uncertain.
func TestEdgeKill9LedgerEffectsOnce(t *testing.T) {
	const partitions, batch, kills = 8, 100, 10
	n := coretest.Start(t)
	r := newRun(t, n.ClientURL(), streams.Config{Partitions: partitions, IngestDuplicates: -1}, true)
	path := filepath.Join(r.dir, "ledger.jsonl")
	r.publish(workload.Plan{Events: 30_000, DupRate: 0.3, Gap: 10_000, Seed: 17})
	edgeArgs := []string{"-sink", "ledger", "-ledger-positions", "-batch", strconv.Itoa(batch)}
	logs, _ := r.killLoop(kills, 0, edgeArgs, func() int { e, _, _ := ledgerEffects(t, path); return len(e) })
	effects, runs, flagged := ledgerEffects(t, path)
	var unc, owed, done int
	for _, p := range logs {
		u, o, d := takeoverAccount(p.Output())
		unc, owed, done = unc+u, owed+o, done+d
	}
	twice := 0
	for _, k := range effects {
		if k > 1 {
			twice++
		}
	}
	t.Logf("%d events, %d unique IDs, %d kills; %d runs, %d IDs took effect, %d twice, %d flagged; takeovers settled %d done and %d owed, left %d uncertain",
		len(r.ids), r.unique, kills, runs, len(effects), twice, flagged, done, owed, unc)
	if len(effects) != r.unique || twice != 0 || flagged != 0 || unc != 0 {
		t.Fatalf("want %d IDs taking effect once, none flagged, none uncertain", r.unique)
	}
}

// TestEdgeKill9NATSOutputsOnce: the nats sink with positions
// (-nats-positions), its edge process killed with SIGKILL 10 times under
// load: every unique ID is in the output stream exactly once (the outputs
// carry no Nats-Msg-Id, so the stream's duplicate window hides nothing),
// none flagged, and no takeover leaves anything uncertain.
func TestEdgeKill9NATSOutputsOnce(t *testing.T) {
	const partitions, batch, kills = 8, 100, 10
	n := coretest.Start(t)
	r := newRun(t, n.ClientURL(), streams.Config{Partitions: partitions, IngestDuplicates: -1}, true)
	r.publish(workload.Plan{Events: 30_000, DupRate: 0.3, Gap: 10_000, Seed: 18})
	edgeArgs := []string{"-sink", "nats", "-nats-positions", "-batch", strconv.Itoa(batch)}
	count := func() map[string]int {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		counts, err := verify.OutputCounts(ctx, r.js, r.cfg.Names)
		if err != nil {
			t.Fatal(err)
		}
		return counts
	}
	// Progress: messages on the output subjects (the positions excluded),
	// from the stream's per-subject counts.
	outputs := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := r.js.Stream(ctx, r.cfg.OutputStream())
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(r.cfg.Output(0)[:len(r.cfg.Output(0))-1]+"*"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, k := range info.State.Subjects {
			n += int(k)
		}
		return n
	}
	logs, _ := r.killLoop(kills, 0, edgeArgs, outputs)
	counts := count()
	twice, flagged := 0, 0
	for _, k := range counts {
		if k > 1 {
			twice++
		}
	}
	msgs, err := verify.ReadStream(context.Background(), r.js, r.cfg.OutputStream())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if len(m.Header[event.HeaderUncertain]) > 0 {
			flagged++
		}
	}
	var unc, owed, done int
	for _, p := range logs {
		u, o, d := takeoverAccount(p.Output())
		unc, owed, done = unc+u, owed+o, done+d
	}
	t.Logf("%d events, %d unique IDs, %d kills; %d IDs output, %d twice, %d flagged; takeovers settled %d done and %d owed, left %d uncertain",
		len(r.ids), r.unique, kills, len(counts), twice, flagged, done, owed, unc)
	if len(counts) != r.unique || twice != 0 || flagged != 0 || unc != 0 {
		t.Fatalf("want %d IDs output once, none flagged, none uncertain", r.unique)
	}
}
