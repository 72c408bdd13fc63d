package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/mediator/saga/sagatest"
)

func newSagaStore(tb testing.TB, db *sqlite.DB, clock saga.Clock) *sqlite.SagaStore {
	tb.Helper()
	s, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{Clock: clock})
	require.NoError(tb, err)
	require.NoError(tb, s.EnsureSchema(tb.Context()))
	return s
}

func TestSagaConformance(t *testing.T) {
	t.Parallel()
	sagatest.Run(t, func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor) {
		t.Helper()
		db, _ := openDB(t, sqlite.Options{})
		return newSagaStore(t, db, clock), db
	})
}

// TestSagaConformanceOneFile runs the kit with every store in one database
// file, each on tables of its own: tables are isolated, and the subtests'
// writers all queue for one write lock.
func TestSagaConformanceOneFile(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, sqlite.Options{})
	var n atomic.Int64
	sagatest.Run(t, func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor) {
		t.Helper()
		i := strconv.FormatInt(n.Add(1), 10)
		s, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{Table: "sagas_" + i, LogTable: "saga_log_" + i, Clock: clock})
		require.NoError(t, err)
		require.NoError(t, s.EnsureSchema(t.Context()))
		return s, s
	})
}

func TestSagaSchema(t *testing.T) {
	t.Parallel()
	b, err := fs.ReadFile(sqlite.SchemaFS(), "schema/saga.sql")
	require.NoError(t, err)
	assert.Contains(t, string(b), `CREATE TABLE IF NOT EXISTS "`+sqlite.DefaultSagaTable+`"`)
	assert.Contains(t, string(b), `CREATE TABLE IF NOT EXISTS "`+sqlite.DefaultSagaLogTable+`"`)

	// A log table named after the default saga table is renamed once.
	ddl, err := sqlite.SagaSchema("billing_sagas", "cqrs_sagas_log")
	require.NoError(t, err)
	assert.Contains(t, ddl, `CREATE TABLE IF NOT EXISTS "billing_sagas"`)
	assert.Contains(t, ddl, `CREATE INDEX IF NOT EXISTS "billing_sagas_active"`)
	assert.Contains(t, ddl, `ON "billing_sagas" (name)`)
	assert.Contains(t, ddl, `CREATE TABLE IF NOT EXISTS "cqrs_sagas_log"`)
	assert.NotContains(t, ddl, `"cqrs_sagas"`)
	assert.NotContains(t, ddl, sqlite.DefaultSagaLogTable)

	for _, names := range [][2]string{
		{"sagas", "sagas"},        // the same table
		{"Sagas", "sagas"},        // SQLite names ignore case
		{"sagas", "sagas_active"}, // an index of the saga table
		{"sqlite_sagas", "log"},   // reserved
		{"sagas", "saga log"},     // not an identifier
		{"", "log"},               // empty
	} {
		_, err := sqlite.SagaSchema(names[0], names[1])
		require.ErrorIs(t, err, sqlite.ErrInvalidOptions, "%q", names)
	}
	_, err = sqlite.NewSagaStore(nil, sqlite.SagaStoreOptions{Table: "x", LogTable: "x"})
	require.ErrorIs(t, err, sqlite.ErrInvalidOptions)
	assert.ErrorContains(t, err, "nil *DB")
	assert.ErrorContains(t, err, "must differ")

	db, _ := openDB(t, sqlite.Options{})
	s, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{})
	require.NoError(t, err)
	assert.Equal(t, sqlite.DefaultSagaTable, s.Table())
	assert.Equal(t, sqlite.DefaultSagaLogTable, s.LogTable())
	require.NoError(t, s.EnsureSchema(t.Context()))
	require.NoError(t, s.EnsureSchema(t.Context()), "idempotent")
}

