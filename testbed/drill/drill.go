package drill

import (
	"context"
	"fmt"
	"io"
	"strings"
	"syscall"
	"time"

	"github.com/onceplane/onceplane/testbed/verify"
)

// Report is what one drill measured.
type Report struct {
	Drill string
	Edges int
	// Detected is from the failure to the observer's gossip declaring it;
	// TakenOver is from the failure to every partition being owned again.
	Detected, TakenOver time.Duration
	// Steps lists what the drill did, with timings.
	Steps             []string
	Published, Unique int
	// Lost counts unique IDs no handler ran (the ledgers) or missing from
	// the output stream. DuplicateEffects counts IDs the handler ran more
	// than once with an extra run not flagged uncertain (the ledgers, every
	// run line by line: the output stream's Nats-Msg-Id window would hide a
	// second effect), plus extra copies in the output stream.
	Lost, DuplicateEffects int
	// Uncertain and UncertainReruns are the edges' totals (stats files of the
	// edges stopped gracefully).
	Uncertain, UncertainReruns int64
	// ExtraHandlerRuns counts ledger runs beyond one per ID, FlaggedReruns
	// those flagged uncertain, UnexplainedReruns the others (must be 0).
	ExtraHandlerRuns, FlaggedReruns, UnexplainedReruns int
	// Disruptions counts the ownership changes the drill caused (a kill, a
	// pause, each restart or scale step, counted generously); RerunBound =
	// batch x partitions x Disruptions: at one, each partition has at most
	// one batch not known done, its last claimed one (the next claim record
	// carries the previous batch's done mark). The uncertain sets and the
	// flagged re-runs must stay within it, and every extra run must be one
	// the edges counted as an uncertain re-run.
	Disruptions, RerunBound int
	// TornLines counts ledger lines a killed edge cut short.
	TornLines int
	Fenced    int64
	// Resumed is, for the core drill, from the node's death to the next
	// output appearing.
	Resumed time.Duration
	// MaxOwned is the most partitions one edge owned after a scale-out, and
	// Bound is ceil(P/N)+1.
	MaxOwned, Bound int
}

// OK reports whether the drill kept G1: nothing lost, no duplicate effect,
// every extra handler run flagged uncertain and counted by the edges, and
// the uncertain re-runs within the in-flight bound.
func (r *Report) OK() bool { return len(r.Violations()) == 0 }

// Violations lists what broke G1 (or the scale bound), empty when the drill passed.
func (r *Report) Violations() []string {
	var v []string
	if r.Lost > 0 {
		v = append(v, fmt.Sprintf("%d IDs lost", r.Lost))
	}
	if r.DuplicateEffects > 0 {
		v = append(v, fmt.Sprintf("%d duplicate effects", r.DuplicateEffects))
	}
	if r.UnexplainedReruns > 0 {
		v = append(v, fmt.Sprintf("%d extra handler runs not flagged uncertain", r.UnexplainedReruns))
	}
	if int64(r.ExtraHandlerRuns) > r.UncertainReruns {
		v = append(v, fmt.Sprintf("%d extra handler runs but the edges counted %d uncertain re-runs", r.ExtraHandlerRuns, r.UncertainReruns))
	}
	if r.FlaggedReruns > r.RerunBound || r.Uncertain > int64(r.RerunBound) {
		v = append(v, fmt.Sprintf("uncertain %d, flagged re-runs %d: beyond the in-flight bound %d", r.Uncertain, r.FlaggedReruns, r.RerunBound))
	}
	if r.Bound > 0 && r.MaxOwned > r.Bound {
		v = append(v, fmt.Sprintf("an edge owned %d partitions > ceil(P/N)+1 = %d", r.MaxOwned, r.Bound))
	}
	return v
}

func (r *Report) step(format string, a ...any) { r.Steps = append(r.Steps, fmt.Sprintf(format, a...)) }

