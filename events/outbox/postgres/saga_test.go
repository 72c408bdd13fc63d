package postgres_test

import (
	"context"
	"errors"
	"io/fs"
	"log"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

// newSagaStore returns a saga store on db in a schema of its own, with its
// tables created.
func newSagaStore(tb testing.TB, db *postgres.DB, clock saga.Clock) *postgres.SagaStore {
	tb.Helper()
	schema := newSchema(tb)
	s, err := postgres.NewSagaStore(db, postgres.SagaStoreOptions{Table: schema + ".sagas", LogTable: schema + ".saga_log", Clock: clock})
	require.NoError(tb, err)
	require.NoError(tb, s.EnsureSchema(context.Background()))
	return s
}

// The kit runs over both transaction flavours, and over a store on a pgx
// pool whose checkpoints are written in database/sql transactions: Create
// and Save use whichever transaction the context carries.
func TestSagaConformance(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			sagatest.Run(t, func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor) {
				t.Helper()
				s := newSagaStore(t, fl.db(t), clock)
				return s, s
			})
		})
	}
	t.Run("pgx-store-sql-tx", func(t *testing.T) {
		t.Parallel()
		sagatest.Run(t, func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor) {
			t.Helper()
			return newSagaStore(t, pgxDB(t), clock), sqlDB(t)
		})
	})
}

func TestSagaSchema(t *testing.T) {
	t.Parallel()
	b, err := fs.ReadFile(postgres.SchemaFS(), "schema/saga.sql")
	require.NoError(t, err)
	got, err := postgres.SagaSchema("", "")
	require.NoError(t, err)
	assert.Equal(t, string(b), got, "the defaults render as the file")
	got, err = postgres.SagaSchema(postgres.DefaultSagaTable, postgres.DefaultSagaLogTable)
	require.NoError(t, err)
	assert.Equal(t, string(b), got)

	got, err = postgres.SagaSchema("App_1.my_sagas", "audit.my_log")
	require.NoError(t, err)
	for _, def := range []string{postgres.DefaultSagaTable, postgres.DefaultSagaLogTable} {
		assert.NotContains(t, got, `"`+def, "every quoted name derived from %s is renamed", def)
	}
	assert.Contains(t, got, `CREATE SCHEMA IF NOT EXISTS "App_1";`)
	assert.Contains(t, got, `CREATE SCHEMA IF NOT EXISTS "audit";`)
	assert.Contains(t, got, `CREATE TABLE IF NOT EXISTS "App_1"."my_sagas" (`)
	assert.Contains(t, got, `CREATE TABLE IF NOT EXISTS "audit"."my_log" (`)
	assert.Contains(t, got, `"my_sagas_active_idx"`)
	assert.Contains(t, got, `"my_log_pkey"`, "index and constraint names are not schema-qualified")

	got, err = postgres.SagaSchema("app.s", "app.l")
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(got, "CREATE SCHEMA"), "one schema, created once")

	for _, names := range [][2]string{{"a-b", ""}, {"", "pg_x.l"}, {"same", "same"}, {"x.y.z", "l"}} {
		_, err := postgres.SagaSchema(names[0], names[1])
		require.ErrorIs(t, err, postgres.ErrInvalidOptions, "%q", names)
	}
}

func TestSagaStoreOptions(t *testing.T) {
	t.Parallel()
	_, err := postgres.NewSagaStore(nil, postgres.SagaStoreOptions{Table: "bad name", LogTable: "bad-log"})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions)
	joined, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "errors.Join: %v", err)
	assert.Len(t, joined.Unwrap(), 2, "every problem at once: %v", err)
	_, err = postgres.NewSagaStore(pgxDB(t), postgres.SagaStoreOptions{Table: "s.t", LogTable: "s.t"})
	require.ErrorIs(t, err, postgres.ErrInvalidOptions, "one table for both")

	s, err := postgres.NewSagaStore(pgxDB(t), postgres.SagaStoreOptions{})
	require.NoError(t, err)
	assert.Equal(t, postgres.DefaultSagaTable, s.Table())
	assert.Equal(t, postgres.DefaultSagaLogTable, s.LogTable())
}

