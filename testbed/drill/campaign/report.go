package campaign

import (
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Report is what a campaign did and found.
type Report struct {
	Seed   uint64
	Config Config
	// Region names the region when the report is one of a three-region
	// campaign's ("" for a campaign of one region).
	Region string
	// Dir holds the run's logs, ledgers and data; "" when it was removed
	// (a temporary directory after a clean run).
	Dir      string
	Schedule []Fault
	History  History
	Settle   Settle
	Verdict  Verdict
	Elapsed  time.Duration

	// Published counts acked publishes by kind; Hostile acked hostile
	// events by variant; Refused hostile events the ingest stream refused,
	// by variant; Unacked publishes given up on (not checked).
	Published, Hostile, Refused map[string]int
	Unacked                     int
	// Faults counts injected faults by kind, Strikes their strikes.
	Faults, Strikes map[string]int
	// DLQ counts dead letters by reason.
	DLQ map[string]int
	// Signals counts edge log lines by message (gaps, rewinds, fences, chaos).
	Signals map[string]int
	// TornLines counts ledger lines a kill tore.
	TornLines int
	// StartFailed counts, by the error logged, edge processes that exited
	// before owning a partition (a core out of reach at start), started
	// again as a supervisor would; not a violation.
	StartFailed map[string]int
	// Bypassed lists edges connected around their link at the end.
	Bypassed []string
	// Errors are the campaign's own failures (a process it could not
	// restart): the run may have tested less than planned.
	Errors []error
}

// OK reports whether the history broke no promise.
func (r *Report) OK() bool { return r.Verdict.OK() }

func (r *Report) summarize(l *load) {
	r.Published, r.Hostile, r.Faults, r.Strikes, r.DLQ = map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}, map[string]int{}
	for _, p := range r.History.Publishes {
		r.Published[string(p.Kind)]++
		if p.Hostile != "" {
			r.Hostile[p.Hostile]++
		}
	}
	for _, f := range r.History.Faults {
		r.Faults[string(f.Kind)]++
		r.Strikes[string(f.Kind)] += f.Strikes
	}
	for _, d := range r.History.DeadLetters {
		reason := d.Reason
		if reason == "" {
			reason = "(none)"
		}
		r.DLQ[reason]++
	}
	l.mu.Lock()
	r.Refused, r.Unacked = maps.Clone(l.refused), l.unacked
	l.mu.Unlock()
}

// counts formats a map as "k v, k v" in key order.
func counts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// printHead writes a one-region campaign's title and replay command.
func (r *Report) printHead(w io.Writer) {
	c := r.Config
	fmt.Fprintf(w, "\n== campaign seed %d: %v of faults, %d core(s), %d edges, %d partitions, batch %d, %d events/s ==\n",
		r.Seed, c.Duration, c.Cores, c.Edges, c.Partitions, c.Batch, c.Rate)
	fmt.Fprintf(w, "replay      go run ./testbed/cmd/drill campaign -seed %d -duration %v -cores %d -edges %d -partitions %d -batch %d -rate %d",
		r.Seed, c.Duration, c.Cores, c.Edges, c.Partitions, c.Batch, c.Rate)
	fmt.Fprintf(w, " -every %v -chaos-fail %g -chaos-hang %g -chaos-panic %g -chaos-hang-max %v", c.MeanGap, c.Chaos.Fail, c.Chaos.Hang, c.Chaos.Panic, c.Chaos.HangMax)
	if c.LinkDelay != 2*time.Millisecond {
		fmt.Fprintf(w, " -link-delay %v", c.LinkDelay)
	}
	if c.Window > 0 {
		fmt.Fprintf(w, " -window %v", c.Window)
	}
	if c.ChaosLast {
		fmt.Fprint(w, " -chaos-last")
	}
	if len(c.Kinds) > 0 {
		ks := make([]string, len(c.Kinds))
		for i, k := range c.Kinds {
			ks[i] = string(k)
		}
		fmt.Fprintf(w, " -faults %s", strings.Join(ks, ","))
	}
	fmt.Fprintln(w)
}

