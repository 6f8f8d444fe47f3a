// Package sink holds the edge binary's built-in handlers: nats (republish to
// the output stream with Nats-Msg-Id = event ID, so effects are idempotent),
// http (POST, 2xx = done), ledger (one JSON line per invocation), stdout,
// and chaos (fails, hangs and panics on purpose, for drills).
package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// NATS republishes each event to its partition's output subject with
// Nats-Msg-Id set to the event ID: within the output stream's duplicate
// window a repeat (an uncertain re-run) is stored once. Beyond the window
// the stream would store a repeat as a new message, so a retry of an event
// whose earlier publish may have landed (its ack was lost) and that comes a
// window or more later is marked Onceplane-Uncertain: a possible second
// effect is flagged, never silent. Create JS with
// jetstream.WithPublishAsyncTimeout: an ack lost with a dead core node
// otherwise stays pending forever and the sink eventually stalls.
type NATS struct {
	JS    jetstream.JetStream
	Names streams.Names
	// Timeout bounds waiting for the batch's acks. Zero means 5 s.
	Timeout time.Duration
	// Window is the output stream's Nats-Msg-Id window. Zero means read it
	// from the stream (10 minutes if it cannot be read).
	Window time.Duration

	mu        sync.Mutex
	ambiguous map[string]time.Time // event key -> first publish whose outcome is unknown
}

// margin is how long before the window's end a retry is flagged: the server
// measures the window from its own store time, not the sink's.
func margin(win time.Duration) time.Duration { return min(30*time.Second, win/4) }

func eventKey(ev event.Event) string { return ev.Key() + "\x00" + strconv.FormatUint(ev.StreamSeq, 10) }

func (s *NATS) window(ctx context.Context) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Window <= 0 {
		s.Window = 10 * time.Minute
		if st, err := s.JS.Stream(ctx, s.Names.OutputStream()); err == nil && st.CachedInfo().Config.Duplicates > 0 {
			s.Window = st.CachedInfo().Config.Duplicates
		}
	}
	return s.Window
}

