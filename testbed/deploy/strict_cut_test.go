package deploy

import (
	"fmt"
	"testing"
	"time"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/supercluster"
	"github.com/onceplane/onceplane/topology"
)

// TestStrictRoutingSurvivesACut: strict mode, the us-east/eu-west link cut
// under load. Events published in us-east for partitions homed in eu-west
// cannot reach home while the link is cut: during the cut none of them is
// decided anywhere (us-east is not their home), while eu-west keeps
// deciding what is published to it directly, including IDs sent to both
// sides, each once. After the heal every event is decided exactly once,
// at home, the late routed copies of the IDs sent to both sides as
// duplicates.
func TestStrictRoutingSurvivesACut(t *testing.T) {
	top := topology.Default()
	top.Mode = topology.Strict
	// The ingest layer's Nats-Msg-Id window is off (100 ms): late copies
	// reach the home edges, whose dedupe is what is tested.
	d := start(t, top, Options{Cluster: supercluster.Options{IngestDuplicates: -1}})
	var all []string
	homed := func(prefix string, k int) []string {
		var ids []string
		for i := 0; len(ids) < k; i++ {
			id := fmt.Sprintf("%s-%d", prefix, i)
			if top.Home(event.Partition(id, top.Partitions)) == "eu-west" {
				ids = append(ids, id)
			}
		}
		all = append(all, ids...)
		return ids
	}
	// effects returns, for ids, how many have an effect in eu-west, how many
	// have one elsewhere, and how many have more than one in all.
	effects := func(ids []string) (home, away, twice int) {
		counts := d.Effects.Counts()
		for _, id := range ids {
			n := 0
			for r, m := range counts {
				n += m[id]
				if m[id] > 0 && r != "eu-west" {
					away++
				}
			}
			if counts["eu-west"][id] > 0 {
				home++
			}
			if n > 1 {
				twice++
			}
		}
		return home, away, twice
	}

	before := homed("before", 1000)
	publish(t, d, "us-east", before)
	coretest.Eventually(t, 30*time.Second, "routed home and decided", func() bool { h, _, _ := effects(before); return h == len(before) })

	d.Cut("us-east", "eu-west")
	during := homed("during", 1000)
	both := homed("both", 200)
	local := homed("local", 500)
	publish(t, d, "us-east", during)
	publish(t, d, "us-east", both)
	publish(t, d, "eu-west", both)
	publish(t, d, "eu-west", local)
	// eu-west decides its own events while cut...
	coretest.Eventually(t, 30*time.Second, "eu-west decides what it receives itself during the cut", func() bool {
		h1, _, _ := effects(both)
		h2, _, _ := effects(local)
		return h1 == len(both) && h2 == len(local)
	})
	// ...and nothing routed from us-east is decided, anywhere, nor anything twice.
	coretest.Never(t, time.Second, "an event published in us-east for eu-west decided during the cut", func() bool {
		h, a, _ := effects(during)
		return h+a > 0
	})
	if h, a, twice := effects(append(append([]string{}, both...), local...)); a > 0 || twice > 0 || h != len(both)+len(local) {
		t.Fatalf("during the cut: %d decided at home, %d elsewhere, %d twice; want %d, 0, 0", h, a, twice, len(both)+len(local))
	}

	d.Heal("us-east", "eu-west")
	after := homed("after", 1000)
	publish(t, d, "us-east", after)
	// Sources resume at their next retry after the heal (seconds to tens of
	// seconds): every ID decided, and every routed copy decided at home
	// (the late copies of both as duplicates).
	coretest.Eventually(t, 120*time.Second, "every ID decided at home after the heal", func() bool { h, _, _ := effects(all); return h == len(all) })
	coretest.Eventually(t, 60*time.Second, "every routed copy decided", func() bool { return totalDone(d) == homeMsgs(t, d) })
	if h, a, twice := effects(all); h != len(all) || a > 0 || twice > 0 {
		t.Fatalf("after the heal: %d of %d decided at home, %d elsewhere, %d twice", h, len(all), a, twice)
	}
	dups := d.Stats("eu-west").Duplicates
	if dups < int64(len(both)) {
		t.Fatalf("eu-west decided %d duplicates: the %d late copies of IDs sent to both sides did not reach its dedupe", dups, len(both))
	}
	t.Logf("%d IDs homed in eu-west, %d published during the cut, %d to both sides; eu-west decided %d duplicates", len(all), len(during)+len(both)+len(local), len(both), dups)
}
