package campaign

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/testbed/deploy"
	"github.com/onceplane/onceplane/testbed/drill"
	"github.com/onceplane/onceplane/testbed/ports"
	"github.com/onceplane/onceplane/testbed/wan"
)

// multiRegions are the regions of a three-region campaign, in order.
var multiRegions = []string{"us-east", "eu-west", "ap-south"}

// wanDelay and wanJitter shape the links between regions' gateways.
const (
	wanDelay  = 20 * time.Millisecond
	wanJitter = 2 * time.Millisecond
)

// MultiReport is what a three-region campaign did and found: each region's
// own report (its schedule, history and verdict), the faults between the
// regions, and the cross-region account of the IDs sent to two regions.
type MultiReport struct {
	Seed   uint64
	Config Config
	// Dir holds every region's directory; "" when it was removed.
	Dir     string
	Regions []*Report
	// Offsets are the clock offsets each region's edges started with.
	Offsets map[string]time.Duration
	// WANSchedule is the drawn schedule of link faults; WAN what was injected.
	WANSchedule []WANFault
	WAN         []Injected
	Races       RaceVerdict
	// ConflictsWait is how long the conflicts took to be all recorded
	// (ConflictTimeout when they were not).
	ConflictsWait time.Duration
	// Replication describes, once the conflicts were waited for, each
	// region's claim log and how far its xclaims stream's sources are.
	Replication []string
	Elapsed     time.Duration
	Errors      []error
}

// OK reports whether no region and no race broke a promise.
func (m *MultiReport) OK() bool {
	for _, r := range m.Regions {
		if !r.OK() {
			return false
		}
	}
	return m.Races.OK()
}

// regionSeed derives region i's seed (its schedule, load and chaos sinks)
// from the campaign's.
func regionSeed(seed uint64, i int) uint64 { return seed*31 + uint64(i+1)*1_000_000_007 }

// RegionOffsets draws the clock offset every edge of each region starts
// with: whole minutes within ±6 hours, so regions disagree by hours. It is
// a pure function of its arguments.
func RegionOffsets(seed uint64, regions []string) map[string]time.Duration {
	r := rand.New(rand.NewPCG(seed, 0x0ff5e7))
	out := map[string]time.Duration{}
	for _, name := range regions {
		out[name] = (time.Duration(r.Int64N(int64(12*time.Hour))) - 6*time.Hour).Truncate(time.Minute)
	}
	return out
}

