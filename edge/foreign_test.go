package edge_test

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/telemetry"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

// TestForeignBytesInAClaimLogAreSkipped is issue 11's claim-log poisoning:
// NATS checks a publisher's permission on the subject, not on the reply
// subject, and JetStream sends its publish acknowledgement to whatever reply
// the publisher set. A producer that publishes an event with its reply set
// to a claim subject stores the acknowledgement's JSON in the claim log,
// which the owner used to refuse to read ("corrupt claim record: bad magic"
// every second, the partition stopped for good: the record cannot be
// deleted). Foreign bytes there are now skipped and counted, by the running
// owner (its next append meets them) and by the next owner's replay.
func TestForeignBytesInAClaimLogAreSkipped(t *testing.T) {
	r := newRegion(t, streams.Config{Partitions: 2, IngestDuplicates: -1})
	dir := t.TempDir()
	m1 := telemetry.NewMetrics()
	r.startEdge(t, edge.Options{Name: "edge-a", BatchSize: 16, Metrics: m1}, filepath.Join(dir, "a.jsonl"))
	before, _ := r.publish(t, workload.Plan{Events: 300, DupRate: 0.2, Prefix: "before-"})
	waitOutput(t, r, before)
	r.checkOnce(t, before)

	// The attack: events published with their reply set to each claim subject.
	var poison []string
	for p := range r.cfg.Partitions {
		id := fmt.Sprintf("poison-%d", p)
		poison = append(poison, id)
		m := nats.NewMsg(r.cfg.Ingest(id))
		m.Header.Set("Nats-Msg-Id", id)
		m.Data = []byte("payload")
		m.Reply = r.cfg.Claims(p)
		if err := r.nc.PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	s, err := r.js.Stream(context.Background(), r.cfg.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	// Anywhere in the log: the running owner may already have appended
	// after them (it claims the poison events too).
	coretest.Eventually(t, 10*time.Second, "the acknowledgements stored in both claim logs", func() bool {
		found := map[string]bool{}
		last := s.CachedInfo().State.LastSeq
		if info, err := s.Info(context.Background()); err == nil {
			last = info.State.LastSeq
		}
		for seq := uint64(1); seq <= last; seq++ {
			if m, err := s.GetMsg(context.Background(), seq); err == nil && bytes.HasPrefix(m.Data, []byte("{")) {
				found[m.Subject] = true
			}
		}
		for p := range r.cfg.Partitions {
			if !found[r.cfg.Claims(p)] {
				return false
			}
		}
		return true
	})

	// The running owner appends after the foreign bytes.
	during, _ := r.publish(t, workload.Plan{Events: 300, DupRate: 0.2, Prefix: "during-"})
	so := append(append(append([]string(nil), before...), poison...), during...)
	waitOutput(t, r, so)
	r.checkOnce(t, so)
	if n := testutil.ToFloat64(m1.ForeignRecords.WithLabelValues("local", "claims")); n < 1 {
		t.Errorf("the running owner counted %v foreign messages", n)
	}

	// The next owner replays across them.
	r.stopEdges(t)
	m2 := telemetry.NewMetrics()
	r.startEdge(t, edge.Options{Name: "edge-b", BatchSize: 16, Metrics: m2}, filepath.Join(dir, "b.jsonl"))
	after, _ := r.publish(t, workload.Plan{Events: 300, DupRate: 0.2, Prefix: "after-"})
	all := append(append(append(append([]string(nil), before...), poison...), during...), after...)
	waitOutput(t, r, all)
	r.checkOnce(t, all)
	if n := testutil.ToFloat64(m2.ForeignRecords.WithLabelValues("local", "claims")); n < float64(r.cfg.Partitions) {
		t.Errorf("the next owner's replay counted %v foreign messages, want at least %d", n, r.cfg.Partitions)
	}
}

// waitOutput polls until the output stream holds every ID of ids.
func waitOutput(t *testing.T, r *region, ids []string) {
	t.Helper()
	coretest.Eventually(t, 30*time.Second, "every ID in the output stream", func() bool {
		got, err := verify.OutputCounts(context.Background(), r.js, r.cfg.Names)
		if err != nil {
			return false
		}
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
}
