package supercluster

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/topology"
)

func start(t *testing.T, top topology.Topology) *Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Start(ctx, top, Options{DataDir: t.TempDir(), MemoryStreams: true, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// msgs is stream's message count, 0 while it cannot be read.
func msgs(t *testing.T, js jetstream.JetStream, stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n, _ := verify.StreamMsgs(ctx, js, stream)
	return n
}

// TestClaimsReplicateOverTheWAN: a claim appended in us-east reaches the
// xclaims stream of the other regions through the gateways and their WAN
// links, no sooner than the one-way delay; a cut link stops it and a heal
// brings the backlog across.
func TestClaimsReplicateOverTheWAN(t *testing.T) {
	top := topology.Default()
	c := start(t, top)
	_, east := mustConnect(t, c, "us-east")
	_, west := mustConnect(t, c, "eu-west")
	_, south := mustConnect(t, c, "ap-south")

	// Secure by default: no credentials, or no trust in the deployment's CA,
	// no connection; a producer may not read a claim log.
	if nc, err := nats.Connect(c.ClientURL("us-east")); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client connected to the simulation's core")
	}
	if nc, err := nats.Connect(c.ClientURL("us-east"), nats.UserInfo(string(auth.Admin), c.creds.Password(auth.Admin.User()))); err == nil {
		nc.Close()
		t.Fatal("a client that does not trust the deployment's CA connected (TLS must be required)")
	}
	_, prod, err := c.ConnectAs("us-east", auth.Producer)
	if err != nil {
		t.Fatal(err)
	}
	sctx, scancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer scancel()
	if _, err := prod.Stream(sctx, "onceplane-us-east-claims"); err == nil {
		t.Fatal("the producer role read a claim stream")
	}

	ctx := context.Background()
	sent := time.Now()
	if _, err := east.PublishMsg(ctx, &nats.Msg{Subject: streams.Names{Region: "us-east"}.Claims(3), Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 20*time.Second, "claim sourced into eu-west", func() bool { return msgs(t, west, "onceplane-eu-west-xclaims") == 1 })
	if lag := time.Since(sent); lag < 40*time.Millisecond {
		t.Fatalf("replicated in %v: less than the 40 ms one-way delay", lag)
	}
	coretest.Eventually(t, 20*time.Second, "claim sourced into ap-south", func() bool { return msgs(t, south, "onceplane-ap-south-xclaims") == 1 })

	c.Cut("us-east", "eu-west")
	if _, err := east.PublishMsg(ctx, &nats.Msg{Subject: streams.Names{Region: "us-east"}.Claims(3), Data: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 20*time.Second, "ap-south still sourcing", func() bool { return msgs(t, south, "onceplane-ap-south-xclaims") == 2 })
	if n := msgs(t, west, "onceplane-eu-west-xclaims"); n != 1 {
		t.Fatalf("eu-west got %d claims across a cut link", n)
	}
	c.Heal("us-east", "eu-west")
	coretest.Eventually(t, 60*time.Second, "eu-west catches up after heal", func() bool { return msgs(t, west, "onceplane-eu-west-xclaims") == 2 })
}

func mustConnect(t *testing.T, c *Cluster, region string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := c.Connect(region)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// runEdge runs an edge of region with handler h and options o until the
// returned stop is called (or ctx ends): as the region's everyday edge
// user, or with o.Host set as its failover edges' user (the everyday edge
// user has no failover rights).
func runEdge(t *testing.T, ctx context.Context, c *Cluster, region string, h edge.Handler, o edge.Options) (e *edge.Consumer, stop func()) {
	t.Helper()
	role := auth.Edge
	if o.Host != "" {
		role = auth.FailoverEdge
	}
	nc, js, err := c.ConnectAs(region, role)
	if err != nil {
		t.Fatal(err)
	}
	e, err = edge.New(js, h, o)
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.Run(rctx) }()
	return e, func() {
		rcancel()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Logf("%s: %v", o.Name, err)
		}
		nc.Close()
	}
}
