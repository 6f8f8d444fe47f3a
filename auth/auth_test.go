package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/core"
	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/claimlog"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/producer"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
)

// TestRefusals proves each refusal on a core node with authentication on:
// an unauthenticated client, a producer reading a claim log, subscribing to
// it, or deleting a stream, and an edge deleting or purging one. What each
// role must be able to do still works.
func TestRefusals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, creds := secureNode(t, "local")
	names := streams.Names{Region: "local"}
	admin := connect(t, n, Admin.User(), creds, nil)
	if err := streams.Provision(ctx, admin, streams.Config{Names: names, Partitions: 4, Memory: true}); err != nil {
		t.Fatal(err)
	}

	// No credentials, or wrong ones: refused at connect.
	if _, err := nats.Connect(n.ClientURL()); err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("unauthenticated connect: %v, want an authorization violation", err)
	}
	if _, err := nats.Connect(n.ClientURL(), nats.UserInfo(Producer.User().Name(), "guess")); err == nil {
		t.Fatal("a wrong password connected")
	}

	// The producer publishes events and nothing else.
	var v refusals
	prodJS := connect(t, n, Producer.User(), creds, v.handler)
	if _, err := producer.New(prodJS, "local").Publish(ctx, "order-1", []byte("x")); err != nil {
		t.Fatalf("producer publish: %v", err)
	}
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	if _, err := prodJS.Stream(short(), names.ClaimStream()); err == nil {
		t.Error("producer read the claim stream's info")
	}
	if _, err := prodJS.OrderedConsumer(short(), names.ClaimStream(), jetstream.OrderedConsumerConfig{}); err == nil {
		t.Error("producer created a consumer on the claim log")
	}
	if err := prodJS.DeleteStream(short(), names.ClaimStream()); err == nil {
		t.Error("producer deleted the claim stream")
	}
	if err := prodJS.DeleteStream(short(), names.IngestStream()); err == nil {
		t.Error("producer deleted the ingest stream")
	}
	v.subscribeRefused(t, prodJS.Conn(), names.Claims(0))
	// Nor can it read other clients' replies (an edge's pull requests get
	// events and claim records on its inbox).
	v.subscribeRefused(t, prodJS.Conn(), "_INBOX.>")

	// The edge appends claims but cannot delete or purge streams.
	edgeJS := connect(t, n, EdgeUser("local"), creds, nil)
	log, err := claimlog.Open(ctx, edgeJS, names)
	if err != nil {
		t.Fatalf("edge opens the claim log: %v", err)
	}
	if _, err := log.Append(ctx, 0, 0, dedupe.Record{Kind: dedupe.KindClaim, Writer: "e", Time: time.Now(), IDs: []event.Hash{event.HashID("order-1")}}); err != nil {
		t.Fatalf("edge claim append: %v", err)
	}
	if err := edgeJS.DeleteStream(short(), names.IngestStream()); err == nil {
		t.Error("edge deleted the ingest stream")
	}
	if s, err := edgeJS.Stream(short(), names.OutputStream()); err != nil {
		t.Fatalf("edge stream info: %v", err)
	} else if err := s.Purge(short()); err == nil {
		t.Error("edge purged the output stream")
	}
	if _, err := edgeJS.Publish(short(), names.Ingest("forged"), nil); err == nil {
		t.Error("edge published to an ingest subject")
	}
	// Nor use operators' tools on what other edges run (issue 11, item 2).
	if _, err := admin.CreateOrUpdateConsumer(ctx, names.IngestStream(), jetstream.ConsumerConfig{Durable: "p0-t1", AckPolicy: jetstream.AckAllPolicy}); err != nil {
		t.Fatal(err)
	}
	if _, err := edgeJS.PauseConsumer(short(), names.IngestStream(), "p0-t1", time.Now().Add(time.Hour)); err == nil {
		t.Error("edge paused a consumer")
	}
	for _, subj := range []string{
		"$JS.API.CONSUMER.RESET." + names.IngestStream() + ".p0-t1",
		"$JS.API.STREAM.LEADER.STEPDOWN." + names.IngestStream(),
		"$JS.API.STREAM.SNAPSHOT." + names.ClaimStream(),
		"$JS.API.STREAM.RESTORE." + names.ClaimStream(),
		"$JS.API.META.LEADER.STEPDOWN",
	} {
		if m, err := edgeJS.Conn().Request(subj, []byte("{}"), time.Second); err == nil {
			t.Errorf("edge called %s: %s", subj, m.Data)
		}
	}

	// Operators reach server monitoring through the system account; the
	// application roles do not, and the system user sees no streams.
	sys, err := nats.Connect(n.ClientURL(), ClientOptions(System.User(), creds.Password(System.User()))...)
	if err != nil {
		t.Fatalf("system user connect: %v", err)
	}
	defer sys.Close()
	if m, err := sys.Request("$SYS.REQ.SERVER.PING", nil, 5*time.Second); err != nil || !strings.Contains(string(m.Data), n.Server().Name()) {
		t.Fatalf("system user server ping: %v", err)
	}
	for r, nc := range map[Role]*nats.Conn{Admin: admin.Conn(), Producer: prodJS.Conn(), Edge: edgeJS.Conn()} {
		if _, err := nc.Request("$SYS.REQ.SERVER.PING", nil, time.Second); err == nil {
			t.Errorf("%s reached the system account's server ping", r)
		}
	}
	if sysJS, err := jetstream.New(sys); err == nil {
		if _, err := sysJS.Stream(short(), names.ClaimStream()); err == nil {
			t.Error("the system user read the claim stream")
		}
	}

	// Everything is still there, as the admin sees it.
	for _, s := range []string{names.IngestStream(), names.ClaimStream(), names.OutputStream()} {
		st, err := admin.Stream(ctx, s)
		if err != nil {
			t.Fatalf("%s gone: %v", s, err)
		}
		if s != names.OutputStream() && st.CachedInfo().State.Msgs != 1 {
			t.Errorf("%s has %d messages, want 1", s, st.CachedInfo().State.Msgs)
		}
	}
}

