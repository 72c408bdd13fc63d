package sqlite

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// Default saga table names.
const (
	DefaultSagaTable    = "cqrs_sagas"
	DefaultSagaLogTable = "cqrs_saga_log"
)

// SagaStoreOptions configures a [SagaStore].
type SagaStoreOptions struct {
	// Table is the table of the sagas (default [DefaultSagaTable]) and
	// LogTable that of their step logs (default [DefaultSagaLogTable]):
	// each a letter or underscore followed by up to 47 letters, digits or
	// underscores, not starting with "sqlite_"; they must differ, and
	// LogTable must not be the name of an index of Table (Table + "_active"
	// or Table + "_ended").
	Table    string
	LogTable string
	// Clock tells the store the time (default saga.SystemClock()). The
	// store reads the time only from it; give the orchestrator the same
	// clock.
	Clock saga.Clock
}

// SagaStore is a [saga.Store] in two tables of a SQLite database: the
// sagas, and their step logs. Create and Save write in the transaction of
// its [DB] that the context carries ([DB.InTx], [DB.WithTx]), so that a
// step's own writes, its outbox rows (a [Store] of the same DB) and its
// checkpoint commit together; without one, and for Claim, Renew and Purge
// always, each write runs in a short write transaction of its own. Reads
// (Load, Log, List) see committed sagas only, whatever the context
// carries. It implements [outbox.Transactor] (its DB's): give it, or the
// DB, to saga.Options.Transactor. It is safe for concurrent use, and
// several processes may use one database file.
type SagaStore struct {
	db       *DB
	table    string
	logTable string
	clock    saga.Clock
	q        sagaQueries
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
	if opts.Table == "" {
		opts.Table = DefaultSagaTable
	}
	if opts.LogTable == "" {
		opts.LogTable = DefaultSagaLogTable
	}
	if err := errors.Join(append(errs, validSagaTables(opts.Table, opts.LogTable))...); err != nil {
		return nil, err
	}
	if opts.Clock == nil {
		opts.Clock = saga.SystemClock()
	}
	return &SagaStore{
		db:       db,
		table:    opts.Table,
		logTable: opts.LogTable,
		clock:    opts.Clock,
		q:        newSagaQueries(opts.Table, opts.LogTable),
	}, nil
}

// validSagaTables checks the table names of a saga store.
func validSagaTables(table, logTable string) error {
	errs := []error{validTable("Table", table), validTable("LogTable", logTable)}
	if strings.EqualFold(table, logTable) {
		errs = append(errs, fmt.Errorf("%w: Table and LogTable must differ, both are %q", ErrInvalidOptions, table))
	}
	for _, index := range []string{table + "_active", table + "_ended"} {
		if strings.EqualFold(logTable, index) {
			errs = append(errs, fmt.Errorf("%w: LogTable %q is the name of an index of Table %q", ErrInvalidOptions, logTable, table))
		}
	}
	return errors.Join(errs...)
}

// sagaRenamer renames the default saga tables (and the indexes named after
// them) in one pass, so that a name that starts with the other default is
// not renamed twice.
func sagaRenamer(table, logTable string) *strings.Replacer {
	return strings.NewReplacer(`"`+DefaultSagaTable, `"`+table, `"`+DefaultSagaLogTable, `"`+logTable)
}

// SagaSchema returns the DDL of the saga tables named table and logTable
// (and of the indexes of table, named after it): the file
// schema/saga.sql of [SchemaFS] with the names replaced. It returns an
// error matching [ErrInvalidOptions] for invalid names (see
// [SagaStoreOptions]).
func SagaSchema(table, logTable string) (string, error) {
	if err := validSagaTables(table, logTable); err != nil {
		return "", err
	}
	return sagaDDL(table, logTable), nil
}

func sagaDDL(table, logTable string) string {
	b, err := schemaFiles.ReadFile("schema/saga.sql")
	if err != nil {
		panic("sqlite: embedded schema missing: " + err.Error()) // a build error
	}
	return sagaRenamer(table, logTable).Replace(string(b))
}

// Table returns the table of the sagas.
func (s *SagaStore) Table() string { return s.table }

// LogTable returns the table of the step logs.
func (s *SagaStore) LogTable() string { return s.logTable }

// EnsureSchema creates the saga tables and indexes if they do not exist
// (see [SagaSchema]), in a write transaction, as [Store.EnsureSchema] does.
func (s *SagaStore) EnsureSchema(ctx context.Context) error {
	return s.db.ensureSchema(ctx, sagaDDL(s.table, s.logTable))
}

