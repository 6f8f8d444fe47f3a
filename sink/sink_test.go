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

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/sink"
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
	errs := sink.Chain{failSecond, l}.Handle(context.Background(), []event.Event{{ID: "a"}, {ID: "b"}, {ID: "c", Uncertain: true}})
	if errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("chain errors %v", errs)
	}
	l.Close()
	lines, err := sink.ReadLedger(path)
	if err != nil || len(lines) != 2 || lines[0].ID != "a" || lines[1].ID != "c" || !lines[1].Uncertain || lines[1].Edge != "e1" {
		t.Fatalf("ledger %+v %v", lines, err)
	}
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
