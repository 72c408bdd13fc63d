package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// database is one service's database, SQLite or PostgreSQL, behind the
// same small surface: the outbox, inbox and saga stores of the library,
// a Transactor that puts the transaction in the context, and helpers that
// run the service's own statements in that transaction. Application SQL is
// written once, with $1-style parameters and "{s}" before each table name
// (the PostgreSQL schema, or nothing on SQLite).
type database struct {
	kind   string // "sqlite" or "postgres"
	where  string // the file, or the schema
	pool   *sql.DB
	tx     outbox.Transactor
	txOf   func(ctx context.Context) (*sql.Tx, bool)
	outbox outbox.Store
	inbox  inbox.Store
	sagas  saga.Store
	close  func() error

	prefix  string // "schema." or ""
	queries sync.Map
}

// placeholder matches a $N parameter.
var placeholder = regexp.MustCompile(`\$(\d+)`)

// q returns query in the database's dialect: tables qualified with the
// schema, and ?N parameters on SQLite.
func (d *database) q(query string) string {
	if v, ok := d.queries.Load(query); ok {
		if q, ok := v.(string); ok {
			return q
		}
	}
	out := strings.ReplaceAll(query, "{s}", d.prefix)
	if d.kind == "sqlite" {
		out = placeholder.ReplaceAllString(out, "?$1")
	}
	d.queries.Store(query, out)
	return out
}

// errNoTx reports a write attempted outside a transaction.
var errNoTx = errors.New("no transaction in the context")

// exec runs a statement in the transaction ctx carries and returns the
// number of rows it affected.
func (d *database) exec(ctx context.Context, query string, args ...any) (int64, error) {
	tx, ok := d.txOf(ctx)
	if !ok {
		return 0, errNoTx
	}
	res, err := tx.ExecContext(ctx, d.q(query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// queryRow runs a query in the transaction ctx carries, or on the pool.
func (d *database) queryRow(ctx context.Context, query string, args ...any) *sql.Row {
	if tx, ok := d.txOf(ctx); ok {
		return tx.QueryRowContext(ctx, d.q(query), args...)
	}
	return d.pool.QueryRowContext(ctx, d.q(query), args...)
}

// query runs a query in the transaction ctx carries, or on the pool, and
// calls row for each row.
func (d *database) query(ctx context.Context, query string, args []any, row func(scan func(...any) error) error) error {
	var rows *sql.Rows
	var err error
	if tx, ok := d.txOf(ctx); ok {
		rows, err = tx.QueryContext(ctx, d.q(query), args...)
	} else {
		rows, err = d.pool.QueryContext(ctx, d.q(query), args...)
	}
	if err != nil {
		return err
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		if err := row(rows.Scan); err != nil {
			return err
		}
	}
	return rows.Err()
}

// ensure runs DDL statements, each in a transaction of its own.
func (d *database) ensure(ctx context.Context, ddl ...string) error {
	for _, stmt := range ddl {
		if err := d.tx.InTx(ctx, func(ctx context.Context) error {
			_, err := d.exec(ctx, stmt)
			return err
		}); err != nil {
			return fmt.Errorf("%s: %w", firstLine(stmt), err)
		}
	}
	return nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// dbOptions chooses a service's database.
type dbOptions struct {
	// Postgres is the URL of a PostgreSQL database; empty means SQLite.
	Postgres string
	// Schema is the PostgreSQL schema of the service's tables.
	Schema string
	// Dir is the folder of the SQLite files; File the service's file in it.
	Dir, File string
	// Synchronous is SQLite's synchronous setting.
	Synchronous string
	// MaxConns bounds the PostgreSQL connections.
	MaxConns int
	// NoNotify stops PostgreSQL commits from waking relays with NOTIFY:
	// they poll instead.
	NoNotify bool
}

// openDatabase opens the service's database and creates its library
// tables (outbox, inbox, sagas); the service creates its own.
func openDatabase(ctx context.Context, o dbOptions) (*database, error) {
	if o.Postgres != "" {
		return openPostgres(ctx, o)
	}
	return openSQLite(ctx, o)
}

func openSQLite(ctx context.Context, o dbOptions) (*database, error) {
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(o.Dir, o.File)
	db, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: o.Synchronous})
	if err != nil {
		return nil, err
	}
	d := &database{kind: "sqlite", where: path, pool: db.SQL(), tx: db, txOf: db.Tx, close: db.Close}
	store, err := sqlite.NewStore(db, sqlite.StoreOptions{})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	in, err := sqlite.NewInbox(db, sqlite.InboxOptions{})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	sagas, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	if err := errors.Join(store.EnsureSchema(ctx), in.EnsureSchema(ctx), sagas.EnsureSchema(ctx)); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	d.outbox, d.inbox, d.sagas = store, in, sagas
	return d, nil
}

func openPostgres(ctx context.Context, o dbOptions) (*database, error) {
	pool, err := sql.Open("pgx", o.Postgres)
	if err != nil {
		return nil, err
	}
	pool.SetMaxOpenConns(max(o.MaxConns, 2))
	pool.SetMaxIdleConns(max(o.MaxConns, 2))
	if _, err := pool.ExecContext(ctx, `CREATE SCHEMA IF NOT EXISTS "`+o.Schema+`"`); err != nil {
		// Two services creating their schemas at once may race on the
		// catalog: the schema exists afterwards either way.
		var exists bool
		if qerr := pool.QueryRowContext(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, o.Schema).Scan(&exists); qerr != nil || !exists {
			return nil, errors.Join(fmt.Errorf("postgres: %w", err), pool.Close())
		}
	}
	db, err := postgres.NewSQL(pool, postgres.Options{})
	if err != nil {
		return nil, errors.Join(err, pool.Close())
	}
	d := &database{kind: "postgres", where: "schema " + o.Schema, pool: pool, tx: db, txOf: postgres.SQLTx, close: pool.Close, prefix: o.Schema + "."}
	store, err := postgres.NewStore(db, postgres.StoreOptions{Table: o.Schema + ".cqrs_outbox", NoNotify: o.NoNotify})
	if err != nil {
		return nil, errors.Join(err, pool.Close())
	}
	in, err := postgres.NewInbox(db, postgres.InboxOptions{Table: o.Schema + ".cqrs_inbox"})
	if err != nil {
		return nil, errors.Join(err, pool.Close())
	}
	sagas, err := postgres.NewSagaStore(db, postgres.SagaStoreOptions{Table: o.Schema + ".cqrs_sagas", LogTable: o.Schema + ".cqrs_saga_log"})
	if err != nil {
		return nil, errors.Join(err, pool.Close())
	}
	if err := errors.Join(store.EnsureSchema(ctx), in.EnsureSchema(ctx), sagas.EnsureSchema(ctx)); err != nil {
		return nil, errors.Join(err, pool.Close())
	}
	d.outbox, d.inbox, d.sagas = store, in, sagas
	return d, nil
}
