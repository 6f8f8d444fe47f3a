package streams_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestTransformMatchesPartition publishes IDs through the ingest subject
// transform of a live server and checks that every stored subject is the
// partition event.Partition computes, so copies of an ID always meet.
func TestTransformMatchesPartition(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := streams.Config{Partitions: 7, Memory: true}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatalf("second provision not idempotent: %v", err)
	}
	const count = 500
	for i := 0; i < count; i++ {
		id := fmt.Sprintf("order-%d~x", i)
		// A third each: the default tenant, tenant acme, and the subject
		// of before tenants (the core maps it to the default tenant's).
		subj := []string{cfg.Ingest(id), cfg.IngestOf("acme", id), cfg.LegacyIngest(id)}[i%3]
		if _, err := js.Publish(ctx, subj, nil, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := js.Stream(ctx, cfg.IngestStream())
	for seq := uint64(1); seq <= count; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		id := m.Header.Get(event.HeaderMsgID)
		tenant := []string{event.DefaultTenant, "acme", event.DefaultTenant}[(seq-1)%3]
		if want := cfg.PartitionOf(event.Partition(id, 7), tenant); m.Subject != want {
			t.Fatalf("id %s stored on %s, want %s", id, m.Subject, want)
		}
		if got := streams.TenantOf(m.Subject); got != tenant {
			t.Fatalf("TenantOf(%s) = %s, want %s", m.Subject, got, tenant)
		}
	}
	if p, err := streams.PartitionCount(ctx, js, cfg.Names); err != nil || p != 7 {
		t.Fatalf("PartitionCount = %d, %v", p, err)
	}
	cfg.Partitions = 8
	if err := streams.Provision(ctx, js, cfg); !errors.Is(err, streams.ErrPartitionsChanged) {
		t.Fatalf("partition change not refused: %v", err)
	}
	// A safe change (longer window) is applied in place.
	cfg.Partitions, cfg.Window = 7, 48*time.Hour
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	cs, _ := js.Stream(ctx, cfg.ClaimStream())
	if got := cs.CachedInfo().Config.MaxAge; got != 48*time.Hour+6*time.Hour+time.Minute {
		t.Fatalf("claim MaxAge after update = %v", got)
	}
}

func TestConsumerNames(t *testing.T) {
	for _, c := range []struct {
		name    string
		p       int
		seq     uint64
		old, ok bool
	}{
		{streams.ConsumerName(3, 41), 3, 41, false, true},
		{"p0-e7", 0, 0, true, true},
		{"p01-t1", 0, 0, false, false},
		{"p1-x1", 0, 0, false, false},
		{"p1-t", 0, 0, false, false},
		{"part-1", 0, 0, false, false},
		{"p-1-t2", 0, 0, false, false},
	} {
		p, seq, old, ok := streams.ParseConsumer(c.name)
		if ok != c.ok || (ok && (p != c.p || seq != c.seq || old != c.old)) {
			t.Errorf("%q: %d %d %v %v", c.name, p, seq, old, ok)
		}
	}
}

func FuzzParseConsumer(f *testing.F) {
	f.Add("p3-t41")
	f.Add("p0-e1")
	f.Fuzz(func(t *testing.T, name string) {
		p, seq, old, ok := streams.ParseConsumer(name)
		if ok && !old && streams.ConsumerName(p, seq) != name {
			t.Fatalf("%q parses to p%d seq %d, which names %q", name, p, seq, streams.ConsumerName(p, seq))
		}
	})
}

// TestTenantOf: the tenant token of a stored subject, the default tenant
// for one stored before tenants, something event.Check refuses for more
// tokens; and no allocation (it runs on every event).
func TestTenantOf(t *testing.T) {
	for subj, want := range map[string]string{
		"onceplane.us-east.part.3":         event.DefaultTenant,
		"onceplane.us-east.part.3.acme":    "acme",
		"onceplane.us-east.part.3.acme.x":  "acme.x",
		"onceplane.us-east.part.3.default": event.DefaultTenant,
	} {
		if got := streams.TenantOf(subj); got != want {
			t.Errorf("TenantOf(%q) = %q, want %q", subj, got, want)
		}
	}
	if err := event.ValidateTenant(streams.TenantOf("onceplane.r.part.3.a.b")); err == nil {
		t.Error("a subject with more tokens gives a valid tenant")
	}
	if n := testing.AllocsPerRun(100, func() { _ = streams.TenantOf("onceplane.us-east.part.3.acme") }); n != 0 {
		t.Errorf("TenantOf allocates %v times per call", n)
	}
}
