package tracefile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// TestRoundTrip: spans of two services written through the SDK and read
// back keep their IDs, parents, links, kinds, times, attributes of every
// type and error status.
func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	exp := New(&buf)
	provider := func(service string) *sdktrace.TracerProvider {
		return sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp),
			sdktrace.WithResource(resource.NewSchemaless(attribute.String("service.name", service))))
	}
	load, edge := provider("load"), provider("edge-us-east")
	ctx, pub := load.Tracer("producer").Start(context.Background(), "onceplane.publish", trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(attribute.String("onceplane.region", "us-east"), attribute.Int64("n", -7), attribute.Bool("b", true),
			attribute.Float64("f", 1.5), attribute.StringSlice("ss", []string{"x", "y"}), attribute.Int64Slice("is", []int64{1, 2})))
	pub.End()
	_, batch := edge.Tracer("edge").Start(context.Background(), "onceplane.batch")
	_, dec := edge.Tracer("edge").Start(ctx, "onceplane.decide", trace.WithLinks(trace.LinkFromContext(trace.ContextWithSpan(context.Background(), batch))))
	dec.SetStatus(codes.Error, "sink refused")
	dec.AddEvent("retry", trace.WithAttributes(attribute.Int("attempt", 2)))
	dec.End()
	batch.End()
	if err := exp.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := exp.ExportSpans(context.Background(), []sdktrace.ReadOnlySpan{nil}); err == nil {
		t.Fatal("export after shutdown accepted")
	}

	spans, err := Read(&buf)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]Span{}
	for _, s := range spans {
		by[s.Name] = s
	}
	p, d, b := by["onceplane.publish"], by["onceplane.decide"], by["onceplane.batch"]
	if len(spans) != 3 || p.Service != "load" || d.Service != "edge-us-east" {
		t.Fatalf("spans %+v", spans)
	}
	if p.TraceID != pub.SpanContext().TraceID().String() || p.SpanID != pub.SpanContext().SpanID().String() || p.ParentID != "" {
		t.Fatalf("publish ids %+v", p)
	}
	if d.TraceID != p.TraceID || d.ParentID != p.SpanID {
		t.Fatalf("decide is not the publish's child: %+v", d)
	}
	if len(d.Links) != 1 || d.Links[0] != (SpanRef{b.TraceID, b.SpanID}) {
		t.Fatalf("decide links %+v, batch %s/%s", d.Links, b.TraceID, b.SpanID)
	}
	if p.Kind != int(trace.SpanKindProducer) || d.Error != "sink refused" || p.Error != "" {
		t.Fatalf("kind %d, errors %q %q", p.Kind, d.Error, p.Error)
	}
	if p.Str("onceplane.region") != "us-east" || p.Attrs["n"] != int64(-7) || p.Attrs["b"] != true || p.Attrs["f"] != 1.5 {
		t.Fatalf("attrs %+v", p.Attrs)
	}
	if ss, ok := p.Attrs["ss"].([]any); !ok || len(ss) != 2 || ss[1] != "y" {
		t.Fatalf("string slice %#v", p.Attrs["ss"])
	}
	if p.Start.IsZero() || p.End.Before(p.Start) || d.Duration() < 0 {
		t.Fatalf("times %v %v", p.Start, p.End)
	}
}

// TestLineIsOTLPJSON: what a line holds is OTLP/HTTP's JSON body: hex IDs
// (not protobuf JSON's base64), integers as strings, lowerCamelCase names.
func TestLineIsOTLPJSON(t *testing.T) {
	var buf bytes.Buffer
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(New(&buf)))
	_, s := tp.Tracer("t").Start(context.Background(), "x", trace.WithAttributes(attribute.Int("i", 3)))
	s.End()
	var raw struct {
		ResourceSpans []struct {
			ScopeSpans []struct {
				Spans []map[string]any
			}
		}
	}
	line := strings.TrimSpace(buf.String())
	if strings.Count(buf.String(), "\n") != 1 {
		t.Fatalf("want one line: %q", buf.String())
	}
	if err := json.Unmarshal([]byte(line), &raw); err != nil {
		t.Fatal(err)
	}
	span := raw.ResourceSpans[0].ScopeSpans[0].Spans[0]
	if span["traceId"] != s.SpanContext().TraceID().String() || span["spanId"] != s.SpanContext().SpanID().String() {
		t.Fatalf("ids %v %v", span["traceId"], span["spanId"])
	}
	if _, ok := span["startTimeUnixNano"].(string); !ok {
		t.Fatalf("start time %T", span["startTimeUnixNano"])
	}
	if !strings.Contains(line, `{"key":"i","value":{"intValue":"3"}}`) {
		t.Fatalf("int attribute not OTLP JSON: %s", line)
	}
}

// TestReadRefusesBadLines names the line that does not decode.
func TestReadRefusesBadLines(t *testing.T) {
	good := `{"resourceSpans":[{"resource":{},"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","name":"n","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2","status":{}}]}]}]}`
	for _, bad := range []string{
		"not json",
		strings.Replace(good, "0102030405060708090a0b0c0d0e0f10", "AQIDBAUGBwgJCgsMDQ4PEA==", 1), // base64: protobuf JSON, not OTLP JSON
		strings.Replace(good, `"startTimeUnixNano":"1"`, `"startTimeUnixNano":"soon"`, 1),
	} {
		_, err := Read(strings.NewReader(good + "\n" + bad + "\n"))
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("%.40s...: %v", bad, err)
		}
	}
	spans, err := Read(strings.NewReader(good + "\n\n"))
	if err != nil || len(spans) != 1 || spans[0].Duration() != 1 {
		t.Fatalf("%+v %v", spans, err)
	}
}

// FuzzRead: no input makes Read panic, and what it accepts has well-formed IDs.
func FuzzRead(f *testing.F) {
	f.Add(`{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"s"}}]},"scopeSpans":[{"scope":{"name":"s"},"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708","parentSpanId":"0102030405060709","name":"n","kind":1,"startTimeUnixNano":"1","endTimeUnixNano":"2","attributes":[{"key":"a","value":{"arrayValue":{"values":[{"intValue":"x"}]}}}],"links":[{"traceId":"","spanId":""}],"status":{"code":2}}]}]}]}`)
	f.Add("{}\n{\"resourceSpans\":null}")
	f.Fuzz(func(t *testing.T, in string) {
		spans, err := Read(strings.NewReader(in))
		if err != nil {
			var se *json.SyntaxError
			_ = errors.As(err, &se)
			return
		}
		for _, s := range spans {
			if len(s.TraceID) != 32 || len(s.SpanID) != 16 {
				t.Fatalf("accepted %+v", s)
			}
		}
	})
}
