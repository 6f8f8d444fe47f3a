package sink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
	"github.com/onceplane/onceplane/jetstream/streams"
)

// Headers of a positioned nats sink's position messages.
const (
	HeaderPositionSource  = "Onceplane-Position-Source"
	HeaderPositionEpoch   = "Onceplane-Position-Epoch"
	HeaderPositionApplied = "Onceplane-Position-Applied"
)

// PositionedNATS is the nats sink as a transactional sink
// (edge.Transactional): each batch's outputs and a position message
// (Names.OutputPosition: the partition's highest ingest sequence applied,
// and the owner epoch) are one atomic batch publish into the output stream,
// conditional on the position subject's last sequence. A stale owner's
// batch fails that condition once a newer owner's Fence wrote a position;
// a batch whose reply was lost is found applied by the position it
// committed. Outputs carry no Nats-Msg-Id (a duplicate would refuse the
// whole batch): the position makes them exactly once whatever the output
// stream's duplicate window. Consumers of the output stream read
// <prefix>.out.* and never see the positions (<prefix>.outpos.*.*).
type PositionedNATS struct {
	JS    jetstream.JetStream
	Names streams.Names
	// Timeout bounds one atomic batch's commit reply and one fence. Zero
	// means 5 s.
	Timeout time.Duration
	// MaxBatch is the most messages per atomic batch (the server's
	// max_batch_size; the position is one of them). Zero means 1000.
	MaxBatch int
	// Logger receives a warning for each batch not committed. Nil means
	// slog.Default().
	Logger *slog.Logger

	mu    sync.Mutex
	last  map[string]marker // position subject -> its last position, as this sink knows it
	limit int               // the largest output message (sizeLimit); 0 until read
}

// marker is a position message: the position and its stream sequence.
type marker struct {
	pos edge.Position
	seq uint64
}

var _ edge.Transactional = (*PositionedNATS)(nil)

func (s *PositionedNATS) timeout() time.Duration {
	if s.Timeout <= 0 {
		return 5 * time.Second
	}
	return s.Timeout
}

// read returns the last position on subj (zero when none).
func (s *PositionedNATS) read(ctx context.Context, subj, source string) (marker, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	st, err := s.JS.Stream(ctx, s.Names.OutputStream())
	if err != nil {
		return marker{}, err
	}
	m, err := st.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return marker{}, nil
	}
	if err != nil {
		return marker{}, err
	}
	var mk marker
	if src := m.Header.Get(HeaderPositionSource); src != "" && src != source {
		return marker{}, fmt.Errorf("position subject %s holds input %q's position, not %q", subj, src, source)
	}
	mk.seq = m.Sequence
	mk.pos.Epoch, _ = strconv.ParseUint(m.Header.Get(HeaderPositionEpoch), 10, 64)
	mk.pos.Applied, _ = strconv.ParseUint(m.Header.Get(HeaderPositionApplied), 10, 64)
	return mk, nil
}

func (s *PositionedNATS) remember(subj string, m marker, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.last == nil {
		s.last = map[string]marker{}
	}
	if known {
		s.last[subj] = m
	} else {
		delete(s.last, subj)
	}
}

func (s *PositionedNATS) known(subj string) (marker, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.last[subj]
	return m, ok
}

func positionMsg(subj, source string, pos edge.Position) *nats.Msg {
	m := nats.NewMsg(subj)
	m.Header.Set(HeaderPositionSource, source)
	m.Header.Set(HeaderPositionEpoch, strconv.FormatUint(pos.Epoch, 10))
	m.Header.Set(HeaderPositionApplied, strconv.FormatUint(pos.Applied, 10))
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject) // the subject keeps the last position only
	m.Header.Set("Nats-TTL", "never")                             // outlives the stream's MaxAge
	return m
}

