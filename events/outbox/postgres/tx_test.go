package postgres_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

var errRollback = errors.New("roll back")

// orders is an application repository writing with the transaction the
// context carries, whichever driver it is.
type orders struct{ table string }

func newOrders(t *testing.T, s *postgres.Store) orders {
	t.Helper()
	pool, _ := pools(t)
	schema, _, _ := strings.Cut(s.Table(), ".")
	o := orders{table: schema + ".orders"}
	_, err := pool.Exec(t.Context(), "CREATE TABLE "+o.table+" (id text PRIMARY KEY)")
	require.NoError(t, err)
	return o
}

func (o orders) save(ctx context.Context, id string) error {
	q := "INSERT INTO " + o.table + " (id) VALUES ($1)"
	if tx, ok := postgres.PgxTx(ctx); ok {
		_, err := tx.Exec(ctx, q, id)
		return err
	}
	if tx, ok := postgres.SQLTx(ctx); ok {
		_, err := tx.ExecContext(ctx, q, id)
		return err
	}
	return outbox.ErrNoTx
}

func (o orders) count(t *testing.T) int {
	t.Helper()
	pool, _ := pools(t)
	var n int
	require.NoError(t, pool.QueryRow(t.Context(), "SELECT count(*) FROM "+o.table).Scan(&n))
	return n
}

func pending(t *testing.T, s *postgres.Store) int64 {
	t.Helper()
	st, err := s.Stats(t.Context())
	require.NoError(t, err)
	return st.Pending
}

// The application's writes and the outbox rows commit or roll back
// together, with either driver.
func TestApplicationWritesCommitWithTheOutbox(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			db := fl.db(t)
			s := newStore(t, db, outboxtest.NewClock())
			o := newOrders(t, s)
			ctx := t.Context()
			place := func(id string) func(ctx context.Context) error {
				return func(ctx context.Context) error {
					if err := o.save(ctx, id); err != nil {
						return err
					}
					return s.Add(ctx, outboxtest.NewEnvelope(id, "placed"))
				}
			}

			err := db.InTx(ctx, func(ctx context.Context) error {
				require.NoError(t, place("o-1")(ctx))
				return errRollback
			})
			require.ErrorIs(t, err, errRollback)
			assert.Zero(t, o.count(t), "an error rolls back the application's row")
			assert.Zero(t, pending(t, s), "and the outbox row")

			require.PanicsWithValue(t, "boom", func() {
				_ = db.InTx(ctx, func(ctx context.Context) error {
					require.NoError(t, place("o-1")(ctx))
					panic("boom")
				})
			})
			assert.Zero(t, o.count(t))
			assert.Zero(t, pending(t, s))

			cctx, cancel := context.WithCancel(ctx)
			err = db.InTx(cctx, func(ctx context.Context) error {
				require.NoError(t, place("o-1")(ctx))
				cancel()
				return nil
			})
			require.ErrorIs(t, err, context.Canceled)
			assert.Zero(t, o.count(t), "a context done before the commit rolls back")
			assert.Zero(t, pending(t, s))

			err = db.InTx(ctx, func(ctx context.Context) error {
				require.NoError(t, place("o-1")(ctx))
				return db.InTx(ctx, place("o-2")) // joins
			})
			require.NoError(t, err)
			assert.Equal(t, 2, o.count(t))
			assert.Equal(t, int64(2), pending(t, s))

			// A failing application write after Add: the whole transaction
			// rolls back.
			err = db.InTx(ctx, place("o-1"))
			require.Error(t, err, "duplicate order")
			assert.Equal(t, int64(2), pending(t, s))
		})
	}
}

// A transaction the application began itself, placed with WithPgxTx or
// WithSQLTx, or bare with outbox.ContextWithTx.
func TestAddInTransactionsOfTheApplication(t *testing.T) {
	t.Parallel()
	pool, sdb := pools(t)
	s := newStore(t, pgxDB(t), outboxtest.NewClock())
	ctx := t.Context()
	type place func(ctx context.Context) (context.Context, func() error)
	cases := map[string]place{
		"WithPgxTx": func(ctx context.Context) (context.Context, func() error) {
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			return postgres.WithPgxTx(ctx, tx), func() error { return tx.Commit(ctx) }
		},
		"ContextWithTx[pgx.Tx]": func(ctx context.Context) (context.Context, func() error) {
			tx, err := pool.Begin(ctx)
			require.NoError(t, err)
			return outbox.ContextWithTx(ctx, tx), func() error { return tx.Commit(ctx) }
		},
		"WithSQLTx": func(ctx context.Context) (context.Context, func() error) {
			tx, err := sdb.BeginTx(ctx, nil)
			require.NoError(t, err)
			return postgres.WithSQLTx(ctx, tx), tx.Commit
		},
		"ContextWithTx[*sql.Tx]": func(ctx context.Context) (context.Context, func() error) {
			tx, err := sdb.BeginTx(ctx, nil)
			require.NoError(t, err)
			return outbox.ContextWithTx(ctx, tx), tx.Commit
		},
	}
	for name, begin := range cases {
		txCtx, commit := begin(ctx)
		e := outboxtest.NewEnvelope("k", name)
		require.NoError(t, s.Add(txCtx, e), name)
		_, err := s.Get(ctx, e.ID)
		require.ErrorIs(t, err, outbox.ErrNotFound, "%s: not committed yet", name)
		require.NoError(t, commit(), name)
		r, err := s.Get(ctx, e.ID)
		require.NoError(t, err, name)
		assert.Equal(t, outbox.Pending, r.State)
		err = s.Add(txCtx, outboxtest.NewEnvelope("k", name+" late"))
		require.ErrorIs(t, err, outbox.ErrTxDone, name)
	}
	var tx pgx.Tx
	_, ok := postgres.PgxTx(ctx)
	assert.False(t, ok)
	_, ok = postgres.SQLTx(ctx)
	assert.False(t, ok)
	require.ErrorIs(t, s.Add(outbox.ContextWithTx(ctx, tx), outboxtest.NewEnvelope("k", "nil")), outbox.ErrNoTx, "a nil pgx.Tx is none")
}

