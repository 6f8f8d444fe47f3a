package verify

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/sink"
)

// Runs counts handler runs per event ID apart from the system under test:
// from the edges' ledger files (one line per run) or in process, as a
// handler at the head of the sink chain. An output stream cannot do this:
// its Nats-Msg-Id window makes a second effect of an ID invisible there, so
// output counts can only see losses. Runs is safe for concurrent use.
type Runs struct {
	mu      sync.Mutex
	runs    map[string]int
	flagged map[string]int // runs the handler was told might repeat an effect (Event.Uncertain)
	torn    int
}

// NewRuns returns an empty count.
func NewRuns() *Runs { return &Runs{runs: map[string]int{}, flagged: map[string]int{}} }

// Add counts one run of id.
func (r *Runs) Add(id string, uncertain bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.runs[id]++
	if uncertain {
		r.flagged[id]++
	}
}

// Handle counts each event as one run. It never fails, so it can head a
// sink.Chain and see every call of the sinks after it.
func (r *Runs) Handle(_ context.Context, evs []event.Event) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, ev := range evs {
		r.runs[ev.ID]++
		if ev.Uncertain {
			r.flagged[ev.ID]++
		}
	}
	return nil
}

// AddLedger counts the runs a ledger file records, for IDs keep accepts
// (nil: every ID). A line cut short by a killed writer is skipped and
// counted in RunAccount.Torn: the run it recorded was in a batch the next
// owner re-ran flagged.
func (r *Runs) AddLedger(path string, keep func(id string) bool) error {
	lines, bad, err := sink.ScanLedger(path)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", path, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.torn += bad
	for _, l := range lines {
		if keep != nil && !keep(l.ID) {
			continue
		}
		r.runs[l.ID]++
		if l.Uncertain {
			r.flagged[l.ID]++
		}
	}
	return nil
}

// Distinct is the number of IDs run at least once.
func (r *Runs) Distinct() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.runs)
}

// Total is the number of runs counted.
func (r *Runs) Total() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, k := range r.runs {
		n += k
	}
	return n
}

// Effects returns, per ID, its effects as G1 counts them: its runs not
// flagged uncertain, and at least one if it ran at all (an ID run only as a
// flagged re-run had one effect). Tally takes this per region.
func (r *Runs) Effects() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int, len(r.runs))
	for id, n := range r.runs {
		out[id] = max(1, n-r.flagged[id])
	}
	return out
}

// RunAccount is what the run counts say about a set of IDs.
type RunAccount struct {
	IDs  int // distinct IDs accounted for
	Runs int // their handler runs
	Lost int // IDs no handler ran
	// Extra counts runs beyond one per ID; Flagged those of them the handler
	// was told might be repeats (the uncertain set and panicked batches);
	// Unflagged counts the IDs with an extra run that was not (G1 allows none).
	Extra, Flagged, Unflagged int
	// Torn counts ledger lines a killed writer cut short.
	Torn int
	// Missing names a few lost IDs, Examples a few run again unflagged.
	Missing, Examples []string
}

// Account accounts for ids (repeats ignored).
func (r *Runs) Account(ids []string) RunAccount {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := RunAccount{Torn: r.torn}
	seen := make(map[string]bool, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		a.IDs++
		n, f := r.runs[id], r.flagged[id]
		a.Runs += n
		switch {
		case n == 0:
			a.Lost++
			if len(a.Missing) < 5 {
				a.Missing = append(a.Missing, id)
			}
		case n > 1:
			a.Extra += n - 1
			a.Flagged += min(n-1, f)
			if n-1 > f {
				a.Unflagged++
				if len(a.Examples) < 5 {
					a.Examples = append(a.Examples, fmt.Sprintf("%s handled %d times, %d flagged uncertain", id, n, f))
				}
			}
		}
	}
	slices.Sort(a.Missing)
	slices.Sort(a.Examples)
	return a
}

// Check returns what in the account breaks G1: a lost ID, an extra run not
// flagged uncertain, or more flagged re-runs than bound (the batches that
// can be in flight at the disruptions; negative means unbounded).
func (a RunAccount) Check(bound int) error {
	var errs []error
	if a.Lost > 0 {
		errs = append(errs, fmt.Errorf("%d of %d IDs never handled (e.g. %s)", a.Lost, a.IDs, strings.Join(a.Missing, ", ")))
	}
	if a.Unflagged > 0 {
		errs = append(errs, fmt.Errorf("%d IDs handled again without the uncertain flag (%d extra runs, %d flagged; e.g. %s)", a.Unflagged, a.Extra, a.Flagged, strings.Join(a.Examples, "; ")))
	}
	if bound >= 0 && a.Flagged > bound {
		errs = append(errs, fmt.Errorf("%d flagged re-runs exceed the in-flight bound %d", a.Flagged, bound))
	}
	return errors.Join(errs...)
}

// String summarises the account.
func (a RunAccount) String() string {
	s := fmt.Sprintf("%d IDs, %d handler runs: %d lost, %d extra (%d flagged uncertain, %d IDs unflagged)", a.IDs, a.Runs, a.Lost, a.Extra, a.Flagged, a.Unflagged)
	if a.Torn > 0 {
		s += fmt.Sprintf(", %d torn ledger lines", a.Torn)
	}
	return s
}