// Fence implements edge.Transactional: it writes a position with epoch,
// conditional on the last one, so that no earlier owner's batch (which is
// conditional on the one before) lands after it.
func (s *PositionedNATS) Fence(ctx context.Context, source string, partition int, epoch uint64) (edge.Position, error) {
	subj := s.Names.OutputPosition(source, partition)
	for attempt := 0; ; attempt++ {
		last, err := s.read(ctx, subj, source)
		if err != nil {
			return edge.Position{}, fmt.Errorf("nats fence p%d: %w: %w", partition, edge.ErrUnavailable, err)
		}
		if last.pos.Epoch > epoch {
			return last.pos, fmt.Errorf("nats fence p%d: epoch %d < %d: %w", partition, epoch, last.pos.Epoch, edge.ErrSinkFenced)
		}
		pos := edge.Position{Epoch: epoch, Applied: last.pos.Applied}
		pctx, cancel := context.WithTimeout(ctx, s.timeout())
		ack, err := s.JS.PublishMsg(pctx, positionMsg(subj, source, pos), jetstream.WithExpectLastSequencePerSubject(last.seq))
		cancel()
		if err == nil {
			s.remember(subj, marker{pos: pos, seq: ack.Sequence}, true)
			return pos, nil
		}
		if attempt >= 10 {
			return edge.Position{}, fmt.Errorf("nats fence p%d: %w: %w", partition, edge.ErrUnavailable, err)
		}
		// Another writer's position came first, or the reply was lost:
		// read the last position again.
	}
}

// Handle implements edge.Transactional: per partition, the outputs after
// the position, then the new position, in atomic batches.
func (s *PositionedNATS) Handle(ctx context.Context, evs []event.Event) []error {
	var errs []error
	for _, idx := range event.ByInput(evs) {
		g := make([]event.Event, len(idx))
		for j, i := range idx {
			g[j] = evs[i]
		}
		if tooBig := s.oversized(ctx, g); tooBig != nil {
			// An output the stream would refuse for good (a producer's
			// payload at the ingest limit, plus the output's headers):
			// nothing of the call commits; the edge retries it, dead-letters
			// it, and hands the rest again without it.
			if errs == nil {
				errs = make([]error, len(evs))
			}
			for j, i := range idx {
				errs[i] = tooBig[j]
				if errs[i] == nil {
					errs[i] = fmt.Errorf("output %s: %w: held back with an output too large", evs[i].ID, edge.ErrUnavailable)
				}
			}
			continue
		}
		if err := s.commit(ctx, g); err != nil {
			if !errors.Is(err, edge.ErrSinkFenced) && ctx.Err() == nil {
				lg := s.Logger
				if lg == nil {
					lg = slog.Default()
				}
				lg.Warn("nats sink: batch not committed; the edge retries it", "partition", g[0].Partition, "events", len(g), "err", err)
			}
			if errs == nil {
				errs = make([]error, len(evs))
			}
			for _, i := range idx {
				errs[i] = fmt.Errorf("output %s: %w", evs[i].ID, err)
			}
		}
	}
	return errs
}

// outputOverhead bounds the headers an output carries in an atomic batch
// beyond outputHeader's: the batch's ID and sequence, and on its first
// message the expected sequence and its subject.
const outputOverhead = 256

// oversized returns, when an event's output would exceed the output
// stream's largest message (or the server's largest payload), an error for
// it (and nil for the others); nil when every output fits.
func (s *PositionedNATS) oversized(ctx context.Context, evs []event.Event) []error {
	limit := s.sizeLimit(ctx)
	var errs []error
	for i, ev := range evs {
		size := len(ev.Data) + len(s.Names.Output(ev.Partition)) + outputOverhead
		for k, vs := range outputHeader(ev) {
			for _, v := range vs {
				size += len(k) + len(v) + 4
			}
		}
		if size > limit {
			if errs == nil {
				errs = make([]error, len(evs))
			}
			errs[i] = fmt.Errorf("output %s: %d bytes with its headers, more than the output stream takes (%d)", ev.ID, size, limit)
		}
	}
	return errs
}

// sizeLimit is the largest output message: the output stream's limit
// (read once) or the server's largest payload, whichever is smaller.
func (s *PositionedNATS) sizeLimit(ctx context.Context) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit > 0 {
		return s.limit
	}
	limit := int(s.JS.Conn().MaxPayload())
	st, err := s.JS.Stream(ctx, s.Names.OutputStream())
	if err != nil {
		return limit // not cached: read again next time
	}
	if m := int(st.CachedInfo().Config.MaxMsgSize); m > 0 && m < limit {
		limit = m
	}
	s.limit = limit
	return limit
}