// InTx is the store's [DB.InTx].
func (s *SagaStore) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	return s.db.InTx(ctx, fn)
}

// The columns of a saga, in the order scanSaga reads them.
const sagaColumns = `id, name, status, step, state, version, attempts, lease_owner, lease_until, created_at, updated_at`

// The statements of a Save in a transaction of the caller: a savepoint
// makes the update and the log entries one write, undone together if one
// of them fails, while the caller's transaction goes on.
const (
	sagaSavepoint  = `SAVEPOINT cqrs_saga_save`
	sagaRelease    = `RELEASE cqrs_saga_save`
	sagaRollbackTo = `ROLLBACK TO cqrs_saga_save`
)

type sagaQueries struct {
	create, load, saveKeep, save, version, logInsert, log, exists string
	renew, leaseOf, dueAll, dueNames, claim, list                 string
	purge, purgeLog                                               string
}

// newSagaQueries returns the statements of the store on table and
// logTable; they are written for the default names, renamed as the DDL is.
func newSagaQueries(table, logTable string) sagaQueries {
	q := sagaQueries{
		create: `INSERT INTO "cqrs_sagas" (` + sagaColumns + `)
VALUES (?1, ?2, ?3, ?4, ?5, 1, 0, ?6, ?7, ?8, ?8)
ON CONFLICT (id) DO NOTHING`,
		load: `SELECT ` + sagaColumns + ` FROM "cqrs_sagas" WHERE id = ?1`,
		saveKeep: `UPDATE "cqrs_sagas" SET step = ?4, state = ?5, attempts = ?6, lease_owner = ?7,
	lease_until = ?8, updated_at = ?9, version = version + 1
WHERE id = ?1 AND version = ?2 AND status = ?3`,
		save: `UPDATE "cqrs_sagas" SET status = ?3, step = ?4, state = ?5, attempts = ?6, lease_owner = ?7,
	lease_until = ?8, updated_at = ?9, version = version + 1
WHERE id = ?1 AND version = ?2`,
		version: `SELECT version FROM "cqrs_sagas" WHERE id = ?1`,
		// The entries of a saga are numbered from 1: the next one is the
		// last one's plus one, found at the end of the saga's range of the
		// primary key.
		logInsert: `INSERT INTO "cqrs_saga_log" (saga_id, seq, step, idx, phase, fallback, outcome, attempts, errors,
	owner, started_at, finished_at)
VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM "cqrs_saga_log" WHERE saga_id = ?1),
	?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)`,
		log: `SELECT seq, step, idx, phase, fallback, outcome, attempts, errors, owner, started_at, finished_at
FROM "cqrs_saga_log" WHERE saga_id = ?1 ORDER BY seq`,
		exists:  `SELECT EXISTS (SELECT 1 FROM "cqrs_sagas" WHERE id = ?1)`,
		renew:   `UPDATE "cqrs_sagas" SET lease_until = ?1 WHERE id = ?2 AND lease_owner = ?3 AND status IN (1, 2)`,
		leaseOf: `SELECT status, coalesce(lease_owner, '') FROM "cqrs_sagas" WHERE id = ?1`,
		// lease_until is NULL exactly when lease_owner is: the store
		// writes them together.
		dueAll: `SELECT id FROM "cqrs_sagas"
WHERE status IN (1, 2) AND (lease_until IS NULL OR lease_until <= ?1)
ORDER BY updated_at, id LIMIT ?2`,
		dueNames: `SELECT id FROM "cqrs_sagas"
WHERE status IN (1, 2) AND (lease_until IS NULL OR lease_until <= ?1) AND name IN (SELECT value FROM json_each(?3))
ORDER BY updated_at, id LIMIT ?2`,
		claim: `UPDATE "cqrs_sagas" SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1, version = version + 1,
	updated_at = ?3
WHERE id IN (SELECT value FROM json_each(?4))
RETURNING ` + sagaColumns,
		list: `SELECT ` + sagaColumns + ` FROM "cqrs_sagas"
WHERE id > ?1
	AND (?2 IS NULL OR status IN (SELECT value FROM json_each(?2)))
	AND (?3 IS NULL OR name IN (SELECT value FROM json_each(?3)))
	AND (NOT ?4 OR (status IN (1, 2) AND (lease_until IS NULL OR lease_until <= ?5)))
ORDER BY id LIMIT ?6`,
		purge: `DELETE FROM "cqrs_sagas" WHERE id IN (
	SELECT id FROM "cqrs_sagas" WHERE status IN (3, 4) AND updated_at < ?1 ORDER BY updated_at, id LIMIT ?2)
RETURNING id`,
		purgeLog: `DELETE FROM "cqrs_saga_log" WHERE saga_id IN (SELECT value FROM json_each(?1))`,
	}
	r := sagaRenamer(table, logTable)
	for _, p := range []*string{
		&q.create, &q.load, &q.saveKeep, &q.save, &q.version, &q.logInsert, &q.log, &q.exists,
		&q.renew, &q.leaseOf, &q.dueAll, &q.dueNames, &q.claim, &q.list, &q.purge, &q.purgeLog,
	} {
		*p = r.Replace(*p)
	}
	return q
}

