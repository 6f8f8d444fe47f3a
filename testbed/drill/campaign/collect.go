package campaign

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/drill"
	"github.com/onceplane/onceplane/testbed/verify"
)

// settle polls, for at most within, until every partition's input consumer
// has drained and every edge is ready, and says what was left when not.
func (r *region) settle(ctx context.Context, within time.Duration) Settle {
	t0 := time.Now()
	s := Settle{Within: within}
	for {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		left, err := verify.Undrained(qctx, r.js, r.names, r.cfg.Partitions, nil)
		cancel()
		if err != nil {
			left = nil
			for p := 0; p < r.cfg.Partitions; p++ {
				left = append(left, p)
			}
		}
		notReady := map[string]string{}
		owners := map[int]int{}
		for _, n := range r.edges {
			if err := drill.Ready(n.spec.Admin); err != nil {
				notReady[n.spec.Name] = err.Error()
			}
			if st, err := drill.Status(n.spec.Admin); err == nil {
				for _, p := range st.Owned {
					owners[p]++
				}
			}
		}
		var unowned []int
		for p := 0; p < r.cfg.Partitions; p++ {
			if owners[p] != 1 {
				unowned = append(unowned, p)
			}
		}
		if len(left) == 0 && len(notReady) == 0 && len(unowned) == 0 {
			s.Took = time.Since(t0)
			return s
		}
		if time.Since(t0) > within || ctx.Err() != nil {
			s.Took, s.Undrained, s.Unowned = within, left, unowned
			if len(notReady) > 0 {
				s.NotReady = notReady
			}
			s.Diagnosis = r.diagnose(ctx)
			if err != nil {
				s.Diagnosis = "consumers: " + err.Error() + "; " + s.Diagnosis
			}
			return s
		}
		_ = poll.Sleep(ctx, 250*time.Millisecond)
	}
}

// diagnose describes the ingest consumers and the edges' ownership.
func (r *region) diagnose(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var b strings.Builder
	if s, err := r.js.Stream(ctx, r.names.IngestStream()); err == nil {
		if info, err := s.Info(ctx); err == nil {
			fmt.Fprintf(&b, "[ingest last seq %d] ", info.State.LastSeq)
		}
		l := s.ListConsumers(ctx)
		for ci := range l.Info() {
			fmt.Fprintf(&b, "[%s pending=%d ackpending=%d waiting=%d delivered=%d ackfloor=%d] ",
				ci.Name, ci.NumPending, ci.NumAckPending, ci.NumWaiting, ci.Delivered.Stream, ci.AckFloor.Stream)
		}
	}
	for _, n := range r.edges {
		if st, err := drill.Status(n.spec.Admin); err == nil {
			fmt.Fprintf(&b, "[%s owns %v fenced=%d] ", n.spec.Name, st.Owned, st.Stats.Fenced)
		} else {
			fmt.Fprintf(&b, "[%s: %v] ", n.spec.Name, err)
		}
	}
	return b.String()
}

