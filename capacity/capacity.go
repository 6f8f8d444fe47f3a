// Package capacity sizes a onceplane deployment before anyone buys
// machines: from a target load and figures measured on real processes
// (Figures, written by `plan -calibrate`), it derives per region the
// partitions, shards, core nodes and edges, the memory of an edge, the
// claim-log disk, the ingest and replication bandwidth and the failover
// budget — each with the arithmetic that produced it. It is pure: no I/O.
package capacity

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Load is what the deployment must carry.
type Load struct {
	// Name labels the plan (a tier's name).
	Name string
	// Rate is events/s across the deployment, duplicates included.
	Rate float64
	// Regions is how many regions share it (evenly). Zero means 1.
	Regions int
	// Payload is bytes per event. Zero means 1 KiB.
	Payload int
	// DupRate is the share of events that repeat an earlier ID.
	DupRate float64
	// Window is how long IDs are remembered. Zero means 1 h.
	Window time.Duration
	// Strict decides each partition in its home region (routing events
	// there) instead of where they arrive (asynchronous mode).
	Strict bool
	// Replicas is the streams' replication: 1 or 3. Zero means 3.
	Replicas int
	// Batch is the edges' batch size. Zero means 500.
	Batch int
	// FailoverWithin is the most an edge's loss may stop its partitions:
	// detection plus replaying their claim logs. It sets a floor on the
	// partition count (a partition's window of IDs replays on one core).
	// Zero means 10 s.
	FailoverWithin time.Duration
}

// Machines are the nodes the plan is made of.
type Machines struct {
	// CoreCPUs and EdgeCPUs are cores per node. Zero means 8.
	CoreCPUs, EdgeCPUs float64
	// EdgeMemory is bytes an edge may give its exact sets and Bloom
	// filters. Zero means 32 GiB.
	EdgeMemory float64
	// Utilization is the share of each node's CPU the plan uses (headroom
	// for failover and bursts). Zero means 0.5.
	Utilization float64
}

// Figures are the per-event costs the plan scales, as measured.
type Figures struct {
	// Source says where they come from (a calibration run, its machine
	// and date).
	Source string `json:"source"`
	// CoreStoreCPU is a core node's CPU-seconds per million events stored
	// (one replica); CoreServeCPU per million events delivered to an edge
	// with their claim appends.
	CoreStoreCPU float64 `json:"core_store_cpu_s_per_m"`
	CoreServeCPU float64 `json:"core_serve_cpu_s_per_m"`
	// EdgeCPU is an edge's CPU-seconds per million events decided with the
	// Bloom pre-check; EdgeCPUNoBloom without it.
	EdgeCPU        float64 `json:"edge_cpu_s_per_m"`
	EdgeCPUNoBloom float64 `json:"edge_cpu_no_bloom_s_per_m"`
	// BytesPerID is an edge's memory per tracked ID (exact set and Bloom).
	BytesPerID float64 `json:"bytes_per_id"`
	// ClaimBytesPerID and ClaimRecordOverhead make a claim record's size:
	// overhead + bytes per first-time ID.
	ClaimBytesPerID     float64 `json:"claim_bytes_per_id"`
	ClaimRecordOverhead float64 `json:"claim_record_overhead_bytes"`
	// EventOverhead is stored bytes per event beyond its payload (subject,
	// headers, JetStream's own).
	EventOverhead float64 `json:"event_overhead_bytes"`
	// ReplayIDsPerSec is how fast a takeover replays a claim log into a
	// partition's state; DetectSec how long gossip takes to declare an edge
	// dead.
	ReplayIDsPerSec float64 `json:"replay_ids_per_s"`
	DetectSec       float64 `json:"detect_s"`
	// Filtering is what filtered consumers on a shared stream cost a core
	// node against a stream per partition. Informative: nil when not
	// measured.
	Filtering *Filtering `json:"filtering,omitempty"`
	// Scaling compares regions of one and of three core nodes measured in
	// the same calibration run on the same machine. Informative.
	Scaling []RegionRate `json:"scaling,omitempty"`
}

// Filtering compares, on one core node in one run, a region whose
// partitions share one stream (each read by a consumer filtered on its
// partition, the server skipping the others' messages) with one whose
// every partition has a stream of its own (shards = partitions, ingest
// partitioned by the account mapping): core CPU-seconds per million
// events stored and served.
type Filtering struct {
	Partitions     int     `json:"partitions"`
	SharedStoreCPU float64 `json:"shared_store_cpu_s_per_m"`
	SharedServeCPU float64 `json:"shared_serve_cpu_s_per_m"`
	OwnStoreCPU    float64 `json:"own_store_cpu_s_per_m"`
	OwnServeCPU    float64 `json:"own_serve_cpu_s_per_m"`
}

