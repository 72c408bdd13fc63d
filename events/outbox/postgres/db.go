package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/gocqrs/cqrs/events/outbox"
)

// rollbackTimeout bounds the rollback of a transaction whose context is
// done: the rollback runs on a context that is not cancelled, so that the
// connection goes back to its pool in a clean state.
const rollbackTimeout = 5 * time.Second

// DB is a PostgreSQL database used by the stores of this package, through
// one of the two ways Go programs hold one: a pgx pool ([New]) or a
// database/sql pool on the pgx driver ([NewSQL]). It is the
// [outbox.Transactor] of that pool: [DB.InTx] begins a transaction (a
// pgx.Tx or a *sql.Tx) and carries it in the context, where [Store.Add],
// [Inbox.Record] and the application's repositories ([PgxTx], [SQLTx]) find
// it. It is safe for concurrent use.
type DB struct {
	pool *pgxpool.Pool
	sql  *sql.DB
	log  *slog.Logger
}

var _ outbox.Transactor = (*DB)(nil)

// Options configures a [DB]. The zero value takes the defaults.
type Options struct {
	// Logger receives what the DB and its stores report outside of the
	// errors they return: a rollback that failed, the notifier's
	// connection (default slog.Default()).
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.Default()
	}
	return o.Logger
}

// New returns the DB of a pgx pool; transactions of [DB.InTx] are pgx.Tx.
// The pool stays the caller's: close it after the DB is no longer used.
func New(pool *pgxpool.Pool, opts Options) (*DB, error) {
	if pool == nil {
		return nil, fmt.Errorf("%w: nil *pgxpool.Pool", ErrInvalidOptions)
	}
	return &DB{pool: pool, log: opts.logger()}, nil
}

// NewSQL returns the DB of a database/sql pool opened with the pgx driver
// (sql.Open("pgx", url), stdlib.OpenDB or stdlib.OpenDBFromPool);
// transactions of [DB.InTx] are *sql.Tx. It returns an error matching
// [ErrNotPgx] for another driver. The pool stays the caller's.
func NewSQL(db *sql.DB, opts Options) (*DB, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: nil *sql.DB", ErrInvalidOptions)
	}
	if _, ok := db.Driver().(*stdlib.Driver); !ok {
		return nil, fmt.Errorf("%w: its driver is %T", ErrNotPgx, db.Driver())
	}
	return &DB{sql: db, log: opts.logger()}, nil
}

// Pool returns the pgx pool of a DB made by [New], or nil.
func (d *DB) Pool() *pgxpool.Pool { return d.pool }

// SQL returns the database/sql pool of a DB made by [NewSQL], or nil.
func (d *DB) SQL() *sql.DB { return d.sql }

// owner identifies the pool, so that a nested InTx joins only a
// transaction of the same database.
func (d *DB) owner() any {
	if d.pool != nil {
		return d.pool
	}
	return d.sql
}

// q runs statements on the pool, outside any transaction.
func (d *DB) q() querier {
	if d.pool != nil {
		return pgxQuerier{d.pool}
	}
	return sqlQuerier{d.sql}
}

