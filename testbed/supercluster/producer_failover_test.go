package supercluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/topology"
)

// TestProducerFailsOver: a producer that prefers us-east and falls back to
// eu-west keeps publishing when every core node of us-east is gone (the
// events go to eu-west's ingest), and returns to us-east once it is back.
// Every event is acknowledged by one region: none lost.
func TestProducerFailsOver(t *testing.T) {
	c := start(t, topology.Default())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var ps []*producer.Producer
	for _, r := range []string{"us-east", "eu-west"} {
		nc, js, err := c.ConnectAs(r, auth.Producer)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		ps = append(ps, producer.New(js, r))
	}
	f := producer.NewFailover(ps, producer.FailoverOptions{Attempt: time.Second, Probe: time.Second, Logger: coretest.Quiet})
	stored := map[string]int{} // region -> events acknowledged there
	publish := func(from, n int) {
		t.Helper()
		for i := from; i < from+n; i++ {
			ack, region, err := f.Publish(ctx, fmt.Sprintf("order-%d", i), nil)
			if err != nil {
				t.Fatalf("event %d: %v", i, err)
			}
			if want := "onceplane-" + region + "-in"; ack.Stream != want {
				t.Fatalf("event %d acknowledged by %s, reported as %s", i, ack.Stream, region)
			}
			stored[region]++
		}
	}
	publish(0, 20)
	if stored["us-east"] != 20 {
		t.Fatalf("while us-east is up: %v", stored)
	}
	c.StopRegion("us-east")
	publish(20, 20)
	if stored["eu-west"] != 20 || f.Region() != "eu-west" {
		t.Fatalf("with us-east down: %v, publishing to %s", stored, f.Region())
	}
	if err := c.StartRegion(ctx, "us-east"); err != nil {
		t.Fatal(err)
	}
	next := 40
	coretest.Eventually(t, 60*time.Second, "back to us-east", func() bool {
		publish(next, 1)
		next++
		return f.Region() == "us-east"
	})
	if total := stored["us-east"] + stored["eu-west"]; total < 41 {
		t.Fatalf("%d events acknowledged", total)
	}
}
