package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// Default names of the saga store's tables.
const (
	DefaultSagaTable    = "cqrs_sagas"
	DefaultSagaLogTable = "cqrs_saga_log"
)

// SagaStoreOptions configures a [SagaStore].
type SagaStoreOptions struct {
	// Table is the table of the sagas (default [DefaultSagaTable]) and
	// LogTable the table of their step logs (default
	// [DefaultSagaLogTable]): "name" or "schema.name", as
	// [StoreOptions.Table]. They must differ.
	Table    string
	LogTable string
	// Clock tells the store the time (default saga.SystemClock()). The
	// store reads the time only from it, never from the database server;
	// give the orchestrator the same clock.
	Clock saga.Clock
}

// SagaStore is a saga.Store (package mediator/saga) in two tables of a
// PostgreSQL database: the sagas, and their step log. Create and Save
// write in the transaction the context carries (see [DB.InTx]), so that a
// step's own writes, its outbox rows and its checkpoint commit together,
// and commit on their own without one; the other methods each run one
// statement on the pool, outside any transaction. Every method is one
// statement, one round trip. It implements [outbox.Transactor] (its DB's):
// give it to the orchestrator as its Transactor. It is safe for concurrent
// use, and any number of processes may use one pair of tables.
//
// Transactions must be READ COMMITTED (the default of [DB.InTx]): under
// REPEATABLE READ or SERIALIZABLE, a Save or a Create that meets a write
// committed after the transaction's snapshot fails with a serialization
// error instead of reporting a conflict or a duplicate.
type SagaStore struct {
	db    *DB
	table table
	log   table
	clock saga.Clock
	q     sagaQueries
}

var (
	_ saga.Store        = (*SagaStore)(nil)
	_ outbox.Transactor = (*SagaStore)(nil)
)

// NewSagaStore returns the saga store of db in opts.Table and
// opts.LogTable. It reports every problem with its arguments at once, each
// matching [ErrInvalidOptions]. Create the tables with
// [SagaStore.EnsureSchema] or a migration tool ([SchemaFS], [SagaSchema]).
func NewSagaStore(db *DB, opts SagaStoreOptions) (*SagaStore, error) {
	var errs []error
	if db == nil {
		errs = append(errs, fmt.Errorf("%w: nil *DB", ErrInvalidOptions))
	}
	t, l, err := sagaTables(opts.Table, opts.LogTable)
	if err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = saga.SystemClock()
	}
	return &SagaStore{db: db, table: t, log: l, clock: opts.Clock, q: newSagaQueries(t.ident(), l.ident())}, nil
}

// sagaTables validates the names of a saga table and its log table, ""
// meaning the default.
func sagaTables(sagas, log string) (table, table, error) {
	if sagas == "" {
		sagas = DefaultSagaTable
	}
	if log == "" {
		log = DefaultSagaLogTable
	}
	t, err1 := parseTable("Table", sagas)
	l, err2 := parseTable("LogTable", log)
	if err := errors.Join(err1, err2); err != nil {
		return t, l, err
	}
	if t == l {
		return t, l, fmt.Errorf("%w: Table and LogTable are both %q", ErrInvalidOptions, sagas)
	}
	return t, l, nil
}

// SagaSchema returns the DDL of a saga table named table and of its step
// log table named logTable ("name" or "schema.name"; "" for the
// defaults), their indexes and constraints (named after them), and their
// schemas. It returns an error matching [ErrInvalidOptions] for an invalid
// name.
func SagaSchema(table, logTable string) (string, error) {
	t, l, err := sagaTables(table, logTable)
	if err != nil {
		return "", err
	}
	return sagaDDL(t, l), nil
}

// sagaDDL renders schema/saga.sql for the tables t and l, as ddl does for
// one table.
func sagaDDL(t, l table) string {
	b, err := schemaFiles.ReadFile("schema/saga.sql")
	if err != nil {
		panic("postgres: embedded schema missing: " + err.Error()) // a build error
	}
	r := strings.NewReplacer(
		quote(DefaultSagaTable), t.ident(), `"`+DefaultSagaTable+`_`, `"`+t.name+`_`,
		quote(DefaultSagaLogTable), l.ident(), `"`+DefaultSagaLogTable+`_`, `"`+l.name+`_`,
	)
	out := r.Replace(string(b))
	var schemas string
	if t.schema != "" {
		schemas += "CREATE SCHEMA IF NOT EXISTS " + quote(t.schema) + ";\n"
	}
	if l.schema != "" && l.schema != t.schema {
		schemas += "CREATE SCHEMA IF NOT EXISTS " + quote(l.schema) + ";\n"
	}
	if schemas != "" {
		out = schemas + "\n" + out
	}
	return out
}