// RunRegions runs a campaign over three regions of real processes: each
// region runs the single-region campaign (its own core node, edges, load,
// schedule and check), with edges whose clocks are hours apart between
// regions; the cores are joined by gateways through WAN links that a
// second schedule cuts (both ways or one way) and heals; and a racer sends
// IDs to two regions at once. Once all settled, every region's history is
// checked as Run checks one, and the races across regions: each raced ID
// handled somewhere, and the conflicts recorded exactly the IDs two
// regions handled.
func RunRegions(ctx context.Context, cfg Config) (*MultiReport, error) {
	cfg = cfg.withDefaults()
	if cfg.EdgeBin == "" || cfg.CoreBin == "" {
		return nil, errors.New("campaign: EdgeBin and CoreBin are required")
	}
	if cfg.Regions != len(multiRegions) {
		return nil, fmt.Errorf("campaign: %d regions, want %d", cfg.Regions, len(multiRegions))
	}
	if cfg.Cores != 1 {
		return nil, fmt.Errorf("campaign: %d cores per region; three regions run one each", cfg.Cores)
	}
	tempDir, err := prepareDir(&cfg)
	if err != nil {
		return nil, err
	}
	log := cfg.Logger
	names := multiRegions
	m := &MultiReport{Seed: cfg.Seed, Config: cfg, Dir: cfg.Dir, Offsets: RegionOffsets(cfg.Seed, names)}
	m.WANSchedule = PlanWAN(cfg.Seed, WANPlanOptions{Duration: cfg.Duration, Warmup: cfg.Warmup, MeanGap: cfg.WANGap, Regions: names})
	log.Info("three-region campaign starting", "seed", cfg.Seed, "duration", cfg.Duration, "wan_faults", len(m.WANSchedule), "dir", cfg.Dir)

	net, cores, err := startSupercluster(ctx, cfg, names)
	if err != nil {
		return m, err
	}
	defer net.close()
	var regions []*region
	defer func() {
		for _, r := range regions {
			r.close()
		}
		for _, c := range cores {
			c.Stop()
		}
	}()
	for i, name := range names {
		rc := cfg
		rc.Dir, rc.Seed, rc.Logger = filepath.Join(cfg.Dir, name), regionSeed(cfg.Seed, i), log.With("region", name)
		rep := &Report{Region: name, Seed: rc.Seed, Config: rc, Dir: rc.Dir, Schedule: Plan(rc.Seed, PlanOptionsOf(rc))}
		m.Regions = append(m.Regions, rep)
		r, err := startRegion(ctx, rc, regionSpec{name: name, peers: others(names, name), cores: cores[i], offset: m.Offsets[name]})
		if err != nil {
			return m, err
		}
		regions = append(regions, r)
	}
	for _, r := range regions {
		if err := r.waitOwned(ctx, 2*time.Minute); err != nil {
			return m, err
		}
	}
	log.Info("regions up", "regions", len(names), "edges_per_region", cfg.Edges, "partitions", cfg.Partitions, "offsets", fmt.Sprint(m.Offsets))

	racer := &racer{seed: cfg.Seed, rate: cfg.RaceRate}
	var producers []*load
	sent := func() map[string][]Publish {
		out := map[string][]Publish{}
		for i, name := range names {
			producers[i].mu.Lock()
			out[name] = slices.Clone(producers[i].races)
			producers[i].mu.Unlock()
		}
		return out
	}
	// Conflicts are found by the edges as they merge the other regions'
	// claims, which a healed link delivers at its sources' next retry: with
	// the edges still running, wait (bounded) until every raced ID two
	// regions' ledgers show handled is recorded as a conflict.
	var readErr error
	var conflicts map[string]bool
	settled := func(ctx context.Context) {
		t0 := time.Now()
		poll.Until(cfg.ConflictTimeout, func() bool {
			if ctx.Err() != nil {
				return true
			}
			in := RaceInput{Sent: sent(), Runs: map[string][]HandlerRun{}}
			for i, name := range names {
				in.Runs[name] = regions[i].ledgerRuns()
			}
			if conflicts, readErr = readConflicts(ctx, regions); readErr != nil {
				return false
			}
			for h := range ExpectedConflicts(in) {
				if !conflicts[h] {
					return false
				}
			}
			return true
		})
		m.ConflictsWait = time.Since(t0)
		m.Replication = replication(ctx, regions)
	}
	err = drive(ctx, cfg.Duration, regions, m.Regions, hooks{
		during: func(ctx, stop context.Context, loads []*load) {
			producers = loads
			var wg sync.WaitGroup
			wg.Go(func() { net.run(stop, regions[0].start, m.WANSchedule) })
			wg.Go(func() { racer.run(ctx, stop, loads) })
			wg.Wait()
		},
		settled: settled,
	})
	if err != nil {
		return m, err
	}
	m.WAN = net.injected()
	if readErr != nil {
		m.Errors = append(m.Errors, fmt.Errorf("read conflicts: %w", readErr))
	}
	in := RaceInput{Sent: sent(), Runs: map[string][]HandlerRun{}, DeadLetters: map[string][]DeadLetter{}, Conflicts: conflicts}
	for i, name := range names {
		in.Runs[name] = m.Regions[i].History.Runs
		in.DeadLetters[name] = m.Regions[i].History.DeadLetters
	}
	m.Races = CheckRaces(in)
	m.Elapsed = time.Since(regions[0].start)
	for _, rep := range m.Regions {
		m.Errors = append(m.Errors, rep.Errors...)
		rep.save()
	}
	m.save()
	if tempDir && m.OK() && len(m.Errors) == 0 {
		_ = os.RemoveAll(cfg.Dir)
		m.Dir = ""
		for _, rep := range m.Regions {
			rep.Dir = ""
		}
	}
	return m, nil
}

// others returns names without name.
func others(names []string, name string) []string {
	var out []string
	for _, n := range names {
		if n != name {
			out = append(out, n)
		}
	}
	return out
}

// readConflicts reads every region's conflicts stream: the hashes recorded.
func readConflicts(ctx context.Context, regions []*region) (map[string]bool, error) {
	out := map[string]bool{}
	for _, r := range regions {
		rctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		recs, err := deploy.ReadConflicts(rctx, r.js, r.names)
		cancel()
		if err != nil {
			return out, err
		}
		for _, rec := range recs {
			out[rec.Hash] = true
		}
	}
	return out, nil
}

