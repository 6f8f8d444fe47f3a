// Package tracefile writes and reads spans as OTLP JSON lines: one
// ExportTraceServiceRequest per line, in the encoding of OTLP/HTTP's JSON
// body (trace and span IDs in hex, 64-bit integers as strings) — what the
// OpenTelemetry Collector's file exporter writes. A line can be posted as
// it is to any OTLP/HTTP receiver (POST /v1/traces, Content-Type
// application/json), Jaeger's included.
package tracefile

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Exporter is an sdktrace.SpanExporter writing OTLP JSON lines to w. It is
// safe for concurrent use; several tracer providers may share it.
type Exporter struct {
	mu     sync.Mutex
	w      io.Writer
	closer io.Closer
	closed bool
}

// New returns an exporter writing to w. Shutdown closes w when it is an
// io.Closer.
func New(w io.Writer) *Exporter {
	e := &Exporter{w: w}
	if c, ok := w.(io.Closer); ok {
		e.closer = c
	}
	return e
}

// ExportSpans writes spans as one line, grouped by resource and scope.
func (e *Exporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return errors.New("tracefile: exporter shut down")
	}
	if len(spans) == 0 {
		return nil
	}
	b, err := json.Marshal(Encode(spans))
	if err != nil {
		return fmt.Errorf("tracefile: %w", err)
	}
	if _, err := e.w.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("tracefile: %w", err)
	}
	return nil
}

// Shutdown stops the exporter and closes its writer when it can.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	if e.closer != nil {
		return e.closer.Close()
	}
	return nil
}

// Request is an OTLP ExportTraceServiceRequest in its JSON encoding.
type Request struct {
	ResourceSpans []ResourceSpans `json:"resourceSpans"`
}

// ResourceSpans are the spans of one resource (one service).
type ResourceSpans struct {
	Resource   Resource     `json:"resource"`
	ScopeSpans []ScopeSpans `json:"scopeSpans"`
}

// Resource describes what produced the spans.
type Resource struct {
	Attributes []KeyValue `json:"attributes,omitempty"`
}

// ScopeSpans are the spans of one instrumentation scope (a tracer).
type ScopeSpans struct {
	Scope Scope      `json:"scope"`
	Spans []SpanJSON `json:"spans"`
}

// Scope names a tracer.
type Scope struct {
	Name    string `json:"name"`
	Version string `json:"version,omitempty"`
}

// SpanJSON is one span as OTLP JSON encodes it.
type SpanJSON struct {
	TraceID      string     `json:"traceId"`
	SpanID       string     `json:"spanId"`
	ParentSpanID string     `json:"parentSpanId,omitempty"`
	Name         string     `json:"name"`
	Kind         int        `json:"kind"`
	Start        string     `json:"startTimeUnixNano"`
	End          string     `json:"endTimeUnixNano"`
	Attributes   []KeyValue `json:"attributes,omitempty"`
	Events       []Event    `json:"events,omitempty"`
	Links        []Link     `json:"links,omitempty"`
	Status       Status     `json:"status"`
}

// Event is a span event.
type Event struct {
	Time       string     `json:"timeUnixNano"`
	Name       string     `json:"name"`
	Attributes []KeyValue `json:"attributes,omitempty"`
}

// Link points at another span.
type Link struct {
	TraceID    string     `json:"traceId"`
	SpanID     string     `json:"spanId"`
	Attributes []KeyValue `json:"attributes,omitempty"`
}

