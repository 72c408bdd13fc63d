package sqlite_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/sqlite"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

type reserveStock struct {
	requests.Returns[string]
	Item string
}

type stockReserved struct{ Item string }

type booking struct{ Reservation string }

// A saga step that sends a command through a mediator with an outbox: the
// command's write, its notification event and the saga's checkpoint share
// one SQLite transaction, so a step that fails after the command ran leaves
// none of them.
func TestSagaStepCommandAndOutboxCommitWithTheCheckpoint(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, sqlite.Options{})
	store := newStore(t, db, nil)
	sagas, err := sqlite.NewSagaStore(db, sqlite.SagaStoreOptions{})
	require.NoError(t, err)
	require.NoError(t, sagas.EnsureSchema(t.Context()))
	_, err = db.SQL().ExecContext(t.Context(), `CREATE TABLE reservations (item TEXT PRIMARY KEY)`)
	require.NoError(t, err)

	capture, err := outbox.NewCapture(db, store, nil)
	require.NoError(t, err)
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithOutbox(capture),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(func(ctx context.Context, c reserveStock) (string, []events.Event, error) {
				tx, ok := db.Tx(ctx)
				if !ok {
					return "", nil, errors.New("no transaction in the handler's context")
				}
				if _, err := tx.ExecContext(ctx, `INSERT INTO reservations (item) VALUES (?)`, c.Item); err != nil {
					return "", nil, err
				}
				return "r-" + c.Item, []events.Event{events.NewNotification("stock.reserved", stockReserved{Item: c.Item})}, nil
			}))
		}))
	require.NoError(t, err)

	errAfter := errors.New("failed after the command ran")
	reserve := saga.Send(func(b *booking) reserveStock { return reserveStock{Item: "book"} }, func(b *booking, r string) { b.Reservation = r })
	def := func(failAfter bool) *saga.Definition[booking] {
		return &saga.Definition[booking]{Name: "booking", Steps: []saga.Step[booking]{{
			Name: "reserve",
			Action: func(ctx context.Context, b *booking) ([]events.Event, error) {
				evs, err := reserve(ctx, b)
				if err == nil && failAfter {
					return nil, errAfter
				}
				return evs, err
			},
		}}}
	}
	count := func(query string) int {
		var n int
		require.NoError(t, db.SQL().QueryRowContext(t.Context(), query).Scan(&n))
		return n
	}

	failing := def(true)
	o, err := bootstrap.Sagas(m, saga.Options{Store: sagas, Transactor: db, Logger: slog.New(slog.DiscardHandler)}, failing)
	require.NoError(t, err)
	_, err = saga.Execute(t.Context(), o, failing, booking{})
	require.ErrorIs(t, err, errAfter)
	assert.Zero(t, count(`SELECT count(*) FROM reservations`), "the command's write rolled back with the step")
	st, err := store.Stats(t.Context())
	require.NoError(t, err)
	assert.Zero(t, st.Pending, "its event rolled back too")

	ok := def(false)
	o, err = bootstrap.Sagas(m, saga.Options{Store: sagas, Transactor: db, Logger: slog.New(slog.DiscardHandler)}, ok)
	require.NoError(t, err)
	res, err := saga.Execute(t.Context(), o, ok, booking{})
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, res.Status)
	assert.Equal(t, "r-book", res.State.Reservation)
	assert.Equal(t, 1, count(`SELECT count(*) FROM reservations`))
	rows, err := store.Claim(t.Context(), "test", 10, time.Minute)
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, "stock.reserved", rows[0].Envelope.Name)
}
