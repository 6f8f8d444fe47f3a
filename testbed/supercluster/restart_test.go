package supercluster

import (
	"context"
	"testing"
	"time"

	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/topology"
)

func TestRegionRestartKeepsIngest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := Start(ctx, topology.Default(), Options{DataDir: t.TempDir(), Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	pub := func(id string) error {
		nc, js, err := c.Connect("eu-west")
		if err != nil {
			return err
		}
		defer nc.Close()
		pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		_, err = producer.New(js, "eu-west").Publish(pctx, id, nil)
		return err
	}
	if err := pub("a"); err != nil {
		t.Fatal(err)
	}
	c.StopRegion("eu-west")
	if err := c.StartRegion(ctx, "eu-west"); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	coretest.Eventually(t, 60*time.Second, "ingest accepts after restart", func() bool {
		err := pub("b")
		if err != nil {
			t.Logf("%v: %v", time.Since(t0), err)
		}
		return err == nil
	})
	t.Logf("ingest back %v after restart", time.Since(t0))
}