// Add may be called from several goroutines with one transaction (the
// mediator publishes in parallel), and the application's own statements
// take the same lock: a pgx.Tx is one connection.
func TestConcurrentWritesInOneTransaction(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			db := fl.db(t)
			s := newStore(t, db, outboxtest.NewClock())
			o := newOrders(t, s)
			const goroutines, each = 8, 10
			err := db.InTx(t.Context(), func(ctx context.Context) error {
				var wg sync.WaitGroup
				errs := make(chan error, 2*goroutines)
				for g := range goroutines {
					wg.Go(func() {
						for i := range each {
							if err := s.Add(ctx, outboxtest.NewEnvelope("k"+strconv.Itoa(g), strconv.Itoa(i))); err != nil {
								errs <- err
								return
							}
						}
					})
					wg.Go(func() {
						l := postgres.TxLock(ctx)
						l.Lock()
						defer l.Unlock()
						errs <- o.save(ctx, "o-"+strconv.Itoa(g))
					})
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					if err != nil {
						return err
					}
				}
				return nil
			})
			require.NoError(t, err)
			assert.Equal(t, int64(goroutines*each), pending(t, s))
			assert.Equal(t, goroutines, o.count(t))
		})
	}
	assert.NotNil(t, postgres.TxLock(t.Context()), "without a transaction: a lock that does nothing")
}

// PostgreSQL cannot store NUL bytes or invalid UTF-8 in text: Add refuses
// them, and MarkFailed cleans the error text it stores.
func TestUnstorableText(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgxDB(t), outboxtest.NewClock())
	ctx := t.Context()
	bad := []func(e *wire.Envelope){
		func(e *wire.Envelope) { e.Name = "a\x00b" },
		func(e *wire.Envelope) { e.Key = "\xff" },
		func(e *wire.Envelope) { e.Headers["x"] = "\x00" },
		func(e *wire.Envelope) { e.Headers["\xfe"] = "v" },
	}
	for i, mutate := range bad {
		e := outboxtest.NewEnvelope("k", strconv.Itoa(i))
		mutate(&e)
		err := s.InTx(ctx, func(ctx context.Context) error { return s.Add(ctx, e) })
		require.ErrorIs(t, err, outbox.ErrInvalidEnvelope, "case %d", i)
	}

	e := outboxtest.NewEnvelope("k", "x")
	require.NoError(t, s.InTx(ctx, func(ctx context.Context) error { return s.Add(ctx, e) }))
	_, err := s.Claim(ctx, "A", 1, outboxtest.Lease)
	require.NoError(t, err)
	require.NoError(t, s.MarkFailed(ctx, "A", outbox.Failure{ID: e.ID, Error: "bad\x00\xffend"}))
	r, err := s.Get(ctx, e.ID)
	require.NoError(t, err)
	assert.Equal(t, "bad\uFFFD\uFFFDend", r.LastError)
}

// MarkFailed given one row twice applies the first failure and reports
// the second, as the memory store does.
func TestMarkFailedTwice(t *testing.T) {
	t.Parallel()
	s := newStore(t, pgxDB(t), outboxtest.NewClock())
	ctx := t.Context()
	e := outboxtest.NewEnvelope("k", "x")
	require.NoError(t, s.InTx(ctx, func(ctx context.Context) error { return s.Add(ctx, e) }))
	_, err := s.Claim(ctx, "A", 1, outboxtest.Lease)
	require.NoError(t, err)
	err = s.MarkFailed(ctx, "A", outbox.Failure{ID: e.ID, Error: "1"}, outbox.Failure{ID: e.ID, Error: "2"})
	var le *outbox.LeaseError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, []uuid.UUID{e.ID}, le.IDs)
	r, err := s.Get(ctx, e.ID)
	require.NoError(t, err)
	assert.Equal(t, 1, r.Attempts)
	assert.Equal(t, "1", r.LastError)
}
