package supercluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/coretest"
	"github.com/onceplane/onceplane/internal/workload"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/topology"
)

// TestStrictRoutingSurvivesACut: events published in us-east for partitions
// homed in eu-west reach eu-west's home stream, including those published
// while the link was cut, once it heals.
func TestStrictRoutingSurvivesACut(t *testing.T) {
	top := topology.Default()
	top.Mode = topology.Strict
	c := start(t, top)
	_, east := mustConnect(t, c, "us-east")
	_, west := mustConnect(t, c, "eu-west")
	var ids []string
	for k := 0; len(ids) < 3000; k++ {
		id := fmt.Sprintf("x-%d", k)
		if top.Home(event.Partition(id, top.Partitions)) == "eu-west" {
			ids = append(ids, id)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pr := producer.New(east, "us-east")
	if err := workload.Publish(ctx, pr, workload.Plan{}, ids[:1000], 500, nil); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 20*time.Second, "routed home", func() bool { return msgs(t, west, "onceplane-eu-west-home") == 1000 })
	c.Cut("us-east", "eu-west")
	if err := workload.Publish(ctx, pr, workload.Plan{}, ids[1000:2000], 500, nil); err != nil {
		t.Fatal(err)
	}
	c.Heal("us-east", "eu-west")
	if err := workload.Publish(ctx, pr, workload.Plan{}, ids[2000:], 500, nil); err != nil {
		t.Fatal(err)
	}
	if !coretest.Within(60*time.Second, func() bool { return msgs(t, west, "onceplane-eu-west-home") == 3000 }) {
		s, _ := west.Stream(ctx, "onceplane-eu-west-home")
		info, _ := s.Info(ctx)
		for _, src := range info.Sources {
			t.Logf("source %s lag %d active %v err %v", src.Name, src.Lag, src.Active, src.Error)
		}
		t.Fatalf("home stream has %d of 3000", msgs(t, west, "onceplane-eu-west-home"))
	}
}
