package campaign

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// FaultKind names a kind of fault.
type FaultKind string

// Fault kinds the schedule draws from.
const (
	// FaultKill kills an edge with SIGKILL and restarts it (same name and
	// ledger) after Hold.
	FaultKill FaultKind = "kill"
	// FaultPause stops an edge with SIGSTOP for Hold (sometimes past the
	// gossip failure timeout), then continues it.
	FaultPause FaultKind = "pause"
	// FaultCore kills a core node with SIGKILL and restarts it on its data
	// directory after Hold.
	FaultCore FaultKind = "core"
	// FaultCut cuts one edge's connection to the core for Hold (in-flight
	// pull answers are lost with it), then heals it.
	FaultCut FaultKind = "cut"
	// FaultFlap cuts one edge's connection every 400 ms, for a random
	// 20–150 ms each, during Hold, with 5–25 ms of delay on the link.
	FaultFlap FaultKind = "flap"
	// FaultFlapKill flaps one edge's connection as FaultFlap does and, in
	// the middle, kills the edge with SIGKILL and restarts it while its
	// connection keeps flapping: its takeovers start fresh consumers whose
	// first pull answers the cuts swallow (issue 10's reproduction).
	FaultFlapKill FaultKind = "flapkill"
	// FaultSkew restarts an edge (SIGKILL or SIGTERM) with its wall clock
	// offset by Offset.
	FaultSkew FaultKind = "skew"
	// FaultSink restarts an edge with a sink that fails, hangs and panics
	// often, for Hold, then restarts it with the baseline rates.
	FaultSink FaultKind = "sink"
	// FaultHostile publishes Count events of a hostile variant.
	FaultHostile FaultKind = "hostile"
	// FaultChaosPanic is a panic of an edge's chaos sink, counted from the
	// edges' logs (not scheduled: the sink draws it).
	FaultChaosPanic FaultKind = "chaos-panic"
	// FaultChaosFail and FaultChaosHang are the chaos sink's failures and
	// hangs (counted, never leaving work in flight).
	FaultChaosFail FaultKind = "chaos-fail"
	FaultChaosHang FaultKind = "chaos-hang"
	// FaultCrash is a process that exited by itself and was restarted.
	FaultCrash FaultKind = "crash"
)

// Scheduled lists the kinds a schedule can draw, with their weights.
var scheduled = []struct {
	kind   FaultKind
	weight int
}{
	{FaultKill, 3}, {FaultPause, 3}, {FaultCore, 1}, {FaultCut, 4}, {FaultFlap, 2}, {FaultFlapKill, 2},
	{FaultSkew, 2}, {FaultSink, 2}, {FaultHostile, 3},
}

// AllKinds returns every kind a schedule can draw.
func AllKinds() []FaultKind {
	out := make([]FaultKind, len(scheduled))
	for i, s := range scheduled {
		out[i] = s.kind
	}
	return out
}

// ParseKinds parses a comma-separated list of scheduled fault kinds.
func ParseKinds(s string) ([]FaultKind, error) {
	var out []FaultKind
	for _, f := range strings.Split(s, ",") {
		k := FaultKind(strings.TrimSpace(f))
		if k == "" {
			continue
		}
		if !slices.Contains(AllKinds(), k) {
			return nil, fmt.Errorf("unknown fault kind %q (want some of %v)", k, AllKinds())
		}
		out = append(out, k)
	}
	return out, nil
}

// LeavesWorkInFlight reports whether a fault of this kind can leave claimed
// events unfinished, which their next owner re-runs flagged uncertain.
func (k FaultKind) LeavesWorkInFlight() bool {
	switch k {
	case FaultKill, FaultPause, FaultCore, FaultCut, FaultFlap, FaultFlapKill, FaultSkew, FaultSink, FaultChaosPanic, FaultCrash:
		return true
	}
	return false
}

// Hostile variants of FaultHostile.
var hostileVariants = []string{
	"ctrl-headers",     // valid ID; Nats-Expected-Stream (true at ingest) and forged onceplane headers
	"ctrl-ttl",         // valid ID; Nats-TTL
	"ctrl-rollup",      // valid ID; Nats-Rollup
	"ctrl-expect-seq",  // valid ID; Nats-Expected-Last-Sequence
	"ctrl-noid",        // no ID; Nats-Expected-Stream
	"max-valid",        // valid ID; payload at the edge's limit
	"max-size",         // valid ID; payload and headers near 1 MiB (over the edge's limit)
	"missing-id",       // no Nats-Msg-Id
	"long-id",          // an ID over 128 bytes
	"bad-charset",      // an ID with a byte outside the contract
	"misrouted",        // a valid ID on another ID's subject
	"resend-diff-late", // an ID acked earlier, re-sent with another payload
}

// Fault is one scheduled fault. Its random details are drawn when the
// schedule is made, so a seed replays the same schedule.
type Fault struct {
	At   time.Duration
	Kind FaultKind
	// Target is the edge or core node index.
	Target int
	// Hold is how long the fault lasts.
	Hold time.Duration
	// Offset is, for skew, the new clock offset.
	Offset time.Duration
	// KillAt and Down are, for flapkill, when into the flap the edge is
	// killed and how long it stays down.
	KillAt, Down time.Duration
	// Graceful is, for skew, a SIGTERM restart instead of SIGKILL.
	Graceful bool
	// Fail, Hang and Panic are, for sink, the chaos rates while it lasts.
	Fail, Hang, Panic float64
	// Hostile is the variant and Count the events, for hostile.
	Hostile string
	Count   int
	// Seed seeds what the fault draws while it runs (flap cut lengths).
	Seed uint64
}