// Print writes the report.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "\n== drill %s (%d edges) ==\n", r.Drill, r.Edges)
	for _, s := range r.Steps {
		fmt.Fprintf(w, "  - %s\n", s)
	}
	if r.Detected > 0 {
		fmt.Fprintf(w, "failure detected after    %v\n", r.Detected.Round(time.Millisecond))
	}
	if r.TakenOver > 0 {
		fmt.Fprintf(w, "takeover finished after   %v (every partition owned again)\n", r.TakenOver.Round(time.Millisecond))
	}
	if r.Resumed > 0 {
		fmt.Fprintf(w, "processing resumed after  %v (next output after the node died)\n", r.Resumed.Round(time.Millisecond))
	}
	if r.Bound > 0 {
		fmt.Fprintf(w, "max partitions per edge   %d (bound ceil(P/N)+1 = %d)\n", r.MaxOwned, r.Bound)
	}
	fmt.Fprintf(w, "events                    %d published, %d unique IDs\n", r.Published, r.Unique)
	fmt.Fprintf(w, "events lost               %d\n", r.Lost)
	fmt.Fprintf(w, "duplicate effects         %d\n", r.DuplicateEffects)
	fmt.Fprintf(w, "uncertain                 %d (re-run %d)\n", r.Uncertain, r.UncertainReruns)
	fmt.Fprintf(w, "extra handler runs        %d (ledgers: %d flagged uncertain, %d unexplained; bound batch x partitions x %d disruptions = %d)\n",
		r.ExtraHandlerRuns, r.FlaggedReruns, r.UnexplainedReruns, r.Disruptions, r.RerunBound)
	if r.TornLines > 0 {
		fmt.Fprintf(w, "torn ledger lines         %d (cut short by kill -9)\n", r.TornLines)
	}
	fmt.Fprintf(w, "fenced partitions         %d\n", r.Fenced)
	verdict := "PASS"
	if v := r.Violations(); len(v) > 0 {
		verdict = "FAIL: " + strings.Join(v, "; ")
	}
	fmt.Fprintf(w, "result                    %s\n", verdict)
}

// Names lists the drills Run knows.
var Names = []string{"kill", "pause", "rolling", "scale", "core"}

// Run runs one drill: "kill" (kill -9 of the edge owning most partitions,
// then restart), "pause" (SIGSTOP past failure detection, then SIGCONT:
// the stale owner is fenced), "rolling" (graceful restart of every edge in
// turn), "scale" (2 edges to 4 and back to 2), "core" (kill -9 of one node
// of a 3-node region with R3 streams; needs Config.CoreBin).
func Run(ctx context.Context, cfg Config, name string) (*Report, error) {
	switch name {
	case "kill", "pause", "rolling", "core":
	case "scale":
		cfg.Edges = 2
	default:
		return nil, fmt.Errorf("unknown drill %q (want one of %v)", name, Names)
	}
	h, err := newHarness(ctx, cfg, name)
	if err != nil {
		return nil, err
	}
	defer h.close()
	r := &Report{Drill: name, Edges: h.cfg.Edges}
	for i := 0; i < h.cfg.Edges; i++ {
		if _, err := h.startEdge(fmt.Sprintf("edge-%d", i)); err != nil {
			return r, err
		}
	}
	took, counts, err := h.waitOwned(ctx, h.running(), 30*time.Second)
	if err != nil {
		return r, err
	}
	r.step("%d edges own %d partitions after %v: %v", h.cfg.Edges, h.parts, took.Round(time.Millisecond), counts)
	h.startLoad(ctx)
	if err := h.waitSent(ctx, h.cfg.Events/3); err != nil {
		return r, err
	}
	switch name {
	case "kill":
		err = h.kill(ctx, r)
	case "pause":
		err = h.pause(ctx, r)
	case "rolling":
		err = h.rolling(ctx, r)
	case "scale":
		err = h.scale(ctx, r)
	case "core":
		err = h.coreKill(ctx, r)
	}
	r.RerunBound = h.cfg.Batch * h.parts * r.Disruptions
	if err != nil {
		return r, err
	}
	return r, h.finish(ctx, r)
}

// busiest returns the running edge owning the most partitions.
func (h *harness) busiest() *edgeProc {
	var best *edgeProc
	bestN := -1
	for _, e := range h.running() {
		if s, err := h.status(e); err == nil && len(s.Owned) > bestN {
			best, bestN = e, len(s.Owned)
		}
	}
	return best
}

func without(es []*edgeProc, x *edgeProc) []*edgeProc {
	var out []*edgeProc
	for _, e := range es {
		if e != x {
			out = append(out, e)
		}
	}
	return out
}

func (h *harness) kill(ctx context.Context, r *Report) error {
	v := h.busiest()
	t0 := time.Now()
	v.p.Kill9()
	r.Disruptions += 2 // the kill, and the restart's handoffs
	r.step("kill -9 %s (pid %d) with %d of %d events sent", v.name, v.p.Pid(), h.sent.Load(), h.cfg.Events)
	var err error
	if r.Detected, err = h.waitDetected(ctx, v.name, t0, 15*time.Second); err != nil {
		return err
	}
	if _, _, err = h.waitOwned(ctx, h.running(), 30*time.Second); err != nil {
		return err
	}
	r.TakenOver = time.Since(t0)
	if _, err := h.startEdge(v.name); err != nil {
		return err
	}
	took, counts, err := h.waitOwned(ctx, h.running(), 30*time.Second)
	r.step("restarted %s; every partition owned after %v (its share comes back after the handoff delay): %v", v.name, took.Round(time.Millisecond), counts)
	return err
}