// RegionRate is one region's measured throughput: Events published
// through its nodes in turn (stored: every publish acknowledged), then one
// edge deciding them all (decided).
type RegionRate struct {
	Nodes    int `json:"nodes"`
	Replicas int `json:"replicas"`
	Shards   int `json:"shards"`
	Events   int `json:"events"`
	// Rounds is how many times it was measured; the figures are the
	// rounds' medians.
	Rounds int `json:"rounds"`
	// StoredPerSec and DecidedPerSec are events/s of each phase.
	StoredPerSec  float64 `json:"stored_per_s"`
	DecidedPerSec float64 `json:"decided_per_s"`
	// CoreStoreCPU and CoreServeCPU are the region's core nodes' summed
	// CPU-seconds per million events in each phase.
	CoreStoreCPU float64 `json:"core_store_cpu_s_per_m"`
	CoreServeCPU float64 `json:"core_serve_cpu_s_per_m"`
}

// Text prints the figures for a reader, the comparisons with them.
func (f Figures) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "figures: %s\n  core %.2f CPU-s per M events stored (per replica), %.2f per M served with their claims; edge %.2f per M decided (%.2f without Bloom);\n  %.1f B per tracked ID; claim records %.0f B + %.0f B per ID; %.0f B per event beyond its payload; replay %.3g IDs/s; detection %.2f s\n",
		f.Source, f.CoreStoreCPU, f.CoreServeCPU, f.EdgeCPU, f.EdgeCPUNoBloom, f.BytesPerID, f.ClaimRecordOverhead, f.ClaimBytesPerID, f.EventOverhead, f.ReplayIDsPerSec, f.DetectSec)
	if x := f.Filtering; x != nil {
		fmt.Fprintf(&b, "  %d partitions on one node, one stream each instead of one shared by filtered consumers: core %.2f CPU-s per M stored (%.2f shared, %+.0f %%), %.2f per M served (%.2f shared, %+.0f %%)\n",
			x.Partitions, x.OwnStoreCPU, x.SharedStoreCPU, 100*(x.OwnStoreCPU/x.SharedStoreCPU-1), x.OwnServeCPU, x.SharedServeCPU, 100*(x.OwnServeCPU/x.SharedServeCPU-1))
	}
	if len(f.Scaling) > 0 {
		base := f.Scaling[0]
		fmt.Fprintf(&b, "  regions measured in one run on this machine (CPU-bound: every node shares its cores):\n")
		for _, r := range f.Scaling {
			fmt.Fprintf(&b, "    %d node(s), R%d, %d shard(s): %8.0f events/s stored (%.2f×), %8.0f decided by one edge (%.2f×); cores %.1f + %.1f CPU-s per M\n",
				r.Nodes, r.Replicas, r.Shards, r.StoredPerSec, r.StoredPerSec/base.StoredPerSec, r.DecidedPerSec, r.DecidedPerSec/base.DecidedPerSec, r.CoreStoreCPU, r.CoreServeCPU)
		}
	}
	return b.String()
}

// Check refuses figures a plan cannot use.
func (f Figures) Check() error {
	var errs []error
	for _, v := range []struct {
		name string
		v    float64
	}{
		{"core_store_cpu_s_per_m", f.CoreStoreCPU}, {"core_serve_cpu_s_per_m", f.CoreServeCPU},
		{"edge_cpu_s_per_m", f.EdgeCPU}, {"edge_cpu_no_bloom_s_per_m", f.EdgeCPUNoBloom},
		{"bytes_per_id", f.BytesPerID}, {"claim_bytes_per_id", f.ClaimBytesPerID},
		{"replay_ids_per_s", f.ReplayIDsPerSec}, {"detect_s", f.DetectSec},
	} {
		if !(v.v > 0) || math.IsInf(v.v, 0) {
			errs = append(errs, fmt.Errorf("%s = %v: want a positive figure", v.name, v.v))
		}
	}
	if f.ClaimRecordOverhead < 0 || f.EventOverhead < 0 {
		errs = append(errs, errors.New("overheads must not be negative"))
	}
	return errors.Join(errs...)
}