// InTx implements [outbox.Transactor]: it begins a transaction (READ
// COMMITTED, the database's default), calls fn with a ctx carrying it, and
// commits if fn returns nil, or rolls back if fn returns an error or
// panics (the panic is re-raised). If ctx is done when fn returns, it
// rolls back and returns ctx's error. If ctx already carries an open
// transaction of the same pool, fn runs in it and the outermost InTx
// decides.
//
// The transaction is carried both for this package (its stores serialise
// their statements on it, so Add may be called from several goroutines)
// and as outbox.ContextWithTx of its own type, pgx.Tx or *sql.Tx, for the
// application: see [PgxTx] and [SQLTx].
func (d *DB) InTx(ctx context.Context, fn func(ctx context.Context) error) error {
	if st := stateFrom(ctx); st != nil && st.owner == d.owner() && st.open() {
		return fn(ctx)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := d.begin(ctx)
	if err != nil {
		return err
	}
	finished := false
	defer func() {
		if !finished { // an error, a done ctx, a panic or runtime.Goexit
			if err := st.rollback(ctx); err != nil {
				d.log.WarnContext(ctx, "postgres: rollback failed; the server rolls the transaction back when the connection closes", "error", err)
			}
		}
	}()
	if err := fn(st.context(ctx)); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	finished = true
	if err := st.commit(ctx); err != nil {
		return fmt.Errorf("postgres: commit: %w", err)
	}
	return nil
}

func (d *DB) begin(ctx context.Context) (*txState, error) {
	if d.pool != nil {
		tx, err := d.pool.Begin(ctx)
		if err != nil {
			return nil, fmt.Errorf("postgres: begin: %w", err)
		}
		return &txState{owner: d.pool, pgx: tx}, nil
	}
	tx, err := d.sql.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("postgres: begin: %w", err)
	}
	return &txState{owner: d.sql, sql: tx}, nil
}

// stateKey is the context key of a *txState.
type stateKey struct{}

// txState is a transaction carried in a context by this package: begun by
// [DB.InTx], or placed by [WithPgxTx] or [WithSQLTx].
type txState struct {
	owner any // the pool that began it; nil when placed by WithPgxTx or WithSQLTx
	pgx   pgx.Tx
	sql   *sql.Tx

	mu    sync.Mutex // serialises the statements of the stores, and guards ended
	ended bool
}

func stateFrom(ctx context.Context) *txState {
	st, _ := ctx.Value(stateKey{}).(*txState)
	return st
}

// context returns ctx carrying the transaction, for this package and as
// outbox.ContextWithTx of its type.
func (st *txState) context(ctx context.Context) context.Context {
	ctx = context.WithValue(ctx, stateKey{}, st)
	if st.pgx != nil {
		return outbox.ContextWithTx(ctx, st.pgx)
	}
	return outbox.ContextWithTx(ctx, st.sql)
}

func (st *txState) open() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return !st.ended
}

// commit ends the transaction with a commit, once the statements in
// flight have finished.
func (st *txState) commit(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ended = true
	if st.pgx != nil {
		return st.pgx.Commit(ctx)
	}
	return st.sql.Commit()
}

// rollback ends the transaction with a rollback, on a context that is not
// cancelled. A *sql.Tx whose context is done was already rolled back by
// database/sql; that is not an error.
func (st *txState) rollback(ctx context.Context) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.ended = true
	if st.pgx != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
		defer cancel()
		return st.pgx.Rollback(ctx)
	}
	if err := st.sql.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return err
	}
	return nil
}

// do runs fn with the transaction ctx carries, one call at a time per
// transaction: outbox.ErrNoTx without one, outbox.ErrTxDone once it has
// ended. A transaction placed with outbox.ContextWithTx by other code (a
// pgx.Tx or a *sql.Tx) is used too, without serialisation.
func do(ctx context.Context, fn func(q querier) error) error {
	if st := stateFrom(ctx); st != nil {
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.ended {
			return outbox.ErrTxDone
		}
		if st.pgx != nil {
			return txErr(fn(pgxQuerier{st.pgx}))
		}
		return txErr(fn(sqlQuerier{st.sql}))
	}
	if tx, ok := outbox.TxFromContext[pgx.Tx](ctx); ok && tx != nil {
		return txErr(fn(pgxQuerier{tx}))
	}
	if tx, ok := outbox.TxFromContext[*sql.Tx](ctx); ok && tx != nil {
		return txErr(fn(sqlQuerier{tx}))
	}
	return outbox.ErrNoTx
}

// hasTx reports whether ctx carries a transaction [do] would use.
func hasTx(ctx context.Context) bool {
	if stateFrom(ctx) != nil {
		return true
	}
	if tx, ok := outbox.TxFromContext[pgx.Tx](ctx); ok && tx != nil {
		return true
	}
	tx, ok := outbox.TxFromContext[*sql.Tx](ctx)
	return ok && tx != nil
}