// Handle publishes the batch asynchronously and waits for every ack.
func (s *NATS) Handle(ctx context.Context, evs []event.Event) []error {
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	futs := make([]jetstream.PubAckFuture, len(evs))
	errs := make([]error, len(evs))
	failed := false
	var win time.Duration
	now := time.Now()
	for i, ev := range evs {
		hdr := outputHeader(ev)
		s.mu.Lock()
		first, retried := s.ambiguous[eventKey(ev)]
		s.mu.Unlock()
		if retried && win == 0 {
			win = s.window(ctx)
		}
		if ev.Uncertain || (retried && now.Sub(first) >= win-margin(win)) {
			hdr.Set(event.HeaderUncertain, "true")
		}
		f, err := s.JS.PublishMsgAsync(&nats.Msg{Subject: s.Names.Output(ev.Partition), Header: hdr, Data: ev.Data})
		if err != nil {
			errs[i], failed = fmt.Errorf("output %s: %w: %w", ev.ID, edge.ErrUnavailable, err), true
			continue
		}
		futs[i] = f
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for i, f := range futs {
		if f == nil {
			continue
		}
		landed := false // the publish is known stored (or known refused)
		select {
		case <-f.Ok():
			landed = true
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && apiErr.ErrorCode != 0 && apiErr.Code < 500 {
				errs[i] = fmt.Errorf("output %s: %w", evs[i].ID, err) // rejected by the stream: a bad event
				landed = true
			} else {
				errs[i] = fmt.Errorf("output %s: %w: %w", evs[i].ID, edge.ErrUnavailable, err)
			}
			failed = true
		case <-timer.C:
			errs[i], failed = fmt.Errorf("output %s: %w: ack timeout", evs[i].ID, edge.ErrUnavailable), true
		case <-ctx.Done():
			errs[i], failed = ctx.Err(), true
		}
		s.remember(eventKey(evs[i]), landed, now)
	}
	if !failed {
		return nil
	}
	return errs
}

// outputHeader is an output's headers. The output stream's window dedupes
// by key: two tenants' same ID are two outputs.
func outputHeader(ev event.Event) nats.Header {
	hdr := nats.Header{}
	hdr.Set(event.HeaderMsgID, ev.Key())
	hdr.Set(event.HeaderID, ev.ID)
	if ev.Tenant != "" && ev.Tenant != event.DefaultTenant {
		hdr.Set(event.HeaderTenant, ev.Tenant)
	}
	hdr.Set(event.HeaderPartition, strconv.Itoa(ev.Partition))
	return hdr
}

// remember keeps, per event, the time of the first publish whose outcome is
// unknown, until one is known (landed): a retry past the output window
// must be flagged.
func (s *NATS) remember(k string, landed bool, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if landed {
		delete(s.ambiguous, k)
		return
	}
	if _, ok := s.ambiguous[k]; ok {
		return
	}
	if s.ambiguous == nil {
		s.ambiguous = map[string]time.Time{}
	}
	if len(s.ambiguous) >= maxProgress {
		// Events that moved to another edge or were dead-lettered are never
		// retried here: forget the oldest.
		for k, at := range s.ambiguous {
			if now.Sub(at) > time.Hour {
				delete(s.ambiguous, k)
			}
		}
	}
	s.ambiguous[k] = now
}

// HTTP POSTs each event's payload to URL; a 2xx answer means done, 5xx and
// transport errors mean the sink is unavailable (retried without limit), any
// other status is the event's failure (retried, then dead-lettered).
type HTTP struct {
	URL    string
	Client *http.Client // nil means a client with a 10 s timeout
}

// Handle posts each event.
func (s *HTTP) Handle(ctx context.Context, evs []event.Event) []error {
	client := s.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	var errs []error
	for i, ev := range evs {
		if err := s.post(ctx, client, ev); err != nil {
			if errs == nil {
				errs = make([]error, len(evs))
			}
			errs[i] = err
		}
	}
	return errs
}

func (s *HTTP) post(ctx context.Context, client *http.Client, ev event.Event) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(ev.Data))
	if err != nil {
		return fmt.Errorf("http sink: %w", err)
	}
	req.Header.Set("Idempotency-Key", ev.Key())
	req.Header.Set(event.HeaderID, ev.ID)
	if ev.Tenant != "" && ev.Tenant != event.DefaultTenant {
		req.Header.Set(event.HeaderTenant, ev.Tenant)
	}
	req.Header.Set(event.HeaderPartition, strconv.Itoa(ev.Partition))
	if ev.Uncertain {
		req.Header.Set(event.HeaderUncertain, "true")
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http sink %s: %w: %w", ev.ID, edge.ErrUnavailable, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode/100 == 2:
		return nil
	case resp.StatusCode >= 500:
		return fmt.Errorf("http sink %s: %w: status %d", ev.ID, edge.ErrUnavailable, resp.StatusCode)
	default:
		return fmt.Errorf("http sink %s: status %d", ev.ID, resp.StatusCode)
	}
}

// LedgerLine is one ledger entry: one handler invocation.
type LedgerLine struct {
	// ID is the event's key (event.Key): its ID, prefixed "<tenant>." for
	// a tenant other than the default.
	ID        string    `json:"id"`
	Partition int       `json:"partition"`
	Seq       uint64    `json:"seq"`
	Edge      string    `json:"edge"`
	Uncertain bool      `json:"uncertain,omitempty"`
	Time      time.Time `json:"time"`
	// Batch is the token of the batch the run belongs to, in a positioned
	// ledger: the run took effect if the batch's commit line follows.
	Batch string `json:"batch,omitempty"`
}

// Ledger appends one JSON line per handler invocation to a file, written
// (not buffered) before Handle returns, so a killed process loses no line.
type Ledger struct {
	mu   sync.Mutex
	f    *os.File
	w    *bufio.Writer
	edge string
}

// OpenLedger opens (appending) or creates the ledger file at path.
func OpenLedger(path, edgeName string) (*Ledger, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("ledger: %w", err)
	}
	return &Ledger{f: f, w: bufio.NewWriterSize(f, 256<<10), edge: edgeName}, nil
}

// Handle records each event.
func (l *Ledger) Handle(_ context.Context, evs []event.Event) []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now().UTC()
	enc := json.NewEncoder(l.w)
	for _, ev := range evs {
		_ = enc.Encode(LedgerLine{ID: ev.Key(), Partition: ev.Partition, Seq: ev.StreamSeq, Edge: l.edge, Uncertain: ev.Uncertain, Time: now})
	}
	if err := l.w.Flush(); err != nil {
		errs := make([]error, len(evs))
		for i := range errs {
			errs[i] = fmt.Errorf("ledger: %w: %w", edge.ErrUnavailable, err)
		}
		return errs
	}
	return nil
}

// Close closes the file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_ = l.w.Flush()
	return l.f.Close()
}