func (l Load) withDefaults() Load {
	if l.Regions <= 0 {
		l.Regions = 1
	}
	if l.Payload <= 0 {
		l.Payload = 1024
	}
	if l.Window <= 0 {
		l.Window = time.Hour
	}
	if l.Replicas <= 0 {
		l.Replicas = 3
	}
	if l.Batch <= 0 {
		l.Batch = 500
	}
	if l.FailoverWithin <= 0 {
		l.FailoverWithin = 10 * time.Second
	}
	return l
}

func (m Machines) withDefaults() Machines {
	if m.CoreCPUs <= 0 {
		m.CoreCPUs = 8
	}
	if m.EdgeCPUs <= 0 {
		m.EdgeCPUs = 8
	}
	if m.EdgeMemory <= 0 {
		m.EdgeMemory = 32 << 30
	}
	if m.Utilization <= 0 || m.Utilization > 1 {
		m.Utilization = 0.5
	}
	return m
}

// Line is one figure of a plan and how it was reached.
type Line struct {
	Name, Value, Why string
}

// Plan is the sizing of one region (every region alike) and of the links
// between regions.
type Plan struct {
	Load     Load
	Machines Machines
	Figures  Figures

	RegionRate, UniqueRate float64 // events/s decided per region; first-time IDs/s across the deployment
	TrackedIDs             float64 // IDs an edge set of one region holds over a window
	Partitions, Shards     int
	CoreNodes, Edges       int
	EdgeMemory             float64 // bytes per edge
	ClaimDisk              float64 // bytes per region (every replica)
	IngestBandwidth        float64 // bytes/s into a region, replication inside it included
	PairBandwidth          float64 // bytes/s each way between two regions
	Failover               time.Duration
	Lines                  []Line
}

