package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/capacity"
	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/gossip"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
)

// roleArg makes the command a calibration child: a core node or an edge,
// each a process of its own so that the kernel accounts its CPU apart.
const roleArg = "__calibration-role"

// calibration measures the per-event figures on real processes.
type calibration struct {
	events, payload int
	// rounds measures each region's throughput this many times on fresh
	// streams (the median is kept: a 2-core machine shared by every
	// process is noisy). Zero means 1.
	rounds    int
	dup       float64
	dir, self string
}

// calPartitions is the calibration regions' partition count.
const calPartitions = 8

// run measures: a core node's CPU storing events (publish) and serving
// them with their claims (an edge consuming), an edge's CPU deciding them
// with and without the Bloom pre-check, stored bytes per event and per
// claim record, the claim-log replay rate of a takeover, an edge set's
// bytes per ID, and gossip's failure detection.
func (c *calibration) run() (capacity.Figures, error) {
	f := capacity.Figures{ClaimBytesPerID: 16}
	host, _ := os.Hostname()
	f.Source = fmt.Sprintf("calibration on %s, %s, %d events of %d B (go run ./cmd/plan -calibrate)", host, time.Now().UTC().Format("2006-01-02"), c.events, c.payload)
	var err error
	if c.self, err = os.Executable(); err != nil {
		return f, err
	}
	if c.dir, err = os.MkdirTemp("", "onceplane-calibrate"); err != nil {
		return f, err
	}
	defer os.RemoveAll(c.dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	var store, serve []float64
	one := calRegion{name: "cal-one", nodes: 1, replicas: 1, shards: 1, bloom: true, replay: true}
	// Every partition a stream of its own (shards = partitions), against
	// one's filtered consumers on a shared stream.
	ownStreams := calRegion{name: "cal-own", nodes: 1, replicas: 1, shards: calPartitions, bloom: true}
	err = c.withCores(ctx, 1, []calRegion{ownStreams}, func(cl *calCluster) error {
		for _, reg := range []calRegion{one, {name: "cal-nobloom", nodes: 1, replicas: 1, shards: 1}, ownStreams} {
			r, err := c.measureRounds(ctx, cl, reg)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s: core %.2f CPU-s/M stored, %.2f served; edge %.2f CPU-s/M decided; %.0f stored/s, %.0f decided/s\n", reg, r.store, r.serve, r.edge, r.rate.StoredPerSec, r.rate.DecidedPerSec)
			switch reg {
			case one:
				f.EdgeCPU, f.EventOverhead, f.ClaimRecordOverhead, f.ReplayIDsPerSec = r.edge, r.eventOverhead, r.claimOverhead, r.replay
				f.Scaling = append(f.Scaling, r.rate)
				f.Filtering = &capacity.Filtering{Partitions: calPartitions, SharedStoreCPU: r.store, SharedServeCPU: r.serve}
			case ownStreams:
				f.Filtering.OwnStoreCPU, f.Filtering.OwnServeCPU = r.store, r.serve
				continue
			default:
				f.EdgeCPUNoBloom = r.edge
			}
			store, serve = append(store, r.store), append(serve, r.serve)
		}
		return nil
	})
	if err != nil {
		return f, err
	}
	f.CoreStoreCPU, f.CoreServeCPU = (store[0]+store[1])/2, (serve[0]+serve[1])/2
	// The same load on a region of three core nodes, every stream
	// replicated three times: one shard (one leader does the region's
	// work) and three (each node leads one).
	three := []calRegion{
		{name: "cal-three-1", nodes: 3, replicas: 3, shards: 1, bloom: true},
		{name: "cal-three-3", nodes: 3, replicas: 3, shards: 3, bloom: true},
	}
	err = c.withCores(ctx, 3, three, func(cl *calCluster) error {
		for _, reg := range three {
			r, err := c.measureRounds(ctx, cl, reg)
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "%s: cores %.2f CPU-s/M stored, %.2f served; %.0f stored/s, %.0f decided/s\n", reg, r.store, r.serve, r.rate.StoredPerSec, r.rate.DecidedPerSec)
			f.Scaling = append(f.Scaling, r.rate)
		}
		return nil
	})
	if err != nil {
		return f, err
	}
	f.BytesPerID = bytesPerID(2_000_000)
	if f.DetectSec, err = detect(); err != nil {
		return f, err
	}
	return f, nil
}

