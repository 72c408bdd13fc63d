package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// StoreOptions configures a [Store].
type StoreOptions struct {
	// Table is the outbox table (default [DefaultOutboxTable]): a letter or
	// underscore followed by up to 47 letters, digits or underscores, not
	// starting with "sqlite_". Its indexes are named after it.
	Table string
	// Clock tells the store the time (default outbox.SystemClock()). The
	// store reads the time only from it; give the relay the same clock.
	Clock outbox.Clock
}

// Store is an [outbox.Store] in a table of a SQLite database. It writes
// Add in the transaction of [DB.InTx] carried by the context; its other
// writes (claims, marks, administration) each run in a short write
// transaction of their own. It implements [outbox.Transactor] (its DB's)
// and [outbox.Notifier] (in process). It is safe for concurrent use, and
// several processes may use one database file.
type Store struct {
	db    *DB
	table string
	clock outbox.Clock
	hub   *hub
	q     storeQueries
}

var (
	_ outbox.Store      = (*Store)(nil)
	_ outbox.Transactor = (*Store)(nil)
	_ outbox.Notifier   = (*Store)(nil)
)

// NewStore returns the outbox store of db in opts.Table. It reports every
// problem with its arguments at once, each matching [ErrInvalidOptions].
// Create the table with [Store.EnsureSchema] or a migration tool
// ([SchemaFS], [OutboxSchema]).
func NewStore(db *DB, opts StoreOptions) (*Store, error) {
	var errs []error
	if db == nil {
		errs = append(errs, fmt.Errorf("%w: nil *DB", ErrInvalidOptions))
	}
	if opts.Table == "" {
		opts.Table = DefaultOutboxTable
	}
	if err := validTable("Table", opts.Table); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = outbox.SystemClock()
	}
	return &Store{
		db:    db,
		table: opts.Table,
		clock: opts.Clock,
		hub:   db.hub(opts.Table),
		q:     newStoreQueries(opts.Table),
	}, nil
}

// Table returns the store's table name.
func (s *Store) Table() string { return s.table }

// EnsureSchema creates the store's table and indexes if they do not exist
// (see [OutboxSchema]). It runs in a write transaction (BEGIN IMMEDIATE),
// so processes that start at once on one file create them once, one after
// the other.
func (s *Store) EnsureSchema(ctx context.Context) error {
	return s.db.ensureSchema(ctx, ddl("schema/outbox.sql", DefaultOutboxTable, s.table))
}

// InTx is the store's [DB.InTx].
func (s *Store) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.InTx(ctx, fn)
}

// Watch implements [outbox.Notifier] in process: wake is called once,
// then after every commit of a transaction of this process that added rows
// to the table (through any store of the same [DB] and table), and after
// Release, Requeue, RequeueAllDead and DeleteDead, which may make rows
// claimable. Commits of other processes are not signalled: relays find
// them at their next poll. Watch returns nil once ctx is done.
func (s *Store) Watch(ctx context.Context, wake func()) error {
	s.hub.watch(ctx, wake)
	return nil
}

// The columns of a row, in the order scanRow reads them.
const rowColumns = `seq, event_id, name, topic, partition_key, event_time, correlation_id, causation_id,
	content_type, headers, payload, state, attempts, last_error, added_at, next_attempt_at,
	lease_owner, lease_until, sent_at`

type storeQueries struct {
	insert, claim, markSent, markFailed, release, get, stats, listDead string
	requeue, requeueAll, deleteDead, deleteSent                        string
}