// Make plans load on machines with figures.
func Make(load Load, m Machines, f Figures) (Plan, error) {
	if err := f.Check(); err != nil {
		return Plan{}, fmt.Errorf("capacity figures: %w", err)
	}
	if !(load.Rate > 0) || load.DupRate < 0 || load.DupRate >= 1 || load.Replicas != 0 && load.Replicas != 1 && load.Replicas != 3 {
		return Plan{}, fmt.Errorf("capacity load: rate %v, duplicates %v, replicas %d: want a positive rate, 0 <= duplicates < 1, replicas 1 or 3", load.Rate, load.DupRate, load.Replicas)
	}
	l, m := load.withDefaults(), m.withDefaults()
	p := Plan{Load: l, Machines: m, Figures: f}
	line := func(name, value, format string, a ...any) {
		p.Lines = append(p.Lines, Line{name, value, fmt.Sprintf(format, a...)})
	}
	R, win := float64(l.Regions), l.Window.Seconds()
	p.RegionRate = l.Rate / R
	p.UniqueRate = l.Rate * (1 - l.DupRate)
	line("events decided per region", count(p.RegionRate), "%s / %d regions (each region decides %s)", count(l.Rate), l.Regions,
		map[bool]string{true: "its home partitions' events, from every region", false: "the events that arrive in it"}[l.Strict])

	// Memory: every ID an edge set must hold for a window.
	merged := 0.0 // other regions' first-time IDs/s merged into this region's state
	if l.Strict {
		p.TrackedIDs = p.UniqueRate / R * win
		line("IDs tracked per region", count(p.TrackedIDs), "%s first-time IDs/s / %d regions × %v window (strict: a region holds its home partitions' IDs)", count(p.UniqueRate), l.Regions, l.Window)
	} else {
		merged = p.UniqueRate * (R - 1) / R
		p.TrackedIDs = p.UniqueRate * win
		line("IDs tracked per region", count(p.TrackedIDs), "%s first-time IDs/s × %v window (asynchronous: a region holds its own claims and every other region's, merged)", count(p.UniqueRate), l.Window)
	}
	memEdges := int(math.Ceil(p.TrackedIDs * f.BytesPerID / (0.8 * m.EdgeMemory)))

	// Edge CPU: decisions, plus merging other regions' claims (counted as
	// a decision per merged ID: not measured apart).
	edgeCPU := (p.RegionRate + merged) * f.EdgeCPU / 1e6
	cpuEdges := int(math.Ceil(edgeCPU / (m.EdgeCPUs * m.Utilization)))
	// Failover: a lost edge's share of the IDs, tracked/E, is replayed by
	// the E-1 survivors on all their cores within the budget left after
	// detection: E(E-1) ≥ tracked / (cores × replay rate × budget).
	budget := l.FailoverWithin.Seconds() - f.DetectSec
	foNeed := p.TrackedIDs / (m.EdgeCPUs * f.ReplayIDsPerSec * max(budget, 0.1))
	foEdges := 2
	for float64(foEdges*(foEdges-1)) < foNeed {
		foEdges++
	}
	p.Edges = max(cpuEdges, memEdges, foEdges)
	line("edges per region", fmt.Sprint(p.Edges), "max(CPU: (%s decided + %s merged) × %.2f CPU-s/M = %.1f cores / (%.0f cores × %.0f%%) = %d, memory: %s IDs × %.1f B / 80%% of %s = %d, failover: E(E-1) ≥ %s IDs / (%.0f cores × %s IDs/s × %.2f s) → %d)",
		count(p.RegionRate), count(merged), f.EdgeCPU, edgeCPU, m.EdgeCPUs, 100*m.Utilization, cpuEdges, count(p.TrackedIDs), f.BytesPerID, bytes(m.EdgeMemory), memEdges,
		count(p.TrackedIDs), m.EdgeCPUs, count(f.ReplayIDsPerSec), budget, foEdges)

	// Partitions: one partition is one goroutine deciding in order.
	perPartition := m.Utilization * 1e6 / f.EdgeCPU
	need := max(8, int(math.Ceil(p.RegionRate/perPartition)), 4*p.Edges)
	p.Partitions = 1 << int(math.Ceil(math.Log2(float64(need))))
	why := fmt.Sprintf("next power of 2 ≥ max(8, %s / %s per partition (one core at %.0f%% ÷ %.2f CPU-s/M), 4 per edge = %d)",
		count(p.RegionRate), count(perPartition), 100*m.Utilization, f.EdgeCPU, 4*p.Edges)
	// Smaller partitions spread a lost edge's replay over the survivors'
	// cores (in waves of one partition per core): take the fewest that
	// meet the budget, else the fastest, up to 65,536.
	if fo, _ := p.failover(); fo > l.FailoverWithin {
		best, bestFo := p.Partitions, fo
		for n := p.Partitions * 2; n <= 1<<16; n *= 2 {
			p.Partitions = n
			if fo, _ := p.failover(); fo < bestFo {
				best, bestFo = n, fo
				if fo <= l.FailoverWithin {
					break
				}
			}
		}
		p.Partitions = best
		why += fmt.Sprintf(", raised to %d so that an edge's loss replays within %v", best, l.FailoverWithin)
		if bestFo > l.FailoverWithin {
			why += " (not met: more edges, or a faster replay, would)"
		}
	}
	line("partitions per region", fmt.Sprint(p.Partitions), "%s", why)
	p.EdgeMemory = p.TrackedIDs * f.BytesPerID / float64(p.Edges)
	line("memory per edge", bytes(p.EdgeMemory), "%s IDs × %.1f B / %d edges", count(p.TrackedIDs), f.BytesPerID, p.Edges)

	// Core nodes: storing every event on every replica, serving it once.
	coreCPU := p.RegionRate * (float64(l.Replicas)*f.CoreStoreCPU + f.CoreServeCPU) / 1e6
	cpuNodes := int(math.Ceil(coreCPU / (m.CoreCPUs * m.Utilization)))
	p.CoreNodes = max(l.Replicas, cpuNodes)
	line("core nodes per region", fmt.Sprint(p.CoreNodes), "max(%d replicas, %s × (%d × %.2f store + %.2f serve) CPU-s/M = %.1f cores / (%.0f cores × %.0f%%) = %d)",
		l.Replicas, count(p.RegionRate), l.Replicas, f.CoreStoreCPU, f.CoreServeCPU, coreCPU, m.CoreCPUs, 100*m.Utilization, cpuNodes)
	p.Shards = min(p.CoreNodes, p.Partitions)
	line("stream shards per region", fmt.Sprint(p.Shards), "one per core node (at most one per partition): each shard's ingest and claim streams lead on their own node")

	// Claim log: one record per batch, 16 bytes per first-time ID.
	localClaims := p.UniqueRate / R
	batches := p.RegionRate / float64(l.Batch)
	claimBps := localClaims*f.ClaimBytesPerID + batches*f.ClaimRecordOverhead
	keep := win * 1.25 // the claim stream keeps window + window/8 + up to a minute
	p.ClaimDisk = claimBps * keep * float64(l.Replicas)
	why = fmt.Sprintf("(%s IDs/s × %.0f B + %s batches/s × %.0f B) = %s/s × %v × 1.25 kept × %d replicas",
		count(localClaims), f.ClaimBytesPerID, count(batches), f.ClaimRecordOverhead, bytes(claimBps), l.Window, l.Replicas)
	if !l.Strict && l.Regions > 1 {
		p.ClaimDisk *= R // every other region's claim log, sourced into xclaims
		why += fmt.Sprintf(" × %d (its own and every other region's, sourced)", l.Regions)
	}
	line("claim-log disk per region", bytes(p.ClaimDisk), "%s", why)

	// Bandwidth.
	ev := float64(l.Payload) + f.EventOverhead
	p.IngestBandwidth = p.RegionRate * ev * float64(l.Replicas)
	line("ingest bandwidth per region", bytes(p.IngestBandwidth)+"/s", "%s × (%d B payload + %.0f B overhead) × %d replicas", count(p.RegionRate), l.Payload, f.EventOverhead, l.Replicas)
	switch {
	case l.Regions == 1:
	case l.Strict:
		p.PairBandwidth = p.RegionRate / R * ev
		line("replication per region pair, each way", bytes(p.PairBandwidth)+"/s", "strict: events arriving in one region for partitions homed in another: %s / %d × %.0f B", count(p.RegionRate), l.Regions, ev)
	default:
		p.PairBandwidth = claimBps
		line("replication per region pair, each way", bytes(p.PairBandwidth)+"/s", "asynchronous: one region's claim log sourced by the other (events stay where they arrive)")
	}

	// Failover: detect, then replay each orphaned partition's window.
	var detail string
	p.Failover, detail = p.failover()
	line("failover budget (an edge lost)", p.Failover.Round(time.Millisecond).String(), "%s", detail)
	return p, nil
}