// calRegion is one measured region.
type calRegion struct {
	name                    string
	nodes, replicas, shards int
	bloom                   bool
	// replay also times an edge's claim-log replay of the region.
	replay bool
}

// round is the region measured in round i: fresh streams of its own name
// (round 0 keeps the name); only round 0 times a replay.
func (r calRegion) round(i int) calRegion {
	if i > 0 {
		r.name, r.replay = fmt.Sprintf("%s-%d", r.name, i), false
	}
	return r
}

func (r calRegion) String() string {
	return fmt.Sprintf("%s (%d node(s), R%d, %d shard(s), bloom %v)", r.name, r.nodes, r.replicas, r.shards, r.bloom)
}

func (r calRegion) config() streams.Config {
	return streams.Config{Names: streams.Names{Region: r.name, Shards: r.shards}, Partitions: calPartitions, Replicas: r.replicas, Window: time.Hour, IngestDuplicates: -1}
}

// calCluster is a running region of core children.
type calCluster struct {
	pids []int
	urls []string
	js   []jetstream.JetStream
}

// withCores runs n core children as one region (routes between them when
// n > 1) whose account maps the sharded regions' ingest subjects, calls
// fn, and stops them.
func (c *calibration) withCores(ctx context.Context, n int, sharded []calRegion, fn func(*calCluster) error) error {
	ports, err := freePorts(n)
	if err != nil {
		return err
	}
	var routes []string
	for _, p := range ports {
		routes = append(routes, "127.0.0.1:"+strconv.Itoa(p))
	}
	var maps []string
	for _, r := range sharded {
		for i := range max(1, c.rounds) {
			maps = append(maps, r.round(i).name+":"+strconv.Itoa(r.shards))
		}
	}
	cl := &calCluster{}
	var cmds []*exec.Cmd
	defer func() {
		for _, cmd := range cmds {
			cmd.Process.Kill()
			cmd.Wait()
		}
	}()
	type started struct {
		url string
		err error
	}
	urls := make([]chan started, n)
	for i := range n {
		args := []string{roleArg, "core", "-data", filepath.Join(c.dir, fmt.Sprintf("core-%d-%d", n, i)), "-name", fmt.Sprintf("cal-%d", i), "-sharded", strings.Join(maps, ",")}
		if n > 1 {
			args = append(args, "-cluster-port", strconv.Itoa(ports[i]), "-routes", strings.Join(routes, ","))
		}
		cmd := exec.CommandContext(ctx, c.self, args...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			return err
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		cmds = append(cmds, cmd)
		cl.pids = append(cl.pids, cmd.Process.Pid)
		urls[i] = make(chan started, 1)
		go func() {
			line, err := bufio.NewReader(out).ReadString('\n')
			urls[i] <- started{strings.TrimSpace(line), err}
		}()
	}
	for i := range n {
		s := <-urls[i]
		if s.err != nil {
			return fmt.Errorf("core child %d: %w", i, s.err)
		}
		nc, err := nats.Connect(s.url, nats.MaxReconnects(-1))
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(10*time.Second))
		if err != nil {
			return err
		}
		cl.urls, cl.js = append(cl.urls, s.url), append(cl.js, js)
	}
	return fn(cl)
}

