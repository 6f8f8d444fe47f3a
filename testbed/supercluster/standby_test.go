package supercluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/topology"
)

// TestStandbyKeepsALostRegionsIngest: us-east's standby, eu-west, mirrors
// its ingest; when every core node of us-east is gone, each event us-east
// accepted and eu-west mirrored is still there, readable in eu-west, with
// us-east's sequence and ID (lost 0), and consumable (the meta group keeps
// its quorum with two regions of three).
func TestStandbyKeepsALostRegionsIngest(t *testing.T) {
	top := topology.Default()
	top.Regions[0].Standby = "eu-west"
	c := start(t, top)
	_, east := mustConnect(t, c, "us-east")
	_, west := mustConnect(t, c, "eu-west")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	east1 := streams.Names{Region: "us-east"}
	const events = 200
	for i := range events {
		id := fmt.Sprintf("acct-%d", i)
		if _, err := east.Publish(ctx, east1.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	mirror := streams.Names{Region: "eu-west"}.StandbyShard("us-east", 0)
	coretest.Eventually(t, 30*time.Second, "us-east's ingest mirrored in eu-west", func() bool { return msgs(t, west, mirror) == events })
	c.StopRegion("us-east")

	m, err := west.Stream(ctx, mirror)
	if err != nil {
		t.Fatal(err)
	}
	var cons jetstream.Consumer
	coretest.Eventually(t, 30*time.Second, "a consumer on the mirror with us-east down", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		cons, err = m.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{})
		return err == nil
	})
	seen := map[string]uint64{}
	for len(seen) < events {
		batch, err := cons.Fetch(events, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			md, _ := msg.Metadata()
			id := msg.Headers().Get(event.HeaderMsgID)
			if _, dup := seen[id]; dup {
				t.Fatalf("%s twice in the mirror", id)
			}
			seen[id] = md.Sequence.Stream
		}
		if n == 0 {
			break
		}
	}
	for i := range events {
		id := fmt.Sprintf("acct-%d", i)
		if seen[id] != uint64(i+1) {
			t.Fatalf("%s at mirror sequence %d, want %d (us-east's)", id, seen[id], i+1)
		}
	}
}
