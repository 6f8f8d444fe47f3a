// Package claimlog is the region's authoritative idempotency store: one
// JetStream subject per partition holding dedupe.Records, appended only with
// Nats-Expected-Last-Subject-Sequence so that a stale owner loses the
// compare-and-set and is fenced.
package claimlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/onceplane/onceplane/dedupe"
	"github.com/onceplane/onceplane/internal/poll"
	"github.com/onceplane/onceplane/jetstream/healconn"
	"github.com/onceplane/onceplane/jetstream/streams"
	"github.com/onceplane/onceplane/telemetry"
)

// ErrFenced means another writer appended to the partition's claim log since
// this writer's last append or read: the caller must stop owning the partition.
var ErrFenced = errors.New("fenced: the claim log moved on")

// appendTimeout bounds one publish attempt of Append.
const appendTimeout = 5 * time.Second

// Log appends to and replays one region's claim logs.
type Log struct {
	js      jetstream.JetStream
	names   streams.Names
	streams []jetstream.Stream // by shard
	// appendTo is partition p's append subject: names.Claims(p), or a
	// failover's input subject that the stream stores as names.Claims(p).
	appendTo func(p int) string
	heal     *healconn.Healer
	// Foreign, when set, is told of every message on a claim subject that
	// is not a record (dedupe.ErrForeign: no edge wrote it) as Replay and
	// Append skip it. Nil means skip silently.
	Foreign func(p int, seq uint64)
}

func (l *Log) foreign(p int, seq uint64) {
	if l.Foreign != nil {
		l.Foreign(p, seq)
	}
}

// Open binds to the region's claim streams, one per shard of names.
func Open(ctx context.Context, js jetstream.JetStream, names streams.Names) (*Log, error) {
	return open(ctx, js, names, names.ClaimShard, names.Claims)
}

// OpenFailover binds to region of's claim log as continued in region host
// after a failover: host's promoted standby claim streams (streams.Promote),
// which hold of's records with of's sequences and subjects, appended to on
// host's input subjects (Names.FailoverClaims). Reads, replays and
// conditional appends work as on of's own log.
func OpenFailover(ctx context.Context, js jetstream.JetStream, host, of streams.Names) (*Log, error) {
	return open(ctx, js, of,
		func(sh int) string { return host.StandbyClaimShard(of.Region, sh) },
		func(p int) string { return host.FailoverClaims(of.Region, p) })
}

func open(ctx context.Context, js jetstream.JetStream, names streams.Names, shard func(int) string, appendTo func(int) string) (*Log, error) {
	l := &Log{js: js, names: names, appendTo: appendTo, heal: healconn.New(js.Conn(), 0)}
	for sh := range names.ShardCount() {
		s, err := js.Stream(ctx, shard(sh))
		if err != nil {
			return nil, fmt.Errorf("claim stream %s: %w", shard(sh), err)
		}
		l.streams = append(l.streams, s)
	}
	return l, nil
}

// FencedBy returns the region this log was failed over to when it was
// opened, if any shard of it was ("" when none was: streams.Fence; a
// failback remakes one shard after another).
func (l *Log) FencedBy() string {
	for _, s := range l.streams {
		if by := streams.FencedBy(s.CachedInfo().Config); by != "" {
			return by
		}
	}
	return ""
}

// fencedNow reads partition p's claim stream's configuration afresh and
// returns the region it was failed over to ("" when it is not fenced, or
// cannot be read within 2 s).
func (l *Log) fencedNow(ctx context.Context, p int) string {
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	info, err := l.streams[l.names.ShardOf(p)].Info(ictx)
	if err != nil {
		return ""
	}
	by := streams.FencedBy(info.Config)
	if by == "failing back" {
		return "" // a failback remaking the log: appends resume after it
	}
	return by
}

// streamOf is the name of the stream holding partition p's log.
func (l *Log) streamOf(p int) string { return l.streams[l.names.ShardOf(p)].CachedInfo().Config.Name }