func (h *harness) pause(ctx context.Context, r *Report) error {
	v := h.busiest()
	t0 := time.Now()
	if err := v.p.Pause(); err != nil {
		return err
	}
	r.Disruptions += 2 // the pause, and the rebalance after it wakes
	r.step("SIGSTOP %s with %d of %d events sent", v.name, h.sent.Load(), h.cfg.Events)
	var err error
	if r.Detected, err = h.waitDetected(ctx, v.name, t0, 15*time.Second); err != nil {
		_ = v.p.Resume()
		return err
	}
	if _, _, err = h.waitOwned(ctx, without(h.running(), v), 30*time.Second); err != nil {
		_ = v.p.Resume()
		return err
	}
	r.TakenOver = time.Since(t0)
	// Stay paused a while longer, then wake the stale owner: its next claim
	// append loses the compare-and-set and it stops those partitions.
	time.Sleep(time.Second)
	if err := v.p.Resume(); err != nil {
		return err
	}
	r.step("SIGCONT %s after %v", v.name, time.Since(t0).Round(time.Millisecond))
	took, counts, err := h.waitOwned(ctx, h.running(), 30*time.Second)
	r.step("%s back in the membership; partitions rebalanced after %v: %v", v.name, took.Round(time.Millisecond), counts)
	return err
}

func (h *harness) rolling(ctx context.Context, r *Report) error {
	for _, e := range h.running() {
		t0 := time.Now()
		r.Disruptions += 2 // a graceful stop and a restart: handoffs, where views can briefly disagree
		if err := e.p.Stop(10 * time.Second); err != nil && !isSignalExit(err) {
			return fmt.Errorf("stop %s: %w", e.name, err)
		}
		if _, _, err := h.waitOwned(ctx, h.running(), 30*time.Second); err != nil {
			return err
		}
		handed := time.Since(t0)
		if _, err := h.startEdge(e.name); err != nil {
			return err
		}
		took, _, err := h.waitOwned(ctx, h.running(), 30*time.Second)
		if err != nil {
			return err
		}
		r.step("restarted %s: its partitions owned by the others after %v, rebalanced %v after restart", e.name, handed.Round(time.Millisecond), took.Round(time.Millisecond))
	}
	return nil
}

func isSignalExit(err error) bool {
	type exitErr interface{ Sys() any }
	if e, ok := err.(exitErr); ok {
		if ws, ok := e.Sys().(syscall.WaitStatus); ok {
			return ws.Signaled()
		}
	}
	return false
}

func (h *harness) scale(ctx context.Context, r *Report) error {
	base := h.running()
	var added []*edgeProc
	for i := len(base); i < 2*len(base); i++ {
		r.Disruptions += 2 // a join, and its graceful leave
		e, err := h.startEdge(fmt.Sprintf("edge-%d", i))
		if err != nil {
			return err
		}
		added = append(added, e)
	}
	n := len(h.running())
	r.Bound = (h.parts+n-1)/n + 1
	took, counts, err := h.waitOwned(ctx, h.running(), 30*time.Second)
	if err != nil {
		return err
	}
	// Handoffs from live owners finish over a few hundred milliseconds: poll
	// until the split is within the bound (or report the worst seen).
	for deadline := time.Now().Add(10 * time.Second); ; {
		_, counts, err = h.waitOwned(ctx, h.running(), 30*time.Second)
		if err != nil {
			return err
		}
		r.MaxOwned = 0
		for _, c := range counts {
			r.MaxOwned = max(r.MaxOwned, c)
		}
		if r.MaxOwned <= r.Bound-1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.step("scaled out %d -> %d edges; all partitions owned after %v; split %v", len(base), n, took.Round(time.Millisecond), counts)
	for _, e := range added {
		if err := e.p.Stop(10 * time.Second); err != nil && !isSignalExit(err) {
			return err
		}
	}
	took, counts, err = h.waitOwned(ctx, h.running(), 30*time.Second)
	r.step("scaled in %d -> %d edges (graceful); all partitions owned after %v; split %v", n, len(h.running()), took.Round(time.Millisecond), counts)
	return err
}

// coreKill kills one core node of the 3-node region under load and times
// how long until outputs flow again.
func (h *harness) coreKill(ctx context.Context, r *Report) error {
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	before, _ := verify.StreamMsgs(bctx, h.js, h.names.OutputStream())
	cancel()
	v := h.cores.Procs[1]
	t0 := time.Now()
	v.Kill9()
	r.Disruptions++
	r.step("kill -9 %s with %d of %d events sent (%d outputs so far)", v.Name, h.sent.Load(), h.cfg.Events, before)
	deadline := t0.Add(time.Minute)
	for {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		n, err := verify.StreamMsgs(sctx, h.js, h.names.OutputStream())
		cancel()
		if err == nil && n > before+uint64(h.cfg.Batch) {
			r.Resumed = time.Since(t0)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no output for a minute after %s died", v.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took, counts, err := h.waitOwned(ctx, h.running(), 30*time.Second)
	r.step("edges still own every partition (%v after the kill): %v", took.Round(time.Millisecond), counts)
	return err
}