// freePorts reserves n loopback ports and releases them for the children.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// cpu sums the cluster's processes' CPU-seconds.
func (cl *calCluster) cpu() (float64, error) {
	var sum float64
	for _, pid := range cl.pids {
		v, err := procCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// measured is one region's measurement.
type measured struct {
	store, serve, edge           float64 // CPU-s per million events (cores summed)
	eventOverhead, claimOverhead float64 // bytes
	replay                       float64 // IDs/s
	rate                         capacity.RegionRate
}

// measureRounds measures reg c.rounds times, each on fresh streams, and
// returns the first measurement with the median of the rounds' rates and
// CPU figures.
func (c *calibration) measureRounds(ctx context.Context, cl *calCluster, reg calRegion) (measured, error) {
	var all []measured
	for i := range max(1, c.rounds) {
		m, err := c.measure(ctx, cl, reg.round(i))
		if err != nil {
			return m, err
		}
		all = append(all, m)
	}
	med := func(f func(measured) float64) float64 {
		vs := make([]float64, len(all))
		for i, m := range all {
			vs[i] = f(m)
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	r := all[0]
	r.store, r.serve, r.edge = med(func(m measured) float64 { return m.store }), med(func(m measured) float64 { return m.serve }), med(func(m measured) float64 { return m.edge })
	r.rate.StoredPerSec, r.rate.DecidedPerSec = med(func(m measured) float64 { return m.rate.StoredPerSec }), med(func(m measured) float64 { return m.rate.DecidedPerSec })
	r.rate.CoreStoreCPU, r.rate.CoreServeCPU, r.rate.Rounds = r.store, r.serve, len(all)
	return r, nil
}

// measure provisions a fresh region, publishes the events through every
// core node in turn (the cores' CPU while they store them), runs an edge
// until every event is decided (its CPU, and the cores' while they serve
// it), then restarts the edge to time its claim-log replay.
func (c *calibration) measure(ctx context.Context, cl *calCluster, reg calRegion) (measured, error) {
	r := measured{rate: capacity.RegionRate{Nodes: reg.nodes, Replicas: reg.replicas, Shards: reg.shards, Events: c.events}}
	cfg := reg.config()
	if err := streams.Provision(ctx, cl.js[0], cfg); err != nil {
		return r, err
	}
	if err := streams.SpreadLeaders(ctx, cl.js[0], cfg); err != nil {
		fmt.Fprintln(os.Stderr, "calibrate: leaders not spread:", err)
	}
	c0, err := cl.cpu()
	if err != nil {
		return r, err
	}
	var ps []*producer.Producer
	for _, js := range cl.js {
		ps = append(ps, producer.New(js, reg.name))
	}
	t0 := time.Now()
	unique, err := c.publish(ctx, ps)
	if err != nil {
		return r, err
	}
	t1 := time.Now()
	c1, _ := cl.cpu()
	edgeCPU, _, err := c.runEdge(ctx, cl, reg, "-until-done", strconv.Itoa(c.events))
	if err != nil {
		return r, err
	}
	t2 := time.Now()
	c2, _ := cl.cpu()
	m := float64(c.events) / 1e6
	r.store, r.serve, r.edge = (c1-c0)/m, (c2-c1)/m, edgeCPU/m
	r.rate.StoredPerSec = float64(c.events) / t1.Sub(t0).Seconds()
	r.rate.DecidedPerSec = float64(c.events) / t2.Sub(t1).Seconds()
	var in, claims jetstream.StreamState
	for s := range reg.shards {
		i, err := streamState(ctx, cl.js[0], cfg.IngestShard(s))
		if err != nil {
			return r, err
		}
		k, err := streamState(ctx, cl.js[0], cfg.ClaimShard(s))
		if err != nil {
			return r, err
		}
		in.Bytes, in.Msgs = in.Bytes+i.Bytes, in.Msgs+i.Msgs
		claims.Bytes, claims.Msgs = claims.Bytes+k.Bytes, claims.Msgs+k.Msgs
	}
	if in.Msgs != uint64(c.events) {
		return r, fmt.Errorf("%s: %d events stored, %d published", reg.name, in.Msgs, c.events)
	}
	r.eventOverhead = float64(in.Bytes)/float64(in.Msgs) - float64(c.payload)
	r.claimOverhead = (float64(claims.Bytes) - 16*float64(unique)) / float64(claims.Msgs)
	if reg.replay {
		_, res, err := c.runEdge(ctx, cl, reg, "-until-owned")
		if err != nil {
			return r, err
		}
		r.replay = res.Replayed / res.RebuildSec
	}
	return r, nil
}

// publish sends c.events events through the producers in turn, a share
// c.dup of them repeating an earlier ID, and returns how many IDs were
// unique. Every publish must be acknowledged.
func (c *calibration) publish(ctx context.Context, ps []*producer.Producer) (int, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, c.payload)
	unique := 0
	futs := make([]jetstream.PubAckFuture, 0, 4096)
	for i := range c.events {
		id := "c" + strconv.Itoa(i)
		if unique > 0 && rng.Float64() < c.dup {
			id = "c" + strconv.Itoa(rng.IntN(i))
		} else {
			unique++
		}
		f, err := ps[i%len(ps)].PublishAsync(ctx, id, payload)
		if err != nil {
			return 0, err
		}
		if futs = append(futs, f); len(futs) == cap(futs) || i == c.events-1 {
			if err := acked(ctx, futs); err != nil {
				return 0, err
			}
			futs = futs[:0]
		}
	}
	return unique, nil
}

// acked waits for every future's answer and fails on the first error.
func acked(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish %s: %w", f.Msg().Subject, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// edgeResult is what an edge child reports.
type edgeResult struct {
	Done       int64   `json:"done"`
	Replayed   float64 `json:"replayed"`    // IDs rebuilt at takeover
	RebuildSec float64 `json:"rebuild_sec"` // summed over partitions
}

// runEdge runs an edge child on reg and returns its CPU-seconds.
func (c *calibration) runEdge(ctx context.Context, cl *calCluster, reg calRegion, args ...string) (float64, edgeResult, error) {
	var res edgeResult
	a := append([]string{roleArg, "edge", "-nats", strings.Join(cl.urls, ","), "-region", reg.name, "-bloom=" + strconv.FormatBool(reg.bloom)}, args...)
	cmd := exec.CommandContext(ctx, c.self, a...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, res, fmt.Errorf("edge child: %w", err)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return 0, res, fmt.Errorf("edge child: %w (%q)", err, out)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, res, errors.New("no resource usage for the edge child")
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return cpu.Seconds(), res, nil
}

func streamState(ctx context.Context, js jetstream.JetStream, name string) (jetstream.StreamState, error) {
	s, err := js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return info.State, nil
}

// procCPU reads a process's CPU-seconds (user + system) from
// /proc/<pid>/stat, in USER_HZ ticks of 1/100 s (Linux).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("CPU of process %d (Linux only): %w", pid, err)
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(fields))
	}
	ut, err1 := strconv.ParseFloat(fields[11], 64) // field 14: utime
	st, err2 := strconv.ParseFloat(fields[12], 64) // field 15: stime
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return (ut + st) / 100, nil
}

// bytesPerID claims n random IDs in one partition's state (the edge's own
// code, no I/O) and returns its exact set and Bloom filter bytes per ID.
func bytesPerID(n int) float64 {
	st := dedupe.New(dedupe.Options{Window: time.Hour})
	rng := rand.New(rand.NewPCG(3, 4))
	hs := make([]event.Hash, 500)
	var b dedupe.Batch
	now := time.Now()
	for seq := uint64(1); st.Tracked() < n; seq++ {
		for i := range hs {
			hs[i] = event.Hash{Hi: rng.Uint64(), Lo: rng.Uint64()}
		}
		st.Decide(hs, nil, now, "calibration", &b)
		st.Committed(&b, seq)
		st.Finished(&b, seq)
	}
	exact, bloom := st.Bytes()
	return float64(exact+bloom) / float64(st.Tracked())
}

// detect times gossip (the edges' Fast profile) declaring a member dead
// that vanished without leaving.
func detect() (float64, error) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, err := gossip.Start(gossip.Options{Name: "a", Logger: quiet})
	if err != nil {
		return 0, err
	}
	defer a.Shutdown()
	b, err := gossip.Start(gossip.Options{Name: "b", Seeds: []string{a.Addr()}, Logger: quiet})
	if err != nil {
		return 0, err
	}
	if !poll.Until(10*time.Second, func() bool { return len(a.Names()) == 2 }) {
		return 0, errors.New("gossip: members never met")
	}
	t0 := time.Now()
	_ = b.Shutdown()
	if !poll.Until(30*time.Second, func() bool { return len(a.Names()) == 1 }) {
		return 0, errors.New("gossip: a dead member never detected")
	}
	return time.Since(t0).Seconds(), nil
}

// child runs a calibration role: "core" (an embedded core node on a free
// loopback port, its URL on stdout, until killed; -cluster-port and
// -routes make it one of a region's nodes, -sharded names the sharded
// regions whose ingest subjects its account maps) or "edge" (an edge over
// every partition of -region, until every event is decided or every
// partition is owned; its result as JSON on stdout).
func child(args []string) int {
	if len(args) == 0 {
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ExitOnError)
	data := fs.String("data", "", "core data directory")
	name := fs.String("name", "cal-0", "core node name")
	clusterPort := fs.Int("cluster-port", 0, "core route port (0: a region of one node)")
	routes := fs.String("routes", "", "core routes, comma-separated")
	sharded := fs.String("sharded", "", "sharded regions, region:shards, comma-separated")
	url := fs.String("nats", "", "core URLs, comma-separated")
	region := fs.String("region", "", "region")
	bloom := fs.Bool("bloom", true, "Bloom pre-check")
	untilDone := fs.Int64("until-done", 0, "exit once this many events are decided")
	untilOwned := fs.Bool("until-owned", false, "exit once every partition is owned")
	_ = fs.Parse(args[1:])
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if args[0] == "core" {
		o := core.Options{Name: *name, Region: "cal", Port: -1, DataDir: *data, ClusterPort: *clusterPort, MaxMemory: 256 << 20, MaxStore: 8 << 30, Logger: quiet, Mappings: map[string]string{}}
		if *routes != "" {
			o.Routes = strings.Split(*routes, ",")
		}
		for _, rs := range strings.Split(*sharded, ",") {
			if region, shards, ok := strings.Cut(rs, ":"); ok {
				n, _ := strconv.Atoi(shards)
				maps.Copy(o.Mappings, calRegion{name: region, shards: n}.config().IngestMapping())
			}
		}
		n, err := core.Start(ctx, o)
		if err != nil {
			fmt.Fprintln(os.Stderr, "core:", err)
			return 1
		}
		fmt.Println(n.ClientURL())
		select {}
	}
	// An edge's warnings (a rewind, a stuck partition) explain a slow
	// measurement: they go to the parent's standard error.
	warn := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return runEdgeChild(ctx, *url, *region, *bloom, *untilDone, *untilOwned, warn)
}

func runEdgeChild(ctx context.Context, url, region string, bloom bool, untilDone int64, untilOwned bool, lg *slog.Logger) int {
	nc, err := nats.Connect(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		return 1
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	var res edgeResult
	owned := make(chan edge.OwnershipEvent, 64)
	c, err := edge.New(js, edge.HandlerFunc(func(context.Context, event.Event) error { return nil }), edge.Options{
		Region: region, Name: "calibration", Window: time.Hour, NoBloom: !bloom, Logger: lg,
		OnOwnership: func(e edge.OwnershipEvent) { owned <- e },
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge:", err)
		return 1
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	acquired := 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for stop := false; !stop; {
		select {
		case err := <-done:
			fmt.Fprintln(os.Stderr, "edge stopped:", err)
			return 1
		case e := <-owned:
			if e.Change == "acquired" {
				acquired++
				res.Replayed += float64(e.Tracked)
				for _, ph := range e.Phases {
					if ph.Name == "rebuild" {
						res.RebuildSec += ph.End.Sub(ph.Start).Seconds()
					}
				}
			}
			stop = untilOwned && acquired == calPartitions
		case <-tick.C:
			stop = untilDone > 0 && c.Stats().Done >= untilDone
		}
	}
	cancel()
	<-done
	res.Done = c.Stats().Done
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return 0
}
