package streams_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/testbed/coretest"
)

// TestNewPeerSourcedFromItsStart: a source with no stored position used to
// start at the sourcing stream's last-message time once that stream had
// dropped its first message, so an xclaims source for a newly added peer
// skipped every claim the peer made before this region's last sourced
// claim. Sources now start at the origin's first message.
func TestNewPeerSourcedFromItsStart(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	peer := func(r string) streams.Config {
		return streams.Config{Names: streams.Names{Region: r}, Partitions: 2, Memory: true, Peers: []string{"here"}}
	}
	b, c := peer("b"), peer("c")
	here := streams.Config{Names: streams.Names{Region: "here"}, Partitions: 2, Memory: true, Peers: []string{"b"}}
	for _, cfg := range []streams.Config{b, c, here} {
		if err := streams.Provision(ctx, js, cfg); err != nil {
			t.Fatal(err)
		}
	}
	// c's claims come first, b's after: all of c's are older than the
	// last message here's xclaims stream will hold.
	for i := range 5 {
		if _, err := js.Publish(ctx, c.Claims(i%2), []byte("c")); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, b.Claims(i%2), []byte("b")); err != nil {
			t.Fatal(err)
		}
	}
	x, err := js.Stream(ctx, here.XClaimShard(0))
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "b's claims sourced", func() bool {
		info, err := x.Info(ctx)
		return err == nil && info.State.Msgs == 3
	})
	// The xclaims stream drops its first message (as its max age would).
	if err := x.DeleteMsg(ctx, 1); err != nil {
		t.Fatal(err)
	}
	here.Peers = []string{"b", "c"}
	if err := streams.Provision(ctx, js, here); err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "every claim of the new peer sourced", func() bool {
		info, err := x.Info(ctx, jetstream.WithSubjectFilter(c.Prefix()+".claims.*"))
		return err == nil && len(info.State.Subjects) == 2 && info.State.Subjects[c.Claims(0)] == 3 && info.State.Subjects[c.Claims(1)] == 2
	})
}

// TestStandbyMirrorsIngest: a region standing by for another mirrors each
// of its ingest shards with the same sequences and subjects (so a claim
// record's Through means the same in the mirror), from the first event;
// provisioning again changes nothing.
func TestStandbyMirrorsIngest(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := streams.Config{Names: streams.Names{Region: "a"}, Partitions: 4, Memory: true, Peers: []string{"b"}}
	b := streams.Config{Names: streams.Names{Region: "b"}, Partitions: 4, Memory: true, Peers: []string{"a"}, StandbyFor: []string{"a"}}
	if err := streams.Provision(ctx, js, a); err != nil {
		t.Fatal(err)
	}
	const events = 50
	for i := range events {
		id := "order-" + strconv.Itoa(i)
		if _, err := js.Publish(ctx, a.Ingest(id), []byte(id), jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := streams.Provision(ctx, js, b); err != nil {
			t.Fatal(err)
		}
	}
	in, err := js.Stream(ctx, a.IngestShard(0))
	if err != nil {
		t.Fatal(err)
	}
	mirror, err := js.Stream(ctx, b.StandbyShard("a", 0))
	if err != nil {
		t.Fatal(err)
	}
	coretest.Eventually(t, 10*time.Second, "every event mirrored", func() bool {
		info, err := mirror.Info(ctx)
		return err == nil && info.State.Msgs == events
	})
	for seq := uint64(1); seq <= events; seq++ {
		want, err := in.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		got, err := mirror.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if got.Subject != want.Subject || string(got.Data) != string(want.Data) {
			t.Fatalf("mirror seq %d: %s %q, ingest: %s %q", seq, got.Subject, got.Data, want.Subject, want.Data)
		}
	}
}