func (f Fault) String() string {
	s := fmt.Sprintf("%7.1fs %-7s", f.At.Seconds(), f.Kind)
	switch f.Kind {
	case FaultKill, FaultPause, FaultCut, FaultFlap:
		s += fmt.Sprintf(" edge-%d for %v", f.Target, f.Hold.Round(time.Millisecond))
	case FaultFlapKill:
		s += fmt.Sprintf(" edge-%d for %v, killed after %v for %v", f.Target, f.Hold.Round(time.Millisecond), f.KillAt.Round(time.Millisecond), f.Down.Round(time.Millisecond))
	case FaultCore:
		s += fmt.Sprintf(" core-%d down %v", f.Target, f.Hold.Round(time.Millisecond))
	case FaultSkew:
		how := "kill -9"
		if f.Graceful {
			how = "SIGTERM"
		}
		s += fmt.Sprintf(" edge-%d restarted (%s) with clock offset %v", f.Target, how, f.Offset)
	case FaultSink:
		s += fmt.Sprintf(" edge-%d fail %.2f hang %.2f panic %.3f for %v", f.Target, f.Fail, f.Hang, f.Panic, f.Hold.Round(time.Millisecond))
	case FaultHostile:
		s += fmt.Sprintf(" %d × %s", f.Count, f.Hostile)
	}
	return s
}

// PlanOptions shapes a schedule.
type PlanOptions struct {
	// Duration is the fault phase; no fault starts after it, and holds end by it.
	Duration time.Duration
	// Warmup passes before the first fault.
	Warmup time.Duration
	// MeanGap is the mean time between fault starts (exponential gaps).
	MeanGap time.Duration
	// Edges and Cores are how many targets there are.
	Edges, Cores int
	// Kinds are the kinds to draw. Empty means all.
	Kinds []FaultKind
	// GossipTimeout is about when a paused edge is declared dead; pauses
	// are drawn on both sides of it.
	GossipTimeout time.Duration
}

// Plan draws a schedule from seed. It is a pure function of its arguments.
func Plan(seed uint64, o PlanOptions) []Fault {
	r := rand.New(rand.NewPCG(seed, 0x5c4ed))
	kinds := o.Kinds
	if len(kinds) == 0 {
		kinds = AllKinds()
	}
	total := 0
	for _, s := range scheduled {
		if slices.Contains(kinds, s.kind) {
			total += s.weight
		}
	}
	if total == 0 || o.MeanGap <= 0 || o.Edges <= 0 {
		return nil
	}
	if o.GossipTimeout <= 0 {
		o.GossipTimeout = 1500 * time.Millisecond
	}
	between := func(lo, hi time.Duration) time.Duration { return lo + time.Duration(r.Int64N(int64(hi-lo)+1)) }
	var out []Fault
	for at := o.Warmup + time.Duration(r.ExpFloat64()*float64(o.MeanGap)); at < o.Duration; at += time.Duration(r.ExpFloat64() * float64(o.MeanGap)) {
		pick := r.IntN(total)
		var kind FaultKind
		for _, s := range scheduled {
			if !slices.Contains(kinds, s.kind) {
				continue
			}
			if pick < s.weight {
				kind = s.kind
				break
			}
			pick -= s.weight
		}
		f := Fault{At: at, Kind: kind, Target: r.IntN(o.Edges), Seed: r.Uint64()}
		switch kind {
		case FaultKill:
			f.Hold = between(0, 3*time.Second)
		case FaultPause:
			if r.IntN(2) == 0 {
				f.Hold = between(200*time.Millisecond, o.GossipTimeout*2/3)
			} else {
				f.Hold = between(o.GossipTimeout*2, 4*o.GossipTimeout)
			}
		case FaultCore:
			f.Target = r.IntN(max(o.Cores, 1))
			f.Hold = between(500*time.Millisecond, 3*time.Second)
		case FaultCut:
			f.Hold = between(100*time.Millisecond, 3*time.Second)
		case FaultFlap:
			f.Hold = between(5*time.Second, 20*time.Second)
		case FaultFlapKill:
			f.Hold = between(8*time.Second, 20*time.Second)
			f.KillAt = between(f.Hold/5, f.Hold/2)
			f.Down = between(0, 1500*time.Millisecond)
		case FaultSkew:
			f.Offset = between(time.Hour, 6*time.Hour).Truncate(time.Minute)
			if r.IntN(2) == 0 {
				f.Offset = -f.Offset
			}
			if r.IntN(4) == 0 {
				f.Offset = 0 // back to the true time
			}
			f.Graceful = r.IntN(2) == 0
		case FaultSink:
			f.Hold = between(3*time.Second, 12*time.Second)
			f.Fail = 0.1 + 0.4*r.Float64()
			f.Hang = 0.05 * r.Float64()
			f.Panic = 0.05 * r.Float64()
		case FaultHostile:
			f.Target = 0
			f.Hostile = hostileVariants[r.IntN(len(hostileVariants))]
			f.Count = 1 + r.IntN(3)
		}
		if f.At+f.Hold > o.Duration {
			f.Hold = max(o.Duration-f.At, 0)
		}
		out = append(out, f)
	}
	return out
}