// TestSagaSaveInTransactionIsAtomic makes the insert of a log entry fail
// after the saga's update, inside the caller's transaction: the update is
// undone with it, and the caller's transaction goes on and commits its
// other writes.
func TestSagaSaveInTransactionIsAtomic(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	createOrders(t, db)
	clock := outboxtest.NewClock()
	s := newSagaStore(t, db, clock)
	_, err := db.SQL().ExecContext(ctx, `CREATE TRIGGER refuse_boom BEFORE INSERT ON "cqrs_saga_log"
		WHEN NEW.step = 'boom' BEGIN SELECT RAISE(ABORT, 'boom refused'); END`)
	require.NoError(t, err)
	rec := sagatest.NewRecord("orders")
	require.NoError(t, s.Create(ctx, rec, 0))
	entry := func(step string) saga.Entry {
		return saga.Entry{Step: step, Phase: saga.Forward, Outcome: saga.Succeeded, Attempts: 1, Owner: "o",
			StartedAt: clock.Now(), FinishedAt: clock.Now()}
	}

	err = db.InTx(ctx, func(ctx context.Context) error {
		require.NoError(t, saveOrder(ctx, db, "o-1"))
		cp := saga.Checkpoint{ID: rec.ID, Version: 1, Status: saga.Running, Step: 1, State: []byte(`{"n":1}`),
			Log: []saga.Entry{entry("fine"), entry("boom")}}
		err := s.Save(ctx, cp)
		require.ErrorContains(t, err, "boom refused")
		// The saga is as it was, in the transaction too: the same
		// checkpoint applies at once.
		cp.Log = cp.Log[:1]
		return s.Save(ctx, cp)
	})
	require.NoError(t, err)
	got, err := s.Load(ctx, rec.ID)
	require.NoError(t, err)
	assert.Equal(t, int64(2), got.Version)
	assert.Equal(t, 1, got.Step)
	log, err := s.Log(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, log, 1)
	assert.Equal(t, "fine", log[0].Step)
	assert.Equal(t, int64(1), log[0].Seq, "the entries of a saga are numbered from 1")
	assert.Equal(t, 1, countOrders(t, db), "the caller's own write committed")
}

// TestSagaOwnTransactionMethodsRefuseInTx checks that the methods that
// write in a transaction of their own refuse to wait for the caller's, and
// that Create and Save inside one are invisible until it commits.
func TestSagaOwnTransactionMethodsRefuseInTx(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	s := newSagaStore(t, db, nil)
	rec := sagatest.NewRecord("orders")
	rec.LeaseOwner = "driver"
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error {
		require.NoError(t, s.Create(ctx, rec, time.Minute))
		_, err := s.Load(ctx, rec.ID)
		require.ErrorIs(t, err, saga.ErrNotFound, "uncommitted")
		_, err = s.Claim(ctx, "r", nil, 1, time.Minute)
		require.ErrorIs(t, err, sqlite.ErrInTx)
		require.ErrorIs(t, s.Renew(ctx, rec.ID, "driver", time.Minute), sqlite.ErrInTx)
		_, err = s.Purge(ctx, time.Now(), 1)
		require.ErrorIs(t, err, sqlite.ErrInTx)
		_, err = s.List(ctx, saga.Filter{Limit: 1})
		require.NoError(t, err, "reads do not wait")
		return nil
	}))
	require.NoError(t, s.Renew(ctx, rec.ID, "driver", time.Minute))

	// A transaction that ended refuses writes.
	var ended context.Context
	require.NoError(t, db.InTx(ctx, func(ctx context.Context) error { ended = ctx; return nil }))
	err := s.Create(ended, sagatest.NewRecord("orders"), 0)
	require.ErrorIs(t, err, outbox.ErrTxDone)
}

