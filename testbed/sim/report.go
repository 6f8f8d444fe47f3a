package sim

import (
	"fmt"
	"io"
	"time"

	"github.com/onceplane/onceplane/dedupe"
)

// Print writes the report as a short text summary.
func (r *Report) Print(w io.Writer) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
	fmt.Fprintf(w, "\n== onceplane simulation report ==\n")
	fmt.Fprintf(w, "events published      %d (%d unique IDs)\n", r.Published, r.Unique)
	fmt.Fprintf(w, "stored by ingest      %d (JetStream's own Nats-Msg-Id layer dropped %d)\n", r.Stored, r.Published-r.Stored)
	fmt.Fprintf(w, "decided by edges      %d in %.1fs = %.0f events/s\n", r.Decided, r.Elapsed.Seconds(), r.EventsPerSec)
	fmt.Fprintf(w, "first-time            %d\n", r.First)
	fmt.Fprintf(w, "duplicates            %d\n", r.Dups)
	for _, p := range dedupe.Paths() {
		fmt.Fprintf(w, "  path %-16s %d\n", p.String(), r.ByPath[p.String()])
	}
	fmt.Fprintf(w, "uncertain             %d (re-run %d)\n", r.Uncertain, r.Reruns)
	fmt.Fprintf(w, "dead-lettered         %d\n", r.DLQ)
	if r.Decided > 0 {
		fmt.Fprintf(w, "claim appends         %d (%.2f per 1,000 events)\n", r.ClaimAppends, float64(r.ClaimAppends)*1000/float64(r.Decided))
	}
	fmt.Fprintf(w, "decision latency      p50 %s  p99 %s  max %s (batch start -> claim durable: the dedupe cost)\n", ms(r.Decision.P50), ms(r.Decision.P99), ms(r.Decision.Max))
	fmt.Fprintf(w, "end-to-end latency    p50 %s  p99 %s (stored -> claim durable, includes queueing)\n", ms(r.EndToEnd.P50), ms(r.EndToEnd.P99))
	verdict := "PASS"
	if !r.ExactlyOnce {
		verdict = "FAIL"
	}
	fmt.Fprintf(w, "handler runs          %s (counted in process)\n", r.Runs)
	if err := r.Runs.Check(0); err != nil {
		fmt.Fprintf(w, "                      %v\n", err)
	}
	fmt.Fprintf(w, "output stream         %d effects for %d unique IDs: %d missing, %d duplicated -> exactly once: %s\n",
		r.Output, r.Unique, r.Missing, r.OutputDuplicates, verdict)
}
