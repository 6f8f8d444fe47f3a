package campaign

import (
	"context"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/onceplane/onceplane/testbed/proc"
)

var (
	runCampaign      = flag.Bool("campaign", false, "run the fault campaign (real processes, minutes)")
	campaignSeed     = flag.Uint64("campaign.seed", 0, "campaign seed (0: from the clock; printed)")
	campaignDuration = flag.Duration("campaign.duration", 90*time.Second, "campaign fault phase")
	campaignCores    = flag.Int("campaign.cores", 1, "campaign core nodes: 1 or 3")
)

// TestCampaignShort runs the fault campaign's short form: a seeded random
// schedule of kills, pauses, core restarts, cut connections, skewed clocks,
// hostile producers and failing sinks for about two minutes, then fails on
// any violation. It runs with -campaign (see .ci/run); -campaign.seed
// replays a run. ONCEPLANE_CAMPAIGN_DIR keeps the run's directory; a
// failing run keeps a temporary one and says where.
func TestCampaignShort(t *testing.T) {
	if !*runCampaign {
		t.Skip("the campaign runs with -campaign (see .ci/run)")
	}
	edgeBin, coreBin := buildBins(t)
	cfg := Config{
		EdgeBin: edgeBin, CoreBin: coreBin, Dir: os.Getenv("ONCEPLANE_CAMPAIGN_DIR"),
		Seed: *campaignSeed, Duration: *campaignDuration, Cores: *campaignCores,
		Chaos: ChaosRates{Fail: 0.01, Hang: 0.002, Panic: 0.0005},
	}
	ctx, cancel := context.WithTimeout(context.Background(), *campaignDuration+10*time.Minute)
	defer cancel()
	r, err := Run(ctx, cfg)
	if r != nil {
		r.Print(os.Stdout)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Errors) > 0 {
		t.Errorf("the campaign itself failed %d times (first: %v): it tested less than planned", len(r.Errors), r.Errors[0])
	}
	if r.Verdict.Runs == 0 || r.Faults[string(FaultKill)]+r.Faults[string(FaultCut)]+r.Faults[string(FaultPause)] == 0 {
		t.Errorf("a campaign that handled %d events under %v proves nothing", r.Verdict.Runs, r.Faults)
	}
	if !r.OK() {
		t.Fatalf("campaign seed %d: %d kinds of violation (replay: go test ./drill/campaign -run TestCampaignShort -campaign -campaign.seed %d); dir %s",
			r.Seed, len(r.Verdict.Violations), r.Seed, r.Dir)
	}
}

// TestCampaignRegionsShort runs the three-region campaign's short form:
// every region under its own schedule, link cuts between regions, edges'
// clocks hours apart between regions and IDs sent to two regions at once;
// it fails on any violation in a region or across regions. It runs with
// -campaign (see .ci/run).
func TestCampaignRegionsShort(t *testing.T) {
	if !*runCampaign {
		t.Skip("the campaign runs with -campaign (see .ci/run)")
	}
	edgeBin, coreBin := buildBins(t)
	dir := os.Getenv("ONCEPLANE_CAMPAIGN_DIR")
	cfg := Config{
		EdgeBin: edgeBin, CoreBin: coreBin, Dir: dir, Regions: 3,
		Seed: *campaignSeed, Duration: *campaignDuration, Edges: 2, Partitions: 4, Rate: 150, MeanGap: 4 * time.Second,
		WANGap: 8 * time.Second, Chaos: ChaosRates{Fail: 0.01, Hang: 0.002, Panic: 0.0005},
	}
	ctx, cancel := context.WithTimeout(context.Background(), *campaignDuration+15*time.Minute)
	defer cancel()
	m, err := RunRegions(ctx, cfg)
	if m != nil {
		m.Print(os.Stdout)
	}
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Errors) > 0 {
		t.Errorf("the campaign itself failed %d times (first: %v): it tested less than planned", len(m.Errors), m.Errors[0])
	}
	if len(m.WAN) == 0 || m.Races.Raced == 0 {
		t.Errorf("%d link cuts and %d raced IDs prove nothing across regions", len(m.WAN), m.Races.Raced)
	}
	if !m.OK() {
		t.Fatalf("three-region campaign seed %d failed (replay: go test ./drill/campaign -run TestCampaignRegionsShort -campaign -campaign.seed %d); dir %s",
			m.Seed, m.Seed, m.Dir)
	}
}

// buildBins builds the edge and core binaries the campaign runs.
func buildBins(t *testing.T) (edgeBin, coreBin string) {
	t.Helper()
	bin := t.TempDir()
	var err error
	if edgeBin, err = proc.Build("../../..", bin, "./cmd/edge"); err != nil {
		t.Fatal(err)
	}
	if coreBin, err = proc.Build("../../..", bin, "./cmd/core"); err != nil {
		t.Fatal(err)
	}
	return edgeBin, coreBin
}