// Table returns the store's saga table name, as given in its options.
func (s *SagaStore) Table() string { return s.table.String() }

// LogTable returns the store's step log table name, as given in its
// options.
func (s *SagaStore) LogTable() string { return s.log.String() }

// EnsureSchema creates the store's tables, their indexes and their schemas
// if they do not exist (see [SagaSchema]). Processes that call it at once
// run it one after the other, under an advisory lock.
func (s *SagaStore) EnsureSchema(ctx context.Context) error {
	return s.db.ensureSchema(ctx, sagaDDL(s.table, s.log))
}

// InTx is the store's [DB.InTx].
func (s *SagaStore) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.InTx(ctx, fn)
}

// The columns of a saga, in the order scanSaga reads them.
const sagaColumns = `id, name, status, step, state, version, attempts, lease_owner, lease_until, created_at, updated_at`

// logColumns are the columns an entry is inserted with.
const logColumns = `saga_id, step, idx, phase, fallback, outcome, attempts, errors, owner, started_at, finished_at`

// sagaQueries are the statements of a SagaStore, for its tables.
type sagaQueries struct {
	create, load, log, renew, list, purge string
	// save writes a checkpoint with no entry, one entry (scalar
	// parameters) or several (arrays).
	saveNone, saveOne, saveMany string
	// claim takes sagas of every definition, or of the names given.
	claimAll, claimNames string
}

// saveHead is the conditional update of a checkpoint, the CTE u: it
// returns the saga's id if its version was $2. saveTail tells the outcome
// in the same statement: 1 saved, 2 conflict (the saga exists, at another
// version), 0 not found. A concurrent writer holding the row makes the
// UPDATE wait for it and re-check the version on the row it committed.
const (
	saveHead = `WITH u AS (
	UPDATE {S} SET status = $3, step = $4, state = $5, attempts = $6, lease_owner = $7, lease_until = $8,
		updated_at = $9, version = version + 1
	WHERE id = $1 AND version = $2
	RETURNING id
)`
	saveTail = `
SELECT CASE WHEN EXISTS (SELECT 1 FROM u) THEN 1
	WHEN EXISTS (SELECT 1 FROM {S} WHERE id = $1) THEN 2
	ELSE 0 END`
)

