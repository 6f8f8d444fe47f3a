package telemetry

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
)

// TracingOptions selects a trace exporter. The zero value follows the
// standard variables: OTEL_TRACES_EXPORTER=otlp (or any OTEL_EXPORTER_OTLP_*
// endpoint set) exports OTLP over HTTP; =console writes JSON spans to
// stdout; unset or =none exports nothing.
type TracingOptions struct {
	// Service is the service.name resource attribute unless OTEL_SERVICE_NAME is set.
	Service string
	// File, when set, writes JSON spans to this file (offline use), whatever the variables say.
	File string
	// Writer, when set, writes JSON spans to it (tests).
	Writer io.Writer
}

// SetupTracing installs a global tracer provider and W3C propagator and
// returns a function that flushes and stops it.
func SetupTracing(ctx context.Context, o TracingOptions) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	var exp sdktrace.SpanExporter
	var err error
	kind := strings.ToLower(os.Getenv("OTEL_TRACES_EXPORTER"))
	if kind == "" && (os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "") {
		kind = "otlp"
	}
	switch {
	case o.Writer != nil:
		exp, err = stdouttrace.New(stdouttrace.WithWriter(o.Writer))
	case o.File != "":
		f, ferr := os.OpenFile(o.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if ferr != nil {
			return nil, fmt.Errorf("trace file: %w", ferr)
		}
		exp, err = stdouttrace.New(stdouttrace.WithWriter(f))
	case kind == "otlp":
		exp, err = otlptracehttp.New(ctx)
	case kind == "console":
		exp, err = stdouttrace.New()
	case kind == "" || kind == "none":
		return func(context.Context) error { return nil }, nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: want otlp, console or none", kind)
	}
	if err != nil {
		return nil, fmt.Errorf("trace exporter: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithAttributes(semconv.ServiceName(o.Service)))
	if err != nil {
		return nil, fmt.Errorf("trace resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
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
