package edge

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/internal/poll"
)

// Dead-letter headers, onceplane's own: a dead letter carries no header the
// producer set, since a producer's header is data, not control (one such as
// Nats-Expected-Stream would make the DLQ refuse the letter for good).
const (
	// HeaderDetail says why, in words (at most 512 bytes).
	HeaderDetail = "Onceplane-Detail"
	// HeaderEventID is the event's ID as the producer sent it (sanitised, at most 256 bytes).
	HeaderEventID = "Onceplane-Event-Id"
	// HeaderOrigHeaders is the producer's headers, quoted and bounded (at most 4 KiB).
	HeaderOrigHeaders = "Onceplane-Orig-Headers"
	// HeaderPayloadBytes is the size of the event's payload as stored at ingest.
	HeaderPayloadBytes = "Onceplane-Payload-Bytes"
	// HeaderTruncated is "true" when the letter's payload or headers are cut short.
	HeaderTruncated = "Onceplane-Truncated"
)

const (
	maxDetail      = 512
	maxEventID     = 256
	maxOrigHeaders = 4 << 10
	// deadHeadroom is what a dead letter keeps free of the stream's largest
	// message for its own headers.
	deadHeadroom = 16 << 10
)

// deadLetterMsg builds the dead letter of d: onceplane's headers, a quoted
// and bounded copy of the producer's headers, and the payload cut to fit
// maxMsg (the DLQ stream's largest message). With minimal, it carries no
// producer content but the sanitised ID: the fallback when a full letter is
// refused for good.
func deadLetterMsg(subject, region string, p int, d deadMsg, maxMsg int, minimal bool) *nats.Msg {
	hdr := nats.Header{}
	hdr.Set(event.HeaderMsgID, fmt.Sprintf("dlq-%s-%d-%d", region, p, d.seq))
	hdr.Set(event.HeaderReason, d.reason)
	hdr.Set(HeaderDetail, sanitize(d.detail, maxDetail))
	hdr.Set(event.HeaderPartition, strconv.Itoa(p))
	hdr.Set(event.HeaderStreamSeq, strconv.FormatUint(d.seq, 10))
	if d.id != "" {
		hdr.Set(HeaderEventID, sanitize(d.id, maxEventID))
	}
	if d.tenant != "" {
		hdr.Set(event.HeaderTenant, sanitize(d.tenant, maxEventID))
	}
	data := d.m.Data()
	hdr.Set(HeaderPayloadBytes, strconv.Itoa(len(data)))
	truncated := false
	if minimal {
		data, truncated = nil, true
	} else {
		if orig := quoteHeaders(d.m.Headers()); orig != "" {
			if len(orig) > maxOrigHeaders {
				orig, truncated = orig[:maxOrigHeaders], true
			}
			hdr.Set(HeaderOrigHeaders, orig)
		}
		if room := maxMsg - deadHeadroom; len(data) > room {
			data, truncated = data[:max(room, 0)], true
		}
	}
	if truncated {
		hdr.Set(HeaderTruncated, "true")
	}
	return &nats.Msg{Subject: subject, Header: hdr, Data: data}
}

// sanitize quotes s as printable ASCII and bounds it to n bytes.
func sanitize(s string, n int) string {
	q := strconv.QuoteToASCII(s)
	q = q[1 : len(q)-1]
	if len(q) > n {
		q = q[:n]
	}
	return q
}

// quoteHeaders renders h as "Key: value" lines, quoted, sorted by key.
func quoteHeaders(h nats.Header) string {
	if len(h) == 0 {
		return ""
	}
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		for _, v := range h[k] {
			if b.Len() > maxOrigHeaders {
				return b.String()
			}
			if b.Len() > 0 {
				b.WriteString("; ")
			}
			b.WriteString(sanitize(k, 256))
			b.WriteString(": ")
			b.WriteString(sanitize(v, maxOrigHeaders))
		}
	}
	return b.String()
}

// permanent reports whether a publish error is a refusal that retrying the
// same message cannot change (a 4xx JetStream API error).
func permanent(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code >= 400 && apiErr.Code < 500
}

// deadLetter publishes the batch's dead events to the partition's DLQ subject and waits for every
// ack: an event is acknowledged on the ingest stream only once its dead
// letter is stored. The letter's message ID is derived from the ingest
// sequence, so a retry after a crash stores it once. A letter the stream
// refuses for good is sent again without the producer's content; transient
// failures are retried until ctx ends, and the partition shows as stuck
// while they last (Ready, stuck_partitions).
func (pt *partition) deadLetter(ctx context.Context) error {
	for _, d := range pt.w.dead {
		if err := pt.deadLetterOne(ctx, d); err != nil {
			return err
		}
	}
	return nil
}

// deadLetterOne publishes d's dead letter, retrying until it is stored or
// ctx ends.
func (pt *partition) deadLetterOne(ctx context.Context, d deadMsg) error {
	c, p := pt.c, pt.p
	minimal := false
	for b := poll.Backoff(20*time.Millisecond, time.Second); ; {
		msg := deadLetterMsg(c.here.DLQ(p), c.o.Region, p, d, c.maxMsg, minimal)
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := c.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if permanent(err) && !minimal {
			c.lg.Error("dead letter refused; sending it without the producer's content", "partition", p, "stream_seq", d.seq, "err", err)
			minimal = true
			continue
		}
		c.lg.Warn("dead-letter publish failed; retrying", "partition", p, "err", err)
		if poll.Sleep(ctx, b.NextBackOff()) != nil {
			return ctx.Err()
		}
	}
	c.c.dlq.addBy(d.reason, 1)
	return nil
}