// Status is a span's status: code 0 unset, 1 ok, 2 error (OTLP's numbers,
// not the Go API's).
type Status struct {
	Code    int    `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
}

// KeyValue is one attribute.
type KeyValue struct {
	Key   string   `json:"key"`
	Value AnyValue `json:"value"`
}

// AnyValue holds one of an attribute's types; integers are strings, as
// OTLP JSON encodes 64-bit integers.
type AnyValue struct {
	String *string     `json:"stringValue,omitempty"`
	Bool   *bool       `json:"boolValue,omitempty"`
	Int    *string     `json:"intValue,omitempty"`
	Double *float64    `json:"doubleValue,omitempty"`
	Array  *ArrayValue `json:"arrayValue,omitempty"`
}

// ArrayValue is a list attribute.
type ArrayValue struct {
	Values []AnyValue `json:"values"`
}

// Encode groups spans by resource and scope into one request.
func Encode(spans []sdktrace.ReadOnlySpan) Request {
	var req Request
	type key struct{ res, scope string }
	rs := map[string]int{}
	ss := map[key]int{}
	for _, s := range spans {
		rk := ""
		if r := s.Resource(); r != nil {
			rk = r.Encoded(attribute.DefaultEncoder())
		}
		ri, ok := rs[rk]
		if !ok {
			ri = len(req.ResourceSpans)
			rs[rk] = ri
			var attrs []KeyValue
			if r := s.Resource(); r != nil {
				attrs = keyValues(r.Attributes())
			}
			req.ResourceSpans = append(req.ResourceSpans, ResourceSpans{Resource: Resource{Attributes: attrs}})
		}
		sc := s.InstrumentationScope()
		k := key{rk, sc.Name + "\x00" + sc.Version}
		si, ok := ss[k]
		if !ok {
			si = len(req.ResourceSpans[ri].ScopeSpans)
			ss[k] = si
			req.ResourceSpans[ri].ScopeSpans = append(req.ResourceSpans[ri].ScopeSpans, ScopeSpans{Scope: Scope{Name: sc.Name, Version: sc.Version}})
		}
		scope := &req.ResourceSpans[ri].ScopeSpans[si]
		scope.Spans = append(scope.Spans, encodeSpan(s))
	}
	return req
}

func encodeSpan(s sdktrace.ReadOnlySpan) SpanJSON {
	sc := s.SpanContext()
	out := SpanJSON{
		TraceID: sc.TraceID().String(), SpanID: sc.SpanID().String(), Name: s.Name(), Kind: int(s.SpanKind()),
		Start: nanos(s.StartTime()), End: nanos(s.EndTime()), Attributes: keyValues(s.Attributes()),
	}
	if p := s.Parent(); p.SpanID().IsValid() {
		out.ParentSpanID = p.SpanID().String()
	}
	for _, e := range s.Events() {
		out.Events = append(out.Events, Event{Time: nanos(e.Time), Name: e.Name, Attributes: keyValues(e.Attributes)})
	}
	for _, l := range s.Links() {
		out.Links = append(out.Links, Link{TraceID: l.SpanContext.TraceID().String(), SpanID: l.SpanContext.SpanID().String(), Attributes: keyValues(l.Attributes)})
	}
	switch st := s.Status(); st.Code {
	case codes.Ok:
		out.Status = Status{Code: 1}
	case codes.Error:
		out.Status = Status{Code: 2, Message: st.Description}
	}
	return out
}

func nanos(t time.Time) string { return strconv.FormatInt(t.UnixNano(), 10) }

func keyValues(kvs []attribute.KeyValue) []KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	out := make([]KeyValue, 0, len(kvs))
	for _, kv := range kvs {
		out = append(out, KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)})
	}
	return out
}

func anyValue(v attribute.Value) AnyValue {
	switch v.Type() {
	case attribute.BOOL:
		b := v.AsBool()
		return AnyValue{Bool: &b}
	case attribute.INT64:
		i := strconv.FormatInt(v.AsInt64(), 10)
		return AnyValue{Int: &i}
	case attribute.FLOAT64:
		f := v.AsFloat64()
		return AnyValue{Double: &f}
	case attribute.BOOLSLICE:
		return array(v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return array(v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return array(v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return array(v.AsStringSlice(), attribute.StringValue)
	default:
		s := v.Emit()
		return AnyValue{String: &s}
	}
}

// array encodes a list attribute, each element as value makes it.
func array[T any](xs []T, value func(T) attribute.Value) AnyValue {
	a := ArrayValue{Values: make([]AnyValue, 0, len(xs))}
	for _, x := range xs {
		a.Values = append(a.Values, anyValue(value(x)))
	}
	return AnyValue{Array: &a}
}

// Span is a span read back: what reports and tests look at.
type Span struct {
	TraceID, SpanID, ParentID string
	Name, Service             string
	Kind                      int
	Start, End                time.Time
	Attrs                     map[string]any // string, bool, int64, float64 or []any
	Links                     []SpanRef
	Error                     string // the status message of a span that failed
}

// SpanRef names a span of a trace.
type SpanRef struct{ TraceID, SpanID string }

// Duration is End - Start.
func (s Span) Duration() time.Duration { return s.End.Sub(s.Start) }

// Str returns attribute key as a string ("" when absent or not a string).
func (s Span) Str(key string) string {
	v, _ := s.Attrs[key].(string)
	return v
}

// Read decodes every line of r (OTLP JSON requests) into spans, in file
// order. A line that does not decode is an error naming it.
func Read(r io.Reader) ([]Span, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	var out []Span
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var req Request
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return nil, fmt.Errorf("tracefile line %d: %w", line, err)
		}
		spans, err := req.Spans()
		if err != nil {
			return nil, fmt.Errorf("tracefile line %d: %w", line, err)
		}
		out = append(out, spans...)
	}
	return out, sc.Err()
}

// Spans flattens a request, each span with its resource's service.name.
func (req Request) Spans() ([]Span, error) {
	var out []Span
	for _, rs := range req.ResourceSpans {
		service, _ := attrs(rs.Resource.Attributes)["service.name"].(string)
		for _, ss := range rs.ScopeSpans {
			for _, j := range ss.Spans {
				s, err := j.decode(service)
				if err != nil {
					return nil, err
				}
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func (j SpanJSON) decode(service string) (Span, error) {
	if !isHexID(j.TraceID, 32) || !isHexID(j.SpanID, 16) || j.ParentSpanID != "" && !isHexID(j.ParentSpanID, 16) {
		return Span{}, fmt.Errorf("span %q: bad trace or span ID", j.Name)
	}
	start, err1 := strconv.ParseInt(j.Start, 10, 64)
	end, err2 := strconv.ParseInt(j.End, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return Span{}, fmt.Errorf("span %q: times: %w", j.Name, err)
	}
	s := Span{TraceID: j.TraceID, SpanID: j.SpanID, ParentID: j.ParentSpanID, Name: j.Name, Service: service, Kind: j.Kind,
		Start: time.Unix(0, start), End: time.Unix(0, end), Attrs: attrs(j.Attributes)}
	for _, l := range j.Links {
		s.Links = append(s.Links, SpanRef{TraceID: l.TraceID, SpanID: l.SpanID})
	}
	if j.Status.Code == 2 {
		s.Error = j.Status.Message
		if s.Error == "" {
			s.Error = "error"
		}
	}
	return s, nil
}

func isHexID(s string, n int) bool {
	if len(s) != n {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil
}

func attrs(kvs []KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value.decode()
	}
	return m
}

func (v AnyValue) decode() any {
	switch {
	case v.String != nil:
		return *v.String
	case v.Bool != nil:
		return *v.Bool
	case v.Int != nil:
		i, _ := strconv.ParseInt(*v.Int, 10, 64)
		return i
	case v.Double != nil:
		return *v.Double
	case v.Array != nil:
		out := make([]any, 0, len(v.Array.Values))
		for _, x := range v.Array.Values {
			out = append(out, x.decode())
		}
		return out
	}
	return nil
}

// FromSDK converts a span the SDK recorded into a Span (what an in-process
// collector keeps), as writing and reading it back would.
func FromSDK(s sdktrace.ReadOnlySpan) Span {
	service := ""
	if r := s.Resource(); r != nil {
		if v, ok := r.Set().Value("service.name"); ok {
			service = v.Emit()
		}
	}
	sp, _ := encodeSpan(s).decode(service) // IDs and times the SDK made always decode
	return sp
}