// newStoreQueries returns the statements of the store on table; they are
// written for the default table name, renamed as the DDL is.
func newStoreQueries(table string) storeQueries {
	q := storeQueries{
		insert: `INSERT INTO "cqrs_outbox" (event_id, name, topic, partition_key, event_time, correlation_id,
	causation_id, content_type, headers, payload, added_at, next_attempt_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)
ON CONFLICT (event_id) DO NOTHING`,
		// A row is claimable when it is due and no earlier unsent row of
		// its key is not due. The earlier rows of its key that are due are
		// then claimable too and come first in Seq order, so they are
		// returned before it by this same statement, or hold it back
		// beyond the limit.
		claim: `UPDATE "cqrs_outbox" SET lease_owner = ?1, lease_until = ?2
WHERE seq IN (
	SELECT o.seq FROM "cqrs_outbox" AS o
	WHERE o.state = 1 AND o.next_attempt_at <= ?3 AND (o.lease_until IS NULL OR o.lease_until <= ?3)
		AND (o.partition_key = '' OR NOT EXISTS (
			SELECT 1 FROM "cqrs_outbox" AS p
			WHERE p.partition_key = o.partition_key AND p.state <> 2 AND p.partition_key <> '' AND p.seq < o.seq
				AND (p.state = 3 OR p.next_attempt_at > ?3 OR p.lease_until > ?3)))
	ORDER BY o.seq
	LIMIT ?4)
RETURNING ` + rowColumns,
		markSent: `UPDATE "cqrs_outbox" SET state = 2, sent_at = ?1, lease_owner = NULL, lease_until = NULL
WHERE event_id IN (SELECT value FROM json_each(?2)) AND state = 1 AND lease_owner = ?3
RETURNING event_id`,
		markFailed: `UPDATE "cqrs_outbox" SET attempts = attempts + 1, last_error = ?1, lease_owner = NULL, lease_until = NULL,
	state = CASE WHEN ?2 THEN 3 ELSE state END,
	next_attempt_at = CASE WHEN ?2 THEN next_attempt_at ELSE ?3 END
WHERE event_id = ?4 AND state = 1 AND lease_owner = ?5`,
		release: `UPDATE "cqrs_outbox" SET lease_owner = NULL, lease_until = NULL
WHERE event_id IN (SELECT value FROM json_each(?1)) AND state = 1 AND lease_owner = ?2
RETURNING event_id`,
		get: `SELECT ` + rowColumns + ` FROM "cqrs_outbox" WHERE event_id = ?1`,
		stats: `SELECT
	(SELECT count(*) FROM "cqrs_outbox" WHERE state = 1),
	(SELECT count(*) FROM "cqrs_outbox" WHERE state = 1 AND lease_until > ?1),
	(SELECT count(*) FROM "cqrs_outbox" WHERE state = 2),
	(SELECT count(*) FROM "cqrs_outbox" WHERE state = 3),
	(SELECT min(added_at) FROM "cqrs_outbox" WHERE state = 1)`,
		listDead: `SELECT ` + rowColumns + ` FROM "cqrs_outbox" WHERE state = 3 AND seq > ?1 ORDER BY seq LIMIT ?2`,
		requeue: `UPDATE "cqrs_outbox" SET state = 1, attempts = 0, next_attempt_at = ?1, lease_owner = NULL, lease_until = NULL
WHERE event_id IN (SELECT value FROM json_each(?2)) AND state = 3`,
		requeueAll: `UPDATE "cqrs_outbox" SET state = 1, attempts = 0, next_attempt_at = ?1, lease_owner = NULL, lease_until = NULL
WHERE state = 3`,
		deleteDead: `DELETE FROM "cqrs_outbox" WHERE event_id IN (SELECT value FROM json_each(?1)) AND state = 3`,
		deleteSent: `DELETE FROM "cqrs_outbox" WHERE seq IN (
	SELECT seq FROM "cqrs_outbox" WHERE state = 2 AND sent_at < ?1 ORDER BY sent_at LIMIT ?2)`,
	}
	for _, p := range []*string{
		&q.insert, &q.claim, &q.markSent, &q.markFailed, &q.release, &q.get, &q.stats, &q.listDead,
		&q.requeue, &q.requeueAll, &q.deleteDead, &q.deleteSent,
	} {
		*p = rename(*p, DefaultOutboxTable, table)
	}
	return q
}

// Add implements [outbox.Adder] in the transaction of the store's [DB]
// that ctx carries. Besides what outbox.ValidateEnvelopes checks, an
// envelope's Timestamp must be zero or within the years 0 to 9999 (it is
// stored as RFC 3339 text). Watchers of the table are signalled once the
// transaction commits.
func (s *Store) Add(ctx context.Context, envs ...wire.Envelope) error {
	st, err := s.db.txOf(ctx)
	if err != nil {
		return err
	}
	if err := validateEnvelopes(envs); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	args := make([][]any, len(envs))
	for i := range envs {
		if args[i], err = s.insertArgs(&envs[i]); err != nil {
			return err
		}
	}
	if len(envs) == 0 {
		return st.do(nil, func(*sql.Tx) error { return nil })
	}
	return st.do(s.hub, func(tx *sql.Tx) error {
		for i := range args {
			if _, err := s.db.exec(ctx, tx, s.q.insert, args[i]...); err != nil {
				return fmt.Errorf("sqlite: outbox add %s: %w", envs[i].ID, err)
			}
		}
		return nil
	})
}