// collect reads the DLQ stream, stops the edges, reads their ledgers and
// logs, and returns the history.
func (r *region) collect(ctx context.Context, l *load, rep *Report) (History, error) {
	h := History{Partitions: r.cfg.Partitions, Batch: r.cfg.Batch, Settle: rep.Settle}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	msgs, err := verify.ReadStream(rctx, r.js, r.names.DLQStream())
	cancel()
	if err != nil {
		return h, fmt.Errorf("campaign: read the DLQ: %w", err)
	}
	for _, m := range msgs {
		hdr := func(k string) string {
			if v := m.Header[k]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		seq, _ := strconv.ParseUint(hdr(event.HeaderStreamSeq), 10, 64)
		p, _ := strconv.Atoi(hdr(event.HeaderPartition))
		h.DeadLetters = append(h.DeadLetters, DeadLetter{Reason: hdr(event.HeaderReason), EventID: hdr("Onceplane-Event-Id"), StreamSeq: seq, Partition: p})
	}
	// Stop the edges gracefully (in parallel) so the ledgers are complete.
	var wg sync.WaitGroup
	for _, n := range r.edges {
		wg.Go(func() {
			n.mu.Lock()
			n.held = true
			stopEdge(n, true)
			n.mu.Unlock()
		})
	}
	wg.Wait()
	rep.Signals = map[string]int{}
	if r.cfg.ChaosLast {
		h.Excused = map[string]int{}
	}
	for _, n := range r.edges {
		runs, bad, err := ledgerRuns(n)
		if err != nil {
			return h, err
		}
		rep.TornLines += bad
		h.Runs = append(h.Runs, runs...)
		sig, err := scanLog(n.spec.Log(), h.Excused)
		if err != nil {
			return h, fmt.Errorf("campaign: log of %s: %w", n.spec.Name, err)
		}
		for k, v := range sig {
			rep.Signals[k] += v
		}
		// Chaos panics can leave a batch in flight (the handler's panic
		// isolation re-runs events one by one); fails and hangs cannot.
		for kind, k := range map[FaultKind]string{FaultChaosPanic: "chaos panic", FaultChaosFail: "chaos fail", FaultChaosHang: "chaos hang"} {
			if c := sig[k]; c > 0 {
				aff := 0
				if kind.LeavesWorkInFlight() {
					aff = c
				}
				r.record(Injected{At: r.since(), Kind: kind, Target: n.spec.Name, Affected: aff, Strikes: c, Detail: "counted in the log"})
			}
		}
	}
	l.mu.Lock()
	h.Publishes = slices.Clone(l.pubs)
	l.mu.Unlock()
	r.mu.Lock()
	h.Faults = slices.Clone(r.faults)
	h.Crashes = slices.Clone(r.crashes)
	r.mu.Unlock()
	return h, nil
}

// logSignals are the edge log messages a campaign counts.
var logSignals = []string{
	"chaos panic", "chaos fail", "chaos hang",
	"delivery gap", "rewind failed", "slow consumer", "partition fenced", "partition stopped",
	"dead-letter publish failed", "pull refused", "TEST ONLY",
}

// descRE finds a NATS API error's description in a log line.
var descRE = regexp.MustCompile(`description=([^"]+)`)

// idRE finds the event ID of a chaos sink's warning.
var idRE = regexp.MustCompile(`msg="chaos (?:fail|panic)" id=(\S+)`)

// scanLog counts the lines of an edge log that carry each signal; a failed
// dead-letter publish is also counted by the API error's description (what
// stalls a partition). When excused is not nil, it counts the IDs the chaos
// sink failed or panicked on.
func scanLog(path string, excused map[string]int) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, s := range logSignals {
			if strings.Contains(line, s) {
				out[s]++
			}
		}
		if excused != nil {
			if m := idRE.FindStringSubmatch(line); m != nil {
				excused[m[1]]++
			}
		}
		if strings.Contains(line, "dead-letter publish failed") {
			if m := descRE.FindStringSubmatch(line); m != nil {
				out["dead-letter publish failed: "+m[1]]++
			}
		}
	}
	return out, sc.Err()
}

// ledgerRuns reads the handler runs n's ledger recorded, and how many torn
// lines it holds.
func ledgerRuns(n *edgeNode) ([]HandlerRun, int, error) {
	lines, bad, err := sink.ScanLedger(n.spec.Ledger())
	if err != nil && !os.IsNotExist(err) {
		return nil, 0, fmt.Errorf("campaign: ledger of %s: %w", n.spec.Name, err)
	}
	runs := make([]HandlerRun, 0, len(lines))
	for _, ln := range lines {
		runs = append(runs, HandlerRun{ID: ln.ID, Partition: ln.Partition, Seq: ln.Seq, Edge: ln.Edge, Uncertain: ln.Uncertain})
	}
	return runs, bad, nil
}

// ledgerRuns reads what the region's ledgers hold so far (the edges may be
// running); a ledger that cannot be read counts as empty.
func (r *region) ledgerRuns() []HandlerRun {
	var out []HandlerRun
	for _, n := range r.edges {
		runs, _, _ := ledgerRuns(n)
		out = append(out, runs...)
	}
	return out
}