// secureNode starts a core node with authentication on, as cmd/core does
// with -credentials, and returns it with the credentials.
func secureNode(t *testing.T, region string) (*core.Node, Credentials) {
	t.Helper()
	return secureNodeWith(t, region, Regions{})
}

// secureNodeWith is secureNode with region's failover relations f.
func secureNodeWith(t *testing.T, region string, f Regions) (*core.Node, Credentials) {
	t.Helper()
	creds, err := Generate(t.TempDir(), append(EdgeUsers("local", "us-east", "eu-west"), ProducerUser("acme"), ProducerUser("beta"))...)
	if err != nil {
		t.Fatal(err)
	}
	users, err := Users(creds, streams.Names{Region: region}, f)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range users {
		if u.Password == creds[u.Username] {
			t.Errorf("the server is given %s's password, not a hash", u.Username)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := core.Start(ctx, core.Options{Region: region, Port: -1, DataDir: t.TempDir(), Users: users, SystemAccount: SystemAccount, Accounts: AccountsConfig(), ClientUser: string(Admin), ClientPassword: creds.Password(Admin.User()),
		MaxMemory: 256 << 20, MaxStore: 1 << 30, Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n, creds
}

// TestProducerReplyCannotWriteStreams is issue 11's critical finding: NATS
// checks a publisher's permission on the subject, not on the reply subject,
// and JetStream sends its publish acknowledgement to whatever reply the
// publisher set. A producer publishing an event with its reply set to a
// claim, conflict, output or DLQ subject stored the acknowledgement there.
// Producers now publish from their own account through an import, so the
// acknowledgement goes back to a subject of the producers' account, where
// no stream listens.
func TestProducerReplyCannotWriteStreams(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, creds := secureNode(t, "local")
	names := streams.Names{Region: "local"}
	admin := connect(t, n, Admin.User(), creds, nil)
	if err := streams.Provision(ctx, admin, streams.Config{Names: names, Partitions: 2, Memory: true, Peers: []string{"other"}}.Own()); err != nil {
		t.Fatal(err)
	}
	prod := connect(t, n, Producer.User(), creds, nil)
	targets := []string{names.Claims(0), names.Claims(1), names.DLQ(0), names.Output(0)}
	for i, reply := range targets {
		id := fmt.Sprintf("attack-%d", i)
		m := nats.NewMsg(names.Ingest(id))
		m.Header.Set(event.HeaderMsgID, id)
		m.Reply = reply
		if err := prod.Conn().PublishMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	// A normal publish on the same connection is acknowledged after the
	// attacks were stored (one stream, in order).
	if _, err := producer.New(prod, "local").Publish(ctx, "order-1", []byte("x")); err != nil {
		t.Fatalf("producer publish: %v", err)
	}
	in, err := admin.Stream(ctx, names.IngestStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := in.CachedInfo().State.Msgs; got != uint64(len(targets))+1 {
		t.Fatalf("ingest holds %d events, want %d", got, len(targets)+1)
	}
	for _, stream := range []string{names.ClaimStream(), names.DLQStream(), names.OutputStream()} {
		s, err := admin.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().State.Msgs; got != 0 {
			m, _ := s.GetMsg(ctx, s.CachedInfo().State.LastSeq)
			t.Errorf("%s holds %d messages a producer's reply subject put there (last: %s)", stream, got, m.Data)
		}
	}
}

func connect(t *testing.T, n *core.Node, u User, creds Credentials, onErr nats.ErrHandler) jetstream.JetStream {
	t.Helper()
	opts := ClientOptions(u, creds.Password(u))
	if onErr != nil {
		opts = append(opts, nats.ErrorHandler(onErr))
	}
	nc, err := nats.Connect(n.ClientURL(), opts...)
	if err != nil {
		t.Fatalf("%s connect: %v", u, err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestLoadNeedsEveryRole(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(dir); err == nil {
		t.Fatal("Load of an empty dir succeeded")
	}
	c, err := Generate(dir, EdgeUsers("us-east", "eu-west")...)
	if err != nil || len(c) != len(Roles())+4 || c.Password(EdgeUser("us-east")) == c.Password(EdgeUser("eu-west")) || c.Password(FailoverUser("us-east")) == c.Password(EdgeUser("us-east")) {
		t.Fatalf("Generate: %v %v", c, err)
	}
	again, err := Generate(dir) // keeps existing passwords
	if err != nil || again.Password(Admin.User()) != c.Password(Admin.User()) || len(again) != len(c) {
		t.Fatalf("Generate changed existing passwords: %v", err)
	}
	// The shared edge user of earlier releases is refused, by name.
	if err := os.WriteFile(filepath.Join(dir, "edge.password"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); !errors.Is(err, ErrUnknownUser) || !strings.Contains(err.Error(), "edge-<region>") {
		t.Fatalf("Load with edge.password: %v, want the per-region edge user named", err)
	}
}

func TestParseUser(t *testing.T) {
	for name, want := range map[string]User{
		"producer": Producer.User(), "admin": Admin.User(), "sys": System.User(), "core": Core.User(),
		"edge-us-east": EdgeUser("us-east"), "edge-local": EdgeUser(""),
		"producer-acme": ProducerUser("acme"), "failover-us-east": FailoverUser("us-east"),
	} {
		if got, err := ParseUser(name); err != nil || got != want || got.Name() != name {
			t.Errorf("ParseUser(%q) = %v, %v; want %v", name, got, err, want)
		}
	}
	for _, name := range []string{"", "edge", "edge-", "edge-a.b", "edge-*", "edge->", "admin-x", "producer-", "producer-default", "producer-a.b", "root", "core-eu", "failover", "failover-"} {
		if u, err := ParseUser(name); err == nil {
			t.Errorf("ParseUser(%q) = %v, want an error", name, u)
		}
	}
}

// refusals records the permission violations the server reports to a
// connection, so that a refusal test tells "refused" from "slow".
type refusals struct {
	mu   sync.Mutex
	seen []string
}

func (r *refusals) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	r.mu.Lock()
	r.seen = append(r.seen, err.Error())
	r.mu.Unlock()
}

// count is how many violations on subj the server has reported.
func (r *refusals) count(subj string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.seen {
		if strings.Contains(s, "Permissions Violation") && strings.Contains(s, `"`+subj+`"`) {
			n++
		}
	}
	return n
}

// subscribeRefused subscribes nc to subj and passes once the server
// reports a new permissions violation on it (a subscription refused
// locally passes at once).
func (r *refusals) subscribeRefused(t *testing.T, nc *nats.Conn, subj string) {
	t.Helper()
	before := r.count(subj)
	sub, err := nc.SubscribeSync(subj)
	if err != nil {
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	_ = nc.Flush()
	coretest.Eventually(t, 5*time.Second, "subscription to "+subj+" refused", func() bool { return r.count(subj) > before })
}

// refused runs call and passes once the server reports a new permissions
// violation on subj (call is then cancelled). It fails the test when call
// succeeds, or when no violation comes within 10 s.
func (r *refusals) refused(t *testing.T, what, subj string, call func(context.Context) error) {
	t.Helper()
	before := r.count(subj)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- call(ctx) }()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for r.count(subj) == before {
		select {
		case err := <-errc:
			if err == nil {
				t.Errorf("allowed: %s (%s)", what, subj)
				return
			}
			errc = nil // failed: wait for the violation that says why
		case <-tick.C:
		case <-ctx.Done():
			t.Errorf("%s: no permissions violation on %s", what, subj)
			return
		}
	}
}

// TestEdgeConfinedToItsRegion is issue 11's finding 2: one edge credential
// for every edge of every region let a probe append a valid claim to
// another region's claim log (silent loss there), pause and delete its
// consumers and step its leaders down. An edge user now names its region:
// on its own region's streams it does its job; on another region's it can
// do nothing; and another region's edge password does not even connect.
func TestEdgeConfinedToItsRegion(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, creds := secureNode(t, "us-east")
	east, west := streams.Names{Region: "us-east"}, streams.Names{Region: "eu-west"}
	admin := connect(t, n, Admin.User(), creds, nil)
	cfgs := []streams.Config{
		{Names: east, Partitions: 2, Memory: true, Peers: []string{"eu-west"}},
		{Names: west, Partitions: 2, Memory: true, Peers: []string{"us-east"}},
	}
	for _, c := range append([]streams.Config{cfgs[0].Own(), cfgs[1].Own()}, cfgs...) {
		if err := streams.Provision(ctx, admin, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := producer.New(connect(t, n, Producer.User(), creds, nil), "eu-west").Publish(ctx, "order-0", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateOrUpdateConsumer(ctx, west.IngestStream(), jetstream.ConsumerConfig{Durable: "p0-t1", AckPolicy: jetstream.AckAllPolicy}); err != nil {
		t.Fatal(err)
	}

	// Another region's edge user is not a user of this region's cores.
	wu := EdgeUser("eu-west")
	if nc, err := nats.Connect(n.ClientURL(), ClientOptions(wu, creds.Password(wu))...); err == nil {
		nc.Close()
		t.Fatal("eu-west's edge password connected to a us-east core")
	}

	var v refusals
	edge := connect(t, n, EdgeUser("us-east"), creds, v.handler)
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 2*time.Second)
		t.Cleanup(cancel)
		return c
	}
	// Its own region: everything an edge does.
	log, err := claimlog.Open(ctx, edge, east)
	if err != nil {
		t.Fatalf("edge opens its claim log: %v", err)
	}
	if _, err := log.Append(ctx, 0, 0, dedupe.Record{Kind: dedupe.KindClaim, Writer: "e", Time: time.Now(), IDs: []event.Hash{event.HashID("order-1")}}); err != nil {
		t.Fatalf("edge claim append: %v", err)
	}
	if _, err := producer.New(connect(t, n, Producer.User(), creds, nil), "us-east").Publish(ctx, "order-1", []byte("x")); err != nil {
		t.Fatal(err)
	}
	cons, err := edge.CreateOrUpdateConsumer(ctx, east.IngestStream(), jetstream.ConsumerConfig{Name: "p0-t9", AckPolicy: jetstream.AckExplicitPolicy, FilterSubject: east.Prefix() + ".part.>"})
	if err != nil {
		t.Fatalf("edge creates a consumer in its region: %v", err)
	}
	msgs, err := cons.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for m := range msgs.Messages() {
		got++
		if err := m.DoubleAck(ctx); err != nil {
			t.Fatalf("edge acks in its region: %v", err)
		}
	}
	if got != 1 {
		t.Fatalf("edge fetched %d events in its region, want 1 (%v)", got, msgs.Error())
	}
	for _, subj := range []string{east.DLQ(0), east.Output(0), east.Conflict("00ff", "eu-west", 1)} {
		if _, err := edge.Publish(short(), subj, []byte("x")); err != nil {
			t.Errorf("edge publishes %s: %v", subj, err)
		}
	}
	if err := edge.DeleteConsumer(short(), east.IngestStream(), "p0-t9"); err != nil {
		t.Errorf("edge deletes its region's consumer: %v", err)
	}

	// Another region: nothing. The attack of the finding first: a valid
	// claim record appended to eu-west's claim log.
	rec, err := dedupe.Record{Kind: dedupe.KindClaim, Writer: "probe", Time: time.Now(), IDs: []event.Hash{event.HashID("order-0")}}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	api := func(op, rest string) string { return "$JS.API." + op + "." + rest }
	publish := func(subj string, data []byte) func(context.Context) error {
		return func(ctx context.Context) error { _, err := edge.Publish(ctx, subj, data); return err }
	}
	v.refused(t, "append a claim to eu-west's claim log", west.Claims(0), publish(west.Claims(0), rec))
	v.refused(t, "open eu-west's claim log", api("STREAM.INFO", west.ClaimStream()), func(ctx context.Context) error {
		_, err := claimlog.Open(ctx, edge, west)
		return err
	})
	for _, s := range []string{west.IngestStream(), west.ClaimStream(), west.XClaimStream()} {
		v.refused(t, "read "+s+"'s info", api("STREAM.INFO", s), func(ctx context.Context) error {
			_, err := edge.Stream(ctx, s)
			return err
		})
		v.refused(t, "create a consumer on "+s, api("CONSUMER.CREATE", s+".probe"), func(ctx context.Context) error {
			_, err := edge.CreateOrUpdateConsumer(ctx, s, jetstream.ConsumerConfig{Name: "probe", AckPolicy: jetstream.AckNonePolicy})
			return err
		})
	}
	v.refused(t, "delete eu-west's consumer", api("CONSUMER.DELETE", west.IngestStream()+".p0-t1"), func(ctx context.Context) error {
		return edge.DeleteConsumer(ctx, west.IngestStream(), "p0-t1")
	})
	v.refused(t, "pause eu-west's consumer", api("CONSUMER.PAUSE", west.IngestStream()+".p0-t1"), func(ctx context.Context) error {
		_, err := edge.PauseConsumer(ctx, west.IngestStream(), "p0-t1", time.Now().Add(time.Hour))
		return err
	})
	for _, subj := range []string{west.DLQ(0), west.Output(0), west.Conflict("00ff", "us-east", 1), west.Ingest("forged")} {
		v.refused(t, "publish to "+subj, subj, publish(subj, []byte("x")))
	}
	for _, subj := range []string{
		api("STREAM.LEADER.STEPDOWN", west.ClaimStream()),
		api("STREAM.LEADER.STEPDOWN", east.ClaimStream()),
		api("STREAM.RESTORE", west.ClaimStream()),
		api("STREAM.MSG.GET", west.ClaimStream()),
		api("DIRECT.GET", west.ClaimStream()+"."+west.Claims(0)),
		api("CONSUMER.MSG.NEXT", west.IngestStream()+".p0-t1"),
		"$JS.API.INFO",
	} {
		v.refused(t, "call "+subj, subj, func(ctx context.Context) error {
			_, err := edge.Conn().RequestWithContext(ctx, subj, []byte("{}"))
			return err
		})
	}

	// What the probes did not do: eu-west is as the admin left it.
	ws, err := admin.Stream(ctx, west.ClaimStream())
	if err != nil {
		t.Fatal(err)
	}
	if got := ws.CachedInfo().State.Msgs; got != 0 {
		t.Errorf("eu-west's claim log holds %d records", got)
	}
	c, err := admin.Consumer(ctx, west.IngestStream(), "p0-t1")
	if err != nil {
		t.Fatalf("eu-west's consumer: %v", err)
	}
	if c.CachedInfo().Paused {
		t.Error("eu-west's consumer is paused")
	}
}

// TestTenantsCannotSuppressEachOther is issue 11's finding 3: every
// producer shared one ID space, so an attacker who published a guessable ID
// first had the victim's event acknowledged and skipped. Each tenant's
// producer may now publish only under its tenant's token, the edge reads the
// tenant from the stored subject, and dedupe works on the key (tenant, ID):
// the attacker's pre-claim, its pre-filled Nats-Msg-Id window and its
// forged publishes to the victim's subjects leave the victim's event
// handled once; within a tenant, dedupe still holds.
func TestTenantsCannotSuppressEachOther(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	n, creds := secureNode(t, "local")
	names := streams.Names{Region: "local"}
	admin := connect(t, n, Admin.User(), creds, nil)
	// The default 2-minute Nats-Msg-Id window: the attack on it is part of
	// the test.
	if err := streams.Provision(ctx, admin, streams.Config{Names: names, Partitions: 2, Memory: true}); err != nil {
		t.Fatal(err)
	}
	var v refusals
	attacker := connect(t, n, ProducerUser("acme"), creds, v.handler)
	victim := connect(t, n, ProducerUser("beta"), creds, nil)
	const id = "order-86571"

	// The attack, before the victim publishes: its own event with the
	// victim's ID, the same ID in Nats-Msg-Id, the victim's tenant in a
	// header, and publishes to the victim's and the default tenant's
	// subjects (refused).
	m := nats.NewMsg(names.IngestOf("acme", id))
	m.Header.Set(event.HeaderID, id)
	m.Header.Set(event.HeaderMsgID, id)
	m.Header.Set(event.HeaderTenant, "beta")
	m.Data = []byte("attacker")
	if _, err := attacker.PublishMsg(ctx, m); err != nil {
		t.Fatalf("the attacker's own tenant: %v", err)
	}
	for _, subj := range []string{names.IngestOf("beta", id), names.Ingest(id), names.LegacyIngest(id)} {
		f := nats.NewMsg(subj)
		f.Header.Set(event.HeaderID, id)
		f.Data = []byte("forged")
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		_, err := attacker.PublishMsg(sctx, f)
		scancel()
		if err == nil {
			t.Errorf("tenant acme published to %s", subj)
		}
	}
	// Nor does it read the others' acknowledgements.
	for _, inbox := range []string{"_INBOX.producer-beta.>", "_INBOX.producer.>"} {
		v.subscribeRefused(t, attacker.Conn(), inbox)
	}

	// The victims: tenant beta (twice: a retry) and the default tenant.
	for i := 0; i < 2; i++ {
		ack, err := producer.NewTenant(victim, "local", "beta").Publish(ctx, id, []byte("victim"))
		if err != nil || ack.Duplicate {
			t.Fatalf("tenant beta's publish: %+v %v (a Duplicate ack is the suppression)", ack, err)
		}
	}
	if _, err := producer.New(connect(t, n, Producer.User(), creds, nil), "local").Publish(ctx, id, []byte("default")); err != nil {
		t.Fatal(err)
	}

	ledger := filepath.Join(t.TempDir(), "ledger.jsonl")
	l, err := sink.OpenLedger(ledger, "e")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ejs := connect(t, n, EdgeUser("local"), creds, nil)
	c, err := edge.New(ejs, sink.NewChain(l, &sink.NATS{JS: ejs, Names: names}), edge.Options{Name: "e", Region: "local", Logger: coretest.Quiet})
	if err != nil {
		t.Fatal(err)
	}
	ectx, ecancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(ectx) }()
	defer func() { ecancel(); <-done }()
	coretest.Eventually(t, 30*time.Second, "every event decided", func() bool {
		st := c.Stats()
		return st.Done+st.Duplicates >= 4
	})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(ledger)
	if err != nil {
		t.Fatal(err)
	}
	runs := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var ll sink.LedgerLine
		if err := json.Unmarshal([]byte(line), &ll); err != nil {
			t.Fatal(err)
		}
		runs[ll.ID]++
	}
	want := map[string]int{"acme." + id: 1, "beta." + id: 1, id: 1}
	if !maps.Equal(runs, want) {
		t.Fatalf("handler runs by key %v, want %v", runs, want)
	}
	outs, err := verify.OutputCounts(ctx, admin, names)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(outs, want) {
		t.Fatalf("outputs by key %v, want %v", outs, want)
	}
}

// TestFailoverRightsOnlyForFailoverEdges: a region that stands by for
// another holds a copy of that region's events and claim log. Only its
// failover edges' user (failover-<region>) may read those copies and append
// the failover's claims; its everyday edge user may not, so a leaked
// edge-<region> password reaches no other region's data. And a failover
// edge appends no claim of its own region's.
func TestFailoverRightsOnlyForFailoverEdges(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, creds := secureNodeWith(t, "us-east", Regions{StandbyFor: []string{"eu-west"}})
	east, west := streams.Names{Region: "us-east"}, streams.Names{Region: "eu-west"}
	admin := connect(t, n, Admin.User(), creds, nil)
	cfgs := []streams.Config{
		{Names: west, Partitions: 2, Memory: true, Peers: []string{"us-east"}},
		{Names: east, Partitions: 2, Memory: true, Peers: []string{"eu-west"}, StandbyFor: []string{"eu-west"}},
	}
	for _, c := range append([]streams.Config{cfgs[0].Own(), cfgs[1].Own()}, cfgs...) {
		if err := streams.Provision(ctx, admin, c); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := producer.New(connect(t, n, Producer.User(), creds, nil), "eu-west").Publish(ctx, "order-0", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, err := streams.Promote(ctx, admin, east, "eu-west"); err != nil {
		t.Fatal(err)
	}
	rec, err := dedupe.Record{Kind: dedupe.KindClaim, Writer: "probe", Time: time.Now(), IDs: []event.Hash{event.HashID("order-0")}}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	api := func(op, rest string) string { return "$JS.API." + op + "." + rest }

	var v refusals
	everyday := connect(t, n, EdgeUser("us-east"), creds, v.handler)
	for _, s := range []string{east.StandbyShard("eu-west", 0), east.StandbyClaimShard("eu-west", 0)} {
		v.refused(t, "read "+s+"'s info", api("STREAM.INFO", s), func(ctx context.Context) error {
			_, err := everyday.Stream(ctx, s)
			return err
		})
		v.refused(t, "create a consumer on "+s, api("CONSUMER.CREATE", s+".probe"), func(ctx context.Context) error {
			_, err := everyday.CreateOrUpdateConsumer(ctx, s, jetstream.ConsumerConfig{Name: "probe", AckPolicy: jetstream.AckNonePolicy})
			return err
		})
	}
	v.refused(t, "append a failover claim", east.FailoverClaims("eu-west", 0), func(ctx context.Context) error {
		_, err := everyday.Publish(ctx, east.FailoverClaims("eu-west", 0), rec)
		return err
	})

	var fv refusals
	failover := connect(t, n, FailoverUser("us-east"), creds, fv.handler)
	cons, err := failover.OrderedConsumer(ctx, east.StandbyShard("eu-west", 0), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("failover edge reads its copy of eu-west's ingest: %v", err)
	}
	if m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second)); err != nil || m.Headers().Get(event.HeaderID) != "order-0" {
		t.Fatalf("failover edge's first event of eu-west's: %v (%v)", m, err)
	}
	log, err := claimlog.OpenFailover(ctx, failover, east, west)
	if err != nil {
		t.Fatalf("failover edge opens eu-west's promoted claim log: %v", err)
	}
	if _, err := log.Append(ctx, 0, 0, dedupe.Record{Kind: dedupe.KindClaim, Writer: "f", Time: time.Now(), IDs: []event.Hash{event.HashID("order-0")}}); err != nil {
		t.Fatalf("failover edge appends eu-west's claim: %v", err)
	}
	fv.refused(t, "append a claim to us-east's own claim log", east.Claims(0), func(ctx context.Context) error {
		_, err := failover.Publish(ctx, east.Claims(0), rec)
		return err
	})
	if st, err := admin.Stream(ctx, east.ClaimStream()); err != nil || st.CachedInfo().State.Msgs != 0 {
		t.Fatalf("us-east's own claim log after the probes: %v (%v), want empty", st.CachedInfo().State.Msgs, err)
	}
}

// TestEdgeReadsPeersClaimLogsOnly: an edge may read its peers' claim logs
// by batch direct gets (the tail, which learns claims made there during a
// WAN cut before the xclaims stream does), and nothing else of theirs: not
// their stream infos, their ingest, or an append.
func TestEdgeReadsPeersClaimLogsOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, creds := secureNodeWith(t, "us-east", Regions{Peers: []string{"eu-west"}})
	west := streams.Names{Region: "eu-west"}
	admin := connect(t, n, Admin.User(), creds, nil)
	if err := streams.Provision(ctx, admin, streams.Config{Names: west, Partitions: 2, Memory: true}); err != nil {
		t.Fatal(err)
	}
	rec, err := dedupe.Record{Kind: dedupe.KindClaim, Writer: "w", Time: time.Now(), IDs: []event.Hash{event.HashID("order-0")}}.Append(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Publish(ctx, west.Claims(0), rec); err != nil {
		t.Fatal(err)
	}
	var v refusals
	edge := connect(t, n, EdgeUser("us-east"), creds, v.handler)
	batch := func(stream, subject string) []byte {
		return []byte(`{"seq":1,"batch":16,"next_by_subj":"` + subject + `"}`)
	}
	m, err := edge.Conn().RequestWithContext(ctx, "$JS.API.DIRECT.GET."+west.ClaimStream(), batch(west.ClaimStream(), west.Claims(0)))
	if err != nil || m.Header.Get("Nats-Sequence") != "1" {
		t.Fatalf("edge reads eu-west's claim log: %v (%v)", m, err)
	}
	api := func(op, rest string) string { return "$JS.API." + op + "." + rest }
	v.refused(t, "read eu-west's ingest", api("DIRECT.GET", west.IngestStream()), func(ctx context.Context) error {
		_, err := edge.Conn().RequestWithContext(ctx, api("DIRECT.GET", west.IngestStream()), batch(west.IngestStream(), ">"))
		return err
	})
	v.refused(t, "read eu-west's claim stream info", api("STREAM.INFO", west.ClaimStream()), func(ctx context.Context) error {
		_, err := edge.Stream(ctx, west.ClaimStream())
		return err
	})
	v.refused(t, "append to eu-west's claim log", west.Claims(0), func(ctx context.Context) error {
		_, err := edge.Publish(ctx, west.Claims(0), rec)
		return err
	})
}