// validateEnvelopes adds the store's own check to outbox.ValidateEnvelopes.
func validateEnvelopes(envs []wire.Envelope) error {
	err := outbox.ValidateEnvelopes(envs)
	for i, e := range envs {
		if y := e.Timestamp.Year(); !e.Timestamp.IsZero() && (y < 0 || y > 9999) {
			err = errors.Join(err, fmt.Errorf("%w: envelope %d (%s): Timestamp %v outside the years 0 to 9999",
				outbox.ErrInvalidEnvelope, i, e.ID, e.Timestamp))
		}
	}
	return err
}

func (s *Store) insertArgs(e *wire.Envelope) ([]any, error) {
	var headers any // NULL for a nil map
	if e.Headers != nil {
		b, err := json.Marshal(e.Headers)
		if err != nil {
			return nil, fmt.Errorf("sqlite: outbox add %s: headers: %w", e.ID, err)
		}
		headers = string(b)
	}
	var eventTime any
	if !e.Timestamp.IsZero() {
		eventTime = e.Timestamp.UTC().Format(time.RFC3339Nano)
	}
	var payload any
	if e.Payload != nil {
		payload = e.Payload
	}
	return []any{
		e.ID.String(), e.Name, e.Topic, e.Key, eventTime, e.CorrelationID, e.CausationID,
		e.ContentType, headers, payload, micros(s.clock.Now()),
	}, nil
}

// Claim implements [outbox.Claimer] with one UPDATE … RETURNING in a write
// transaction.
func (s *Store) Claim(ctx context.Context, owner string, limit int, lease time.Duration) ([]outbox.Row, error) {
	if err := outbox.ValidateClaim(owner, limit, lease); err != nil {
		return nil, err
	}
	var out []outbox.Row
	err := s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		now := s.clock.Now()
		rows, err := s.db.query(ctx, tx, s.q.claim, owner, micros(now.Add(lease)), micros(now), limit)
		if err != nil {
			return fmt.Errorf("sqlite: outbox claim: %w", err)
		}
		out, err = scanRows(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	// RETURNING yields rows in no particular order.
	slices.SortFunc(out, func(a, b outbox.Row) int { return compareInt64(a.Seq, b.Seq) })
	return out, nil
}

func compareInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	default:
		return 0
	}
}

// idsJSON returns ids as a JSON array of strings, for json_each.
func idsJSON(ids []uuid.UUID) string {
	var b strings.Builder
	b.Grow(len(ids)*39 + 2)
	b.WriteByte('[')
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		b.WriteString(id.String())
		b.WriteByte('"')
	}
	b.WriteByte(']')
	return b.String()
}

// leaseErr returns a *outbox.LeaseError for the ids that are not in
// applied, in the order given, or nil.
func leaseErr(owner string, ids []uuid.UUID, applied map[uuid.UUID]struct{}) error {
	var lost []uuid.UUID
	for _, id := range ids {
		if _, ok := applied[id]; !ok {
			lost = append(lost, id)
		}
	}
	if len(lost) == 0 {
		return nil
	}
	return &outbox.LeaseError{Owner: owner, IDs: lost}
}