// Text PostgreSQL cannot store is refused where it identifies something,
// and replaced in the errors of the log.
func TestSagaText(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	clock := sagatest.NewClock()
	s := newSagaStore(t, pgxDB(t), clock)

	bad := sagatest.NewRecord("nul\x00name")
	require.ErrorIs(t, s.Create(ctx, bad, 0), saga.ErrInvalidArgument)
	bad = sagatest.NewRecord("orders")
	bad.LeaseOwner = "bad\xff"
	require.ErrorIs(t, s.Create(ctx, bad, time.Second), saga.ErrInvalidArgument)

	rec := sagatest.NewRecord("orders")
	require.NoError(t, s.Create(ctx, rec, 0))
	e := saga.Entry{Step: "a", Phase: saga.Forward, Outcome: saga.StepFailed, Attempts: 1,
		Errors: []string{"nul\x00byte", "bad \xff utf-8"}, Owner: "d", StartedAt: clock.Now(), FinishedAt: clock.Now()}
	cp := saga.Checkpoint{ID: rec.ID, Version: 1, Status: saga.Compensated, Log: []saga.Entry{e}}
	cp.Log[0].Owner = "o\x00"
	require.ErrorIs(t, s.Save(ctx, cp), saga.ErrInvalidArgument)
	cp.Log[0].Owner = "d"
	require.NoError(t, s.Save(ctx, cp))
	log, err := s.Log(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, log, 1)
	assert.Equal(t, []string{"nul\uFFFDbyte", "bad \uFFFD utf-8"}, log[0].Errors)

	got, err := s.Claim(ctx, "r", []string{"x\x00"}, 10, time.Second)
	require.NoError(t, err)
	assert.Empty(t, got, "a name no saga can have matches nothing")
	list, err := s.List(ctx, saga.Filter{Names: []string{"x\x00"}, Limit: 10})
	require.NoError(t, err)
	assert.Empty(t, list)
	list, err = s.List(ctx, saga.Filter{Names: []string{"x\x00", "orders"}, Limit: 10})
	require.NoError(t, err)
	assert.Len(t, list, 1)
	require.ErrorIs(t, s.Renew(ctx, rec.ID, "\x00", time.Second), saga.ErrInvalidArgument)
}

// A checkpoint written in a transaction holds the saga's row until the
// transaction ends: a claim skips the saga, and another writer waits for
// the transaction and then gets the conflict.
func TestSagaSaveHoldsTheSaga(t *testing.T) {
	t.Parallel()
	for _, fl := range flavours {
		t.Run(fl.name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			db := fl.db(t)
			s := newSagaStore(t, db, nil)
			rec := sagatest.NewRecord("orders")
			require.NoError(t, s.Create(ctx, rec, 0))
			cp := saga.Checkpoint{ID: rec.ID, Version: 1, Status: saga.Running, Step: 1}

			saved, release := make(chan struct{}), make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				err := db.InTx(ctx, func(ctx context.Context) error {
					if err := s.Save(ctx, cp); err != nil {
						return err
					}
					close(saved)
					<-release
					return nil
				})
				assert.NoError(t, err)
			})
			<-saved
			got, err := s.Claim(ctx, "r", nil, 10, time.Minute)
			require.NoError(t, err)
			assert.Empty(t, got, "a saga an open transaction holds is skipped")

			stale := make(chan error, 1)
			go func() { stale <- s.Save(ctx, cp) }()
			select {
			case err := <-stale:
				t.Fatalf("the second writer did not wait: %v", err)
			case <-time.After(100 * time.Millisecond):
			}
			close(release)
			wg.Wait()
			err = <-stale
			require.ErrorIs(t, err, saga.ErrConflict)
			var ce *saga.ConflictError
			require.True(t, errors.As(err, &ce))
			loaded, err := s.Load(ctx, rec.ID)
			require.NoError(t, err)
			assert.Equal(t, int64(2), loaded.Version)
		})
	}
}

