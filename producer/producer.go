// Package producer is the Go helper for the onceplane producer contract:
// publish an event to onceplane.<region>.in.<tenant>.<ID> with the header
// Onceplane-Id: <ID>, and no Nats-Msg-Id (the ingest stream's Nats-Msg-Id
// window is shared by every producer of the region: another producer
// could fill it with this one's IDs). Any NATS client in any language can
// do the same.
package producer

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/healconn"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/telemetry"
)

// Producer publishes one tenant's events to one region's ingest stream.
type Producer struct {
	js     jetstream.JetStream
	names  streams.Names
	tenant string
	heal   *healconn.Healer
	tracer trace.Tracer
}

// Options configures a Producer.
type Options struct {
	// Tenant is the tenant the events belong to. Zero means
	// event.DefaultTenant. The connection's user must be its producer
	// (auth.ProducerUser): its permissions allow publishing under its own
	// tenant only.
	Tenant string
	// TracerProvider records each publish as an onceplane.publish span, the
	// parent of the event's decision in whichever region decides it. Nil
	// means the global provider.
	TracerProvider trace.TracerProvider
}

// New returns a Producer of the default tenant for region ("" means
// "local").
func New(js jetstream.JetStream, region string) *Producer {
	return NewWith(js, region, Options{})
}

// NewTenant returns a Producer of tenant for region.
func NewTenant(js jetstream.JetStream, region, tenant string) *Producer {
	return NewWith(js, region, Options{Tenant: tenant})
}

// NewWith returns a Producer for region configured by o.
func NewWith(js jetstream.JetStream, region string, o Options) *Producer {
	if o.Tenant == "" {
		o.Tenant = event.DefaultTenant
	}
	tp := o.TracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	return &Producer{js: js, names: streams.Names{Region: region}, tenant: o.Tenant, heal: healconn.New(js.Conn(), 0),
		tracer: tp.Tracer("github.com/onceplane/onceplane/producer")}
}

// span starts the onceplane.publish span of event id. Its attributes are
// built only when it is recorded: most publishes are not sampled.
func (p *Producer) span(ctx context.Context, id string) (context.Context, trace.Span) {
	ctx, sp := p.tracer.Start(ctx, "onceplane.publish", trace.WithSpanKind(trace.SpanKindProducer))
	if sp.IsRecording() {
		sp.SetAttributes(attribute.String("onceplane.region", p.names.Region), attribute.String("onceplane.tenant", p.tenant),
			attribute.String("onceplane.event_id", id), attribute.String("messaging.system", "nats"))
	}
	return ctx, sp
}

// Observe reports the outcome of an asynchronous publish (the error of its
// future, nil on success), so that a connection a restarted core node keeps
// answering with "no responders" is reconnected (see package healconn).
// Publish does this by itself.
func (p *Producer) Observe(err error) { p.heal.Observe(err) }

// Msg builds the message for an event, carrying the trace context of ctx.
func (p *Producer) Msg(ctx context.Context, id string, data []byte) (*nats.Msg, error) {
	if err := event.ValidateTenant(p.tenant); err != nil {
		return nil, fmt.Errorf("publish %q: %w", id, err)
	}
	if err := event.ValidateID(id); err != nil {
		return nil, fmt.Errorf("publish %q: %w", id, err)
	}
	m := &nats.Msg{Subject: p.names.IngestOf(p.tenant, id), Header: nats.Header{}, Data: data}
	m.Header.Set(event.HeaderID, id)
	m.Header.Set(event.HeaderPublished, strconv.FormatInt(time.Now().UnixNano(), 10))
	telemetry.Propagator().Inject(ctx, telemetry.HeaderCarrier(m.Header))
	return m, nil
}

// Publish publishes one event and waits for the stream's ack. A publish
// retried after a lost ack stores the event again: the edges dedupe it.
func (p *Producer) Publish(ctx context.Context, id string, data []byte) (*jetstream.PubAck, error) {
	ctx, span := p.span(ctx, id)
	defer span.End()
	m, err := p.Msg(ctx, id, data)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	ack, err := p.js.PublishMsg(ctx, m)
	p.heal.Observe(err)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publish %q: %w", id, err)
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("onceplane.stream_seq", int64(ack.Sequence)), attribute.Bool("onceplane.duplicate", ack.Duplicate))
	}
	return ack, nil
}

// PublishAsync publishes one event without waiting; see jetstream.PublishMsgAsync.
// Its span ends when the message is sent, not acked.
func (p *Producer) PublishAsync(ctx context.Context, id string, data []byte) (jetstream.PubAckFuture, error) {
	ctx, span := p.span(ctx, id)
	defer span.End()
	m, err := p.Msg(ctx, id, data)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, err
	}
	f, err := p.js.PublishMsgAsync(m)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return nil, fmt.Errorf("publish %q: %w", id, err)
	}
	return f, nil
}

// Wait blocks until every async publish has been answered (acked or
// failed: a failure shows on its future only) or ctx ends.
func (p *Producer) Wait(ctx context.Context) error {
	select {
	case <-p.js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for publish acks: %w", ctx.Err())
	}
}