// markHeld runs query, an UPDATE of the rows of ids owner holds that
// returns their event_id, and reports the others in a *outbox.LeaseError.
// It returns how many rows it updated.
func (s *Store) markHeld(ctx context.Context, op, query string, owner string, ids []uuid.UUID, args ...any) (int, error) {
	if len(ids) == 0 {
		return 0, ctx.Err()
	}
	applied := make(map[uuid.UUID]struct{}, len(ids))
	err := s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		rows, err := s.db.query(ctx, tx, query, args...)
		if err != nil {
			return fmt.Errorf("sqlite: outbox %s: %w", op, err)
		}
		err = readRows(rows, func(rows *sql.Rows) error {
			var id uuid.UUID
			if err := rows.Scan(&id); err != nil {
				return err
			}
			applied[id] = struct{}{}
			return nil
		})
		if err != nil {
			return fmt.Errorf("sqlite: outbox %s: %w", op, err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return len(applied), leaseErr(owner, ids, applied)
}

// MarkSent implements [outbox.Claimer].
func (s *Store) MarkSent(ctx context.Context, owner string, ids ...uuid.UUID) error {
	_, err := s.markHeld(ctx, "mark sent", s.q.markSent, owner, ids, micros(s.clock.Now()), idsJSON(ids), owner)
	return err
}

// Release implements [outbox.Claimer]. Watchers are woken when rows were
// released.
func (s *Store) Release(ctx context.Context, owner string, ids ...uuid.UUID) error {
	n, err := s.markHeld(ctx, "release", s.q.release, owner, ids, idsJSON(ids), owner)
	if n > 0 {
		s.hub.signal()
	}
	return err
}

// MarkFailed implements [outbox.Claimer]: every failure in one write
// transaction.
func (s *Store) MarkFailed(ctx context.Context, owner string, failures ...outbox.Failure) error {
	if err := outbox.ValidateFailures(failures); err != nil {
		return err
	}
	if len(failures) == 0 {
		return ctx.Err()
	}
	var lost []uuid.UUID
	err := s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		lost = lost[:0]
		now := s.clock.Now()
		for _, f := range failures {
			res, err := s.db.exec(ctx, tx, s.q.markFailed, f.Error, f.Dead, micros(now.Add(f.Delay)), f.ID.String(), owner)
			if err != nil {
				return fmt.Errorf("sqlite: outbox mark failed %s: %w", f.ID, err)
			}
			n, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("sqlite: outbox mark failed %s: %w", f.ID, err)
			}
			if n == 0 {
				lost = append(lost, f.ID)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(lost) > 0 {
		return &outbox.LeaseError{Owner: owner, IDs: lost}
	}
	return nil
}

// Get implements [outbox.Admin]. It reads committed rows, outside any
// transaction ctx carries.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (outbox.Row, error) {
	rows, err := s.db.query(ctx, nil, s.q.get, id.String())
	if err != nil {
		return outbox.Row{}, fmt.Errorf("sqlite: outbox get: %w", err)
	}
	out, err := scanRows(rows)
	if err != nil {
		return outbox.Row{}, err
	}
	if len(out) == 0 {
		return outbox.Row{}, fmt.Errorf("%w: %s", outbox.ErrNotFound, id)
	}
	return out[0], nil
}

// Stats implements [outbox.Admin], in one statement (one snapshot).
func (s *Store) Stats(ctx context.Context) (outbox.Stats, error) {
	now := s.clock.Now()
	var (
		st     outbox.Stats
		oldest sql.NullInt64
	)
	err := s.db.sql.QueryRowContext(ctx, s.q.stats, micros(now)).Scan(&st.Pending, &st.Leased, &st.Sent, &st.Dead, &oldest)
	if err != nil {
		return outbox.Stats{}, fmt.Errorf("sqlite: outbox stats: %w", err)
	}
	if oldest.Valid {
		st.OldestPending = fromMicros(oldest.Int64)
		st.Lag = max(now.Sub(st.OldestPending), 0)
	}
	return st, nil
}

// ListDead implements [outbox.Admin].
func (s *Store) ListDead(ctx context.Context, afterSeq int64, limit int) ([]outbox.Row, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return nil, err
	}
	rows, err := s.db.query(ctx, nil, s.q.listDead, afterSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox list dead: %w", err)
	}
	return scanRows(rows)
}

// exec runs query in a write transaction of its own and returns the number
// of rows it changed.
func (s *Store) exec(ctx context.Context, op, query string, args ...any) (int64, error) {
	var n int64
	err := s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, query, args...)
		if err == nil {
			n, err = res.RowsAffected()
		}
		if err != nil {
			return fmt.Errorf("sqlite: outbox %s: %w", op, err)
		}
		return nil
	})
	return n, err
}

