package capacity

import (
	"math"
	"strings"
	"testing"
	"time"
)

// figs are round figures, so that every number below can be checked by hand.
var figs = Figures{Source: "test", CoreStoreCPU: 10, CoreServeCPU: 20, EdgeCPU: 5, EdgeCPUNoBloom: 4,
	BytesPerID: 20, ClaimBytesPerID: 16, ClaimRecordOverhead: 100, EventOverhead: 100, ReplayIDsPerSec: 1e6, DetectSec: 1}

func TestPlanArithmetic(t *testing.T) {
	p, err := Make(Load{Rate: 1_000_000, Regions: 1, Payload: 900, DupRate: 0.1, Window: time.Hour, Replicas: 3},
		Machines{CoreCPUs: 8, EdgeCPUs: 8, EdgeMemory: 10 << 30, Utilization: 0.5}, figs)
	if err != nil {
		t.Fatal(err)
	}
	// 900K first-time IDs/s × 3600 s.
	if p.TrackedIDs != 900_000*3600 {
		t.Fatalf("tracked %v", p.TrackedIDs)
	}
	// CPU: 1M × 5 / 1e6 = 5 cores / 4 = 2 edges; memory: 3.24G × 20 B / 8 GiB = 7.54 -> 8;
	// failover: E(E-1) ≥ 3.24G / (8 × 1M × 9 s) = 45 -> 8.
	if p.Edges != 8 {
		t.Fatalf("edges %d, want 8", p.Edges)
	}
	// Per partition 0.5 × 1e6 / 5 = 100K/s: 10 needed; 4 per edge = 32 -> 32; but
	// failover within 10 s: at 1024 partitions 3 waves of 3.16 s (10.5 s), at 2048
	// 5 waves of 1.58 s (8.9 s).
	if p.Partitions != 2048 {
		t.Fatalf("partitions %d", p.Partitions)
	}
	// Core: 1M × (3 × 10 + 20) / 1e6 = 50 cores / 4 = 13 nodes.
	if p.CoreNodes != 13 || p.Shards != 13 {
		t.Fatalf("core nodes %d, shards %d", p.CoreNodes, p.Shards)
	}
	// Claims: 900K × 16 + 2000 batches × 100 = 14.6 MB/s × 3600 × 1.25 × 3.
	if want := (900_000*16.0 + 2000*100) * 3600 * 1.25 * 3; math.Abs(p.ClaimDisk-want) > 1 {
		t.Fatalf("claim disk %v, want %v", p.ClaimDisk, want)
	}
	if want := 1e6 * 1000 * 3.0; p.IngestBandwidth != want {
		t.Fatalf("ingest %v, want %v", p.IngestBandwidth, want)
	}
	if p.PairBandwidth != 0 {
		t.Fatalf("one region has no pair traffic: %v", p.PairBandwidth)
	}
	// 256 partitions per edge over 7 survivors: 37 each, 5 waves on 8 cores.
	if got, want := p.Failover.Seconds(), 1+5*3.24e9/2048/1e6; math.Abs(got-want) > 0.01 {
		t.Fatalf("failover %v s, want %v", got, want)
	}
	text := p.Text()
	for _, want := range []string{"edges per region", "memory per edge", "claim-log disk", "failover budget", "900K first-time IDs/s"} {
		if !strings.Contains(text, want) {
			t.Errorf("text lacks %q:\n%s", want, text)
		}
	}
}

// TestModes: asynchronous regions hold every region's IDs and exchange
// claims; strict regions hold their home share and exchange events.
func TestModes(t *testing.T) {
	load := Load{Rate: 300_000, Regions: 3, Payload: 1000, Window: time.Hour}
	async, err := Make(load, Machines{}, figs)
	if err != nil {
		t.Fatal(err)
	}
	load.Strict = true
	strict, err := Make(load, Machines{}, figs)
	if err != nil {
		t.Fatal(err)
	}
	if async.TrackedIDs != 3*strict.TrackedIDs {
		t.Fatalf("async tracks %v, strict %v: want 3x", async.TrackedIDs, strict.TrackedIDs)
	}
	if want := 100_000*16.0 + 200*100; async.PairBandwidth != want {
		t.Fatalf("async pair %v, want the claim log %v", async.PairBandwidth, want)
	}
	if want := 100_000.0 / 3 * 1100; math.Abs(strict.PairBandwidth-want) > 1e-6 {
		t.Fatalf("strict pair %v, want routed events %v", strict.PairBandwidth, want)
	}
	if async.ClaimDisk != 3*strict.ClaimDisk {
		t.Fatalf("async claim disk %v should hold three regions' logs (strict %v)", async.ClaimDisk, strict.ClaimDisk)
	}
}

func TestRefusals(t *testing.T) {
	if _, err := Make(Load{Rate: 0}, Machines{}, figs); err == nil {
		t.Error("zero rate planned")
	}
	if _, err := Make(Load{Rate: 1, DupRate: 1}, Machines{}, figs); err == nil {
		t.Error("all-duplicates planned")
	}
	if _, err := Make(Load{Rate: 1, Replicas: 2}, Machines{}, figs); err == nil {
		t.Error("R2 planned")
	}
	bad := figs
	bad.EdgeCPU = 0
	if _, err := Make(Load{Rate: 1}, Machines{}, bad); err == nil || !strings.Contains(err.Error(), "edge_cpu_s_per_m") {
		t.Errorf("zero edge figure: %v", err)
	}
}

// TestTiersGrow: each tier needs at least what the one below does, and
// the seed's arithmetic is what the plan's memory line starts from.
func TestTiersGrow(t *testing.T) {
	var prev Plan
	for i, l := range Tiers() {
		p, err := Make(l, Machines{}, figs)
		if err != nil {
			t.Fatal(err)
		}
		if i > 0 && (p.Edges < prev.Edges || p.Partitions < prev.Partitions || p.CoreNodes < prev.CoreNodes) {
			t.Errorf("%s needs less than %s", l.Name, prev.Load.Name)
		}
		prev = p
	}
	// The seed: 16 B × 1M/s × 3600 s ≈ 57.6 GB. The plan counts first-time
	// IDs (duplicates are not stored) and its own bytes per ID.
	p, _ := Make(Load{Rate: 1e6, Window: time.Hour, Replicas: 1}, Machines{}, Figures{CoreStoreCPU: 1, CoreServeCPU: 1, EdgeCPU: 1, EdgeCPUNoBloom: 1,
		BytesPerID: 16, ClaimBytesPerID: 16, ReplayIDsPerSec: 1, DetectSec: 1})
	if total := p.TrackedIDs * 16; total != 57.6e9 {
		t.Fatalf("seed check: %v bytes", total)
	}
}
