package campaign

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/sink"
)

// TestScanLogReadsTheEdgesLines writes a log the way an edge does (the chaos
// sink's warnings and a failed dead letter through slog's text handler) and
// checks what the campaign counts from it.
func TestScanLogReadsTheEdgesLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(f, nil))
	c, err := sink.NewChaos(sink.ChaosOptions{Fail: 1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	c.Handle(context.Background(), []event.Event{{ID: "c1-u0000001", Partition: 3}, {ID: "c1-u0000002"}})
	p, err := sink.NewChaos(sink.ChaosOptions{Panic: 1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	func() {
		defer func() { _ = recover() }()
		p.Handle(context.Background(), []event.Event{{ID: "c1-u0000001"}})
	}()
	log.Warn("dead-letter publish failed; retrying", "partition", 2,
		"err", errors.New("nats: nats: API error: code=400 err_code=10060 description=expected stream does not match"))
	f.Close()

	excused := map[string]int{}
	sig, err := scanLog(path, excused)
	if err != nil {
		t.Fatal(err)
	}
	if sig["chaos fail"] != 2 || sig["chaos panic"] != 1 || sig["dead-letter publish failed"] != 1 ||
		sig["dead-letter publish failed: expected stream does not match"] != 1 {
		t.Fatalf("signals %v", sig)
	}
	if excused["c1-u0000001"] != 2 || excused["c1-u0000002"] != 1 {
		t.Fatalf("excused %v", excused)
	}
	if sig, err := scanLog(filepath.Join(t.TempDir(), "none.log"), nil); err != nil || len(sig) != 0 {
		t.Fatalf("a missing log: %v %v", sig, err)
	}
}
