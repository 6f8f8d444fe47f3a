package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/deploy"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

// TestMultiRegionProcesses runs the multi-region shape as real processes,
// secure by default: three core processes (one per region, TLS on every
// port, users per role), gateways through six wanproxy processes (20 ms one
// way), one edge process per region with -peers, and a producer per region.
// Mid-load the eu-west core is killed with SIGKILL and restarted on its data.
// Every ID is handled, at most once per region unless a re-run was flagged
// uncertain (counted from the ledgers, line by line, and bounded), and the
// conflicts recorded are exactly the IDs handled in two regions. Races are
// made certain, not left to timing: with both directions of the
// us-east/eu-west link stopped (SIGSTOP of its wanproxy processes), IDs sent
// to both regions are handled in both before either claim can replicate;
// each must become a conflict once the link runs again.
func TestMultiRegionProcesses(t *testing.T) {
	m := startRegions(t, nil)
	dir, regions, creds, certs := m.dir, m.regions, m.creds, m.certs
	cores, wans, url, connect, hasStream := m.cores, m.wans, m.url, m.connect, m.hasStream
	start := m.start
	if nc, err := nats.Connect(url("us-east"), nats.RootCAs(certs.CA)); err == nil {
		nc.Close()
		t.Fatal("an unauthenticated client connected")
	}
	for _, r := range regions {
		start(r+"-edge", bins.edge, m.edgeArgs(r, r+"-edge", r)...)
	}

	// Load: each region its own IDs; 150 IDs sent to two regions at once.
	var published []string
	pub := func(r string, ids []string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return workload.Publish(ctx, producer.New(connect(r, auth.Producer), r), workload.Plan{}, ids, 500, nil)
	}
	wave := func(tag string, n int) {
		var wg sync.WaitGroup
		errs := make(chan error, 3*len(regions))
		for i, r := range regions {
			var ids []string
			for j := range n {
				ids = append(ids, fmt.Sprintf("%s-%s-%d", tag, r, j))
			}
			var race []string
			for j := range 50 {
				race = append(race, fmt.Sprintf("%s-race-%d-%d", tag, i, j))
			}
			published = append(published, ids...)
			published = append(published, race...)
			next := regions[(i+1)%len(regions)]
			wg.Add(3)
			go func() { defer wg.Done(); errs <- pub(r, ids) }()
			go func() { defer wg.Done(); errs <- pub(r, race) }()
			go func() { defer wg.Done(); errs <- pub(next, race) }()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	wave("a", 1500)
	cores["eu-west"].Kill9()
	// us-east and ap-south keep going while eu-west's core is down.
	var during []string
	for _, r := range []string{"us-east", "ap-south"} {
		var ids []string
		for j := range 500 {
			ids = append(ids, fmt.Sprintf("during-%s-%d", r, j))
		}
		during = append(during, ids...)
		if err := pub(r, ids); err != nil {
			t.Fatal(err)
		}
	}
	published = append(published, during...)
	coretest.Eventually(t, 60*time.Second, "the other regions decide while eu-west is down", func() bool {
		return missing(t, dir, regions, during) == 0
	})
	cores["eu-west"] = start("eu-west-core-2", bins.core, m.coreArgs("eu-west")...)
	coretest.Eventually(t, 60*time.Second, "eu-west's core back", func() bool {
		return hasStream("eu-west", streams.Names{Region: "eu-west"}.IngestStream())
	})
	wave("b", 1500)
	// The restarted core answers for its streams before it has found the
	// supercluster's JetStream meta leader again; until it has, its edge
	// cannot remake the consumers the kill cost it (consumer creation goes
	// through the meta leader, which may sit across the link stopped next).
	// The races below need a whole region on each side: wait for every
	// ID so far to be handled before stopping the link.
	coretest.Eventually(t, 120*time.Second, "every ID so far handled (eu-west caught up)", func() bool {
		return missing(t, dir, regions, published) == 0
	})

	// Certain races: a link stopped in both directions, the same IDs sent
	// to both regions, each handled in both. The link is the one between
	// the two regions the JetStream meta leader is not in: a region cut
	// off from the meta leader cannot create consumers (OPERATIONS), and an
	// edge may need one at any time (the restarted core's consumers can
	// redeliver below what was delivered: a gap, so a rewind).
	var cutPair [2]string
	coretest.Eventually(t, 60*time.Second, "the meta leader's region", func() bool {
		lead := metaLeaderRegion(t, url(regions[0]), creds, certs.CA)
		var others []string
		for _, r := range regions {
			if r != lead {
				others = append(others, r)
			}
		}
		if lead == "" || len(others) != 2 {
			return false
		}
		cutPair = [2]string{others[0], others[1]}
		return true
	})
	t.Logf("stopping the %s/%s link (the meta leader is in the third region)", cutPair[0], cutPair[1])
	for _, l := range [][2]string{cutPair, {cutPair[1], cutPair[0]}} {
		if err := wans[l].Pause(); err != nil {
			t.Fatal(err)
		}
	}
	var cutRaces []string
	for j := range 100 {
		cutRaces = append(cutRaces, fmt.Sprintf("cut-race-%d", j))
	}
	published = append(published, cutRaces...)
	for _, r := range cutPair {
		if err := pub(r, cutRaces); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, 60*time.Second, "the cut races handled on both sides of the stopped link", func() bool {
		return missing(t, dir, []string{cutPair[0]}, cutRaces) == 0 && missing(t, dir, []string{cutPair[1]}, cutRaces) == 0
	})
	for _, l := range [][2]string{cutPair, {cutPair[1], cutPair[0]}} {
		if err := wans[l].Resume(); err != nil {
			t.Fatal(err)
		}
	}
	coretest.Eventually(t, 180*time.Second, "every ID handled", func() bool { return missing(t, dir, regions, published) == 0 })

	// Handler runs per region, from the ledgers, line by line: an ID run
	// again in a region must have been flagged uncertain, and the flagged
	// re-runs are at most the eu-west edge's batches in flight when its core
	// died (one disruption: batch 500 x 4 partitions).
	runs := map[string]*verify.Runs{}
	effects := map[string]map[string]int{}
	for _, r := range regions {
		runs[r] = verify.NewRuns()
		if err := runs[r].AddLedger(filepath.Join(dir, r+".ledger.jsonl"), nil); err != nil {
			t.Fatal(err)
		}
		effects[r] = runs[r].Effects()
		a := runs[r].Account(published)
		if a.Unflagged > 0 || a.Flagged > 500*4 {
			a.Lost, a.Missing = 0, nil // an ID need not run in every region
			t.Errorf("%s handler runs: %v", r, a.Check(500*4))
		}
	}
	races := verify.Tally(published, effects, nil).TrueRaces
	for _, id := range cutRaces {
		if effects[cutPair[0]][id] == 0 || effects[cutPair[1]][id] == 0 {
			t.Fatalf("%s, sent to both sides of the stopped link, was not handled on both", id)
		}
	}
	if races < len(cutRaces) {
		t.Fatalf("%d races, fewer than the %d made certain by the stopped link", races, len(cutRaces))
	}
	admin := map[string]jetstream.JetStream{}
	for _, r := range regions {
		admin[r] = connect(r, auth.Admin)
	}
	reported := func() map[string]bool {
		out := map[string]bool{}
		for _, r := range regions {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			recs, err := deploy.ReadConflicts(ctx, admin[r], streams.Names{Region: r})
			cancel()
			if err != nil {
				return nil
			}
			for _, rec := range recs {
				out[rec.Hash] = true
			}
		}
		return out
	}
	// Sources resume after the restart at their next retry (up to minutes):
	// wait for every race to be reported.
	var got map[string]bool
	coretest.Eventually(t, 180*time.Second, "every race reported", func() bool {
		got = reported()
		return len(got) >= races
	})
	acct := verify.Tally(published, effects, got)
	for r, n := range acct.DupEffects {
		if n > 0 {
			t.Errorf("%s handled %d IDs more than once", r, n)
		}
	}
	if acct.Spurious > 0 || acct.Missed > 0 || acct.Lost > 0 {
		t.Errorf("%d conflicts are not races, %d races not reported, %d IDs lost", acct.Spurious, acct.Missed, acct.Lost)
	}
	for _, id := range cutRaces {
		if !got[event.HashID(id).Hex()] {
			t.Errorf("%s raced across the stopped link and is not a conflict", id)
			break
		}
	}
	t.Logf("%d IDs handled, %d races (%d made certain by the stopped link, the others IDs sent to two regions at once that both handled), %d conflicts reported; eu-west core killed with SIGKILL and restarted", len(published), races, len(cutRaces), len(got))
}

// metaLeaderRegion returns the region of the supercluster's JetStream meta
// leader as a core of url sees it ("" when it knows none), asking over the
// system account (core names are <region>-core).
func metaLeaderRegion(t *testing.T, url string, creds auth.Credentials, ca string) string {
	nc, err := nats.Connect(url, append(auth.ClientOptions(auth.System.User(), creds.Password(auth.System.User())), nats.RootCAs(ca))...)
	if err != nil {
		return ""
	}
	defer nc.Close()
	m, err := nc.Request("$SYS.REQ.SERVER.PING.JSZ", nil, 2*time.Second)
	if err != nil {
		return ""
	}
	var resp struct {
		Data struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		} `json:"data"`
	}
	if err := json.Unmarshal(m.Data, &resp); err != nil {
		t.Logf("jsz: %v", err)
		return ""
	}
	return strings.TrimSuffix(resp.Data.Meta.Leader, "-core")
}

// missing counts the IDs of ids with no ledger line in any region.
func missing(t *testing.T, dir string, regions []string, ids []string) int {
	handled := map[string]bool{}
	for _, r := range regions {
		lines, err := sink.ReadLedger(filepath.Join(dir, r+".ledger.jsonl"))
		if err != nil {
			continue
		}
		for _, l := range lines {
			handled[l.ID] = true
		}
	}
	n := 0
	for _, id := range ids {
		if !handled[id] {
			n++
		}
	}
	return n
}