// Print writes the summary: seed, what was published and injected, what
// the handlers did, the DLQ, how the region settled, and the violations.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	if r.Region != "" {
		fmt.Fprintf(w, "\n--- region %s (its seed %d) ---\n", r.Region, r.Seed)
	} else {
		r.printHead(w)
	}
	fmt.Fprintf(w, "published   %d acked (%s); hostile acked: %s; refused at ingest: %s; given up: %d\n",
		sum(r.Published), counts(r.Published), counts(r.Hostile), counts(r.Refused), r.Unacked)
	fmt.Fprintf(w, "faults      %d scheduled; injected %s\n", len(r.Schedule), counts(r.Faults))
	fmt.Fprintf(w, "strikes     %s\n", counts(r.Strikes))
	v := r.Verdict
	fmt.Fprintf(w, "handler     %d runs of %d IDs (%d extra); uncertain %d, bound %d (= batch %d × %d partitions with work in flight at faults)\n",
		v.Runs, v.Handled, v.ExtraRuns, v.UncertainRuns, v.Bound, c.Batch, v.InFlight)
	fmt.Fprintf(w, "DLQ         %d (%s)\n", sum(r.DLQ), counts(r.DLQ))
	fmt.Fprintf(w, "edge logs   %s; torn ledger lines %d\n", counts(r.Signals), r.TornLines)
	if len(r.StartFailed) > 0 {
		fmt.Fprintf(w, "restarted   %d edge processes that exited before owning a partition (core out of reach at start): %s\n", sum(r.StartFailed), counts(r.StartFailed))
	}
	if r.Settle.Undrained == nil && r.Settle.NotReady == nil && r.Settle.Unowned == nil {
		fmt.Fprintf(w, "settle      drained and ready %v after the faults stopped\n", r.Settle.Took.Round(time.Millisecond))
	} else {
		fmt.Fprintf(w, "settle      NOT settled within %v: undrained %v, unowned %v, not ready %v\n", r.Settle.Within, r.Settle.Undrained, r.Settle.Unowned, r.Settle.NotReady)
		fmt.Fprintf(w, "            %s\n", r.Settle.Diagnosis)
	}
	if len(r.Bypassed) > 0 {
		fmt.Fprintf(w, "note        %v connected around their link at the end (a cluster tells clients its nodes' addresses): cuts missed them\n", r.Bypassed)
	}
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error       %v\n", e)
	}
	printViolations(w, v.Violations, "")
	if !v.OK() {
		for i, cr := range r.History.Crashes {
			if i == 3 {
				fmt.Fprintf(w, "  ... %d more crashes\n", len(r.History.Crashes)-i)
				break
			}
			fmt.Fprintf(w, "  crash of %s at %v, log tail:\n%s\n", cr.Process, cr.At.Round(time.Millisecond), indent(cr.Tail))
		}
	}
	printEnd(w, r.Elapsed, r.Dir, v.OK(), fmt.Sprintf("seed %d", r.Seed))
}

// printViolations writes the violations line ("none" when there are none;
// suffix says where, e.g. " across regions") and one line per violation.
func printViolations(w io.Writer, vs []Violation, suffix string) {
	if len(vs) == 0 {
		fmt.Fprintf(w, "violations  none%s\n", suffix)
		return
	}
	head := "violations"
	if suffix != "" {
		head += " " + suffix
	}
	fmt.Fprintln(w, head)
	for _, x := range vs {
		fmt.Fprintf(w, "  - %s\n", x)
	}
}

// printEnd writes a report's last lines: elapsed time, directory and result.
func printEnd(w io.Writer, elapsed time.Duration, dir string, ok bool, what string) {
	fmt.Fprintf(w, "elapsed     %v\n", elapsed.Round(time.Second))
	if dir != "" {
		fmt.Fprintf(w, "dir         %s\n", dir)
	}
	verdict := "PASS"
	if !ok {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "result      %s (%s)\n", verdict, what)
}

// save writes the summary (report.txt), the schedule (schedule.txt), the
// faults as injected (faults.txt) and every item of every violation
// (violations.txt) into the run's directory.
func (r *Report) save() {
	write := func(name string, f func(io.Writer)) {
		var b strings.Builder
		f(&b)
		if err := os.WriteFile(filepath.Join(r.Dir, name), []byte(b.String()), 0o640); err != nil {
			r.Errors = append(r.Errors, fmt.Errorf("save %s: %w", name, err))
		}
	}
	write("report.txt", r.Print)
	write("schedule.txt", r.PrintSchedule)
	write("faults.txt", func(w io.Writer) {
		for _, f := range r.History.Faults {
			fmt.Fprintf(w, "%9.3fs %-12s %-8s affected %-4d strikes %-5d %s\n", f.At.Seconds(), f.Kind, f.Target, f.Affected, f.Strikes, f.Detail)
		}
	})
	write("violations.txt", func(w io.Writer) {
		for _, v := range r.Verdict.Violations {
			fmt.Fprintf(w, "== %s %d (%s)\n", v.Kind, v.Count, v.Detail)
			for _, it := range v.Items {
				fmt.Fprintln(w, it)
			}
		}
	})
}

// PrintSchedule writes the schedule, one fault a line.
func (r *Report) PrintSchedule(w io.Writer) {
	fmt.Fprintf(w, "schedule (seed %d, %d faults):\n", r.Seed, len(r.Schedule))
	for _, f := range r.Schedule {
		fmt.Fprintf(w, "  %s\n", f)
	}
}

func indent(s string) string {
	return "      " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n      ")
}