// TestSagaStepCommitsWithItsWrites drives sagas whose steps write an
// application row and add an outbox event, with the DB as the Transactor:
// a step's writes, its event and its checkpoint commit together, and a
// failing step leaves none of them.
func TestSagaStepCommitsWithItsWrites(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	createOrders(t, db)
	outboxStore := newStore(t, db, nil)
	s := newSagaStore(t, db, nil)
	errDeclined := errors.New("declined")
	var events []uuid.UUID
	step := func(name string, fail bool) saga.Step[struct{}] {
		return saga.Step[struct{}]{
			Name: name,
			Action: saga.Do(func(ctx context.Context, _ *struct{}) error {
				if err := saveOrder(ctx, db, saga.KeyFrom(ctx)); err != nil {
					return err
				}
				e := outboxtest.NewEnvelope("k", name)
				if err := outboxStore.Add(ctx, e); err != nil {
					return err
				}
				events = append(events, e.ID)
				if fail {
					return errDeclined
				}
				return nil
			}),
			Compensation: saga.Do(func(ctx context.Context, _ *struct{}) error { return saveOrder(ctx, db, saga.KeyFrom(ctx)) }),
		}
	}
	def := &saga.Definition[struct{}]{Name: "orders", Steps: []saga.Step[struct{}]{step("reserve", false), step("charge", true)}}
	o, err := saga.New(saga.Options{Store: s, Transactor: s, Owner: "driver", Logger: discardLogger()}, def)
	require.NoError(t, err)

	res, err := saga.Execute(ctx, o, def, struct{}{})
	require.ErrorIs(t, err, saga.ErrCompensated)
	assert.Equal(t, saga.Compensated, res.Status)
	keys := orderIDs(t, db)
	assert.Equal(t, []string{res.ID.String() + "/reserve", res.ID.String() + "/reserve/compensate"}, keys,
		"the failed step's row was rolled back with it")
	_, err = outboxStore.Get(ctx, events[0])
	require.NoError(t, err, "the first step's event committed")
	_, err = outboxStore.Get(ctx, events[1])
	require.ErrorIs(t, err, outbox.ErrNotFound, "the failed step's event was rolled back")
	log, err := s.Log(ctx, res.ID)
	require.NoError(t, err)
	require.Len(t, log, 3)
	assert.Equal(t, []string{"declined"}, log[1].Errors)
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func orderIDs(t *testing.T, db *sqlite.DB) []string {
	t.Helper()
	rows, err := db.SQL().QueryContext(t.Context(), `SELECT id FROM orders ORDER BY rowid`)
	require.NoError(t, err)
	var out []string
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		out = append(out, id)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, rows.Close())
	return out
}

// TestSagaTimesAreMicroseconds checks the encodings: times truncated to
// the microsecond, a nil state read back empty, errors kept in order.
func TestSagaTimesAreMicroseconds(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	db, _ := openDB(t, sqlite.Options{})
	at := time.Date(2031, 5, 6, 7, 8, 9, 123456789, time.UTC)
	s := newSagaStore(t, db, saga.ClockFunc(func() time.Time { return at }))
	rec := sagatest.NewRecord("orders")
	rec.State, rec.LeaseOwner = nil, "driver"
	require.NoError(t, s.Create(ctx, rec, time.Second))
	got, err := s.Load(ctx, rec.ID)
	require.NoError(t, err)
	assert.Equal(t, at.Truncate(time.Microsecond), got.CreatedAt)
	assert.Equal(t, at.Add(time.Second).Truncate(time.Microsecond), got.LeaseUntil)
	assert.Empty(t, got.State)
	e := saga.Entry{Step: "a", Phase: saga.Compensation, Fallback: true, Outcome: saga.StepFailed, Attempts: 2,
		Errors: []string{`first "one"`, "second\none"}, Owner: "driver", StartedAt: at, FinishedAt: at.Add(time.Millisecond)}
	require.NoError(t, s.Save(ctx, saga.Checkpoint{ID: rec.ID, Version: 1, Status: saga.Failed, Step: 1, Log: []saga.Entry{e}}))
	log, err := s.Log(ctx, rec.ID)
	require.NoError(t, err)
	require.Len(t, log, 1)
	e.Seq = 1
	e.StartedAt, e.FinishedAt = e.StartedAt.Truncate(time.Microsecond), e.FinishedAt.Truncate(time.Microsecond)
	assert.Equal(t, e, log[0])
	var raw sql.NullString
	require.NoError(t, db.SQL().QueryRowContext(ctx, `SELECT errors FROM cqrs_saga_log`).Scan(&raw))
	assert.True(t, strings.HasPrefix(raw.String, `["first \"one\""`), raw.String)
}
