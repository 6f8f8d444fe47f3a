// Package tracestore runs a real trace store, Jaeger (built from its Go
// module: testbed/tools/jaeger), on loopback ports of its own with
// in-memory storage, and reads traces back through Jaeger's HTTP query API
// (/api/services, /api/traces), as a user's browser or script would.
package tracestore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/testbed/ports"
)

// Options configures Start. The zero value finds the binary through
// $ONCEPLANE_JAEGER, then PATH.
type Options struct {
	// Binary is the jaeger executable. Zero means $ONCEPLANE_JAEGER, else
	// "jaeger" on PATH.
	Binary string
	// Dir holds its config file and log. Zero means a temporary directory.
	Dir string
	// Stdout receives its log. Nil means Dir/jaeger.log.
	Stdout io.Writer
}

// Jaeger is a running Jaeger.
type Jaeger struct {
	// OTLPEndpoint is its OTLP/HTTP receiver (http://127.0.0.1:port): point
	// OTEL_EXPORTER_OTLP_ENDPOINT or telemetry.TracingOptions.OTLPEndpoint
	// at it.
	OTLPEndpoint string
	// Query reads its traces (its query service: the HTTP API, and the UI
	// page where the build carries its assets).
	Query

	cmd  *exec.Cmd
	done chan error
	tmp  string
	log  *os.File
}

// ErrNoBinary means no jaeger executable was found.
var ErrNoBinary = errors.New("tracestore: no jaeger binary (build it: testbed/tools/jaeger/build.sh; or set ONCEPLANE_JAEGER)")

// Binary returns the jaeger executable Options would use, or ErrNoBinary.
func Binary(o Options) (string, error) {
	if o.Binary != "" {
		return o.Binary, nil
	}
	if b := os.Getenv("ONCEPLANE_JAEGER"); b != "" {
		return b, nil
	}
	if b, err := exec.LookPath("jaeger"); err == nil {
		return b, nil
	}
	return "", ErrNoBinary
}

// Config is a Jaeger (v2, OpenTelemetry Collector based) configuration:
// OTLP/HTTP in, in-memory storage, the query service, nothing else, all on
// the given loopback ports.
func Config(otlpPort, queryPort, queryGRPCPort int) string {
	return fmt.Sprintf(`service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 200000
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:%d
    grpc:
      endpoint: 127.0.0.1:%d
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
processors:
  batch:
    timeout: 200ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`, queryPort, queryGRPCPort, otlpPort)
}

// Start runs Jaeger and waits until its query API answers.
func Start(ctx context.Context, o Options) (*Jaeger, error) {
	bin, err := Binary(o)
	if err != nil {
		return nil, err
	}
	j := &Jaeger{done: make(chan error, 1)}
	if o.Dir == "" {
		if j.tmp, err = os.MkdirTemp("", "onceplane-jaeger"); err != nil {
			return nil, err
		}
		o.Dir = j.tmp
	}
	ps, err := ports.Free(3)
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(o.Dir, "jaeger.yaml")
	if err := os.WriteFile(cfg, []byte(Config(ps[0], ps[1], ps[2])), 0o644); err != nil {
		return nil, err
	}
	j.OTLPEndpoint = "http://127.0.0.1:" + strconv.Itoa(ps[0])
	j.URL = "http://127.0.0.1:" + strconv.Itoa(ps[1])
	j.cmd = exec.Command(bin, "--config", cfg)
	if o.Stdout == nil {
		if j.log, err = os.Create(filepath.Join(o.Dir, "jaeger.log")); err != nil {
			return nil, err
		}
		o.Stdout = j.log
	}
	j.cmd.Stdout, j.cmd.Stderr = o.Stdout, o.Stdout
	if err := j.cmd.Start(); err != nil {
		return nil, fmt.Errorf("tracestore: start %s: %w", bin, err)
	}
	go func() { j.done <- j.cmd.Wait() }()
	for b := poll.Backoff(50*time.Millisecond, time.Second); ; {
		if _, err := j.Services(ctx); err == nil {
			return j, nil
		}
		select {
		case err := <-j.done:
			j.done <- err
			j.Stop()
			return nil, fmt.Errorf("tracestore: jaeger exited at start (%v); its log is in %s", err, o.Dir)
		default:
		}
		if poll.Sleep(ctx, b.NextBackOff()) != nil {
			j.Stop()
			return nil, fmt.Errorf("tracestore: jaeger not answering: %w", ctx.Err())
		}
	}
}