func newSagaQueries(sagas, log string) sagaQueries {
	r := strings.NewReplacer("{S}", sagas, "{L}", log, "{COLS}", sagaColumns, "{LOGCOLS}", logColumns)
	q := func(s string) string { return r.Replace(s) }
	claim := func(names string) string {
		// c: the first $2 due sagas, least recently updated first, locked
		// with SKIP LOCKED (sagas another claim, or an open transaction's
		// Save, holds are skipped); locking re-checks a saga that changed
		// since the statement's snapshot and drops it if it is no longer
		// due. The UPDATE leases them (re-checking once more) and they are
		// returned in the order they were selected.
		return q(`WITH c AS (
	SELECT id, updated_at FROM {S}
	WHERE status IN (1, 2) AND (lease_until IS NULL OR lease_until <= $1)` + names + `
	ORDER BY updated_at, id
	LIMIT $2
	FOR UPDATE SKIP LOCKED
), u AS (
	UPDATE {S} AS s SET lease_owner = $3, lease_until = $4, attempts = s.attempts + 1,
		version = s.version + 1, updated_at = $1
	FROM c
	WHERE s.id = c.id AND s.status IN (1, 2) AND (s.lease_until IS NULL OR s.lease_until <= $1)
	RETURNING s.id, s.name, s.status, s.step, s.state, s.version, s.attempts, s.lease_owner, s.lease_until,
		s.created_at, s.updated_at, c.updated_at AS prev
)
SELECT {COLS} FROM u ORDER BY prev, id`)
	}
	return sagaQueries{
		create: q(`INSERT INTO {S} (` + sagaColumns + `)
VALUES ($1, $2, $3, $4, $5, 1, 0, $6, $7, $8, $8)
ON CONFLICT (id) DO NOTHING`),

		load: q(`SELECT {COLS} FROM {S} WHERE id = $1`),

		saveNone: q(saveHead + saveTail),
		saveOne: q(saveHead + `, l AS (
	INSERT INTO {L} ({LOGCOLS})
	SELECT u.id, $10::text, $11::integer, $12::smallint, $13::boolean, $14::smallint, $15::integer,
		NULLIF($16::text, '')::jsonb, $17::text, $18::timestamptz, $19::timestamptz
	FROM u
)` + saveTail),
		saveMany: q(saveHead + `, l AS (
	INSERT INTO {L} ({LOGCOLS})
	SELECT u.id, e.step, e.idx, e.phase, e.fallback, e.outcome, e.attempts, NULLIF(e.errors, '')::jsonb,
		e.owner, e.started_at, e.finished_at
	FROM u, unnest($10::text[], $11::integer[], $12::smallint[], $13::boolean[], $14::smallint[],
		$15::integer[], $16::text[], $17::text[], $18::timestamptz[], $19::timestamptz[]) WITH ORDINALITY
		AS e(step, idx, phase, fallback, outcome, attempts, errors, owner, started_at, finished_at, ord)
	ORDER BY e.ord
)` + saveTail),

		// The saga's own row (seq 0) tells an empty log from a missing
		// saga, in the same snapshot as the entries.
		log: q(`SELECT 0::bigint AS seq, ''::text, 0, 0::smallint, false, 0::smallint, 0, ''::text, ''::text,
	created_at, created_at
FROM {S} WHERE id = $1
UNION ALL
SELECT seq, step, idx, phase, fallback, outcome, attempts, COALESCE(errors::text, ''), owner,
	started_at, finished_at
FROM {L} WHERE saga_id = $1
ORDER BY seq`),

		renew: q(`WITH u AS (
	UPDATE {S} SET lease_until = $3
	WHERE id = $1 AND lease_owner = $2 AND status IN (1, 2)
	RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM u), s.id IS NOT NULL, COALESCE(s.status, 0), COALESCE(s.lease_owner, '')
FROM (SELECT 1) AS one LEFT JOIN {S} AS s ON s.id = $1`),

		claimAll:   claim(""),
		claimNames: claim("\n\t\tAND name = ANY ($5::text[])"),

		list: q(`SELECT {COLS} FROM {S}
WHERE id > $1
	AND ($2::smallint[] IS NULL OR status = ANY ($2))
	AND ($3::text[] IS NULL OR name = ANY ($3))
	AND (NOT $4::boolean OR (status IN (1, 2) AND (lease_until IS NULL OR lease_until <= $5)))
ORDER BY id
LIMIT $6`),

		// The sagas and their entries go in one statement. Sagas a
		// transaction holds are skipped. The victims are selected once,
		// in a CTE (a locking subquery under IN may be run again for each
		// row deleted, and go past the limit), and deleted through the
		// primary keys (a join could scan every old saga).
		purge: q(`WITH v AS (
	SELECT id FROM {S} WHERE status IN (3, 4) AND updated_at < $1
	ORDER BY updated_at LIMIT $2
	FOR UPDATE SKIP LOCKED
), d AS (
	DELETE FROM {S}
	WHERE id = ANY (ARRAY(SELECT id FROM v)) AND status IN (3, 4) AND updated_at < $1
	RETURNING id
), l AS (
	DELETE FROM {L} WHERE saga_id = ANY (ARRAY(SELECT id FROM d))
)
SELECT count(*) FROM d`),
	}
}

// write runs fn in the transaction ctx carries, or on the pool without
// one.
func (s *SagaStore) write(ctx context.Context, fn func(q querier) error) error {
	if hasTx(ctx) {
		return do(ctx, fn)
	}
	return fn(s.db.q())
}

// textErr returns an error matching saga.ErrInvalidArgument if the text
// field is not storable: invalid UTF-8 or a NUL byte.
func textErr(field, v string) error {
	if validText(v) {
		return nil
	}
	return fmt.Errorf("%w: %s is not valid UTF-8 without NUL bytes", saga.ErrInvalidArgument, field)
}

// pgUUID returns id as pgx encodes a uuid directly (a uuid.UUID would go
// through its driver.Valuer: pgx fails a binary encoding, builds an error,
// then writes a string the server parses).
func pgUUID(id uuid.UUID) [16]byte { return id }