// txErr makes the drivers' "transaction has ended" errors match
// outbox.ErrTxDone.
func txErr(err error) error {
	if err != nil && (errors.Is(err, pgx.ErrTxClosed) || errors.Is(err, sql.ErrTxDone)) {
		return fmt.Errorf("%w: %w", outbox.ErrTxDone, err)
	}
	return err
}

// PgxTx returns the pgx transaction ctx carries: the one [DB.InTx] began
// (on a DB made by [New]) or [WithPgxTx] placed, or else one placed with
// outbox.ContextWithTx[pgx.Tx]. Repositories write with it so that their
// writes commit or roll back with the outbox rows and inbox records of the
// same transaction. A pgx.Tx is not safe for concurrent use: see [TxLock].
func PgxTx(ctx context.Context) (pgx.Tx, bool) {
	if st := stateFrom(ctx); st != nil && st.pgx != nil {
		return st.pgx, true
	}
	tx, ok := outbox.TxFromContext[pgx.Tx](ctx)
	return tx, ok && tx != nil
}

// SQLTx returns the database/sql transaction ctx carries: the one
// [DB.InTx] began (on a DB made by [NewSQL]) or [WithSQLTx] placed, or
// else one placed with outbox.ContextWithTx[*sql.Tx].
func SQLTx(ctx context.Context) (*sql.Tx, bool) {
	if st := stateFrom(ctx); st != nil && st.sql != nil {
		return st.sql, true
	}
	tx, ok := outbox.TxFromContext[*sql.Tx](ctx)
	return tx, ok && tx != nil
}

// WithPgxTx returns a copy of ctx carrying tx, a transaction the caller
// began and will end itself, so that [Store.Add] and [Inbox.Record] write
// in it (serialising their statements) and [PgxTx] returns it. [DB.InTx]
// does not join it: call the stores directly. Once tx has ended, the
// stores return errors matching outbox.ErrTxDone.
func WithPgxTx(ctx context.Context, tx pgx.Tx) context.Context {
	return (&txState{pgx: tx}).context(ctx)
}

// WithSQLTx is [WithPgxTx] for a *sql.Tx of the pgx driver.
func WithSQLTx(ctx context.Context, tx *sql.Tx) context.Context {
	return (&txState{sql: tx}).context(ctx)
}

// TxLock returns the lock the stores of this package hold while they run a
// statement in the transaction ctx carries (placed by [DB.InTx],
// [WithPgxTx] or [WithSQLTx]), or a lock that does nothing when ctx
// carries none. A pgx.Tx is one connection and is not safe for concurrent
// use: an application that writes with it from several goroutines while
// events are added in parallel holds this lock around its own statements.
func TxLock(ctx context.Context) sync.Locker {
	if st := stateFrom(ctx); st != nil {
		return &st.mu
	}
	return noLock{}
}

type noLock struct{}

func (noLock) Lock()   {}
func (noLock) Unlock() {}

// querier runs statements on a pool or in a transaction, of either driver.
type querier interface {
	// exec runs a statement and returns the number of rows it affected.
	exec(ctx context.Context, query string, args ...any) (int64, error)
	// query runs a statement and calls row for each row it returns.
	query(ctx context.Context, query string, args []any, row func(scan func(dest ...any) error) error) error
}

type pgxRunner interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type pgxQuerier struct{ r pgxRunner }

func (q pgxQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tag, err := q.r.Exec(ctx, query, args...)
	return tag.RowsAffected(), err
}

func (q pgxQuerier) query(ctx context.Context, query string, args []any, row func(scan func(dest ...any) error) error) error {
	rows, err := q.r.Query(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

type sqlRunner interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type sqlQuerier struct{ r sqlRunner }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.r.ExecContext(ctx, query, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, query string, args []any, row func(scan func(dest ...any) error) error) error {
	rows, err := q.r.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }() // rows.Err reports what matters
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}
