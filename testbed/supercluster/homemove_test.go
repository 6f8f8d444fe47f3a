package supercluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
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

// TestHomeMovedByCommand: strict mode, events of a partition homed in
// us-east (and of one homed in ap-south) published in every region, each ID
// twice from two regions, without a pause. Mid-load, the partition's home
// moves to eu-west (rehome.Move), then back to us-east and at once to
// eu-west again. Every ID runs
// exactly once across the three regions' edges — none lost at a move, none
// decided again by the new home (the old home's claims carried, its
// sources started where it stopped), none decided by both. Provisioning the
// old home again with its configured homes keeps the moved ones, and an
// edge configured statically with the moved partition refuses it.
func TestHomeMovedByCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	top := topology.Default()
	top.Mode = topology.Strict
	c, err := Start(ctx, top, Options{DataDir: t.TempDir(), Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	top = top.Defaults()
	regions := top.RegionNames()
	moved := top.HomePartitions("us-east")[0]
	other := top.HomePartitions("ap-south")[0]
	admins := map[string]jetstream.JetStream{}
	for _, r := range regions {
		_, admins[r] = mustConnect(t, c, r)
	}

	// One edge per region, following its recorded homes.
	runs := map[string]*verify.Runs{}
	var stops []func()
	start := func(region, name string, parts []int) {
		runs[name] = verify.NewRuns()
		_, stop := runEdge(t, ctx, c, region, runs[name], edge.Options{
			Name: name, Region: region, Strict: true, Partitions: parts,
			Peers:  slices.DeleteFunc(slices.Clone(regions), func(r string) bool { return r == region }),
			Logger: coretest.Quiet, Window: time.Duration(top.Window),
		})
		stops = append(stops, stop)
	}
	for _, r := range regions {
		start(r, r+"-edge", nil)
	}
	defer func() {
		for _, s := range stops {
			s()
		}
	}()

	// The load: IDs of the two partitions, each published in one region
	// and again in the next, until stopped.
	var mu sync.Mutex
	var ids []string
	load := func(stop <-chan struct{}, tag string) <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				case <-time.After(3 * time.Millisecond):
				}
				id := fmt.Sprintf("%s-%d", tag, i)
				if p := event.Partition(id, top.Partitions); p != moved && p != other {
					continue
				}
				for k := range 2 {
					r := regions[(i+k)%len(regions)]
					if _, err := admins[r].Publish(ctx, streams.Names{Region: r}.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
						t.Errorf("publish %s in %s: %v", id, r, err)
						return
					}
				}
				mu.Lock()
				ids = append(ids, id)
				mu.Unlock()
			}
		}()
		return done
	}
	total := func(id string) int {
		n := 0
		for _, r := range runs {
			n += r.Account([]string{id}).Runs
		}
		return n
	}
	allHandled := func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if total(id) == 0 {
				return false
			}
		}
		return true
	}
	move := func(to string) rehome.Result {
		mctx, mcancel := context.WithTimeout(ctx, time.Minute)
		defer mcancel()
		res, err := rehome.Move(mctx, admins["ap-south"], regions, moved, to, rehome.Options{Logger: coretest.Quiet})
		if err != nil {
			t.Fatalf("move p%d to %s: %v", moved, to, err)
		}
		t.Logf("[%.1fs] moved p%d %s -> %s: fenced at %d, %d IDs carried in %d records (%d uncertain), position %d, starts %v",
			time.Since(began).Seconds(), moved, res.From, res.To, res.Through, res.Carried, res.CarriedRecords, res.Uncertain, res.Position, res.Starts)
		return res
	}

	stop := make(chan struct{})
	done := load(stop, "a")
	coretest.Eventually(t, time.Minute, "the first events handled", func() bool {
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		return n > 40 && allHandled()
	})
	res := move("eu-west")
	if res.From != "us-east" || res.Version != 1 || res.Starts == nil {
		t.Errorf("first move: %+v, want from us-east, version 1, new sources", res)
	}
	// The old home's core provisions again with its configured homes: the
	// moved homes stay (no ErrHomesChanged, no sources changed).
	if err := streams.Provision(ctx, admins["us-east"], c.StreamConfig("us-east")); err != nil {
		t.Errorf("provisioning us-east again after the move: %v", err)
	}
	if h, err := streams.ReadHomes(ctx, admins["us-east"], streams.Names{Region: "us-east"}); err != nil || slices.Contains(h.Homes, moved) {
		t.Errorf("us-east's homes after provisioning: %+v, %v", h, err)
	}
	// A stale edge of us-east still configured with the moved partition.
	start("us-east", "us-east-stale", []int{moved})
	coretest.Eventually(t, time.Minute, "events after the first move handled", func() bool {
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		return n > 120 && allHandled()
	})
	// The stale edge refused the partition; it must go before the partition
	// comes back to us-east, where it would be one of two static owners.
	stops[len(stops)-1]()
	stops = stops[:len(stops)-1]
	if n := runs["us-east-stale"].Total(); n != 0 {
		t.Errorf("the stale edge ran %d events of a partition moved away", n)
	}
	// The second move is cut short after its first step (as by a kill of
	// the command): running it again finishes it.
	if err := streams.ReleaseHome(ctx, admins["eu-west"], streams.Names{Region: "eu-west"}, moved, "us-east", 2); err != nil {
		t.Fatal(err)
	}
	res = move("us-east")
	if res.From != "eu-west" || res.Version != 2 || res.Starts != nil {
		t.Errorf("second move: %+v, want from eu-west, version 2, us-east's own sources (no new ones)", res)
	}
	// And at once to eu-west again: its new sources have the transforms
	// of those the second move removed, whose last messages eu-west's home
	// stream still holds beyond what anyone decided; a source made again
	// like them would resume after those (nats-server matches sources to
	// their messages' headers), not where us-east stopped.
	res = move("eu-west")
	if res.From != "us-east" || res.Version != 3 || res.Starts == nil {
		t.Errorf("third move: %+v, want from us-east, version 3, new sources", res)
	}
	coretest.Eventually(t, time.Minute, "events after the third move handled", func() bool {
		mu.Lock()
		n := len(ids)
		mu.Unlock()
		return n > 200 && allHandled()
	})
	close(stop)
	<-done
	// Every ID published again in every region: all duplicates now.
	mu.Lock()
	all := slices.Clone(ids)
	mu.Unlock()
	for i, id := range all {
		r := regions[i%len(regions)]
		if _, err := admins[r].Publish(ctx, streams.Names{Region: r}.Ingest(id), []byte(id), jetstream.WithMsgID(id+"-again")); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, time.Minute, "every ID handled", allHandled)
	// The duplicates reach the homes; give them time to be decided (as
	// duplicates) before counting: the home streams drained.
	coretest.Eventually(t, time.Minute, "the duplicates decided", func() bool {
		dctx, dcancel := context.WithTimeout(ctx, 5*time.Second)
		defer dcancel()
		for _, r := range regions {
			h, err := streams.ReadHomes(dctx, admins[r], streams.Names{Region: r})
			if err != nil {
				return false
			}
			if ok, err := verify.Drained(dctx, admins[r], streams.Names{Region: r}, top.Partitions, h.Homes); err != nil || !ok {
				return false
			}
		}
		return true
	})
	bad := 0
	for _, id := range all {
		if n := total(id); n != 1 {
			bad++
			if bad <= 10 {
				t.Errorf("%s (p%d) ran %d times", id, event.Partition(id, top.Partitions), n)
			}
		}
	}
	t.Logf("[%.1fs] %d IDs (each published 3 times), %d not run exactly once", time.Since(began).Seconds(), len(all), bad)
}
