package bootstrap_test

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/mediator/saga"
	"github.com/gocqrs/cqrs/requests"
)

type reserve struct {
	requests.Returns[string]
	Item string
}

type reserved struct{ Item string }

type order struct {
	Reservation string
}

// Sagas wires the mediator in: a step that sends a request through it, and
// a plain step whose events it dispatches like a handler's.
func TestSagasDriveStepsThroughTheMediator(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(func(_ context.Context, q reserve) (string, []events.Event, error) {
				return "r-" + q.Item, []events.Event{reserved{Item: q.Item}}, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[reserved](func(context.Context, reserved) ([]events.Event, error) {
				seen.Add(1)
				return nil, nil
			}))
		}))
	require.NoError(t, err)
	def := &saga.Definition[order]{Name: "order", Steps: []saga.Step[order]{
		{Name: "reserve", Action: saga.Send(func(*order) reserve { return reserve{Item: "book"} }, func(o *order, r string) { o.Reservation = r })},
		{Name: "announce", Action: func(_ context.Context, o *order) ([]events.Event, error) {
			return []events.Event{reserved{Item: o.Reservation}}, nil
		}},
	}}
	o, err := bootstrap.Sagas(m, saga.Options{Store: saga.NewMemoryStore(saga.MemoryOptions{}), Logger: slog.New(slog.DiscardHandler)}, def)
	require.NoError(t, err)
	res, err := saga.Execute(t.Context(), o, def, order{})
	require.NoError(t, err)
	assert.Equal(t, saga.Completed, res.Status)
	assert.Equal(t, "r-book", res.State.Reservation)
	assert.EqualValues(t, 2, seen.Load(), "the request's event and the plain step's event were dispatched")

	_, err = bootstrap.Sagas(nil, saga.Options{}, def)
	require.ErrorIs(t, err, bootstrap.ErrInvalidOption)
}

func TestDispatchFansOutLikeSend(t *testing.T) {
	t.Parallel()
	var seen atomic.Int64
	m, err := bootstrap.Bootstrap(nil, bootstrap.WithDomainEvents(func(e *events.Map) {
		events.BindHandler(e, events.HandlerFunc[reserved](func(context.Context, reserved) ([]events.Event, error) {
			seen.Add(1)
			return nil, nil
		}))
	}))
	require.NoError(t, err)
	require.NoError(t, m.Dispatch(t.Context(), reserved{}, reserved{}))
	assert.EqualValues(t, 2, seen.Load())
	require.ErrorIs(t, m.Dispatch(t.Context(), nil), mediator.ErrNilEvent)
	var nilM *mediator.RequestMediator
	require.ErrorIs(t, nilM.Dispatch(t.Context()), mediator.ErrNilMediator)
}