// wanNet is the WAN between regions: one link per direction of each pair
// of regions, carrying the first region's gateway connection to the second.
type wanNet struct {
	log   *slog.Logger
	links map[[2]string]*wan.Link

	mu     sync.Mutex
	faults []Injected
}

// startSupercluster starts one core node per region, joined by gateways
// through WAN links, and waits for every region's streams (the xclaims and
// conflicts streams among them).
func startSupercluster(ctx context.Context, cfg Config, names []string) (*wanNet, []*drill.Cores, error) {
	net := &wanNet{log: cfg.Logger, links: map[[2]string]*wan.Link{}}
	ps, err := ports.Free(len(names))
	if err != nil {
		return nil, nil, fmt.Errorf("campaign: %w", err)
	}
	gateway := map[string]string{}
	for i, n := range names {
		gateway[n] = fmt.Sprintf("127.0.0.1:%d", ps[i])
	}
	k := int64(0)
	for _, a := range names {
		for _, b := range others(names, a) {
			k++
			l, err := wan.Listen(wan.LinkOptions{Name: "wan-" + a + "-" + b, Targets: []string{gateway[b]}, Delay: wanDelay, Jitter: wanJitter,
				Seed: int64(cfg.Seed) + k, Logger: slog.New(slog.DiscardHandler), DialTimeout: time.Second, From: a})
			if err != nil {
				net.close()
				return nil, nil, fmt.Errorf("campaign: %w", err)
			}
			net.links[[2]string{a, b}] = l
		}
	}
	var cores []*drill.Cores
	stop := func() {
		for _, c := range cores {
			c.Stop()
		}
		net.close()
	}
	for i, a := range names {
		gws := map[string]string{}
		for _, b := range others(names, a) {
			gws[b] = net.links[[2]string{a, b}].Addr()
		}
		c, err := drill.LaunchCores(drill.CoreSpec{Bin: cfg.CoreBin, Dir: filepath.Join(cfg.Dir, a), Region: a, Partitions: cfg.Partitions,
			Window: cfg.Window, GatewayPort: ps[i], Gateways: gws, Peers: others(names, a)})
		if err != nil {
			stop()
			return nil, nil, fmt.Errorf("campaign: %w", err)
		}
		cores = append(cores, c)
	}
	for _, c := range cores {
		if err := c.WaitStreams(ctx, 2*time.Minute); err != nil {
			stop()
			return nil, nil, fmt.Errorf("campaign: %w", err)
		}
	}
	return net, cores, nil
}

func (n *wanNet) close() {
	for _, l := range n.links {
		_ = l.Close()
	}
}

func (n *wanNet) injected() []Injected {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]Injected(nil), n.faults...)
}

// run injects schedule's link faults in order, each at its time from
// start; stop ends the fault phase (a cut is healed at once).
func (n *wanNet) run(stop context.Context, start time.Time, schedule []WANFault) {
	defer func() {
		for _, l := range n.links {
			l.Heal()
		}
	}()
	for _, f := range schedule {
		if poll.Sleep(stop, time.Until(start.Add(f.At))) != nil {
			return
		}
		cut := []*wan.Link{n.links[[2]string{f.From, f.To}]}
		if !f.Oneway {
			cut = append(cut, n.links[[2]string{f.To, f.From}])
		}
		for _, l := range cut {
			l.Cut()
		}
		in := Injected{At: time.Since(start), Kind: FaultWANCut, Target: f.From + "-" + f.To, Strikes: 1, Detail: f.String()}
		n.mu.Lock()
		n.faults = append(n.faults, in)
		n.mu.Unlock()
		n.log.Info("fault", "at", in.At.Round(time.Millisecond), "kind", in.Kind, "target", in.Target, "detail", in.Detail)
		_ = poll.Sleep(stop, f.Hold)
		for _, l := range cut {
			l.Heal()
		}
	}
}

// FaultWANCut cuts the link between two regions' gateways (three regions):
// no claim replicates across it while it lasts, so IDs sent to both
// regions are handled in both and must be recorded as conflicts.
const FaultWANCut FaultKind = "wan-cut"

// WANFault is one scheduled fault of the links between regions.
type WANFault struct {
	At, Hold time.Duration
	// From and To are the regions: From's gateway connection to To is cut,
	// and To's to From unless Oneway.
	From, To string
	Oneway   bool
}

