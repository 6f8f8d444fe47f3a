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
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
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
	dup             float64
	dir, self, url  string
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
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	coreCmd, err := c.startCore(ctx)
	if err != nil {
		return f, err
	}
	defer func() { coreCmd.Process.Kill(); coreCmd.Wait() }()
	nc, err := nats.Connect(c.url, nats.MaxReconnects(-1))
	if err != nil {
		return f, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096), jetstream.WithPublishAsyncTimeout(10*time.Second))
	if err != nil {
		return f, err
	}
	pid := coreCmd.Process.Pid
	var store, serve []float64
	for _, bloom := range []bool{true, false} {
		r, err := c.measure(ctx, js, pid, bloom)
		if err != nil {
			return f, err
		}
		store, serve = append(store, r.store), append(serve, r.serve)
		if bloom {
			f.EdgeCPU, f.EventOverhead, f.ClaimRecordOverhead, f.ReplayIDsPerSec = r.edge, r.eventOverhead, r.claimOverhead, r.replay
		} else {
			f.EdgeCPUNoBloom = r.edge
		}
		fmt.Fprintf(os.Stderr, "bloom %v: core %.2f CPU-s/M stored, %.2f served; edge %.2f CPU-s/M decided\n", bloom, r.store, r.serve, r.edge)
	}
	f.CoreStoreCPU, f.CoreServeCPU = (store[0]+store[1])/2, (serve[0]+serve[1])/2
	f.BytesPerID = bytesPerID(2_000_000)
	if f.DetectSec, err = detect(); err != nil {
		return f, err
	}
	return f, nil
}

// startCore runs a core node as a child process and learns its client URL.
func (c *calibration) startCore(ctx context.Context) (*exec.Cmd, error) {
	cmd := exec.CommandContext(ctx, c.self, roleArg, "core", "-data", filepath.Join(c.dir, "core"))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("core child: %w", err)
	}
	c.url = strings.TrimSpace(line)
	return cmd, nil
}

// measured is one region's measurement.
type measured struct {
	store, serve, edge           float64 // CPU-s per million events
	eventOverhead, claimOverhead float64 // bytes
	replay                       float64 // IDs/s
}

// measure provisions a fresh region, publishes the events (the core's CPU
// while it stores them), runs an edge until every event is decided (its
// CPU, and the core's while it serves it), then restarts the edge to time
// its claim-log replay.
func (c *calibration) measure(ctx context.Context, js jetstream.JetStream, corePID int, bloom bool) (measured, error) {
	var r measured
	region := map[bool]string{true: "cal-bloom", false: "cal-nobloom"}[bloom]
	names := streams.Names{Region: region}
	if err := streams.Provision(ctx, js, streams.Config{Names: names, Partitions: calPartitions, Replicas: 1, Window: time.Hour, IngestDuplicates: -1}); err != nil {
		return r, err
	}
	c0, err := procCPU(corePID)
	if err != nil {
		return r, err
	}
	unique, err := c.publish(ctx, producer.New(js, region))
	if err != nil {
		return r, err
	}
	c1, _ := procCPU(corePID)
	edgeCPU, _, err := c.runEdge(ctx, region, bloom, "-until-done", strconv.Itoa(c.events))
	if err != nil {
		return r, err
	}
	c2, _ := procCPU(corePID)
	m := float64(c.events) / 1e6
	r.store, r.serve, r.edge = (c1-c0)/m, (c2-c1)/m, edgeCPU/m
	in, err := streamState(ctx, js, names.IngestStream())
	if err != nil {
		return r, err
	}
	cl, err := streamState(ctx, js, names.ClaimStream())
	if err != nil {
		return r, err
	}
	r.eventOverhead = float64(in.Bytes)/float64(in.Msgs) - float64(c.payload)
	r.claimOverhead = (float64(cl.Bytes) - 16*float64(unique)) / float64(cl.Msgs)
	if bloom {
		_, res, err := c.runEdge(ctx, region, bloom, "-until-owned")
		if err != nil {
			return r, err
		}
		r.replay = res.Replayed / res.RebuildSec
	}
	return r, nil
}

// publish sends c.events events, a share c.dup of them repeating an
// earlier ID, and returns how many IDs were unique.
func (c *calibration) publish(ctx context.Context, p *producer.Producer) (int, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	payload := make([]byte, c.payload)
	unique := 0
	for i := range c.events {
		id := "c" + strconv.Itoa(i)
		if unique > 0 && rng.Float64() < c.dup {
			id = "c" + strconv.Itoa(rng.IntN(i))
		} else {
			unique++
		}
		if _, err := p.PublishAsync(ctx, id, payload); err != nil {
			return 0, err
		}
		if i%4096 == 4095 {
			if err := p.Wait(ctx); err != nil {
				return 0, err
			}
		}
	}
	return unique, p.Wait(ctx)
}

// edgeResult is what an edge child reports.
type edgeResult struct {
	Done       int64   `json:"done"`
	Replayed   float64 `json:"replayed"`    // IDs rebuilt at takeover
	RebuildSec float64 `json:"rebuild_sec"` // summed over partitions
}

// runEdge runs an edge child on region and returns its CPU-seconds.
func (c *calibration) runEdge(ctx context.Context, region string, bloom bool, args ...string) (float64, edgeResult, error) {
	var res edgeResult
	a := append([]string{roleArg, "edge", "-nats", c.url, "-region", region, "-bloom=" + strconv.FormatBool(bloom)}, args...)
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
		st.Decide(hs, now, "calibration", &b)
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
// loopback port, its URL on stdout, until killed) or "edge" (an edge over
// every partition of -region, until every event is decided or every
// partition is owned; its result as JSON on stdout).
func child(args []string) int {
	if len(args) == 0 {
		return 2
	}
	fs := flag.NewFlagSet(args[0], flag.ExitOnError)
	data := fs.String("data", "", "core data directory")
	url := fs.String("nats", "", "core URL")
	region := fs.String("region", "", "region")
	bloom := fs.Bool("bloom", true, "Bloom pre-check")
	untilDone := fs.Int64("until-done", 0, "exit once this many events are decided")
	untilOwned := fs.Bool("until-owned", false, "exit once every partition is owned")
	_ = fs.Parse(args[1:])
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx := context.Background()
	if args[0] == "core" {
		n, err := core.Start(ctx, core.Options{Port: -1, DataDir: *data, MaxMemory: 256 << 20, MaxStore: 8 << 30, Logger: quiet})
		if err != nil {
			fmt.Fprintln(os.Stderr, "core:", err)
			return 1
		}
		fmt.Println(n.ClientURL())
		select {}
	}
	return runEdgeChild(ctx, *url, *region, *bloom, *untilDone, *untilOwned, quiet)
}

func runEdgeChild(ctx context.Context, url, region string, bloom bool, untilDone int64, untilOwned bool, quiet *slog.Logger) int {
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
		Region: region, Name: "calibration", Window: time.Hour, NoBloom: !bloom, Logger: quiet,
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