// Requeue implements [outbox.Admin]. Watchers are woken when rows were
// requeued.
func (s *Store) Requeue(ctx context.Context, ids ...uuid.UUID) (int64, error) {
	if len(ids) == 0 {
		return 0, ctx.Err()
	}
	n, err := s.exec(ctx, "requeue", s.q.requeue, micros(s.clock.Now()), idsJSON(ids))
	if n > 0 {
		s.hub.signal()
	}
	return n, err
}

// RequeueAllDead implements [outbox.Admin].
func (s *Store) RequeueAllDead(ctx context.Context) (int64, error) {
	n, err := s.exec(ctx, "requeue all dead", s.q.requeueAll, micros(s.clock.Now()))
	if n > 0 {
		s.hub.signal()
	}
	return n, err
}

// DeleteDead implements [outbox.Admin].
func (s *Store) DeleteDead(ctx context.Context, ids ...uuid.UUID) (int64, error) {
	if len(ids) == 0 {
		return 0, ctx.Err()
	}
	n, err := s.exec(ctx, "delete dead", s.q.deleteDead, idsJSON(ids))
	if n > 0 {
		s.hub.signal()
	}
	return n, err
}

// DeleteSent implements [outbox.Admin]: the rows sent first go first.
func (s *Store) DeleteSent(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := outbox.ValidateLimit(limit); err != nil {
		return 0, err
	}
	return s.exec(ctx, "delete sent", s.q.deleteSent, micros(before), limit)
}

// micros is t in microseconds since the Unix epoch: how the tables store
// times.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(v int64) time.Time { return time.UnixMicro(v).UTC() }

func fromNullMicros(v sql.NullInt64) time.Time {
	if !v.Valid {
		return time.Time{}
	}
	return fromMicros(v.Int64)
}

// readRows calls fn for each row, then closes rows; it returns the first
// error of fn, of the iteration or of the close.
func readRows(rows *sql.Rows, fn func(*sql.Rows) error) error {
	for rows.Next() {
		if err := fn(rows); err != nil {
			return errors.Join(err, rows.Close())
		}
	}
	return errors.Join(rows.Err(), rows.Close())
}

// scanRows reads and closes rows of rowColumns.
func scanRows(rows *sql.Rows) ([]outbox.Row, error) {
	var out []outbox.Row
	err := readRows(rows, func(rows *sql.Rows) error {
		r, err := scanRow(rows)
		if err == nil {
			out = append(out, r)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: outbox read rows: %w", err)
	}
	return out, nil
}

func scanRow(rows *sql.Rows) (outbox.Row, error) {
	var (
		r                              outbox.Row
		eventTime, headers, leaseOwner sql.NullString
		addedAt, nextAttemptAt         int64
		leaseUntil, sentAt             sql.NullInt64
		state                          int64
		e                              = &r.Envelope
	)
	err := rows.Scan(&r.Seq, &e.ID, &e.Name, &e.Topic, &e.Key, &eventTime, &e.CorrelationID, &e.CausationID,
		&e.ContentType, &headers, &e.Payload, &state, &r.Attempts, &r.LastError, &addedAt, &nextAttemptAt,
		&leaseOwner, &leaseUntil, &sentAt)
	if err != nil {
		return outbox.Row{}, err
	}
	if eventTime.Valid {
		if e.Timestamp, err = time.Parse(time.RFC3339Nano, eventTime.String); err != nil {
			return outbox.Row{}, fmt.Errorf("sqlite: outbox row %d (%s): event_time: %w", r.Seq, e.ID, err)
		}
	}
	if headers.Valid {
		if err := json.Unmarshal([]byte(headers.String), &e.Headers); err != nil {
			return outbox.Row{}, fmt.Errorf("sqlite: outbox row %d (%s): headers: %w", r.Seq, e.ID, err)
		}
		if e.Headers == nil { // "null"
			e.Headers = map[string]string{}
		}
	}
	r.State = outbox.State(state)
	r.AddedAt = fromMicros(addedAt)
	r.NextAttemptAt = fromMicros(nextAttemptAt)
	r.LeaseOwner = leaseOwner.String
	r.LeaseUntil = fromNullMicros(leaseUntil)
	r.SentAt = fromNullMicros(sentAt)
	return r, nil
}