// Stop ends Jaeger and removes what Start made.
func (j *Jaeger) Stop() {
	if j.cmd.Process != nil {
		_ = j.cmd.Process.Kill()
		<-j.done
	}
	if j.log != nil {
		j.log.Close()
	}
	if j.tmp != "" {
		os.RemoveAll(j.tmp)
	}
}

// Query reads traces from a Jaeger query service, by its HTTP API.
type Query struct {
	// URL is the query service (http://host:16686).
	URL string
}

// Services lists the services Jaeger has spans of.
func (j Query) Services(ctx context.Context) ([]string, error) {
	var out struct {
		Data []string `json:"data"`
	}
	err := j.get(ctx, "/api/services", &out)
	return out.Data, err
}

// Traces returns up to limit recent traces (the last hour) that have a
// span of service.
func (j Query) Traces(ctx context.Context, service string, limit int) ([]Trace, error) {
	q := url.Values{"service": {service}, "limit": {strconv.Itoa(limit)}, "lookback": {"1h"}}
	var out struct {
		Data []Trace `json:"data"`
	}
	err := j.get(ctx, "/api/traces?"+q.Encode(), &out)
	return out.Data, err
}

// Trace returns one trace by its ID (hex).
func (j Query) Trace(ctx context.Context, id string) (Trace, error) {
	var out struct {
		Data []Trace `json:"data"`
	}
	if err := j.get(ctx, "/api/traces/"+url.PathEscape(id), &out); err != nil {
		return Trace{}, err
	}
	if len(out.Data) != 1 {
		return Trace{}, fmt.Errorf("tracestore: trace %s: %d found", id, len(out.Data))
	}
	return out.Data[0], nil
}

func (j Query) get(ctx context.Context, path string, v any) error {
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, j.URL+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("tracestore: GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("tracestore: GET %s: %s: %s", path, resp.Status, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("tracestore: GET %s: %w", path, err)
	}
	return nil
}

// Trace is a trace as Jaeger's query API returns it.
type Trace struct {
	TraceID   string             `json:"traceID"`
	Spans     []Span             `json:"spans"`
	Processes map[string]Process `json:"processes"`
}

// Process is what recorded spans: a service.
type Process struct {
	ServiceName string `json:"serviceName"`
}

// Span is a span as Jaeger's query API returns it (times in microseconds).
type Span struct {
	TraceID       string      `json:"traceID"`
	SpanID        string      `json:"spanID"`
	OperationName string      `json:"operationName"`
	References    []Reference `json:"references"`
	StartTime     int64       `json:"startTime"`
	Duration      int64       `json:"duration"`
	Tags          []Tag       `json:"tags"`
	ProcessID     string      `json:"processID"`
}

// Reference is a span's parent (CHILD_OF) or another span it follows from.
type Reference struct {
	RefType string `json:"refType"`
	TraceID string `json:"traceID"`
	SpanID  string `json:"spanID"`
}

// Tag is a span attribute.
type Tag struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

// Tag returns the span's attribute key, and whether it has it.
func (s Span) Tag(key string) (any, bool) {
	for _, t := range s.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return nil, false
}

// Service returns the service of span s in t.
func (t Trace) Service(s Span) string { return t.Processes[s.ProcessID].ServiceName }

// CrossRegion reports whether t follows an event across regions: a
// publish by one region's producer service, and a decision or a merge of
// its claim by another region's edge service (services named
// onceplane-<role>-<region>). It returns the regions seen.
func (t Trace) CrossRegion() (origin string, elsewhere []string, ok bool) {
	for _, s := range t.Spans {
		svc := t.Service(s)
		switch s.OperationName {
		case "onceplane.publish":
			origin = strings.TrimPrefix(svc, "onceplane-producer-")
		case "onceplane.decide", "onceplane.merge_remote":
			if r := strings.TrimPrefix(svc, "onceplane-edge-"); r != svc && !slices.Contains(elsewhere, r) {
				elsewhere = append(elsewhere, r)
			}
		}
	}
	for _, r := range elsewhere {
		if origin != "" && r != origin {
			return origin, elsewhere, true
		}
	}
	return origin, elsewhere, false
}

// MergedElsewhere returns a merge of the trace's claim, with its replication
// lag, by the edges of a region other than region (onceplane-edge-<r>).
func (t Trace) MergedElsewhere(region string) (Span, bool) {
	for _, s := range t.Spans {
		if _, lag := s.Tag("onceplane.replication_lag_ms"); lag && s.OperationName == "onceplane.merge_remote" &&
			strings.HasPrefix(t.Service(s), "onceplane-edge-") && t.Service(s) != "onceplane-edge-"+region {
			return s, true
		}
	}
	return Span{}, false
}