// IsWrongLast reports whether err is JetStream refusing a publish whose
// expected last sequence (Nats-Expected-Last-Subject-Sequence) is not the
// subject's: a compare-and-set that lost.
func IsWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// Append appends rec to partition p's log, conditional on the log's last
// sequence being expected, and returns the record's sequence. A lost
// compare-and-set returns ErrFenced. An ambiguous failure (timeout, core node
// down) is resolved by reading the log back, retrying until ctx ends, so a
// record is never appended twice nor reported lost when it landed.
func (l *Log) Append(ctx context.Context, p int, expected uint64, rec dedupe.Record) (uint64, error) {
	data, err := rec.Append(nil)
	if err != nil {
		return 0, fmt.Errorf("claim p%d: %w", p, err)
	}
	subj := l.appendTo(p)
	timeout := appendTimeout
	// The record carries the appender's trace context: an owner in another
	// region that merges it continues the trace (cross-region replication).
	hdr := nats.Header{}
	telemetry.Propagator().Inject(ctx, telemetry.HeaderCarrier(hdr))
	if len(hdr) == 0 {
		hdr = nil
	}
	b := poll.Backoff(20*time.Millisecond, time.Second)
	for {
		actx, cancel := context.WithTimeout(ctx, timeout)
		ack, err := l.js.PublishMsg(actx, &nats.Msg{Subject: subj, Header: hdr, Data: data}, jetstream.WithExpectLastSequencePerSubject(expected))
		cancel()
		l.heal.Observe(err)
		if err == nil {
			return ack.Sequence, nil
		}
		if ctx.Err() != nil {
			return 0, fmt.Errorf("claim p%d: %w", p, ctx.Err())
		}
		// Whether the append landed or not, the log now says what happened.
		last, lastData, rerr := l.last(ctx, p)
		switch {
		case rerr != nil:
			// Cannot tell yet (core down or electing): wait and ask again.
		case last > expected && bytes.Equal(lastData, data):
			return last, nil // our append landed; its ack was lost
		case last == expected && errors.Is(err, jetstream.ErrNoStreamResponse):
			// No stream takes the append: the region failed over while
			// this edge ran (regionwatch.Guard fenced the log)? Otherwise
			// a core still starting: wait and try again.
			if by := l.fencedNow(ctx, p); by != "" {
				return 0, fmt.Errorf("claim p%d: the log was failed over to %s: %w", p, by, ErrFenced)
			}
		case last == 0 && expected > 0 && IsWrongLast(err):
			// Every record of this partition aged out of the log (idle for
			// longer than the window): start the subject again from 0. Any
			// other writer doing the same loses this compare-and-set.
			expected = 0
			continue
		case last != expected:
			// Read what came after expected: this append (landed, its ack
			// lost, with foreign bytes after it), foreign bytes only (no
			// edge wrote them: append after them), or another writer's
			// record (fenced).
			t, ferr := l.tail(ctx, p, expected, last, data)
			switch {
			case ferr == nil && t.ours > 0:
				return t.ours, nil
			case ferr == nil && t.foreignOnly:
				expected = last
				continue
			}
			return 0, fmt.Errorf("claim p%d: expected last %d, log at %d: %w", p, expected, last, ErrFenced)
		}
		if poll.Sleep(ctx, b.NextBackOff()) != nil {
			return 0, fmt.Errorf("claim p%d: %w", p, ctx.Err())
		}
	}
}

// last returns the sequence and data of partition p's last record (0 when
// none).
func (l *Log) last(ctx context.Context, p int) (uint64, []byte, error) {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	m, err := l.streams[l.names.ShardOf(p)].GetLastMsgForSubject(gctx, l.names.Claims(p))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil, nil
	}
	if err != nil {
		return 0, nil, err
	}
	return m.Sequence, m.Data, nil
}

// LastSeq returns the sequence of partition p's last record, 0 when it has none.
func (l *Log) LastSeq(ctx context.Context, p int) (uint64, error) {
	seq, _, err := l.last(ctx, p)
	if err != nil {
		return 0, fmt.Errorf("claim p%d last: %w", p, err)
	}
	return seq, nil
}

// tailState is what follows a sequence in a partition's log.
type tailState struct {
	// ours is the sequence of a record equal to the caller's (0: none
	// before another writer's record).
	ours uint64
	// foreignOnly is true when every message is foreign.
	foreignOnly bool
}