// commit publishes one partition's events (in ingest order) and their
// position.
func (s *PositionedNATS) commit(ctx context.Context, evs []event.Event) error {
	source, p := evs[0].Source, evs[0].Partition
	if source == "" {
		// Handed events outside the contract (in a chain): the position
		// would skip a retried event below it. Refused, never skipped.
		return errors.New("positioned nats sink used without the transactional contract (it must be the edge's only sink)")
	}
	subj := s.Names.OutputPosition(source, p)
	var epoch uint64
	for _, ev := range evs {
		epoch = max(epoch, ev.Epoch)
	}
	last, ok := s.known(subj)
	if !ok {
		var err error
		if last, err = s.read(ctx, subj, source); err != nil {
			return fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
		}
		s.remember(subj, last, true)
	}
	if last.pos.Epoch > epoch {
		return fmt.Errorf("p%d epoch %d < %d: %w", p, epoch, last.pos.Epoch, edge.ErrSinkFenced)
	}
	var todo []event.Event
	for _, ev := range evs {
		if ev.StreamSeq > last.pos.Applied {
			todo = append(todo, ev) // at or below: applied already (a retry after a lost reply)
		}
	}
	size := s.MaxBatch
	if size <= 0 {
		size = 1000
	}
	for len(todo) > 0 {
		chunk := todo[:min(len(todo), size-1)]
		todo = todo[len(chunk):]
		pos := edge.Position{Epoch: epoch, Applied: last.pos.Applied}
		for _, ev := range chunk {
			pos.Applied = max(pos.Applied, ev.StreamSeq)
		}
		seq, err := s.publishAtomic(ctx, chunk, subj, source, pos, last.seq)
		if err != nil {
			// What landed is what the position says.
			now, rerr := s.read(ctx, subj, source)
			switch {
			case rerr != nil:
				s.remember(subj, marker{}, false)
				return fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
			case now.pos.Epoch > epoch:
				return fmt.Errorf("p%d epoch %d < %d: %w", p, epoch, now.pos.Epoch, edge.ErrSinkFenced)
			case now.pos == pos && now.seq > last.seq:
				seq = now.seq // it landed; its reply was lost
			default:
				s.remember(subj, now, true)
				return fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
			}
		}
		last = marker{pos: pos, seq: seq}
		s.remember(subj, last, true)
	}
	return nil
}

// batchReply is JetStream's reply to an atomic batch's commit.
type batchReply struct {
	Seq   uint64 `json:"seq"`
	Error *struct {
		Code        int    `json:"code"`
		ErrCode     int    `json:"err_code"`
		Description string `json:"description"`
	} `json:"error"`
}

// publishAtomic publishes evs' outputs and the position pos on subj as one
// atomic batch, conditional on subj's last sequence being after, and
// returns the position message's sequence.
func (s *PositionedNATS) publishAtomic(ctx context.Context, evs []event.Event, subj, source string, pos edge.Position, after uint64) (uint64, error) {
	nc := s.JS.Conn()
	id := nuid.Next()
	n := 0
	stamp := func(m *nats.Msg) {
		n++
		m.Header.Set("Nats-Batch-Id", id)
		m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(n))
		if n == 1 {
			m.Header.Set(jetstream.ExpectedLastSubjSeqHeader, strconv.FormatUint(after, 10))
			m.Header.Set("Nats-Expected-Last-Subject-Sequence-Subject", subj)
		}
	}
	for _, ev := range evs {
		hdr := outputHeader(ev)
		hdr.Del(event.HeaderMsgID)
		if ev.Uncertain {
			hdr.Set(event.HeaderUncertain, "true")
		}
		m := &nats.Msg{Subject: s.Names.Output(ev.Partition), Header: hdr, Data: ev.Data}
		stamp(m)
		if err := nc.PublishMsg(m); err != nil {
			return 0, err
		}
	}
	m := positionMsg(subj, source, pos)
	stamp(m)
	m.Header.Set("Nats-Batch-Commit", "1")
	rctx, cancel := context.WithTimeout(ctx, s.timeout())
	defer cancel()
	resp, err := nc.RequestMsgWithContext(rctx, m)
	if err != nil {
		return 0, err
	}
	var r batchReply
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return 0, fmt.Errorf("batch reply %q: %w", resp.Data, err)
	}
	if r.Error != nil {
		return 0, fmt.Errorf("batch refused: %s (%d)", r.Error.Description, r.Error.ErrCode)
	}
	return r.Seq, nil
}
