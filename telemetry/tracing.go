package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/onceplane/onceplane/telemetry/tracefile"
)

// TracingOptions configures a trace pipeline. The zero value follows the
// standard variables: OTEL_TRACES_EXPORTER=otlp (or any
// OTEL_EXPORTER_OTLP_* endpoint set) exports OTLP over HTTP; =console writes
// JSON spans to stdout; unset or =none exports nothing; OTEL_TRACES_SAMPLER
// picks the sampler.
type TracingOptions struct {
	// Service is the service.name resource attribute (SetupTracing) unless
	// OTEL_SERVICE_NAME is set.
	Service string
	// File, when set, also writes spans to this file as OTLP JSON lines
	// (package tracefile), whatever the variables say.
	File string
	// Writer, when set, also writes spans to it as OTLP JSON lines (tests).
	Writer io.Writer
	// OTLPEndpoint, when set, exports spans over OTLP/HTTP to this base
	// URL (http://host:4318, say: a Collector or Jaeger; /v1/traces is
	// appended, as to OTEL_EXPORTER_OTLP_ENDPOINT) in place of the endpoint
	// the variables name.
	OTLPEndpoint string
	// Sample is the share of new traces recorded (0 to 1); a span with a
	// parent follows its parent's choice. Zero means the OTEL_TRACES_SAMPLER
	// variables decide (every trace when unset).
	Sample float64
	// Processors also receive every recorded span (a report's collector).
	// Each provider of the pipeline calls them: their Shutdown must bear
	// being called more than once.
	Processors []sdktrace.SpanProcessor
}

// Tracing is a trace pipeline (exporters, sampler, processors) that the
// tracer providers of several services share: a simulation gives its load
// and each region's edges a service of their own, in one set of traces.
type Tracing struct {
	exporters []sdktrace.SpanExporter
	procs     []sdktrace.SpanProcessor
	sampler   sdktrace.Sampler // nil: the SDK's, from the environment

	mu        sync.Mutex
	providers []*sdktrace.TracerProvider
}

// NewTracing builds the pipeline o describes. With no exporter and no
// processor, its providers are no-ops.
func NewTracing(ctx context.Context, o TracingOptions) (*Tracing, error) {
	t := &Tracing{procs: o.Processors}
	if o.Sample < 0 || o.Sample > 1 {
		return nil, fmt.Errorf("trace sample %v: want 0 to 1", o.Sample)
	}
	if o.Sample > 0 {
		t.sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.Sample))
	}
	if o.Writer != nil {
		t.exporters = append(t.exporters, tracefile.New(nopCloser{o.Writer}))
	}
	if o.File != "" {
		if err := os.MkdirAll(filepath.Dir(o.File), 0o755); err != nil {
			return nil, fmt.Errorf("trace file: %w", err)
		}
		f, err := os.OpenFile(o.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("trace file: %w", err)
		}
		t.exporters = append(t.exporters, tracefile.New(f))
	}
	if o.OTLPEndpoint != "" {
		exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(strings.TrimSuffix(o.OTLPEndpoint, "/")+"/v1/traces"))
		if err != nil {
			_ = t.Shutdown(ctx)
			return nil, fmt.Errorf("trace exporter %s: %w", o.OTLPEndpoint, err)
		}
		t.exporters = append(t.exporters, exp)
	}
	kind := strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER"))
	if kind == "" && (os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") {
		kind = "otlp"
	}
	var exp sdktrace.SpanExporter
	var err error
	switch kind {
	case "otlp":
		if o.OTLPEndpoint == "" { // else it is the OTLP exporter already: one, not two to the same collector
			exp, err = otlptracehttp.New(ctx)
		}
	case "console":
		exp, err = stdouttrace.New()
	case "", "none":
	default:
		err = fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none", kind)
	}
	if err != nil {
		_ = t.Shutdown(ctx)
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	if exp != nil {
		t.exporters = append(t.exporters, exp)
	}
	return t, nil
}

// Provider returns a tracer provider for service (its service.name unless
// OTEL_SERVICE_NAME is set), feeding the pipeline.
func (t *Tracing) Provider(ctx context.Context, service string) (trace.TracerProvider, error) {
	return t.provider(ctx, service, t.sampler)
}

// EveryProvider is Provider recording every trace it starts, whatever the
// pipeline's sample: for operations that are few and each worth keeping (a
// drill, a region failover).
func (t *Tracing) EveryProvider(ctx context.Context, service string) (trace.TracerProvider, error) {
	return t.provider(ctx, service, sdktrace.AlwaysSample())
}

func (t *Tracing) provider(ctx context.Context, service string, sampler sdktrace.Sampler) (trace.TracerProvider, error) {
	if len(t.exporters) == 0 && len(t.procs) == 0 {
		return noop.NewTracerProvider(), nil
	}
	res, err := resource.New(ctx, resource.WithAttributes(semconv.ServiceName(service)), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	if sampler != nil {
		opts = append(opts, sdktrace.WithSampler(sampler))
	}
	for _, e := range t.exporters {
		opts = append(opts, sdktrace.WithBatcher(shared{e}))
	}
	for _, p := range t.procs {
		opts = append(opts, sdktrace.WithSpanProcessor(p))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	t.mu.Lock()
	t.providers = append(t.providers, tp)
	t.mu.Unlock()
	return tp, nil
}

// Shutdown flushes every provider, then stops the exporters.
func (t *Tracing) Shutdown(ctx context.Context) error {
	t.mu.Lock()
	tps := t.providers
	t.providers = nil
	t.mu.Unlock()
	var errs []error
	for _, tp := range tps {
		errs = append(errs, tp.Shutdown(ctx))
	}
	for _, e := range t.exporters {
		errs = append(errs, e.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

// shared is an exporter several providers use: a provider's shutdown
// leaves it open for the others (Tracing.Shutdown stops it).
type shared struct{ sdktrace.SpanExporter }

func (shared) Shutdown(context.Context) error { return nil }

type nopCloser struct{ io.Writer }

// SetupTracing installs a global tracer provider for o.Service and the W3C
// propagator, and returns a function that flushes and stops it.
func SetupTracing(ctx context.Context, o TracingOptions) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	t, err := NewTracing(ctx, o)
	if err != nil {
		return nil, err
	}
	tp, err := t.Provider(ctx, o.Service)
	if err != nil {
		_ = t.Shutdown(ctx)
		return nil, err
	}
	otel.SetTracerProvider(tp)
	return t.Shutdown, nil
}

// Propagator returns the W3C trace-context propagator onceplane uses on
// NATS headers, whatever the global propagator is.
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// HeaderCarrier carries W3C trace context in NATS message headers.
type HeaderCarrier nats.Header

var _ propagation.TextMapCarrier = HeaderCarrier{}

// Get returns the first value of key, matched exactly, then case-insensitively.
func (c HeaderCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	for k, v := range c {
		if len(v) > 0 && strings.EqualFold(k, key) {
			return v[0]
		}
	}
	return ""
}

// Set sets key to value.
func (c HeaderCarrier) Set(key, value string) { c[key] = []string{value} }

// Keys lists the header names.
func (c HeaderCarrier) Keys() []string {
	ks := make([]string, 0, len(c))
	for k := range c {
		ks = append(ks, k)
	}
	return ks
}
