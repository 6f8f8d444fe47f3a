package sink_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/sink"
	"github.com/onceplane/onceplane/testbed/coretest"
	"github.com/onceplane/onceplane/testbed/verify"
)

func TestHTTPSink(t *testing.T) {
	var mu sync.Mutex
	got := map[string]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		key := r.Header.Get("Idempotency-Key")
		mu.Lock()
		got[key] = string(b)
		mu.Unlock()
		switch key {
		case "bad":
			w.WriteHeader(http.StatusUnprocessableEntity)
		case "down":
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	s := &sink.HTTP{URL: srv.URL}
	errs := s.Handle(context.Background(), []event.Event{{ID: "ok", Data: []byte("a")}, {ID: "bad"}, {ID: "down"}})
	if errs[0] != nil || errs[1] == nil || errors.Is(errs[1], edge.ErrUnavailable) || !errors.Is(errs[2], edge.ErrUnavailable) {
		t.Fatalf("errors: %v", errs)
	}
	if got["ok"] != "a" {
		t.Fatalf("server saw %v", got)
	}
	srv.Close()
	if errs := s.Handle(context.Background(), []event.Event{{ID: "x"}}); !errors.Is(errs[0], edge.ErrUnavailable) {
		t.Fatalf("closed server: %v", errs)
	}
}

func TestLedgerAndChain(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.jsonl")
	l, err := sink.OpenLedger(path, "e1")
	if err != nil {
		t.Fatal(err)
	}
	failSecond := edge.HandlerFunc(func(_ context.Context, ev event.Event) error {
		if ev.ID == "b" {
			return errors.New("no")
		}
		return nil
	})
	errs := sink.NewChain(failSecond, l).Handle(context.Background(), []event.Event{{ID: "a"}, {ID: "b"}, {ID: "c", Uncertain: true}})
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("chain errors %v", errs)
	}
	l.Close()
	lines, err := sink.ReadLedger(path)
	if err != nil || len(lines) != 2 || lines[0].ID != "a" || lines[1].ID != "c" || !lines[1].Uncertain || lines[1].Edge != "e1" {
		t.Fatalf("ledger %+v %v", lines, err)
	}
}

// TestChainResumesWhereItFailed: a ledger before a sink that fails or
// panics has recorded its effect; the retry resumes at the failing sink, so
// the ledger records each event once.
func TestChainResumesWhereItFailed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "l.jsonl")
	l, err := sink.OpenLedger(path, "e1")
	if err != nil {
		t.Fatal(err)
	}
	calls := map[string]int{}
	flaky := edge.HandlerFunc(func(_ context.Context, ev event.Event) error {
		calls[ev.ID]++
		if calls[ev.ID] == 1 && ev.ID == "b" {
			return errors.New("not yet")
		}
		return nil
	})
	panicky := panicOnce{seen: map[string]bool{}}
	c := sink.NewChain(l, flaky, panicky)
	evs := []event.Event{{ID: "a"}, {ID: "b"}, {ID: "p"}}
	if errs := c.Handle(context.Background(), evs[:2]); errs == nil || errs[1] == nil {
		t.Fatalf("first call: %v", errs)
	}
	if errs := c.Handle(context.Background(), evs[1:2]); errs != nil {
		t.Fatalf("retry: %v", errs)
	}
	func() {
		defer func() { _ = recover() }()
		c.Handle(context.Background(), evs[2:])
	}()
	if errs := c.Handle(context.Background(), evs[2:]); errs != nil {
		t.Fatalf("after the panic: %v", errs)
	}
	l.Close()
	lines, err := sink.ReadLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, ln := range lines {
		n[ln.ID]++
	}
	if n["a"] != 1 || n["b"] != 1 || n["p"] != 1 {
		t.Fatalf("ledger effects %v: a retry repeated an earlier sink", n)
	}
}

type panicOnce struct{ seen map[string]bool }

func (p panicOnce) Handle(_ context.Context, evs []event.Event) []error {
	for _, ev := range evs {
		if !p.seen[ev.ID] && ev.ID == "p" {
			p.seen[ev.ID] = true
			panic("boom")
		}
	}
	return nil
}

func TestScanLedgerTornLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.jsonl")
	whole := `{"id":"a","partition":1,"seq":1,"edge":"e","time":"2026-01-01T00:00:00Z"}`
	torn := `{"id":"b","partition":1,"se`
	next := `{"id":"c","partition":2,"seq":3,"edge":"e","time":"2026-01-01T00:00:01Z"}`
	if err := os.WriteFile(path, []byte(whole+"\n"+torn+next+"\n"+"garbage\n"+whole+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	lines, bad, err := sink.ScanLedger(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, l := range lines {
		ids = append(ids, l.ID)
	}
	if got := strings.Join(ids, ","); got != "a,c,a" || bad != 2 {
		t.Fatalf("got %s with %d bad lines, want a,c,a with 2", got, bad)
	}
	if _, err := sink.ReadLedger(path); err == nil {
		t.Fatal("ReadLedger accepted a torn ledger")
	}
}

// TestNATSSinkFlagsRetriesBeyondTheWindow: a publish whose ack was lost may
// have landed; a retry inside the output stream's Nats-Msg-Id window is
// stored once, but one after it would be a second, silent output: it is
// flagged uncertain.
func TestNATSSinkFlagsRetriesBeyondTheWindow(t *testing.T) {
	n := coretest.Start(t)
	_, js := coretest.Connect(t, n.ClientURL())
	ctx := context.Background()
	cfg := streams.Config{Partitions: 1, OutputDuplicates: 2 * time.Second}
	if err := streams.Provision(ctx, js, cfg); err != nil {
		t.Fatal(err)
	}
	ev := []event.Event{{ID: "once", Partition: 0, StreamSeq: 1, Data: []byte("x")}}
	lost := &sink.NATS{JS: js, Names: cfg.Names, Timeout: time.Nanosecond}
	if errs := lost.Handle(ctx, ev); len(errs) == 0 || !errors.Is(errs[0], edge.ErrUnavailable) {
		t.Skipf("the ack arrived within a nanosecond: %v", errs)
	}
	// The edge retries with the same sink.
	lost.Timeout = 5 * time.Second
	first := time.Now()
	if errs := lost.Handle(ctx, ev); errs != nil {
		t.Fatal(errs)
	}
	out, err := verify.ReadStream(ctx, js, cfg.OutputStream())
	if err != nil || len(out) != 1 || nats.Header(out[0].Header).Get(event.HeaderUncertain) != "" {
		t.Fatalf("inside the window: %d outputs, %v", len(out), err)
	}
	// The edge kept retrying (say the sink was unavailable) past the window.
	lost2 := &sink.NATS{JS: js, Names: cfg.Names, Timeout: time.Nanosecond}
	if errs := lost2.Handle(ctx, ev); len(errs) == 0 {
		t.Skip("the ack arrived within a nanosecond")
	}
	coretest.Eventually(t, 5*time.Second, "the window to pass", func() bool { return time.Since(first) > 2500*time.Millisecond })
	lost2.Timeout = 5 * time.Second
	if errs := lost2.Handle(ctx, ev); errs != nil {
		t.Fatal(errs)
	}
	out, err = verify.ReadStream(ctx, js, cfg.OutputStream())
	if err != nil {
		t.Fatal(err)
	}
	flagged := 0
	for _, m := range out {
		if nats.Header(m.Header).Get(event.HeaderUncertain) == "true" {
			flagged++
		}
	}
	if len(out) < 2 || flagged != len(out)-1 {
		t.Fatalf("%d outputs, %d flagged: a repeat after the window must be flagged", len(out), flagged)
	}
}