// pgUUIDs is [pgUUID] for an array.
func pgUUIDs(ids []uuid.UUID) [][16]byte {
	out := make([][16]byte, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// nonNil returns b, or an empty slice for nil: state is NOT NULL.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// Create implements saga.Store: one INSERT … ON CONFLICT (id) DO NOTHING,
// in the transaction ctx carries if any. Text (the name, the lease owner)
// must be valid UTF-8 without NUL bytes, or Create returns an error
// matching saga.ErrInvalidArgument. When another open transaction has
// created a saga with the same ID, PostgreSQL makes Create wait for it.
func (s *SagaStore) Create(ctx context.Context, rec saga.Record, lease time.Duration) error {
	err := errors.Join(saga.ValidateRecord(rec, lease), textErr("name", rec.Name), textErr("lease owner", rec.LeaseOwner))
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	var owner, until any
	if rec.LeaseOwner != "" {
		owner, until = rec.LeaseOwner, now.Add(lease)
	}
	var n int64
	err = s.write(ctx, func(q querier) error {
		var err error
		n, err = q.exec(ctx, s.q.create, pgUUID(rec.ID), rec.Name, int16(rec.Status), rec.Step, nonNil(rec.State), owner, until, now)
		return err
	})
	if err != nil {
		return fmt.Errorf("postgres: create saga %s in %s: %w", rec.ID, s.table, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", saga.ErrExists, rec.ID)
	}
	return nil
}

// scanSaga reads the columns of sagaColumns.
func scanSaga(scan func(dest ...any) error) (saga.Record, error) {
	var (
		r                      saga.Record
		id                     pgtype.UUID // read natively by pgx, from text by database/sql
		status, step, attempts int64
		owner                  *string
		until                  *time.Time
		createdAt, updatedAt   time.Time
	)
	if err := scan(&id, &r.Name, &status, &step, &r.State, &r.Version, &attempts, &owner, &until, &createdAt, &updatedAt); err != nil {
		return r, err
	}
	r.ID = id.Bytes
	r.Status, r.Step, r.Attempts = saga.Status(status), int(step), int(attempts)
	if owner != nil {
		r.LeaseOwner = *owner
	}
	if until != nil {
		r.LeaseUntil = until.UTC()
	}
	r.CreatedAt, r.UpdatedAt = createdAt.UTC(), updatedAt.UTC()
	return r, nil
}

// records runs a statement on the pool that returns sagas.
func (s *SagaStore) records(ctx context.Context, query string, args ...any) ([]saga.Record, error) {
	var out []saga.Record
	err := s.db.q().query(ctx, query, args, func(scan func(...any) error) error {
		r, err := scanSaga(scan)
		if err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// Load implements saga.Store. It reads on the pool, outside any
// transaction ctx carries: what is committed.
func (s *SagaStore) Load(ctx context.Context, id uuid.UUID) (saga.Record, error) {
	if err := ctx.Err(); err != nil {
		return saga.Record{}, err
	}
	recs, err := s.records(ctx, s.q.load, pgUUID(id))
	if err != nil {
		return saga.Record{}, fmt.Errorf("postgres: load saga %s from %s: %w", id, s.table, err)
	}
	if len(recs) == 0 {
		return saga.Record{}, fmt.Errorf("%w: %s", saga.ErrNotFound, id)
	}
	return recs[0], nil
}

// Save implements saga.Store in one statement, in the transaction ctx
// carries if any: an UPDATE of the saga where its version is cp.Version,
// the INSERT of cp.Log fed by the UPDATE's result, and a query telling a
// conflict from a missing saga when nothing was updated. A Save that meets
// a saga another open transaction has written waits for it, and gets the
// conflict if it commits. The entries' Step and Owner must be valid UTF-8
// without NUL bytes (or Save returns an error matching
// saga.ErrInvalidArgument); such bytes in their Errors are replaced.
func (s *SagaStore) Save(ctx context.Context, cp saga.Checkpoint) error {
	if err := s.validateCheckpoint(cp); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	now := s.clock.Now()
	var owner, until any
	if cp.Owner != "" {
		owner, until = cp.Owner, now.Add(cp.Lease)
	}
	var (
		query string
		args  []any
		err   error
	)
	switch len(cp.Log) {
	case 0:
		query = s.q.saveNone
		args = []any{pgUUID(cp.ID), cp.Version, int16(cp.Status), cp.Step, nonNil(cp.State), cp.Attempts, owner, until, now}
	case 1:
		e := &cp.Log[0]
		var errs string
		if errs, err = errorsJSON(e.Errors); err != nil {
			return err
		}
		query = s.q.saveOne
		args = []any{pgUUID(cp.ID), cp.Version, int16(cp.Status), cp.Step, nonNil(cp.State), cp.Attempts, owner, until, now,
			e.Step, e.Index, int16(e.Phase), e.Fallback, int16(e.Outcome), e.Attempts, errs, e.Owner, e.StartedAt, e.FinishedAt}
	default:
		query = s.q.saveMany
		args = []any{pgUUID(cp.ID), cp.Version, int16(cp.Status), cp.Step, nonNil(cp.State), cp.Attempts, owner, until, now}
		if args, err = appendEntries(args, cp.Log); err != nil {
			return err
		}
	}
	var outcome int64
	err = s.write(ctx, func(q querier) error {
		return q.query(ctx, query, args, func(scan func(...any) error) error { return scan(&outcome) })
	})
	if err != nil {
		return fmt.Errorf("postgres: save saga %s in %s: %w", cp.ID, s.table, err)
	}
	switch outcome {
	case 1:
		return nil
	case 2:
		return &saga.ConflictError{ID: cp.ID, Version: cp.Version}
	default:
		return fmt.Errorf("%w: %s", saga.ErrNotFound, cp.ID)
	}
}

func (s *SagaStore) validateCheckpoint(cp saga.Checkpoint) error {
	errs := []error{saga.ValidateCheckpoint(cp), textErr("owner", cp.Owner)}
	for i := range cp.Log {
		e := &cp.Log[i]
		if !validText(e.Step) || !validText(e.Owner) {
			errs = append(errs, fmt.Errorf("%w: log entry %d: step and owner must be valid UTF-8 without NUL bytes", saga.ErrInvalidArgument, i))
		}
	}
	return errors.Join(errs...)
}

// errorsJSON encodes an entry's errors as a JSON array of strings, "" for
// none, with the bytes PostgreSQL cannot store replaced.
func errorsJSON(errs []string) (string, error) {
	if len(errs) == 0 {
		return "", nil
	}
	clean := make([]string, len(errs))
	for i, e := range errs {
		clean[i] = cleanText(e)
	}
	b, err := json.Marshal(clean)
	if err != nil {
		return "", fmt.Errorf("postgres: encode step errors: %w", err)
	}
	return string(b), nil
}

// appendEntries appends the arrays of saveMany's parameters $10 to $19.
func appendEntries(args []any, log []saga.Entry) ([]any, error) {
	n := len(log)
	var (
		steps     = make([]string, n)
		idxs      = make([]int32, n)
		phases    = make([]int16, n)
		fallbacks = make([]bool, n)
		outcomes  = make([]int16, n)
		attempts  = make([]int32, n)
		errs      = make([]string, n)
		owners    = make([]string, n)
		started   = make([]time.Time, n)
		finished  = make([]time.Time, n)
	)
	for i := range log {
		e := &log[i]
		var err error
		if errs[i], err = errorsJSON(e.Errors); err != nil {
			return nil, err
		}
		steps[i], idxs[i], phases[i], fallbacks[i] = e.Step, int32(e.Index), int16(e.Phase), e.Fallback
		outcomes[i], attempts[i], owners[i] = int16(e.Outcome), int32(e.Attempts), e.Owner
		started[i], finished[i] = e.StartedAt, e.FinishedAt
	}
	return append(args, steps, idxs, phases, fallbacks, outcomes, attempts, errs, owners, started, finished), nil
}

// Renew implements saga.Store in one statement on the pool, which also
// tells a lost lease from a missing saga.
func (s *SagaStore) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	if err := errors.Join(saga.ValidateLease(owner, 1, lease), textErr("owner", owner)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	var (
		renewed, exists bool
		status          int64
		holder          string
	)
	err := s.db.q().query(ctx, s.q.renew, []any{pgUUID(id), owner, s.clock.Now().Add(lease)}, func(scan func(...any) error) error {
		return scan(&renewed, &exists, &status, &holder)
	})
	switch {
	case err != nil:
		return fmt.Errorf("postgres: renew saga %s in %s: %w", id, s.table, err)
	case renewed:
		return nil
	case !exists:
		return fmt.Errorf("%w: %s", saga.ErrNotFound, id)
	default:
		return fmt.Errorf("%w: saga %s is %v, held by %q, not %q", saga.ErrLeaseLost, id, saga.Status(status), holder, owner)
	}
}

// validNames returns the names PostgreSQL can store (others match no
// saga), and whether some were dropped.
func validNames(names []string) ([]string, bool) {
	for _, n := range names {
		if !validText(n) {
			out := make([]string, 0, len(names))
			for _, n := range names {
				if validText(n) {
					out = append(out, n)
				}
			}
			return out, true
		}
	}
	return names, false
}

// Claim implements saga.Store in one statement on the pool: an UPDATE of
// the due sagas selected with FOR UPDATE SKIP LOCKED, returning them least
// recently updated first. Concurrent claims skip each other's sagas, and a
// saga leased since the claim's snapshot is re-checked when it is locked
// and dropped.
func (s *SagaStore) Claim(ctx context.Context, owner string, names []string, limit int, lease time.Duration) ([]saga.Record, error) {
	if err := errors.Join(saga.ValidateLease(owner, limit, lease), textErr("owner", owner)); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names, dropped := validNames(names)
	if dropped && len(names) == 0 {
		return nil, nil // no saga has such a name
	}
	now := s.clock.Now()
	var (
		recs []saga.Record
		err  error
	)
	if len(names) == 0 {
		recs, err = s.records(ctx, s.q.claimAll, now, limit, owner, now.Add(lease))
	} else {
		recs, err = s.records(ctx, s.q.claimNames, now, limit, owner, now.Add(lease), names)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres: claim sagas from %s: %w", s.table, err)
	}
	return recs, nil
}

// Log implements saga.Store, in one statement on the pool.
func (s *SagaStore) Log(ctx context.Context, id uuid.UUID) ([]saga.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var (
		out   []saga.Entry
		found bool
	)
	err := s.db.q().query(ctx, s.q.log, []any{pgUUID(id)}, func(scan func(...any) error) error {
		var (
			e                             saga.Entry
			idx, phase, outcome, attempts int64
			errs                          string
			started, finished             time.Time
		)
		if err := scan(&e.Seq, &e.Step, &idx, &phase, &e.Fallback, &outcome, &attempts, &errs, &e.Owner, &started, &finished); err != nil {
			return err
		}
		if e.Seq == 0 { // the saga's own row
			found = true
			return nil
		}
		e.Index, e.Phase, e.Outcome, e.Attempts = int(idx), saga.Phase(phase), saga.Outcome(outcome), int(attempts)
		e.StartedAt, e.FinishedAt = started.UTC(), finished.UTC()
		if errs != "" {
			if err := json.Unmarshal([]byte(errs), &e.Errors); err != nil {
				return fmt.Errorf("entry %d: errors: %w", e.Seq, err)
			}
		}
		out = append(out, e)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("postgres: read the log of saga %s from %s: %w", id, s.log, err)
	}
	if !found {
		return nil, fmt.Errorf("%w: %s", saga.ErrNotFound, id)
	}
	if out == nil {
		out = []saga.Entry{}
	}
	return out, nil
}

// List implements saga.Store, in one statement on the pool. It pages
// through the primary key; call it at a monitoring pace.
func (s *SagaStore) List(ctx context.Context, f saga.Filter) ([]saga.Record, error) {
	if err := saga.ValidateLimit(f.Limit); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var statuses, names any // NULL: no filter
	if len(f.Statuses) > 0 {
		st := make([]int16, len(f.Statuses))
		for i, v := range f.Statuses {
			st[i] = int16(v)
		}
		statuses = st
	}
	if len(f.Names) > 0 {
		valid, dropped := validNames(f.Names)
		if dropped && len(valid) == 0 {
			return nil, nil // no saga has such a name
		}
		names = valid
	}
	recs, err := s.records(ctx, s.q.list, pgUUID(f.After), statuses, names, f.Recoverable, s.clock.Now(), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("postgres: list sagas of %s: %w", s.table, err)
	}
	return recs, nil
}

// Purge implements saga.Store: one statement on the pool deletes the
// sagas and their logs, least recently updated first. Concurrent calls
// skip each other's sagas.
func (s *SagaStore) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := saga.ValidateLimit(limit); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var n int64
	err := s.db.q().query(ctx, s.q.purge, []any{before, limit}, func(scan func(...any) error) error { return scan(&n) })
	if err != nil {
		return 0, fmt.Errorf("postgres: purge sagas of %s: %w", s.table, err)
	}
	return n, nil
}