// write runs fn in the transaction of the store's DB that ctx carries
// (shared is then true), or else in a write transaction of its own.
func (s *SagaStore) write(ctx context.Context, fn func(tx *sql.Tx, shared bool) error) error {
	if st := s.db.state(ctx); st != nil {
		return st.do(nil, func(tx *sql.Tx) error { return fn(tx, true) })
	}
	return s.db.inOwnTx(ctx, func(tx *sql.Tx) error { return fn(tx, false) })
}

// stateArg is the state as the NOT NULL column takes it.
func stateArg(state []byte) []byte {
	if state == nil {
		return []byte{}
	}
	return state
}

// leaseArgs returns the lease_owner and lease_until of a lease to owner
// from now: NULLs for no owner.
func leaseArgs(owner string, now time.Time, lease time.Duration) (any, any) {
	if owner == "" {
		return nil, nil
	}
	return owner, micros(now.Add(lease))
}

// Create implements [saga.Store] with INSERT … ON CONFLICT DO NOTHING, in
// the transaction ctx carries if any.
func (s *SagaStore) Create(ctx context.Context, rec saga.Record, lease time.Duration) error {
	if err := saga.ValidateRecord(rec, lease); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.write(ctx, func(tx *sql.Tx, _ bool) error {
		now := s.clock.Now()
		owner, until := leaseArgs(rec.LeaseOwner, now, lease)
		res, err := s.db.exec(ctx, tx, s.q.create,
			rec.ID.String(), rec.Name, int64(rec.Status), rec.Step, stateArg(rec.State), owner, until, micros(now))
		if err != nil {
			return fmt.Errorf("sqlite: saga create %s: %w", rec.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("sqlite: saga create %s: %w", rec.ID, err)
		}
		if n == 0 {
			return fmt.Errorf("%w: %s", saga.ErrExists, rec.ID)
		}
		return nil
	})
}

// Load implements [saga.Store]. It reads the committed saga, outside any
// transaction ctx carries.
func (s *SagaStore) Load(ctx context.Context, id uuid.UUID) (saga.Record, error) {
	if err := ctx.Err(); err != nil {
		return saga.Record{}, err
	}
	rows, err := s.db.query(ctx, nil, s.q.load, id.String())
	if err != nil {
		return saga.Record{}, fmt.Errorf("sqlite: saga load %s: %w", id, err)
	}
	recs, err := scanSagas(rows)
	if err != nil {
		return saga.Record{}, err
	}
	if len(recs) == 0 {
		return saga.Record{}, fmt.Errorf("%w: %s", saga.ErrNotFound, id)
	}
	return recs[0], nil
}

// Save implements [saga.Store]: one UPDATE … WHERE id = ? AND version = ?
// and one INSERT per log entry. A checkpoint that keeps the saga's status
// (every step but the last) updates it with a statement that leaves the
// status out, so that the index of the active sagas is not rewritten; only
// if that one finds no row does the one that sets the status run, and only
// if neither does does a query tell a conflict from a missing saga. It
// writes in the transaction ctx carries if any, within a savepoint when
// there are entries, so that a failure undoes the whole write and leaves
// the caller's transaction usable; otherwise in one of its own.
func (s *SagaStore) Save(ctx context.Context, cp saga.Checkpoint) error {
	if err := saga.ValidateCheckpoint(cp); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	id := cp.ID.String()
	entries := make([][]any, len(cp.Log))
	for i := range cp.Log {
		args, err := entryArgs(id, &cp.Log[i])
		if err != nil {
			return fmt.Errorf("sqlite: saga save %s: log entry %d: %w", cp.ID, i, err)
		}
		entries[i] = args
	}
	return s.write(ctx, func(tx *sql.Tx, shared bool) error {
		if shared && len(entries) > 0 {
			return s.inSavepoint(ctx, tx, func() error { return s.save(ctx, tx, &cp, entries) })
		}
		return s.save(ctx, tx, &cp, entries)
	})
}

func (s *SagaStore) save(ctx context.Context, tx *sql.Tx, cp *saga.Checkpoint, entries [][]any) error {
	now := s.clock.Now()
	owner, until := leaseArgs(cp.Owner, now, cp.Lease)
	args := []any{cp.ID.String(), cp.Version, int64(cp.Status), cp.Step, stateArg(cp.State), cp.Attempts, owner, until, micros(now)}
	// Most checkpoints keep the status: the first statement leaves it out,
	// so that the index of the active sagas is not rewritten. Only when it
	// updates nothing does the second, which sets the status, run.
	for _, query := range []string{s.q.saveKeep, s.q.save} {
		res, err := s.db.exec(ctx, tx, query, args...)
		if err != nil {
			return fmt.Errorf("sqlite: saga save %s: %w", cp.ID, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("sqlite: saga save %s: %w", cp.ID, err)
		}
		if n == 1 {
			return s.insertLog(ctx, tx, cp.ID, entries)
		}
	}
	return s.notSaved(ctx, tx, cp.ID, cp.Version)
}

// insertLog appends the entries of a checkpoint to the log of saga id.
func (s *SagaStore) insertLog(ctx context.Context, tx *sql.Tx, id uuid.UUID, entries [][]any) error {
	for i, args := range entries {
		if _, err := s.db.exec(ctx, tx, s.q.logInsert, args...); err != nil {
			return fmt.Errorf("sqlite: saga save %s: log entry %d: %w", id, i, err)
		}
	}
	return nil
}

// notSaved tells why a Save updated no row: the saga is missing, or its
// version is no longer version.
func (s *SagaStore) notSaved(ctx context.Context, tx *sql.Tx, id uuid.UUID, version int64) error {
	rows, err := s.db.query(ctx, tx, s.q.version, id.String())
	if err != nil {
		return fmt.Errorf("sqlite: saga save %s: %w", id, err)
	}
	found := false
	if err := readRows(rows, func(*sql.Rows) error { found = true; return nil }); err != nil {
		return fmt.Errorf("sqlite: saga save %s: %w", id, err)
	}
	if !found {
		return fmt.Errorf("%w: %s", saga.ErrNotFound, id)
	}
	return &saga.ConflictError{ID: id, Version: version}
}

// inSavepoint runs fn within a savepoint of tx, a transaction of the
// caller: if fn fails, what it wrote is undone and the transaction goes
// on. The savepoint is released or rolled back even if ctx is done
// meanwhile (neither does any I/O).
func (s *SagaStore) inSavepoint(ctx context.Context, tx *sql.Tx, fn func() error) error {
	if _, err := s.db.exec(ctx, tx, sagaSavepoint); err != nil {
		return fmt.Errorf("sqlite: saga save: savepoint: %w", err)
	}
	ectx := context.WithoutCancel(ctx)
	if err := fn(); err != nil {
		_, rerr := s.db.exec(ectx, tx, sagaRollbackTo)
		if rerr == nil {
			_, rerr = s.db.exec(ectx, tx, sagaRelease)
		}
		if rerr != nil {
			return errors.Join(err, fmt.Errorf("sqlite: saga save: roll back to savepoint: %w", rerr))
		}
		return err
	}
	if _, err := s.db.exec(ectx, tx, sagaRelease); err != nil {
		return fmt.Errorf("sqlite: saga save: release savepoint: %w", err)
	}
	return nil
}

// entryArgs returns the arguments of logInsert for e.
func entryArgs(id string, e *saga.Entry) ([]any, error) {
	var errs any // NULL for none
	if len(e.Errors) > 0 {
		b, err := json.Marshal(e.Errors)
		if err != nil {
			return nil, err
		}
		errs = string(b)
	}
	return []any{
		id, e.Step, e.Index, int64(e.Phase), e.Fallback, int64(e.Outcome), e.Attempts, errs, e.Owner,
		micros(e.StartedAt), micros(e.FinishedAt),
	}, nil
}

// Renew implements [saga.Store] with one UPDATE in a write transaction of
// its own; only when it finds nothing to renew does a second query tell
// why.
func (s *SagaStore) Renew(ctx context.Context, id uuid.UUID, owner string, lease time.Duration) error {
	if err := saga.ValidateLease(owner, 1, lease); err != nil {
		return err
	}
	return s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		res, err := s.db.exec(ctx, tx, s.q.renew, micros(s.clock.Now().Add(lease)), id.String(), owner)
		if err != nil {
			return fmt.Errorf("sqlite: saga renew %s: %w", id, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("sqlite: saga renew %s: %w", id, err)
		}
		if n == 1 {
			return nil
		}
		rows, err := s.db.query(ctx, tx, s.q.leaseOf, id.String())
		if err != nil {
			return fmt.Errorf("sqlite: saga renew %s: %w", id, err)
		}
		var (
			found  bool
			status int64
			holder string
		)
		err = readRows(rows, func(rows *sql.Rows) error {
			found = true
			return rows.Scan(&status, &holder)
		})
		if err != nil {
			return fmt.Errorf("sqlite: saga renew %s: %w", id, err)
		}
		if !found {
			return fmt.Errorf("%w: %s", saga.ErrNotFound, id)
		}
		return fmt.Errorf("%w: saga %s is %v, held by %q, not %q", saga.ErrLeaseLost, id, saga.Status(status), holder, owner)
	})
}

// Claim implements [saga.Store] in a write transaction of its own: a
// SELECT of the due sagas in order, then one UPDATE … RETURNING of them.
// The transaction holds the write lock of the database, so no other claim
// or write, in any process, runs between the two.
func (s *SagaStore) Claim(ctx context.Context, owner string, names []string, limit int, lease time.Duration) ([]saga.Record, error) {
	if err := saga.ValidateLease(owner, limit, lease); err != nil {
		return nil, err
	}
	var namesArg string
	if len(names) > 0 {
		b, err := json.Marshal(names)
		if err != nil {
			return nil, fmt.Errorf("sqlite: saga claim: names: %w", err)
		}
		namesArg = string(b)
	}
	var (
		ids []uuid.UUID
		out []saga.Record
	)
	err := s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		ids, out = ids[:0], nil
		now := s.clock.Now()
		var (
			rows *sql.Rows
			err  error
		)
		if namesArg == "" {
			rows, err = s.db.query(ctx, tx, s.q.dueAll, micros(now), limit)
		} else {
			rows, err = s.db.query(ctx, tx, s.q.dueNames, micros(now), limit, namesArg)
		}
		if err != nil {
			return fmt.Errorf("sqlite: saga claim: %w", err)
		}
		err = readRows(rows, func(rows *sql.Rows) error {
			var id uuid.UUID
			err := rows.Scan(&id)
			ids = append(ids, id)
			return err
		})
		if err != nil {
			return fmt.Errorf("sqlite: saga claim: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		rows, err = s.db.query(ctx, tx, s.q.claim, owner, micros(now.Add(lease)), micros(now), idsJSON(ids))
		if err != nil {
			return fmt.Errorf("sqlite: saga claim: %w", err)
		}
		out, err = scanSagas(rows)
		return err
	})
	if err != nil {
		return nil, err
	}
	// RETURNING yields rows in no particular order: put them back in the
	// order they were due.
	pos := make(map[uuid.UUID]int, len(ids))
	for i, id := range ids {
		pos[id] = i
	}
	slices.SortFunc(out, func(a, b saga.Record) int { return cmp.Compare(pos[a.ID], pos[b.ID]) })
	return out, nil
}

// Log implements [saga.Store]. It reads committed entries, outside any
// transaction ctx carries; only a saga without entries takes a second
// query, to tell an empty log from a missing saga.
func (s *SagaStore) Log(ctx context.Context, id uuid.UUID) ([]saga.Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rows, err := s.db.query(ctx, nil, s.q.log, id.String())
	if err != nil {
		return nil, fmt.Errorf("sqlite: saga log %s: %w", id, err)
	}
	out := []saga.Entry{}
	err = readRows(rows, func(rows *sql.Rows) error {
		e, err := scanEntry(rows)
		out = append(out, e)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: saga log %s: %w", id, err)
	}
	if len(out) > 0 {
		return out, nil
	}
	var exists bool
	if err := s.db.sql.QueryRowContext(ctx, s.q.exists, id.String()).Scan(&exists); err != nil {
		return nil, fmt.Errorf("sqlite: saga log %s: %w", id, err)
	}
	if !exists {
		return nil, fmt.Errorf("%w: %s", saga.ErrNotFound, id)
	}
	return out, nil
}

func scanEntry(rows *sql.Rows) (saga.Entry, error) {
	var (
		e                 saga.Entry
		phase, outcome    int64
		errs              sql.NullString
		started, finished int64
	)
	err := rows.Scan(&e.Seq, &e.Step, &e.Index, &phase, &e.Fallback, &outcome, &e.Attempts, &errs, &e.Owner,
		&started, &finished)
	if err != nil {
		return saga.Entry{}, err
	}
	if errs.Valid {
		if err := json.Unmarshal([]byte(errs.String), &e.Errors); err != nil {
			return saga.Entry{}, fmt.Errorf("entry %d: errors: %w", e.Seq, err)
		}
	}
	e.Phase, e.Outcome = saga.Phase(phase), saga.Outcome(outcome)
	e.StartedAt, e.FinishedAt = fromMicros(started), fromMicros(finished)
	return e, nil
}

// List implements [saga.Store] with one SELECT in ID order. It reads
// committed sagas, outside any transaction ctx carries.
func (s *SagaStore) List(ctx context.Context, f saga.Filter) ([]saga.Record, error) {
	if err := saga.ValidateLimit(f.Limit); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var statuses, names any // NULL: no filter
	if len(f.Statuses) > 0 {
		b := make([]byte, 0, 2+2*len(f.Statuses))
		b = append(b, '[')
		for i, st := range f.Statuses {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, int64(st), 10)
		}
		statuses = string(append(b, ']'))
	}
	if len(f.Names) > 0 {
		b, err := json.Marshal(f.Names)
		if err != nil {
			return nil, fmt.Errorf("sqlite: saga list: names: %w", err)
		}
		names = string(b)
	}
	rows, err := s.db.query(ctx, nil, s.q.list, f.After.String(), statuses, names, f.Recoverable,
		micros(s.clock.Now()), f.Limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite: saga list: %w", err)
	}
	return scanSagas(rows)
}

// Purge implements [saga.Store] in a write transaction of its own: one
// DELETE … RETURNING of the sagas, one DELETE of their logs.
func (s *SagaStore) Purge(ctx context.Context, before time.Time, limit int) (int64, error) {
	if err := saga.ValidateLimit(limit); err != nil {
		return 0, err
	}
	var ids []uuid.UUID
	err := s.db.inOwnTx(ctx, func(tx *sql.Tx) error {
		ids = ids[:0]
		rows, err := s.db.query(ctx, tx, s.q.purge, micros(before), limit)
		if err != nil {
			return fmt.Errorf("sqlite: saga purge: %w", err)
		}
		err = readRows(rows, func(rows *sql.Rows) error {
			var id uuid.UUID
			err := rows.Scan(&id)
			ids = append(ids, id)
			return err
		})
		if err != nil {
			return fmt.Errorf("sqlite: saga purge: %w", err)
		}
		if len(ids) == 0 {
			return nil
		}
		if _, err := s.db.exec(ctx, tx, s.q.purgeLog, idsJSON(ids)); err != nil {
			return fmt.Errorf("sqlite: saga purge: logs: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int64(len(ids)), nil
}

// scanSagas reads and closes rows of sagaColumns.
func scanSagas(rows *sql.Rows) ([]saga.Record, error) {
	var out []saga.Record
	err := readRows(rows, func(rows *sql.Rows) error {
		var (
			r                saga.Record
			status           int64
			leaseOwner       sql.NullString
			leaseUntil       sql.NullInt64
			created, updated int64
		)
		err := rows.Scan(&r.ID, &r.Name, &status, &r.Step, &r.State, &r.Version, &r.Attempts, &leaseOwner, &leaseUntil,
			&created, &updated)
		if err != nil {
			return err
		}
		r.Status = saga.Status(status)
		r.LeaseOwner = leaseOwner.String
		r.LeaseUntil = fromNullMicros(leaseUntil)
		r.CreatedAt, r.UpdatedAt = fromMicros(created), fromMicros(updated)
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite: saga read rows: %w", err)
	}
	return out, nil
}
