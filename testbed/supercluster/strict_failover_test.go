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
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/topology"
)

// TestStrictRegionFailover: strict mode, us-east homes partitions 0, 3 and
// 6, and eu-west stands by for it. us-east decides a first round of events
// (published in us-east and in ap-south), then every core node of us-east
// is gone with a second round accepted but not decided. eu-west promotes
// its copies of us-east's home stream and claim log; events published in
// ap-south and eu-west after the loss reach the promoted copy, and a
// failover edge (Host eu-west, Strict) decides the second and third rounds
// once each, none of the first. The copy sources each region from where
// us-east's home stream had reached: it holds exactly what us-east's home
// stream held plus the third round. us-east comes back fenced, fails back
// (its home stream made again from the copy), and decides only what comes
// after.
func TestStrictRegionFailover(t *testing.T) {
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
	homes := top.HomePartitions("us-east")
	east, west := streams.Names{Region: "us-east"}, streams.Names{Region: "eu-west"}
	admins := map[string]jetstream.JetStream{}
	for _, r := range top.RegionNames() {
		_, admins[r] = mustConnect(t, c, r)
	}
	// Round k's IDs homed in us-east, published in each of from.
	var rounds [5][]string
	publish := func(k int, from ...string) {
		for _, r := range from {
			for i := 0; len(rounds[k]) < 30*len(from); i++ {
				id := fmt.Sprintf("r%d-%s-%d", k, r, i)
				if !slices.Contains(homes, event.Partition(id, top.Partitions)) {
					continue
				}
				if _, err := admins[r].Publish(ctx, streams.Names{Region: r}.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
					t.Fatal(err)
				}
				rounds[k] = append(rounds[k], id)
				if len(rounds[k])%30 == 0 {
					break
				}
			}
		}
	}
	runs := map[string]*verify.Runs{"east": verify.NewRuns(), "failover": verify.NewRuns(), "east-2": verify.NewRuns()}
	run := func(region string, o edge.Options, name string) func() {
		o.Name, o.Strict, o.Partitions = name, true, homes
		o.Peers = []string{"eu-west", "ap-south"}
		o.Logger, o.Window = coretest.Quiet, time.Duration(top.Window)
		_, stop := runEdge(t, ctx, c, region, runs[name], o)
		return stop
	}
	handled := func(name string, ids []string) func() bool { return handledAll(runs[name], ids) }

	publish(1, "us-east", "ap-south")
	stop := run("us-east", edge.Options{Region: "us-east"}, "east")
	coretest.Eventually(t, time.Minute, "us-east decides round 1", handled("east", rounds[1]))
	stop()
	publish(2, "us-east", "ap-south")
	home := msgs(t, admins["us-east"], east.HomeShard(0))
	coretest.Eventually(t, time.Minute, "us-east's home stream holds round 2", func() bool {
		home = msgs(t, admins["us-east"], east.HomeShard(0))
		return home == uint64(len(rounds[1])+len(rounds[2]))
	})
	claims := msgs(t, admins["us-east"], east.ClaimShard(0))
	coretest.Eventually(t, 30*time.Second, "us-east's home stream and claim log mirrored in eu-west", func() bool {
		return msgs(t, admins["eu-west"], west.StandbyHomeShard("us-east", 0)) == home &&
			msgs(t, admins["eu-west"], west.StandbyClaimShard("us-east", 0)) == claims &&
			msgs(t, admins["eu-west"], west.StandbyShard("us-east", 0)) > 0
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
	stopF := run("eu-west", edge.Options{Region: "us-east", Host: "eu-west"}, "failover")
	coretest.Eventually(t, time.Minute, "the failover decides rounds 2 and 3", handled("failover", append(rounds[2], rounds[3]...)))
	if got, want := msgs(t, admins["eu-west"], west.StandbyHomeShard("us-east", 0)), home+uint64(len(rounds[3])); got != want {
		t.Errorf("the promoted home copy holds %d messages, want %d (us-east's %d and round 3's %d): a source started elsewhere than where us-east's stopped", got, want, home, len(rounds[3]))
	}

	// us-east returns fenced; its strict edge owns nothing.
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
	for _, s := range []string{west.StandbyHomeShard("us-east", 0), west.StandbyClaimShard("us-east", 0)} {
		if st, err := admins["eu-west"].Stream(ctx, s); err != nil || st.CachedInfo().Config.Mirror == nil {
			t.Fatalf("%s is not a mirror again (%v)", s, err)
		}
	}
	publish(4, "us-east", "ap-south")
	coretest.Eventually(t, 2*time.Minute, "us-east decides round 4 after the failback", handled("east-2", rounds[4]))
	checkStrictRounds(t, rounds[1:], runs, top.Partitions)
}

// handledAll reports whether every one of ids has run in r.
func handledAll(r *verify.Runs, ids []string) func() bool {
	return func() bool {
		for _, id := range ids {
			if r.Account([]string{id}).Runs == 0 {
				return false
			}
		}
		return true
	}
}

// checkStrictRounds checks a strict failover's four rounds: the first and
// the fourth ran once in us-east ("east", "east-2"), the second and third
// once in the failover, each nowhere else.
func checkStrictRounds(t *testing.T, rounds [][]string, runs map[string]*verify.Runs, partitions int) {
	t.Helper()
	for k, name := range []string{"east", "failover", "failover", "east-2"} {
		for _, id := range rounds[k] {
			for _, who := range []string{"east", "failover", "east-2"} {
				want := 0
				if who == name {
					want = 1
				}
				if got := runs[who].Account([]string{id}).Runs; got != want {
					t.Errorf("round %d's %s (p%d) ran %d times in %s, want %d", k+1, id, event.Partition(id, partitions), got, who, want)
				}
			}
		}
	}
}
