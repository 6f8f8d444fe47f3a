package streams_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestLastsOfSplitsCutShortAnswers: the last event of each region and
// partition in a home stream is read with multi_last direct gets; with
// many tenants a request matches more than the 1,024 messages nats-server
// answers (413) and is asked again in halves, so every partition's last
// event is found (none taken for "nothing here": that partition would be
// sourced again from its origin's first message). Up to a sequence, the
// last at or below it.
func TestLastsOfSplitsCutShortAnswers(t *testing.T) {
	n := coretest.Start(t)
	nc, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	regions := []string{"a", "b"}
	var sources []*jetstream.StreamSource
	for _, r := range regions {
		in := "onceplane-" + r + "-in"
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: in, Subjects: []string{"onceplane." + r + ".part.>"}, Storage: jetstream.MemoryStorage}); err != nil {
			t.Fatal(err)
		}
		sources = append(sources, &jetstream.StreamSource{Name: in})
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "H", Sources: sources, AllowDirect: true, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	const parts, tenants = 40, 20
	want := map[string]uint64{}
	origin := map[string]uint64{}
	var half map[string]uint64
	var firstRound uint64 // the home stream's last sequence after the first round
	total := 0
	for round := range 2 {
		for _, r := range regions {
			for p := range parts {
				for tn := range tenants {
					if _, err := js.Publish(ctx, fmt.Sprintf("onceplane.%s.part.%d.t%d", r, p, tn), nil); err != nil {
						t.Fatal(err)
					}
					origin[r]++
					total++
					want[fmt.Sprintf("%s/%d", r, p)] = origin[r]
				}
			}
		}
		coretest.Eventually(t, 30*time.Second, "the home stream holds the round", func() bool {
			s, err := js.Stream(ctx, "H")
			if err != nil {
				return false
			}
			info, err := s.Info(ctx)
			return err == nil && info.State.Msgs == uint64(total)
		})
		if round == 0 {
			half = map[string]uint64{}
			for k, v := range want {
				half[k] = v
			}
			firstRound = uint64(total)
		}
	}
	ps := make([]int, parts)
	for p := range ps {
		ps[p] = p
	}
	for _, c := range []struct {
		upTo uint64
		want map[string]uint64
	}{{0, want}, {firstRound, half}} {
		got, err := streams.LastsOf(ctx, nc, "H", ps, regions, c.upTo)
		if err != nil {
			t.Fatalf("up to %d: %v", c.upTo, err)
		}
		if len(got) != len(c.want) {
			t.Fatalf("up to %d: %d regions and partitions found, want %d", c.upTo, len(got), len(c.want))
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("up to %d: %s last at %d, want %d", c.upTo, k, got[k], v)
			}
		}
	}
}
