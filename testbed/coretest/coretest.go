// Package coretest starts real embedded core nodes for tests.
package coretest

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/internal/poll"
)

// Quiet is a logger that discards everything.
var Quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Start runs one core node on a free loopback port with its data in a
// temporary directory, shut down when the test ends.
func Start(t testing.TB) *core.Node {
	t.Helper()
	return StartIn(t, t.TempDir(), -1)
}

// StartIn runs one core node with the given data dir and client port.
func StartIn(t testing.TB, dir string, port int) *core.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := core.Start(ctx, core.Options{Port: port, DataDir: dir, MaxMemory: 256 << 20, MaxStore: 4 << 30, Logger: Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}

// Cluster runs a region of size nodes on free loopback ports; each of
// with, if any, adjusts every node's options.
func Cluster(t testing.TB, region string, size int, with ...func(*core.Options)) []*core.Node {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ports := FreePorts(t, size)
	opts := make([]core.Options, size)
	for i := range opts {
		opts[i] = core.Options{
			Name: fmt.Sprintf("%s-core-%d", region, i), Region: region, Port: -1,
			DataDir: t.TempDir(), ClusterPort: ports[i],
			MaxMemory: 256 << 20, MaxStore: 4 << 30, Logger: Quiet,
		}
		for _, w := range with {
			w(&opts[i])
		}
	}
	nodes, err := core.StartCluster(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		t.Cleanup(n.Shutdown)
	}
	return nodes
}

// Connect returns a connection and a JetStream handle to n, closed when the test ends.
func Connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Eventually polls cond every poll.Interval until it is true or the deadline passes, failing the test then.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	if !Within(within, cond) {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
}

// Within polls cond (package poll) until it is true (true) or within passes
// (false), for tests that report more than a timeout when it fails.
func Within(within time.Duration, cond func() bool) bool { return poll.Until(within, cond) }

// Never polls cond every poll.Interval for the whole of within and fails the test
// if it ever holds (for "this must not happen" checks).
func Never(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			t.Fatalf("%s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LongMain is the TestMain of a package whose every test runs whole
// topologies or processes for minutes: under -short (the inner loop) it
// runs none and says so; otherwise all of them (CI runs the full suite).
func LongMain(m *testing.M, what string) {
	flag.Parse()
	if testing.Short() {
		fmt.Printf("skipped under -short: %s\n", what)
		os.Exit(0)
	}
	os.Exit(m.Run())
}
