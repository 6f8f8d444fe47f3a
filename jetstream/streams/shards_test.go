package streams_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestShardedRegion runs a 3-node region of 3 shards (R1 and R3): the core
// nodes' account mapping partitions every ingest subject (every tenant's
// and the one of before tenants, published through every node) into the
// shard stream of the partition event.Partition computes; the shards'
// leaders sit on three different nodes; a node configured with another
// shard or partition count is refused.
func TestShardedRegion(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node regions: long")
	}
	for _, replicas := range []int{1, 3} {
		t.Run(fmt.Sprintf("R%d", replicas), func(t *testing.T) {
			cfg := streams.Config{Names: streams.Names{Region: "us-east", Shards: 3}, Partitions: 11, Replicas: replicas, Memory: true}
			nodes := coretest.Cluster(t, "us-east", 3, func(o *core.Options) { o.Mappings = cfg.IngestMapping() })
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			jss := make([]jetstream.JetStream, len(nodes))
			errs := make(chan error, len(nodes))
			for i, n := range nodes {
				_, jss[i] = coretest.Connect(t, n.ClientURL())
				go func() { errs <- streams.Provision(ctx, jss[i], cfg) }()
			}
			for range nodes {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			if err := streams.SpreadLeaders(ctx, jss[0], cfg); err != nil {
				t.Fatal(err)
			}
			const count = 600
			for i := range count {
				id := fmt.Sprintf("order-%d~x", i)
				subj := []string{cfg.Ingest(id), cfg.IngestOf("acme", id), cfg.LegacyIngest(id)}[i%3]
				if _, err := jss[i%len(jss)].Publish(ctx, subj, nil, jetstream.WithMsgID(id)); err != nil {
					t.Fatalf("publish %s through node %d: %v", subj, i%len(jss), err)
				}
			}
			stored, acme := 0, 0
			for s := range 3 {
				st, err := jss[0].Stream(ctx, cfg.IngestShard(s))
				if err != nil {
					t.Fatal(err)
				}
				info, _ := st.Info(ctx)
				for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
					m, err := st.GetMsg(ctx, seq)
					if err != nil {
						t.Fatal(err)
					}
					id := m.Header.Get(event.HeaderMsgID)
					p := event.Partition(id, cfg.Partitions)
					tenant := streams.TenantOf(m.Subject)
					if tenant == "acme" {
						acme++
					}
					if m.Subject != cfg.PartitionOf(p, tenant) || cfg.ShardOf(p) != s {
						t.Fatalf("id %s (partition %d, shard %d) stored on %s in shard %d", id, p, cfg.ShardOf(p), m.Subject, s)
					}
					stored++
				}
			}
			if stored != count || acme != count/3 {
				t.Fatalf("%d of %d events stored, %d of %d as tenant acme's", stored, count, acme, count/3)
			}
			for _, kind := range []func(int) string{cfg.IngestShard, cfg.ClaimShard} {
				var leaders []string
				coretest.Eventually(t, 30*time.Second, "shard leaders on three nodes", func() bool {
					leaders = leaders[:0]
					for s := range 3 {
						st, err := jss[0].Stream(ctx, kind(s))
						if err != nil || st.CachedInfo().Cluster == nil {
							return false
						}
						leaders = append(leaders, st.CachedInfo().Cluster.Leader)
					}
					slices.Sort(leaders)
					return len(slices.Compact(slices.Clone(leaders))) == 3
				})
			}
			for _, bad := range []streams.Config{
				{Names: streams.Names{Region: "us-east", Shards: 2}, Partitions: 11, Replicas: replicas, Memory: true},
				{Names: streams.Names{Region: "us-east"}, Partitions: 11, Replicas: replicas, Memory: true},
			} {
				if err := streams.CheckLayout(ctx, jss[1], bad); !errors.Is(err, streams.ErrShardsChanged) {
					t.Fatalf("%d shards not refused: %v", bad.ShardCount(), err)
				}
				if err := streams.Provision(ctx, jss[1], bad); !errors.Is(err, streams.ErrShardsChanged) {
					t.Fatalf("provision of %d shards not refused: %v", bad.ShardCount(), err)
				}
			}
			bad := cfg
			bad.Partitions = 12
			if err := streams.CheckLayout(ctx, jss[2], bad); !errors.Is(err, streams.ErrPartitionsChanged) {
				t.Fatalf("partition change not refused: %v", err)
			}
			if err := streams.CheckLayout(ctx, jss[2], cfg); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestShardSourcesCoverEveryPartition checks, for regions of different shard
// counts, that every partition of a peer reaches exactly one xclaims shard
// (the one holding that partition here) and every home partition exactly
// one home shard, from the peer shard stream that holds it.
func TestShardSourcesCoverEveryPartition(t *testing.T) {
	const parts = 16
	for _, here := range []int{1, 2, 3, 5} {
		for _, there := range []int{1, 2, 3, 4} {
			home := []int{0, 3, 4, 9, 15}
			for _, strict := range []bool{false, true} {
				c := streams.Config{Names: streams.Names{Region: "a", Shards: here}, Partitions: parts, Peers: []string{"b"}, PeerShards: map[string]int{"b": there}}
				if strict {
					c.Home = home
				}
				peer := streams.Names{Region: "b", Shards: there}
				got := map[string]int{} // "<region>/<p>" -> times sourced
				for _, sc := range c.StreamConfigs() {
					for _, src := range sc.Sources {
						var srcRegion streams.Names
						for _, n := range []streams.Names{c.Names, peer} {
							for s := range n.ShardCount() {
								if src.Name == n.IngestShard(s) || src.Name == n.ClaimShard(s) {
									srcRegion = n
								}
							}
						}
						for p := range parts {
							subj := srcRegion.Claims(p)
							if strict {
								subj = srcRegion.Partition(p)
							}
							in := src.FilterSubject != "" && srcRegion.ShardOf(p) == shardOfStream(srcRegion, src.Name)
							for _, tr := range src.SubjectTransforms {
								in = in || tr.Source == subj
							}
							if !in {
								continue
							}
							if srcRegion.ShardOf(p) != shardOfStream(srcRegion, src.Name) {
								t.Fatalf("here %d there %d: %s sources p%d from %s, which does not hold it", here, there, sc.Name, p, src.Name)
							}
							if want := c.ShardOf(p); sc.Name != c.XClaimShard(want) && sc.Name != c.HomeShard(want) {
								t.Fatalf("here %d there %d: p%d sourced into %s, want shard %d", here, there, p, sc.Name, want)
							}
							got[fmt.Sprintf("%s/%d", srcRegion.Region, p)]++
						}
					}
				}
				for p := range parts {
					wantPeer, wantOwn := 1, 0
					if strict {
						wantPeer, wantOwn = 0, 0
						if slices.Contains(home, p) {
							wantPeer, wantOwn = 1, 1
						}
					}
					if got["b/"+fmt.Sprint(p)] != wantPeer || got["a/"+fmt.Sprint(p)] != wantOwn {
						t.Fatalf("here %d there %d strict %v: p%d sourced %d times from the peer, %d from here; want %d, %d",
							here, there, strict, p, got["b/"+fmt.Sprint(p)], got["a/"+fmt.Sprint(p)], wantPeer, wantOwn)
					}
				}
			}
		}
	}
}

func shardOfStream(n streams.Names, name string) int {
	for s := range n.ShardCount() {
		if name == n.IngestShard(s) || name == n.ClaimShard(s) {
			return s
		}
	}
	return -1
}

func TestShardIndex(t *testing.T) {
	base := "onceplane-us-east-claims"
	type want struct {
		i  int
		ok bool
	}
	for name, w := range map[string]want{base: {0, true}, base + "-2": {2, true}, base + "-12": {12, true}, base + "-0": {}, base + "-": {},
		base + "-claims": {}, "onceplane-us-east-claims-x": {}, "onceplane-us": {}, base + "-1x": {}} {
		if i, ok := streams.ShardIndex(name, base); i != w.i || ok != w.ok {
			t.Errorf("ShardIndex(%q) = %d, %v; want %d, %v", name, i, ok, w.i, w.ok)
		}
	}
}

// TestSourcedShards: a region's own xclaims streams tell how many claim
// shards of a peer it sources, with the peer's streams gone (a core
// restarting while that region is lost provisions with it).
func TestSourcedShards(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a", Shards: 2}, Partitions: 8, Peers: []string{"b"}}
	if got, err := streams.SourcedShards(ctx, js, a, "b"); err != nil || got != 0 {
		t.Fatalf("before provisioning: %d, %v; want 0", got, err)
	}
	a.PeerShards = map[string]int{"b": 3}
	b := streams.Config{Names: streams.Names{Region: "b", Shards: 3}, Partitions: 8, Peers: []string{"a"}, PeerShards: map[string]int{"a": 2}}
	provisionPair(t, ctx, js, a, b)
	for _, s := range b.Names.EveryShard(b.Names.IngestShard) {
		if err := js.DeleteStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range b.Names.EveryShard(b.Names.ClaimShard) {
		if err := js.DeleteStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := streams.ReadLayout(ctx, js, streams.Names{Region: "b"}); err == nil {
		t.Fatal("b's layout still readable")
	}
	if got, err := streams.SourcedShards(ctx, js, a, "b"); err != nil || got != 3 {
		t.Fatalf("b lost: %d, %v; want the 3 shards a sources", got, err)
	}
	if got, err := streams.SourcedShards(ctx, js, b, "a"); err != nil || got != 2 {
		t.Fatalf("a's shards sourced by b: %d, %v; want 2", got, err)
	}
	strict := a
	strict.Home = []int{0}
	if got, _ := streams.SourcedShards(ctx, js, strict, "b"); got != 0 {
		t.Fatalf("strict mode: %d, want 0 (home sources name only the home partitions' shards)", got)
	}
}
