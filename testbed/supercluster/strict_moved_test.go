package supercluster

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/rehome"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/topology"
)

// TestStrictFailoverAfterHomeMoves: strict mode, eu-west stands by for
// us-east. First a partition of ap-south's moves to us-east (us-east's
// home stream sources it by a source of its own) and one of us-east's
// moves to ap-south (us-east's sources still carry it). Then the strict
// region failover of TestStrictRegionFailover: us-east decides a first
// round, is lost with a second accepted, eu-west promotes its copies and a
// failover edge decides the second and third rounds, us-east fails back
// and decides a fourth. Every event of us-east's homes as they are after
// the moves runs exactly once, and the promoted copy sources each
// partition from where us-east's home stream had reached it, the moved-in
// one included: it holds exactly what us-east's home stream held plus the
// third round.
func TestStrictFailoverAfterHomeMoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	top := topology.Default()
	top.Mode = topology.Strict
	top.Regions[0].Standby = "eu-west"
	c, err := Start(ctx, top, Options{DataDir: t.TempDir(), Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	top = top.Defaults()
	regions := top.RegionNames()
	east, west := streams.Names{Region: "us-east"}, streams.Names{Region: "eu-west"}
	admins := map[string]jetstream.JetStream{}
	for _, r := range regions {
		_, admins[r] = mustConnect(t, c, r)
	}
	movedIn, movedOut := top.HomePartitions("ap-south")[0], top.HomePartitions("us-east")[0]
	for _, m := range []struct {
		p  int
		to string
	}{{movedIn, "us-east"}, {movedOut, "ap-south"}} {
		mctx, mcancel := context.WithTimeout(ctx, time.Minute)
		if _, err := rehome.Move(mctx, admins["eu-west"], regions, m.p, m.to, rehome.Options{Logger: coretest.Quiet}); err != nil {
			t.Fatalf("move p%d to %s: %v", m.p, m.to, err)
		}
		mcancel()
	}
	rec, err := streams.ReadHomes(ctx, admins["us-east"], east)
	if err != nil {
		t.Fatal(err)
	}
	homes := rec.Homes
	if !slices.Contains(homes, movedIn) || slices.Contains(homes, movedOut) {
		t.Fatalf("us-east's homes after the moves: %v", homes)
	}

	// Round k's IDs homed in us-east, published in each of from, the
	// moved-in partition among them.
	var rounds [5][]string
	publish := func(k int, from ...string) {
		for _, r := range from {
			n, in := 0, 0
			for i := 0; n < 30 || in < 5; i++ {
				id := fmt.Sprintf("r%d-%s-%d", k, r, i)
				p := event.Partition(id, top.Partitions)
				if !slices.Contains(homes, p) || (n >= 30 && p != movedIn) {
					continue
				}
				if _, err := admins[r].Publish(ctx, streams.Names{Region: r}.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
					t.Fatal(err)
				}
				rounds[k] = append(rounds[k], id)
				n++
				if p == movedIn {
					in++
				}
			}
		}
	}
	runs := map[string]*verify.Runs{"east": verify.NewRuns(), "failover": verify.NewRuns(), "east-2": verify.NewRuns()}
	run := func(region string, o edge.Options, name string) func() {
		o.Name, o.Strict = name, true
		o.Peers = slices.DeleteFunc(slices.Clone(regions), func(r string) bool { return r == o.Region })
		o.Logger, o.Window = coretest.Quiet, time.Duration(top.Window)
		_, stop := runEdge(t, ctx, c, region, runs[name], o)
		return stop
	}
	handled := func(name string, ids []string) func() bool { return handledAll(runs[name], ids) }

	publish(1, "us-east", "ap-south")
	stop := run("us-east", edge.Options{Region: "us-east"}, "east") // follows the recorded homes
	coretest.Eventually(t, time.Minute, "us-east decides round 1", handled("east", rounds[1]))
	stop()
	publish(2, "us-east", "ap-south")
	total := func(region string, name func(int) string) uint64 {
		var n uint64
		for s := range c.StreamConfig("us-east").ShardCount() {
			n += msgs(t, admins[region], name(s))
		}
		return n
	}
	home := uint64(0)
	coretest.Eventually(t, time.Minute, "us-east's home stream holds round 2", func() bool {
		home = total("us-east", east.HomeShard)
		return home == uint64(len(rounds[1])+len(rounds[2]))
	})
	claims := total("us-east", east.ClaimShard)
	coretest.Eventually(t, 30*time.Second, "us-east's home stream and claim log mirrored in eu-west", func() bool {
		return total("eu-west", func(s int) string { return west.StandbyHomeShard("us-east", s) }) == home &&
			total("eu-west", func(s int) string { return west.StandbyClaimShard("us-east", s) }) == claims
	})
	c.StopRegion("us-east")
	coretest.Eventually(t, time.Minute, "us-east failed over to eu-west", func() bool {
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		defer pcancel()
		_, err := streams.Promote(pctx, admins["eu-west"], west, "us-east")
		if err != nil {
			t.Logf("promote: %v", err)
		}
		return err == nil
	})
	publish(3, "ap-south", "eu-west")
	stopF := run("eu-west", edge.Options{Region: "us-east", Host: "eu-west", Partitions: homes}, "failover")
	coretest.Eventually(t, time.Minute, "the failover decides rounds 2 and 3", handled("failover", append(rounds[2], rounds[3]...)))
	coretest.Eventually(t, 10*time.Second, "round 3 in the promoted copy", func() bool {
		return total("eu-west", func(s int) string { return west.StandbyHomeShard("us-east", s) }) >= home+uint64(len(rounds[3]))
	})
	if got, want := total("eu-west", func(s int) string { return west.StandbyHomeShard("us-east", s) }), home+uint64(len(rounds[3])); got != want {
		t.Errorf("the promoted home copy holds %d messages, want %d (us-east's %d and round 3's %d): a source started elsewhere than where us-east's stopped", got, want, home, len(rounds[3]))
	}

	if err := c.StartRegion(ctx, "us-east"); err != nil {
		t.Fatal(err)
	}
	cfg := c.StreamConfig("us-east")
	for _, pc := range []streams.Config{cfg.Own(), cfg} {
		coretest.Eventually(t, time.Minute, "us-east provisioned again", func() bool {
			pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
			defer pcancel()
			return streams.Provision(pctx, admins["us-east"], pc) == nil
		})
	}
	stopE := run("us-east", edge.Options{Region: "us-east", Standby: "eu-west"}, "east-2")
	defer stopE()
	stopF()
	coretest.Eventually(t, 2*time.Minute, "failed back", func() bool {
		fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
		defer fcancel()
		_, err := streams.FailBack(fctx, admins["eu-west"], "eu-west", east, streams.FailBackOptions{})
		if err != nil {
			t.Logf("fail back: %v", err)
		}
		return err == nil
	})
	// Provisioning after the failback keeps the moved homes and the sources.
	pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
	if err := streams.Provision(pctx, admins["us-east"], cfg); err != nil {
		t.Errorf("provisioning us-east after the failback: %v", err)
	}
	pcancel()
	publish(4, "us-east", "ap-south")
	coretest.Eventually(t, 2*time.Minute, "us-east decides round 4 after the failback", handled("east-2", rounds[4]))
	checkStrictRounds(t, rounds[1:], runs, top.Partitions)
}