// failover is the time an edge's loss stops its partitions: gossip's
// detection, then the replay of each orphaned partition's window of IDs,
// spread over the survivors and rebuilt in parallel on their cores.
func (p Plan) failover() (time.Duration, string) {
	f, m := p.Figures, p.Machines
	idsPerPartition := p.TrackedIDs / float64(p.Partitions)
	replay := idsPerPartition / f.ReplayIDsPerSec
	perEdge := math.Ceil(float64(p.Partitions) / float64(p.Edges))
	perSurvivor := math.Ceil(perEdge / float64(max(1, p.Edges-1)))
	waves := math.Ceil(perSurvivor / m.EdgeCPUs)
	d := time.Duration((f.DetectSec + replay*waves) * float64(time.Second))
	return d, fmt.Sprintf("%.2f s detection + %.0f wave(s) × %s IDs per partition / %s IDs/s replay (%.2f s): the lost edge's %.0f partitions, %.0f per survivor on %.0f cores",
		f.DetectSec, waves, count(idsPerPartition), count(f.ReplayIDsPerSec), replay, perEdge, perSurvivor, m.EdgeCPUs)
}

// Text writes the plan with its arithmetic.
func (p Plan) Text() string {
	var b strings.Builder
	l := p.Load
	mode := "asynchronous"
	if l.Strict {
		mode = "strict"
	}
	fmt.Fprintf(&b, "== %s: %s events/s, %d region(s), %s mode, R%d, %d B payload, %.0f%% duplicates, %v window\n",
		l.Name, count(l.Rate), l.Regions, mode, l.Replicas, l.Payload, 100*l.DupRate, l.Window)
	for _, x := range p.Lines {
		fmt.Fprintf(&b, "  %-38s %12s   %s\n", x.Name, x.Value, x.Why)
	}
	return b.String()
}

// Tiers are the seed analysis's four tiers as loads: 100, 10K, 1M and
// 100M events/s, 1 KiB payloads, 10 % duplicates, a 1-hour window.
func Tiers() []Load {
	base := Load{Payload: 1024, DupRate: 0.1, Window: time.Hour}
	t := func(name string, rate float64, regions, replicas int) Load {
		l := base
		l.Name, l.Rate, l.Regions, l.Replicas = name, rate, regions, replicas
		return l
	}
	return []Load{
		t("100 events/s", 100, 1, 1),
		t("10K events/s", 10_000, 1, 3),
		t("1M events/s", 1_000_000, 1, 3),
		t("100M events/s", 100_000_000, 5, 3),
	}
}

// count writes v with a metric suffix.
func count(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case a >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case a >= 1e3:
		return fmt.Sprintf("%.3gK", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}

// bytes writes v bytes in binary units.
func bytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.3g %s", v, units[i])
}
