// Package e2e runs the edge and core binaries as real processes against real
// JetStream and checks guarantee G1 under kill -9, core restart and core node
// loss, counting every effect exactly.
package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/proc"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

var bins struct{ edge, core, wanproxy string }

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("skipped under -short: process-level tests (kill -9, core restarts, three regions of processes)")
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "onceplane-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, b := range []struct {
		dst *string
		pkg string
	}{{&bins.edge, "./cmd/edge"}, {&bins.core, "./cmd/core"}, {&bins.wanproxy, "./testbed/cmd/wanproxy"}} {
		if *b.dst, err = proc.Build("../..", dir, b.pkg); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type run struct {
	t       *testing.T
	dir     string
	url     string
	js      jetstream.JetStream
	cfg     streams.Config
	ids     []string
	unique  int
	pubDone chan error
}

func newRun(t *testing.T, url string, cfg streams.Config, provision bool) *run {
	t.Helper()
	_, js := coretest.Connect(t, url)
	if provision {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := streams.Provision(ctx, js, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// The region's shard count is the streams' (a 3-node region of cores
	// started with their defaults has three).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := streams.ReadLayout(ctx, js, cfg.Names)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Shards = l.Shards
	return &run{t: t, dir: t.TempDir(), url: url, js: js, cfg: cfg}
}

// edge starts an edge process; its log is printed if the test fails.
func (r *run) edge(name string, extra ...string) *proc.Proc {
	r.t.Helper()
	args := append([]string{"-nats", r.url, "-name", name, "-admin", "", "-log-level", "info",
		"-ledger", filepath.Join(r.dir, "ledger.jsonl"), "-stats-file", filepath.Join(r.dir, name+".stats.json")}, extra...)
	return startProc(r.t, r.dir, name, bins.edge, args...)
}

// startProc starts a binary as a process logging to dir/name.log; it is
// killed when the test ends, and its log printed if the test failed.
func startProc(t *testing.T, dir, name, bin string, args ...string) *proc.Proc {
	t.Helper()
	p, err := proc.Start(name, filepath.Join(dir, name+".log"), bin, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !p.Exited() {
			p.Kill9()
		}
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, tail(p.Output(), 4000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// publish starts an at-least-once producer in the background.
func (r *run) publish(plan workload.Plan) {
	r.ids, r.unique = plan.IDs()
	r.pubDone = make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		r.pubDone <- workload.Publish(ctx, producer.New(r.js, r.cfg.Region), plan, r.ids, 1024, nil)
	}()
}

func (r *run) outputCount() uint64 {
	n, _ := verify.StreamMsgs(context.Background(), r.js, r.cfg.OutputStream())
	return n
}

// finish waits for the producer and for every partition to be drained.
func (r *run) finish() {
	r.t.Helper()
	if err := <-r.pubDone; err != nil {
		r.t.Fatal(err)
	}
	coretest.Eventually(r.t, 3*time.Minute, "every partition drained", func() bool {
		ok, _ := verify.Drained(context.Background(), r.js, r.cfg.Names, r.cfg.Defaults().Partitions, nil)
		return ok && r.outputCount() >= uint64(r.unique)
	})
}

// checkOutputOnce asserts every unique ID is in the output stream exactly once.
func (r *run) checkOutputOnce() {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	counts, err := verify.OutputCounts(ctx, r.js, r.cfg.Names)
	if err != nil {
		r.t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range r.ids {
		if !seen[id] {
			seen[id] = true
			if counts[id] != 1 {
				r.t.Errorf("id %s in output %d times", id, counts[id])
			}
		}
	}
	if len(counts) != r.unique {
		r.t.Errorf("output has %d ids, want %d", len(counts), r.unique)
	}
}

// checkRuns counts every handler run in the run's ledger, line by line (a
// kill -9 may have torn a line; the output stream's Nats-Msg-Id window would
// hide a second effect): every unique ID ran, each extra run was flagged
// uncertain, the flagged re-runs are at most bound and at most reruns, the
// re-runs the edges counted.
func (r *run) checkRuns(bound int, reruns int64) verify.RunAccount {
	r.t.Helper()
	runs := verify.NewRuns()
	if err := runs.AddLedger(filepath.Join(r.dir, "ledger.jsonl"), nil); err != nil {
		r.t.Fatal(err)
	}
	a := runs.Account(r.ids)
	if err := a.Check(bound); err != nil {
		r.t.Errorf("handler runs (ledger): %v", err)
	}
	if int64(a.Extra) > reruns {
		r.t.Errorf("%d extra handler runs > %d uncertain re-runs the edges counted", a.Extra, reruns)
	}
	return a
}

func (r *run) stats(name string) edge.Stats {
	r.t.Helper()
	b, err := os.ReadFile(filepath.Join(r.dir, name+".stats.json"))
	if err != nil {
		r.t.Fatal(err)
	}
	var s edge.Stats
	if err := json.Unmarshal(b, &s); err != nil {
		r.t.Fatal(err)
	}
	return s
}

// TestEdgeKill9 kills the edge process with SIGKILL in the middle of a
// 50,000-event load with 30 % duplicates and restarts it: no ID is lost, none
// is twice in the output, extra handler runs happen only for IDs the new
// edge reported uncertain, and the uncertain count is bounded by the batches
// in flight (one per partition).
func TestEdgeKill9(t *testing.T) {
	const partitions, batch = 8, 200
	n := coretest.Start(t)
	r := newRun(t, n.ClientURL(), streams.Config{Partitions: partitions, IngestDuplicates: -1}, true)
	e1 := r.edge("edge-1", "-sink", "ledger,nats", "-batch", fmt.Sprint(batch))
	r.publish(workload.Plan{Events: 50_000, DupRate: 0.3, Gap: 10_000, Seed: 11})
	coretest.Eventually(t, time.Minute, "load in flight", func() bool { return r.outputCount() >= 8_000 })
	e1.Kill9()
	killedAt := r.outputCount()
	e2 := r.edge("edge-1b", "-sink", "ledger,nats", "-batch", fmt.Sprint(batch))
	r.finish()
	if err := e2.Stop(10 * time.Second); err != nil {
		t.Fatalf("edge-1b exit: %v", err)
	}
	r.checkOutputOnce()
	s := r.stats("edge-1b")
	// One kill: each partition has at most its last claimed batch uncertain.
	if s.Uncertain > partitions*batch {
		t.Fatalf("uncertain %d > in-flight bound %d", s.Uncertain, partitions*batch)
	}
	a := r.checkRuns(partitions*batch, s.UncertainReruns)
	t.Logf("killed at %d outputs; unique %d; restarted edge: uncertain %d, reruns %d, first %d, dups %d; ledger: %v",
		killedAt, r.unique, s.Uncertain, s.UncertainReruns, s.First, s.Duplicates, a)
}

// TestCoreRestart stops the core node mid-load and restarts it on the same
// data directory: nothing accepted is lost and no effect happens twice.
func TestCoreRestart(t *testing.T) {
	dir := t.TempDir()
	port := coretest.FreePorts(t, 1)[0]
	n := coretest.StartIn(t, dir, port)
	r := newRun(t, n.ClientURL(), streams.Config{Partitions: 4, IngestDuplicates: -1}, true)
	e := r.edge("edge-c", "-sink", "nats,ledger", "-batch", "200")
	r.publish(workload.Plan{Events: 30_000, DupRate: 0.3, Gap: 5_000, Seed: 12})
	coretest.Eventually(t, time.Minute, "load in flight", func() bool { return r.outputCount() >= 5_000 })
	n.Shutdown()
	coretest.StartIn(t, dir, port)
	r.finish()
	if err := e.Stop(10 * time.Second); err != nil {
		t.Fatalf("edge exit: %v", err)
	}
	r.checkOutputOnce()
	// The edge keeps its partitions through the core's restart: nothing is
	// uncertain, every ID runs exactly once.
	s := r.stats("edge-c")
	r.checkRuns(0, s.UncertainReruns)
	t.Logf("unique %d, edge: in %d first %d dups %d dlq %d; consumer rewinds after delivery gaps: %d",
		r.unique, s.In, s.First, s.Duplicates, s.DLQ, strings.Count(e.Output(), "delivery gap; rewinding"))
	if s.DLQ != 0 {
		t.Fatalf("%d events dead-lettered during a core restart", s.DLQ)
	}
}

// TestCoreNodeLossR3 runs a 3-node region of core processes with R3 streams
// and kills one node with SIGKILL mid-load: processing continues, nothing is
// lost, nothing happens twice.
func TestCoreNodeLossR3(t *testing.T) {
	ports := coretest.FreePorts(t, 6)
	var routes, urls []string
	for i := 0; i < 3; i++ {
		routes = append(routes, fmt.Sprintf("127.0.0.1:%d", ports[3+i]))
		urls = append(urls, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	dir := t.TempDir()
	var cores []*proc.Proc
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("core-%d", i)
		p, err := proc.Start(name, filepath.Join(dir, name+".log"), bins.core,
			"-name", name, "-region", "local", "-port", fmt.Sprint(ports[i]), "-data", filepath.Join(dir, name),
			"-cluster-port", fmt.Sprint(ports[3+i]), "-routes", strings.Join(routes, ","),
			"-replicas", "3", "-partitions", "4", "-ingest-dedupe", "off", "-log-level", "warn")
		if err != nil {
			t.Fatal(err)
		}
		cores = append(cores, p)
		t.Cleanup(func() {
			if !p.Exited() {
				_ = p.Stop(5 * time.Second)
			}
			if t.Failed() {
				t.Logf("--- %s log ---\n%s", name, tail(p.Output(), 3000))
			}
		})
	}
	all := strings.Join(urls, ",")
	coretest.Eventually(t, time.Minute, "R3 streams provisioned", func() bool {
		nc, err := nats.Connect(all)
		if err != nil {
			return false
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// Three nodes: three shards by default.
		for _, s := range (streams.Config{Names: streams.Names{Shards: 3}, Partitions: 4}).StreamConfigs() {
			if _, err := js.Stream(ctx, s.Name); err != nil {
				return false
			}
		}
		return true
	})
	r := newRun(t, all, streams.Config{Partitions: 4, Replicas: 3, IngestDuplicates: -1}, false)
	if r.cfg.Shards != 3 {
		t.Fatalf("a region of three core nodes has %d shards, want 3 (one per node)", r.cfg.Shards)
	}
	e := r.edge("edge-r3", "-sink", "nats,ledger", "-batch", "200")
	r.publish(workload.Plan{Events: 20_000, DupRate: 0.3, Gap: 4_000, Seed: 13})
	coretest.Eventually(t, time.Minute, "load in flight", func() bool { return r.outputCount() >= 3_000 })
	cores[1].Kill9()
	r.finish()
	if err := e.Stop(10 * time.Second); err != nil {
		t.Fatalf("edge exit: %v", err)
	}
	r.checkOutputOnce()
	// One disruption: an append whose answer died with the node is resolved
	// by reading the log back; at most one batch per partition (4 x 200)
	// may be re-run, flagged.
	s := r.stats("edge-r3")
	a := r.checkRuns(4*200, s.UncertainReruns)
	t.Logf("unique %d; edge in %d first %d dups %d uncertain %d; ledger: %v", r.unique, s.In, s.First, s.Duplicates, s.Uncertain, a)
}