// EnsureSchema runs from several goroutines at once, with the two tables
// in schemas that do not exist yet: each schema, table and index is
// created once.
func TestSagaEnsureSchema(t *testing.T) {
	t.Parallel()
	base := newSchema(t)
	pool, _ := pools(t)
	t.Cleanup(func() {
		_, err := pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+base+"_s, "+base+"_l CASCADE")
		assert.NoError(t, err)
	})
	s, err := postgres.NewSagaStore(sqlDB(t), postgres.SagaStoreOptions{Table: base + "_s.sagas", LogTable: base + "_l.log"})
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = s.EnsureSchema(t.Context()) })
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	require.NoError(t, s.EnsureSchema(t.Context()), "idempotent")
	for schema, want := range map[string][2]int{base + "_s": {1, 3}, base + "_l": {1, 1}} {
		var tables, indexes int
		require.NoError(t, pool.QueryRow(t.Context(),
			`SELECT (SELECT count(*) FROM pg_tables WHERE schemaname = $1), (SELECT count(*) FROM pg_indexes WHERE schemaname = $1)`,
			schema).Scan(&tables, &indexes))
		assert.Equal(t, want, [2]int{tables, indexes}, "%s: tables and indexes (sagas: primary key, active and ended; log: primary key)", schema)
	}
}

// An order saga whose steps write with the transaction of their
// checkpoint: a step's payment row and the saga's progress commit
// together. The orchestrator recovers, in any process, the sagas of a
// driver that died. (Compiled, not run.)
func ExampleNewSagaStore() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, os.Getenv("CQRS_POSTGRES_URL"))
	if err != nil {
		log.Print(err)
		return
	}
	defer pool.Close()
	if err := placeOrderSaga(ctx, pool); err != nil {
		log.Print(err)
	}
}

type order struct {
	ID string `json:"id"`
}

func placeOrderSaga(ctx context.Context, pool *pgxpool.Pool) error {
	db, err := postgres.New(pool, postgres.Options{})
	if err != nil {
		return err
	}
	sagas, err := postgres.NewSagaStore(db, postgres.SagaStoreOptions{}) // tables cqrs_sagas, cqrs_saga_log
	if err != nil {
		return err
	}
	if err := sagas.EnsureSchema(ctx); err != nil { // or run postgres.SagaSchema in migrations
		return err
	}
	charge := saga.Do(func(ctx context.Context, o *order) error {
		tx, _ := postgres.PgxTx(ctx) // the checkpoint's transaction
		_, err := tx.Exec(ctx, "INSERT INTO payments (key, order_id) VALUES ($1, $2)", saga.KeyFrom(ctx), o.ID)
		return err
	})
	refund := saga.Do(func(ctx context.Context, o *order) error {
		tx, _ := postgres.PgxTx(ctx)
		_, err := tx.Exec(ctx, "INSERT INTO refunds (key, order_id) VALUES ($1, $2)", saga.KeyFrom(ctx), o.ID)
		return err
	})
	ship := saga.Do(func(ctx context.Context, o *order) error { return nil })
	placeOrder := &saga.Definition[order]{Name: "place-order", Steps: []saga.Step[order]{
		{Name: "charge", Action: charge, Compensation: refund},
		{Name: "ship", Action: ship},
	}}
	o, err := saga.New(saga.Options{Store: sagas, Transactor: sagas}, placeOrder)
	if err != nil {
		return err
	}
	// In every process: finish the sagas of drivers that died.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() { _ = saga.NewRecoverer(o, 10*time.Second).Run(ctx) }()

	_, err = saga.Execute(ctx, o, placeOrder, order{ID: "o-1"})
	return err
}