// tail reads partition p's log after sequence from, through last, up to
// the first record that is not foreign: it is ours when its bytes equal
// mine (no other writer writes the same writer and epoch). Foreign
// messages are told to l.Foreign when the tail holds nothing else.
func (l *Log) tail(ctx context.Context, p int, from, last uint64, mine []byte) (tailState, error) {
	var t tailState
	var seen []uint64
	other := false
	_, err := l.read(ctx, p, from, last, func(seq uint64, data []byte, _ time.Time) error {
		if _, err := dedupe.Decode(data); errors.Is(err, dedupe.ErrForeign) {
			seen = append(seen, seq)
			return nil
		}
		if mine != nil && bytes.Equal(data, mine) {
			t.ours = seq
		} else {
			other = true
		}
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return tailState{}, err
	}
	if t.ours == 0 && !other {
		t.foreignOnly = true
		for _, seq := range seen {
			l.foreign(p, seq)
		}
	}
	return t, nil
}

// MovedOn reports whether partition p's log holds another writer's record
// after sequence from, and the log's last sequence. Foreign messages
// (reported to l.Foreign) do not count: no writer put them there.
func (l *Log) MovedOn(ctx context.Context, p int, from uint64) (bool, uint64, error) {
	last, err := l.LastSeq(ctx, p)
	if err != nil || last <= from {
		return false, last, err
	}
	t, err := l.tail(ctx, p, from, last, nil)
	if err != nil {
		return false, last, fmt.Errorf("claim p%d: %w", p, err)
	}
	return !t.foreignOnly, last, nil
}

// errStop ends a read early.
var errStop = errors.New("stop")

// Replay calls fn, in order, for each record of partition p after sequence
// from, up to the log's last record when Replay starts, with the time the
// claim stream stored it (the time the record's IDs are judged on, never the
// writer's clock). It returns the last sequence read, foreign messages
// included (from when there was none): an owner's next append is
// conditional on it (dedupe.State.Foreign). A foreign message (not a
// record: no edge wrote it) is skipped and reported to l.Foreign; a record
// that does not decode otherwise stops the replay with an error: an owner
// must not decide on a log it cannot read.
func (l *Log) Replay(ctx context.Context, p int, from uint64, fn func(seq uint64, r dedupe.Record, stored time.Time)) (uint64, error) {
	last, err := l.LastSeq(ctx, p)
	if err != nil {
		return from, err
	}
	return l.read(ctx, p, from, last, func(seq uint64, data []byte, stored time.Time) error {
		rec, err := dedupe.Decode(data)
		switch {
		case errors.Is(err, dedupe.ErrForeign):
			l.foreign(p, seq)
		case err != nil:
			return fmt.Errorf("claim p%d seq %d: %w", p, seq, err)
		default:
			fn(seq, rec, stored)
		}
		return nil
	})
}

// read calls fn, in order, for each message of partition p's log after
// sequence from through last, and returns the last sequence fn accepted.
func (l *Log) read(ctx context.Context, p int, from, last uint64, fn func(seq uint64, data []byte, stored time.Time) error) (uint64, error) {
	subj := l.names.Claims(p)
	if last <= from {
		return from, nil
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, DeliverPolicy: jetstream.DeliverAllPolicy, InactiveThreshold: streams.ReaderInactive}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from+1
	}
	cons, err := l.js.OrderedConsumer(ctx, l.streamOf(p), cfg)
	if err != nil {
		return from, fmt.Errorf("claim p%d replay: %w", p, err)
	}
	defer streams.DropConsumer(l.js, l.streamOf(p), cons)
	it, err := cons.Messages(jetstream.PullMaxMessages(4096))
	if err != nil {
		return from, fmt.Errorf("claim p%d replay: %w", p, err)
	}
	defer it.Stop()
	seq := from
	for seq < last {
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return seq, fmt.Errorf("claim p%d replay at %d: %w", p, seq, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return seq, fmt.Errorf("claim p%d replay metadata: %w", p, err)
		}
		if err := fn(md.Sequence.Stream, m.Data(), md.Timestamp); err != nil {
			return seq, err
		}
		seq = md.Sequence.Stream
	}
	return seq, nil
}

// CarrySuperseded is streams.FailBackOptions.Carry for claim logs: it
// decodes partition p's superseded records and the failover's last record
// and encodes what dedupe.Carry makes of them. Bytes that are not a record
// carry nothing.
func CarrySuperseded(p int, superseded [][]byte, last []byte) ([][]byte, error) {
	var recs []dedupe.Record
	for _, b := range superseded {
		if r, err := dedupe.Decode(b); err == nil {
			recs = append(recs, r)
		}
	}
	var lr dedupe.Record
	if r, err := dedupe.Decode(last); err == nil {
		lr = r // else no record there yet: epoch 0
	}
	var out [][]byte
	for _, r := range dedupe.Carry(recs, lr) {
		b, err := r.Append(nil)
		if err != nil {
			return nil, fmt.Errorf("carry p%d: %w", p, err)
		}
		out = append(out, b)
	}
	return out, nil
}
