package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/onceplane/onceplane/auth"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
	"github.com/onceplane/onceplane/testbed/workload"
)

// TestRegionLossProcesses is the region-loss drill on real processes:
// us-east's edge is killed with SIGKILL mid-load, then its core, with a
// backlog us-east accepted and eu-west (its standby, -standby-for us-east)
// mirrored. `core region-failover` promotes eu-west's copy of us-east's
// claim log and an `edge -failover-of us-east` in eu-west takes us-east's
// partitions over; us-east's core restarts and finds its log fenced (its
// new edge owns nothing); `core region-failback` gives the log back and
// us-east's edge goes on. Every ID is handled, and an ID handled twice was
// flagged uncertain (every run of the failover's is: us-east may have run
// it and died before its claim was mirrored), counted from the three
// ledgers line by line.
func TestRegionLossProcesses(t *testing.T) {
	m := startRegions(t, map[string]string{"eu-west": "us-east"})
	pub := func(ids []string) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := workload.Publish(ctx, producer.New(m.connect("us-east", auth.Producer), "us-east"), workload.Plan{}, ids, 500, nil); err != nil {
			t.Fatal(err)
		}
	}
	wave := func(tag string, n int) []string {
		var ids []string
		for i := range n {
			ids = append(ids, fmt.Sprintf("%s-%d", tag, i))
		}
		return ids
	}
	ledgers := []string{"us-east", "failover", "us-east-2"}
	handled := func(ids []string) bool { return missing(t, m.dir, ledgers, ids) == 0 }
	// core runs `core <cmd> ... <region>` as the admin, against eu-west.
	core := func(cmd, region string) error {
		out, err := exec.Command(bins.core, cmd, "-nats", m.url("eu-west"), "-nats-user", auth.Admin.User().Name(),
			"-nats-password-file", m.password(auth.Admin.User()), "-tls-ca", m.certs.CA, "-region", "eu-west", region).CombinedOutput()
		t.Logf("core %s: %v %s", cmd, err, out)
		return err
	}
	westAdmin := m.connect("eu-west", auth.Admin)

	a, b, c := wave("a", 2000), wave("b", 2000), wave("c", 300)
	east := m.start("us-east-edge", bins.edge, m.edgeArgs("us-east", "us-east-edge", "us-east", "-batch", "100", "-standby", "eu-west")...)
	pub(a)
	coretest.Eventually(t, time.Minute, "us-east handles wave a", func() bool { return handled(a) })
	// Mid-load: the edge dies while wave b is being decided, then the core.
	published := make(chan struct{})
	go func() {
		defer close(published)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if err := workload.Publish(ctx, producer.New(m.connect("us-east", auth.Producer), "us-east"), workload.Plan{}, b, 500, nil); err != nil {
			t.Error(err)
		}
	}()
	coretest.Eventually(t, time.Minute, "us-east in the middle of wave b", func() bool { return missing(t, m.dir, ledgers, b) < len(b)-200 })
	east.Kill9()
	<-published
	west := streams.Names{Region: "eu-west"}
	coretest.Eventually(t, 2*time.Minute, "wave b accepted by us-east and mirrored in eu-west", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, _ := verify.StreamMsgs(ctx, westAdmin, west.StandbyShard("us-east", 0))
		return n == uint64(len(a)+len(b))
	})
	eastAdmin := m.connect("us-east", auth.Admin)
	coretest.Eventually(t, time.Minute, "us-east's claims mirrored in eu-west", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		want, _ := verify.StreamMsgs(ctx, eastAdmin, streams.Names{Region: "us-east"}.ClaimStream())
		s, err := westAdmin.Stream(ctx, west.StandbyClaimShard("us-east", 0))
		if err != nil {
			return false
		}
		info, err := s.Info(ctx)
		if err != nil {
			return false
		}
		return info.State.Msgs == want
	})
	m.cores["us-east"].Kill9()

	if err := core("region-failover", "us-east"); err != nil {
		t.Fatal(err)
	}
	failover := m.start("eu-west-failover", bins.edge, m.edgeArgsAs(auth.FailoverUser("eu-west"), "eu-west", "eu-west-failover", "failover", "-failover-of", "us-east", "-log-level", "info")...)
	coretest.Eventually(t, 2*time.Minute, "eu-west handles us-east's backlog", func() bool { return handled(b) })

	// us-east comes back on its data: fenced, its edge waits.
	m.cores["us-east"] = m.start("us-east-core-2", bins.core, m.coreArgs("us-east")...)
	coretest.Eventually(t, 2*time.Minute, "us-east's core back", func() bool {
		return m.hasStream("us-east", streams.Names{Region: "us-east"}.IngestStream())
	})
	east2 := m.start("us-east-edge-2", bins.edge, m.edgeArgs("us-east", "us-east-edge-2", "us-east-2", "-batch", "100", "-standby", "eu-west", "-log-level", "info")...)
	if err := failover.Stop(10 * time.Second); err != nil {
		t.Logf("failover edge stop: %v", err)
	}
	coretest.Eventually(t, 2*time.Minute, "failed back", func() bool {
		return core("region-failback", "us-east") == nil
	})
	pub(c)
	coretest.Eventually(t, 2*time.Minute, "us-east handles wave c after the failback", func() bool { return handled(c) })

	runs := verify.NewRuns()
	for _, l := range ledgers {
		if err := runs.AddLedger(filepath.Join(m.dir, l+".ledger.jsonl"), nil); err != nil {
			t.Fatal(err)
		}
	}
	all := append(append(append([]string{}, a...), b...), c...)
	acct := runs.Account(all)
	// Flagged re-runs: the failover's of what us-east ran before it died
	// (its last claims not mirrored) and its uncertain set, at most the
	// IDs in flight then; none after the failback.
	if err := acct.Check(len(b)); err != nil {
		t.Error(err)
	}
	seen := map[string][]string{}
	for _, l := range ledgers {
		lines, err := sink.ReadLedger(filepath.Join(m.dir, l+".ledger.jsonl"))
		if err != nil {
			continue
		}
		for _, x := range lines {
			seen[x.ID] = append(seen[x.ID], l)
		}
	}
	pairs := map[string]int{}
	for _, ls := range seen {
		if len(ls) > 1 {
			pairs[fmt.Sprint(ls)]++
		}
	}
	t.Logf("handled more than once, by ledgers: %v", pairs)
	if t.Failed() {
		t.Logf("failover:\n%s\nus-east-2:\n%s", tail(failover.Output(), 2500), tail(east2.Output(), 2500))
	}
	t.Logf("region loss: %d IDs, %d extra runs, all flagged uncertain (%d)", acct.IDs, acct.Extra, acct.Flagged)
}
