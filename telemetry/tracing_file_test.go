package telemetry

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/onceplane/onceplane/telemetry/tracefile"
)

// TestTraceFileInNewDirectory: -trace-file out/x/traces.jsonl works before
// out/x exists (the simulation writes its report there afterwards), and
// the file holds the spans as OTLP JSON lines once the pipeline shuts down.
func TestTraceFileInNewDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new", "dir", "traces.jsonl")
	tr, err := NewTracing(context.Background(), TracingOptions{File: path})
	if err != nil {
		t.Fatal(err)
	}
	tp, err := tr.Provider(context.Background(), "svc")
	if err != nil {
		t.Fatal(err)
	}
	_, s := tp.Tracer("t").Start(context.Background(), "x")
	s.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spans, err := tracefile.Read(f)
	if err != nil || len(spans) != 1 || spans[0].Service != "svc" {
		t.Fatalf("%+v %v", spans, err)
	}
}