// ReadLedger reads every line of a ledger file.
func ReadLedger(path string) ([]LedgerLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []LedgerLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l LedgerLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			return out, fmt.Errorf("ledger line %d: %w", len(out)+1, err)
		}
		out = append(out, l)
	}
	return out, sc.Err()
}

// ScanLedger reads a ledger file that a killed writer may have torn: a
// SIGKILL can cut a write short, and the restarted writer appends its next
// line right after the torn one. Unreadable text is skipped (counted in
// bad); a line whose tail is a whole entry keeps that entry.
func ScanLedger(path string) (lines []LedgerLine, bad int, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b := sc.Bytes()
		if bytes.HasPrefix(b, []byte(`{"commit":`)) || bytes.HasPrefix(b, []byte(`{"fence":`)) {
			continue // a positioned ledger's marks (LedgerMark), not runs
		}
		var l LedgerLine
		if json.Unmarshal(b, &l) == nil {
			lines = append(lines, l)
			continue
		}
		bad++
		if i := bytes.LastIndex(b, []byte(`{"id":`)); i > 0 && json.Unmarshal(b[i:], &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines, bad, sc.Err()
}

// Writer prints one line per event (ID, partition, payload size) to W.
type Writer struct {
	mu sync.Mutex
	W  io.Writer
}

// Handle prints the batch.
func (s *Writer) Handle(_ context.Context, evs []event.Event) []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range evs {
		fmt.Fprintf(s.W, "%s\tp%d\tseq=%d\t%d bytes\n", ev.Key(), ev.Partition, ev.StreamSeq, len(ev.Data))
	}
	return nil
}

// Chain runs handlers in order for each batch; an event is done when every
// handler succeeded for it, and only the events that succeeded so far go on
// to the next handler. An event that failed (or whose call panicked) at a
// handler resumes there when it is retried, so the handlers it already
// passed do not repeat their effects. Use NewChain.
type Chain struct {
	handlers []edge.Handler
	mu       sync.Mutex
	passed   map[string]progress // event -> handlers passed, while it is being retried
}

type progress struct {
	n  int
	at time.Time
}

// maxProgress bounds the events a Chain remembers part-way (events that gave
// up or moved to another edge are never retried here); past it, entries
// older than an hour are dropped.
const maxProgress = 100_000

// NewChain returns a chain of handlers, run in order.
func NewChain(hs ...edge.Handler) *Chain { return &Chain{handlers: hs, passed: map[string]progress{}} }

func (c *Chain) start(ev event.Event) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passed[eventKey(ev)].n
}

func (c *Chain) record(ev event.Event, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := eventKey(ev)
	if n >= len(c.handlers) {
		delete(c.passed, k)
		return
	}
	if len(c.passed) >= maxProgress {
		for k, p := range c.passed {
			if time.Since(p.at) > time.Hour {
				delete(c.passed, k)
			}
		}
	}
	c.passed[k] = progress{n, time.Now()}
}

// Handle runs the chain.
func (c *Chain) Handle(ctx context.Context, evs []event.Event) []error {
	errs := make([]error, len(evs))
	next := make([]int, len(evs)) // the handler each event goes to next
	for i, ev := range evs {
		next[i] = c.start(ev)
	}
	failed := false
	for hi, h := range c.handlers {
		var cur []event.Event
		var idx []int
		for i := range evs {
			if errs[i] == nil && next[i] == hi {
				cur, idx = append(cur, evs[i]), append(idx, i)
			}
		}
		if len(cur) == 0 {
			continue
		}
		res := c.call(h, hi, ctx, cur, idx, evs)
		for j, i := range idx {
			if j < len(res) && res[j] != nil {
				errs[i], failed = res[j], true
				c.record(evs[i], hi)
				continue
			}
			next[i] = hi + 1
		}
	}
	for i, ev := range evs {
		if errs[i] == nil {
			c.record(ev, len(c.handlers))
		}
	}
	if !failed {
		return nil
	}
	return errs
}

// call runs handler hi for cur; if it panics, every event in the call is
// recorded as having passed the handlers before hi, and the panic goes on.
func (c *Chain) call(h edge.Handler, hi int, ctx context.Context, cur []event.Event, idx []int, evs []event.Event) []error {
	ok := false
	defer func() {
		if !ok {
			for _, i := range idx {
				c.record(evs[i], hi)
			}
		}
	}()
	res := h.Handle(ctx, cur)
	ok = true
	return res
}