func (f WANFault) String() string {
	dir := "<->"
	if f.Oneway {
		dir = "->"
	}
	return fmt.Sprintf("%7.1fs %s %s%s%s for %v", f.At.Seconds(), FaultWANCut, f.From, dir, f.To, f.Hold.Round(time.Millisecond))
}

// WANPlanOptions shapes a schedule of link faults.
type WANPlanOptions struct {
	Duration, Warmup, MeanGap time.Duration
	Regions                   []string
}

// PlanWAN draws a schedule of link cuts from seed, one at a time: holds of
// 1–20 s, a quarter of them one way only. It is a pure function of its
// arguments.
func PlanWAN(seed uint64, o WANPlanOptions) []WANFault {
	if len(o.Regions) < 2 || o.MeanGap <= 0 {
		return nil
	}
	r := rand.New(rand.NewPCG(seed, 0x3a4c07))
	var out []WANFault
	for at := o.Warmup + time.Duration(r.ExpFloat64()*float64(o.MeanGap)); at < o.Duration; {
		i := r.IntN(len(o.Regions))
		j := (i + 1 + r.IntN(len(o.Regions)-1)) % len(o.Regions)
		f := WANFault{At: at, From: o.Regions[i], To: o.Regions[j], Oneway: r.IntN(4) == 0,
			Hold: time.Second + time.Duration(r.Int64N(int64(19*time.Second)))}
		f.Hold = min(f.Hold, o.Duration-at)
		out = append(out, f)
		at += f.Hold + time.Duration(r.ExpFloat64()*float64(o.MeanGap))
	}
	return out
}

// racer sends IDs to two regions at once, at rate a second, through the
// regions' producers (which record the acks apart from their own load's).
type racer struct {
	seed uint64
	rate int
}

// run sends raced IDs until stop ends, then waits (at most 30 s) for the
// publishes still being retried.
func (rc *racer) run(ctx, stop context.Context, loads []*load) {
	rng := newRand(rc.seed ^ 0x4ace)
	give, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	tick := time.NewTicker(time.Second / time.Duration(max(rc.rate, 1)))
	defer tick.Stop()
	for n := 1; ; n++ {
		select {
		case <-stop.Done():
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cancel()
				<-done
			}
			return
		case <-tick.C:
		}
		i := rng.IntN(len(loads))
		j := (i + 1 + rng.IntN(len(loads)-1)) % len(loads)
		id := fmt.Sprintf("c%d-race%07d", rc.seed, n)
		data := payload(id, 64+int(digest([]byte(id))%448), 0)
		for _, l := range []*load{loads[i], loads[j]} {
			select {
			case sem <- struct{}{}:
			case <-stop.Done():
				continue
			}
			wg.Go(func() {
				defer func() { <-sem }()
				l.publish(give, job{msg: l.msg(id, id, data), rec: Publish{ID: id, Token: id, Digest: digest(data), Kind: KindRace}})
			})
		}
	}
}

// save writes the three-region summary (report.txt) into the run's directory.
func (m *MultiReport) save() {
	var b strings.Builder
	m.Print(&b)
	if err := os.WriteFile(filepath.Join(m.Dir, "report.txt"), []byte(b.String()), 0o640); err != nil {
		m.Errors = append(m.Errors, fmt.Errorf("save report.txt: %w", err))
	}
}

// replication describes each region's claim log (last sequence) and its
// xclaims stream's sources: lag, last activity and error, as the sourcing
// server reports them.
func replication(ctx context.Context, regions []*region) []string {
	var out []string
	for _, r := range regions {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		line := r.names.Region + ":"
		if s, err := r.js.Stream(ictx, r.names.ClaimStream()); err == nil {
			line += fmt.Sprintf(" claims last seq %d;", s.CachedInfo().State.LastSeq)
		} else {
			line += fmt.Sprintf(" claims: %v;", err)
		}
		if s, err := r.js.Stream(ictx, r.names.XClaimStream()); err == nil {
			info := s.CachedInfo()
			line += fmt.Sprintf(" xclaims %d msgs", info.State.Msgs)
			for _, src := range info.Sources {
				line += fmt.Sprintf("; from %s lag %d active %v", src.Name, src.Lag, src.Active.Round(time.Millisecond))
				if src.Error != nil {
					line += fmt.Sprintf(" error %v", src.Error)
				}
			}
		} else {
			line += fmt.Sprintf(" xclaims: %v", err)
		}
		cancel()
		out = append(out, line)
	}
	return out
}
