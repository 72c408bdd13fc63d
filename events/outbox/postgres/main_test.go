package postgres_test

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// urlEnv names the environment variable with the URL of the test database.
const urlEnv = "CQRS_POSTGRES_URL"

const defaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// databaseURL returns the URL of the test database.
func databaseURL() string { return testenv.URL(urlEnv, defaultURL) }

// shared holds the pools every test of the binary uses (each test isolates
// itself in a schema of its own), opened on first use and closed by
// TestMain.
var shared struct {
	once sync.Once
	pool *pgxpool.Pool
	sql  *sql.DB
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.sql != nil {
		_ = shared.sql.Close()
	}
	if shared.pool != nil {
		shared.pool.Close()
	}
	if code == 0 && os.Getenv(helperEnv) == "" {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// unavailable skips t because the database cannot be reached, or fails it
// when CI is set: CI must run these tests.
func unavailable(tb testing.TB, err error) {
	tb.Helper()
	testenv.Unavailable(tb, "PostgreSQL", urlEnv, defaultURL, err)
}

// newPoolWith opens a pgx pool on the test database with at most maxConns
// connections, its connections configured by configure if not nil.
func newPoolWith(tb testing.TB, maxConns int32, configure func(*pgx.ConnConfig)) (*pgxpool.Pool, error) {
	tb.Helper()
	cfg, err := pgxpool.ParseConfig(databaseURL())
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = maxConns
	if configure != nil {
		configure(cfg.ConnConfig)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}

// pools returns the shared pgx pool and a database/sql pool on the pgx
// driver, or skips tb.
func pools(tb testing.TB) (*pgxpool.Pool, *sql.DB) {
	tb.Helper()
	shared.once.Do(func() {
		shared.pool, shared.err = newPoolWith(tb, 12, nil)
		if shared.err != nil {
			return
		}
		cfg, err := pgxpool.ParseConfig(databaseURL())
		if err != nil {
			shared.err = err
			return
		}
		shared.sql = stdlib.OpenDB(*cfg.ConnConfig)
		shared.sql.SetMaxOpenConns(12)
		shared.sql.SetMaxIdleConns(12)
	})
	if shared.err != nil {
		unavailable(tb, shared.err)
	}
	return shared.pool, shared.sql
}

// quiet discards the logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// flavour is one of the two ways a Go program holds PostgreSQL.
type flavour struct {
	name string
	db   func(tb testing.TB) *postgres.DB
}

var flavours = []flavour{
	{"pgx", pgxDB},
	{"database-sql", sqlDB},
}

func pgxDB(tb testing.TB) *postgres.DB {
	tb.Helper()
	pool, _ := pools(tb)
	db, err := postgres.New(pool, postgres.Options{Logger: quiet})
	require.NoError(tb, err)
	return db
}

func sqlDB(tb testing.TB) *postgres.DB {
	tb.Helper()
	_, sdb := pools(tb)
	db, err := postgres.NewSQL(sdb, postgres.Options{Logger: quiet})
	require.NoError(tb, err)
	return db
}

// newSchema creates a schema of its own for tb, dropped (with everything
// in it) when tb ends, and returns its name.
func newSchema(tb testing.TB) string {
	tb.Helper()
	pool, _ := pools(tb)
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "t_" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := pool.Exec(ctx, "CREATE SCHEMA "+name)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := pool.Exec(ctx, "DROP SCHEMA "+name+" CASCADE"); err != nil {
			tb.Errorf("drop schema %s: %v", name, err)
		}
	})
	return name
}

// newStore returns a store on db in a schema of its own, with its table
// created.
func newStore(tb testing.TB, db *postgres.DB, clock outbox.Clock) *postgres.Store {
	tb.Helper()
	s, err := postgres.NewStore(db, postgres.StoreOptions{Table: newSchema(tb) + ".outbox", Clock: clock})
	require.NoError(tb, err)
	require.NoError(tb, s.EnsureSchema(context.Background()))
	return s
}

// newInbox returns an inbox on db in a schema of its own, with its table
// created.
func newInbox(tb testing.TB, db *postgres.DB, clock outbox.Clock) *postgres.Inbox {
	tb.Helper()
	in, err := postgres.NewInbox(db, postgres.InboxOptions{Table: newSchema(tb) + ".inbox", Clock: clock})
	require.NoError(tb, err)
	require.NoError(tb, in.EnsureSchema(context.Background()))
	return in
}
