// Package pgsink is a transactional sink on PostgreSQL (edge.Transactional):
// each batch is one transaction that applies the events' effects and moves
// the partition's position (the highest ingest sequence applied, and the
// owner epoch), so that a takeover knows exactly which of the last owner's
// events were applied, and a stale owner's transaction is refused.
//
// An event's effect is, by default, an upsert into a table keyed by the
// event's key with an apply counter (so a second effect would show as
// applies = 2); or the user's SQL statement, run once per event with named
// arguments:
//
//	@id, @tenant       the event's ID and tenant
//	@payload           its data (bytea)
//	@headers           its headers (jsonb: name -> list of values)
//	@partition, @seq   its partition and ingest sequence
//	@epoch             the owner epoch applying it
//	@uncertain         true when the edge could not rule out an earlier run
//
// The sink's own table is <prefix>_positions (one row per input and
// partition). A batch with an event the statement refuses for good
// (SQLSTATE class 22 or 23) commits nothing: the edge retries the refused
// event, dead-letters it, and hands the others again without it.
package pgsink

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/onceplane/onceplane/edge"
	"github.com/onceplane/onceplane/event"
)

// Options configure a Sink. Only URL is required.
type Options struct {
	// URL is the database's connection string (postgres://user@host:port/db).
	URL string
	// Table receives the events when Statement is empty. Zero means
	// "onceplane_events". Made if missing.
	Table string
	// Statement is the user's effect, run once per event (the named
	// arguments are in the package comment). Empty means the default
	// upsert into Table.
	Statement string
	// Prefix names the sink's own tables. Zero means "onceplane".
	Prefix string
	// IdleInTransaction is how long PostgreSQL keeps a transaction whose
	// client has gone quiet (a paused owner holding its partition's
	// position row) before ending its session: a takeover's fence waits at
	// most about that long. Zero means 10 s.
	IdleInTransaction time.Duration
	// Timeout bounds one batch's transaction and one fence. Zero means 30 s.
	Timeout time.Duration
	// MaxConns bounds the connection pool. Zero means 8.
	MaxConns int32
	// Logger receives warnings. Nil means slog.Default().
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Table == "" {
		o.Table = "onceplane_events"
	}
	if o.Prefix == "" {
		o.Prefix = "onceplane"
	}
	if o.IdleInTransaction <= 0 {
		o.IdleInTransaction = 10 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Sink applies batches to PostgreSQL. It is safe for concurrent use (one
// edge calls it from each partition's goroutine).
type Sink struct {
	o         Options
	pool      *pgxpool.Pool
	statement string
	positions string // quoted table name

	beforeCommit func() // tests: runs inside each batch's transaction, before its commit
}

var _ edge.Transactional = (*Sink)(nil)

// Open connects to the database and makes the sink's tables (and the
// default events table) if they are missing.
func Open(ctx context.Context, o Options) (*Sink, error) {
	o = o.withDefaults()
	if o.URL == "" {
		return nil, errors.New("pgsink: no URL")
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		return nil, fmt.Errorf("pgsink: %w", err)
	}
	cfg.MaxConns = o.MaxConns
	// An owner that stops talking inside its transaction holds its
	// partition's position row: PostgreSQL ends the transaction when it
	// went quiet between statements (idle_in_transaction_session_timeout),
	// in the middle of one (statement_timeout), or behind a dead connection
	// (keepalives), so that a takeover's fence waits a bounded time.
	cfg.ConnConfig.RuntimeParams["idle_in_transaction_session_timeout"] = strconv.FormatInt(o.IdleInTransaction.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(o.Timeout.Milliseconds(), 10)
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_idle"] = "10"
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_interval"] = "5"
	cfg.ConnConfig.RuntimeParams["tcp_keepalives_count"] = "3"
	cfg.ConnConfig.RuntimeParams["application_name"] = "onceplane-edge"
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgsink: %w", err)
	}
	s := &Sink{
		o: o, pool: pool,
		positions: pgx.Identifier{o.Prefix + "_positions"}.Sanitize(),
	}
	table := pgx.Identifier{o.Table}.Sanitize()
	s.statement = o.Statement
	if s.statement == "" {
		s.statement = `INSERT INTO ` + table + ` AS t (tenant, id, partition, seq, epoch, payload, headers, uncertain)
VALUES (@tenant, @id, @partition, @seq, @epoch, @payload, @headers, @uncertain)
ON CONFLICT (tenant, id) DO UPDATE SET applies = t.applies + 1, seq = EXCLUDED.seq, epoch = EXCLUDED.epoch,
  uncertain = EXCLUDED.uncertain, last_applied = now()`
	}
	ddl := []string{
		`CREATE TABLE IF NOT EXISTS ` + s.positions + ` (
  source text NOT NULL, partition int NOT NULL, epoch bigint NOT NULL, applied bigint NOT NULL,
  updated timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (source, partition))`,
	}
	if o.Statement == "" {
		ddl = append(ddl, `CREATE TABLE IF NOT EXISTS `+table+` (
  tenant text NOT NULL, id text NOT NULL, partition int NOT NULL, seq bigint NOT NULL, epoch bigint NOT NULL,
  payload bytea, headers jsonb, uncertain bool NOT NULL, applies int NOT NULL DEFAULT 1,
  first_applied timestamptz NOT NULL DEFAULT now(), last_applied timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant, id))`)
	}
	// CREATE TABLE IF NOT EXISTS fails against a concurrent one: edges
	// starting together make the tables one at a time.
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('onceplane-pgsink-tables'))`); err != nil {
			return err
		}
		for _, q := range ddl {
			if _, err := tx.Exec(ctx, q); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("pgsink: tables: %w", err)
	}
	return s, nil
}

// Close closes the connection pool.
func (s *Sink) Close() { s.pool.Close() }

// Fence makes epoch the owner epoch of (source, partition), unless the
// database holds a later one, and returns the position. It waits for a
// transaction of an earlier owner that holds the position row (until it
// commits, or PostgreSQL ends it after IdleInTransaction), so that no such
// transaction commits after it.
func (s *Sink) Fence(ctx context.Context, source string, partition int, epoch uint64) (edge.Position, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	var pos edge.Position
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL lock_timeout = "+strconv.FormatInt((2*s.o.IdleInTransaction).Milliseconds(), 10)); err != nil {
			return err
		}
		var e, applied int64
		err := tx.QueryRow(ctx, `INSERT INTO `+s.positions+` AS p (source, partition, epoch, applied) VALUES ($1, $2, $3, 0)
ON CONFLICT (source, partition) DO UPDATE SET epoch = GREATEST(p.epoch, EXCLUDED.epoch), updated = now()
RETURNING epoch, applied`, source, partition, int64(epoch)).Scan(&e, &applied)
		pos = edge.Position{Epoch: uint64(e), Applied: uint64(applied)}
		return err
	})
	if err != nil {
		return pos, fmt.Errorf("pgsink fence %s p%d: %w", source, partition, unavailable(err))
	}
	if pos.Epoch > epoch {
		return pos, fmt.Errorf("pgsink fence %s p%d: epoch %d < %d: %w", source, partition, epoch, pos.Epoch, edge.ErrSinkFenced)
	}
	return pos, nil
}

// Position returns what the database holds for (source, partition),
// without fencing anything (zero when nothing was applied).
func (s *Sink) Position(ctx context.Context, source string, partition int) (edge.Position, error) {
	var e, applied int64
	err := s.pool.QueryRow(ctx, `SELECT epoch, applied FROM `+s.positions+` WHERE source = $1 AND partition = $2`, source, partition).Scan(&e, &applied)
	if errors.Is(err, pgx.ErrNoRows) {
		return edge.Position{}, nil
	}
	return edge.Position{Epoch: uint64(e), Applied: uint64(applied)}, err
}

// Handle applies one batch: per (source, partition) of its events, one
// transaction. Events without a source (the sink used where the edge keeps
// no positions, in a chain) are applied in a transaction of their own
// without a position: at least once.
func (s *Sink) Handle(ctx context.Context, evs []event.Event) []error {
	errs := make([]error, len(evs))
	failed := false
	for _, idx := range event.ByInput(evs) {
		g := make([]event.Event, len(idx))
		for j, i := range idx {
			g[j] = evs[i]
		}
		for j, err := range s.apply(ctx, groupKey{g[0].Source, g[0].Partition}, g) {
			if err != nil {
				errs[idx[j]], failed = err, true
			}
		}
	}
	if !failed {
		return nil
	}
	return errs
}

type groupKey struct {
	source    string
	partition int
}

// apply runs one group's transaction: the fast path sends every statement
// at once; when a statement refuses an event for good, the transaction is
// rolled back and run again one event at a time behind savepoints, to learn
// every event refused, and rolled back again: nothing of a batch with a
// refused event commits. The refused events fail (the edge retries them,
// then dead-letters each before it hands the others again); the others fail
// as unavailable, to be handed again without them.
func (s *Sink) apply(ctx context.Context, k groupKey, evs []event.Event) []error {
	errs, err := s.tx(ctx, k, evs, false)
	if errors.Is(err, errRefused) {
		errs, err = s.tx(ctx, k, evs, true)
	}
	switch {
	case errors.Is(err, errRefused):
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("pgsink %s: %w: rolled back with its batch's refused event", evs[i].ID, edge.ErrUnavailable)
			}
		}
		return errs
	case err != nil:
		if !errors.Is(err, edge.ErrSinkFenced) {
			s.o.Logger.Warn("postgres sink: batch not applied; the edge retries it", "partition", k.partition, "events", len(evs), "err", err)
		}
		errs = make([]error, len(evs))
		for i := range errs {
			errs[i] = fmt.Errorf("pgsink %s: %w", evs[i].ID, err)
		}
		return errs
	}
	return nil
}

// errRefused ends a transaction that a statement refused an event in.
var errRefused = errors.New("a statement refused an event")

// tx is one transaction of group k; its error is for the whole group (the
// transaction did not commit). With slow, errRefused comes with the
// refusal of each event refused.
func (s *Sink) tx(ctx context.Context, k groupKey, evs []event.Event, slow bool) ([]error, error) {
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	errs := make([]error, len(evs))
	var epoch, last uint64
	for _, ev := range evs {
		epoch, last = max(epoch, ev.Epoch), max(last, ev.StreamSeq)
	}
	positioned := k.source != ""
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		todo := make([]bool, len(evs))
		for i := range todo {
			todo[i] = true
		}
		if positioned {
			var held, applied int64
			err := tx.QueryRow(ctx, `SELECT epoch, applied FROM `+s.positions+` WHERE source = $1 AND partition = $2 FOR UPDATE`, k.source, k.partition).Scan(&held, &applied)
			switch {
			case errors.Is(err, pgx.ErrNoRows):
				// Not fenced yet (the table emptied): the row starts here.
				if _, err := tx.Exec(ctx, `INSERT INTO `+s.positions+` (source, partition, epoch, applied) VALUES ($1, $2, $3, 0)`, k.source, k.partition, int64(epoch)); err != nil {
					return err
				}
			case err != nil:
				return err
			case uint64(held) > epoch:
				return fmt.Errorf("p%d epoch %d < %d: %w", k.partition, epoch, held, edge.ErrSinkFenced)
			default:
				for i, ev := range evs {
					// At or below the position: applied already (a retry
					// after a commit whose reply was lost).
					todo[i] = ev.StreamSeq > uint64(applied)
				}
			}
		}
		if slow {
			refused := false
			for i, ev := range evs {
				if !todo[i] {
					continue
				}
				err := s.applyOne(ctx, tx, ev)
				switch {
				case err == nil:
				case isRefusal(err):
					errs[i], refused = fmt.Errorf("pgsink %s refused: %w", ev.ID, err), true
				default:
					return err
				}
			}
			if refused {
				return errRefused
			}
		} else {
			b := &pgx.Batch{}
			for i, ev := range evs {
				if todo[i] {
					b.Queue(s.statement, args(ev))
				}
			}
			if err := tx.SendBatch(ctx, b).Close(); err != nil {
				if isRefusal(err) {
					return errRefused
				}
				return err
			}
		}
		if positioned {
			if _, err := tx.Exec(ctx, `UPDATE `+s.positions+` SET epoch = $3, applied = GREATEST(applied, $4), updated = now() WHERE source = $1 AND partition = $2`,
				k.source, k.partition, int64(epoch), int64(last)); err != nil {
				return err
			}
		}
		if s.beforeCommit != nil {
			s.beforeCommit()
		}
		return nil
	})
	switch {
	case err == nil:
		return nil, nil
	case errors.Is(err, errRefused):
		return errs, err
	case errors.Is(err, edge.ErrSinkFenced):
		return nil, err
	}
	return nil, unavailable(err)
}

// applyOne applies ev behind a savepoint, rolled back to on a refusal.
func (s *Sink) applyOne(ctx context.Context, tx pgx.Tx, ev event.Event) error {
	if _, err := tx.Exec(ctx, "SAVEPOINT onceplane_event"); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, s.statement, args(ev))
	if err == nil {
		_, err = tx.Exec(ctx, "RELEASE SAVEPOINT onceplane_event")
		return err
	}
	if isRefusal(err) {
		if _, rerr := tx.Exec(ctx, "ROLLBACK TO SAVEPOINT onceplane_event"); rerr != nil {
			return rerr
		}
	}
	return err
}

// args are an event's named arguments.
func args(ev event.Event) pgx.NamedArgs {
	hdr := []byte("{}")
	if len(ev.Headers) > 0 {
		hdr, _ = json.Marshal(ev.Headers)
	}
	tenant := ev.Tenant
	if tenant == "" {
		tenant = event.DefaultTenant
	}
	payload := ev.Data
	if payload == nil {
		payload = []byte{}
	}
	return pgx.NamedArgs{
		"id": ev.ID, "tenant": tenant, "payload": payload, "headers": string(hdr),
		"partition": ev.Partition, "seq": int64(ev.StreamSeq), "epoch": int64(ev.Epoch), "uncertain": ev.Uncertain,
	}
}

// isRefusal reports whether err is PostgreSQL refusing the event itself
// (a data exception, class 22, or a constraint, class 23): retrying the
// same event cannot help until something else changes.
func isRefusal(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// unavailable marks every other failure as the sink being unavailable:
// the batch is retried until it clears. A statement wrong for the schema
// (class 42) is among them: the partition waits for the operator instead of
// dead-lettering every event.
func unavailable(err error) error {
	if errors.Is(err, edge.ErrSinkFenced) || errors.Is(err, edge.ErrUnavailable) {
		return err
	}
	return fmt.Errorf("%w: %w", edge.ErrUnavailable, err)
}
