package workload

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/onceplane/onceplane/producer"
)

// Mix describes a multi-region load: every ID is sent once to its own
// region (round robin), and shares of the IDs are sent again in the ways
// producers really repeat themselves. Shares are fractions of the IDs; zero
// means none.
type Mix struct {
	// Regions receive the IDs round robin.
	Regions []string
	// Events is the number of unique IDs.
	Events int
	// Rate is the pace of first sends, IDs per second across all regions.
	// Zero means 1,000.
	Rate int
	// DupRate: re-sent to the same region within the next 2 s.
	DupRate float64
	// RetryRate: re-sent to the same region at once, as after a lost ack.
	RetryRate float64
	// CrossRate: re-sent to another region 1.5 s later, after its claim
	// has replicated.
	CrossRate float64
	// RaceRate: sent to a second region at the same moment, a race inside
	// the replication lag (a conflict in asynchronous mode).
	RaceRate float64
	// Prefix starts every ID, so that runs sharing streams tell their IDs apart.
	Prefix string
	// Seed makes the schedule reproducible.
	Seed uint64
}

// Send is one scheduled publish.
type Send struct {
	// At is when to publish, from the start of the load.
	At     time.Duration
	Region string
	ID     string
	// Kind is "first", "dup", "retry", "cross" or "race".
	Kind string
}

// ID returns the i-th unique ID of the mix.
func (m Mix) ID(i int) string { return fmt.Sprintf("%sev-%d", m.Prefix, i) }

// Schedule returns the sends in time order and their number by kind.
func (m Mix) Schedule() ([]Send, map[string]int) {
	rate := m.Rate
	if rate <= 0 {
		rate = 1000
	}
	rng := rand.New(rand.NewPCG(m.Seed, 0x6f6e6365))
	regions := m.Regions
	step := time.Second / time.Duration(rate)
	var out []Send
	kinds := map[string]int{}
	add := func(s Send) { out = append(out, s); kinds[s.Kind]++ }
	for i := range m.Events {
		at := time.Duration(i) * step
		r := regions[i%len(regions)]
		id := m.ID(i)
		add(Send{at, r, id, "first"})
		other := regions[(i+1+rng.IntN(max(1, len(regions)-1)))%len(regions)]
		if len(regions) > 1 && rng.Float64() < m.RaceRate {
			add(Send{at, other, id, "race"})
		}
		if rng.Float64() < m.RetryRate {
			add(Send{at + time.Millisecond, r, id, "retry"})
		}
		if rng.Float64() < m.DupRate {
			add(Send{at + time.Duration(rng.IntN(2000))*time.Millisecond, r, id, "dup"})
		}
		if len(regions) > 1 && rng.Float64() < m.CrossRate {
			add(Send{at + 1500*time.Millisecond, other, id, "cross"})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
	return out, kinds
}

// Fallbacks is PublishPaced's pr for producers by region and, per region,
// the regions its publishers fail over to, in order of preference (its
// standby first): a region's own producer, then theirs.
func Fallbacks(prods map[string]*producer.Producer, to map[string][]string) func(region string) []*producer.Producer {
	return func(r string) []*producer.Producer {
		out := []*producer.Producer{prods[r]}
		for _, f := range to[r] {
			if p := prods[f]; p != nil && f != r {
				out = append(out, p)
			}
		}
		return out
	}
}

// PublishPaced publishes sends on their schedule, from the moment it is
// called: one publisher per region (pr returns its producer, and the
// producers of the regions to fail over to after it), each publishing what
// is due as one acknowledged, retried batch (see PublishFailover). progress, if set, is
// called with the number of sends just acknowledged, from any goroutine.
func PublishPaced(ctx context.Context, sends []Send, pr func(region string) []*producer.Producer, progress func(n int)) error {
	start := time.Now()
	byRegion := map[string][]Send{}
	var order []string
	for _, s := range sends {
		if _, ok := byRegion[s.Region]; !ok {
			order = append(order, s.Region)
		}
		byRegion[s.Region] = append(byRegion[s.Region], s)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, len(order))
	for _, r := range order {
		mine := byRegion[r]
		p := pr(r)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < len(mine); {
				now := time.Since(start)
				j := i
				for j < len(mine) && mine[j].At <= now {
					j++
				}
				if j == i {
					select {
					case <-ctx.Done():
						errs <- fmt.Errorf("publish to %s: %w", r, ctx.Err())
						return
					case <-time.After(min(10*time.Millisecond, mine[i].At-now)):
					}
					continue
				}
				ids := make([]string, 0, j-i)
				for _, s := range mine[i:j] {
					ids = append(ids, s.ID)
				}
				if err := PublishFailover(ctx, p, Plan{}, ids, len(ids), nil); err != nil {
					errs <- fmt.Errorf("publish to %s: %w", r, err)
					cancel()
					return
				}
				if progress != nil {
					progress(len(ids))
				}
				i = j
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}
