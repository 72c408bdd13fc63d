package mediator_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
)

func TestEventMediatorDispatchesToHandlersWithFollowUps(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type incoming struct{ N int }
			type follow struct{ N int }
			var first, second, follows atomic.Int64
			m := build(t, with(md.opts,
				onEvent(func(_ context.Context, e incoming) ([]events.Event, error) {
					first.Add(int64(e.N))
					return []events.Event{follow{e.N}, follow{e.N}}, nil
				}),
				onEvent(func(context.Context, incoming) ([]events.Event, error) {
					second.Add(1)
					return nil, nil
				}),
				onEvent(func(_ context.Context, f follow) ([]events.Event, error) {
					follows.Add(int64(f.N))
					return nil, nil
				}),
			)...)

			require.NoError(t, m.Events().Send(t.Context(), incoming{N: 5}))
			assert.EqualValues(t, 5, first.Load())
			assert.EqualValues(t, 1, second.Load())
			assert.EqualValues(t, 10, follows.Load())
		})
	}
}

func TestEventMediatorFromBootstrapEvents(t *testing.T) {
	t.Parallel()
	errX := errors.New("x")
	type incoming struct{}
	type follow struct{}
	var follows atomic.Int64
	em, err := bootstrap.Events(nil, bootstrap.WithMaxConcurrentEventHandlers(3),
		onEvent(func(context.Context, incoming) ([]events.Event, error) {
			return []events.Event{follow{}, follow{}, follow{}}, nil
		}),
		bootstrap.WithDomainEvents(func(m *events.Map) {
			events.BindHandler[follow](m, &failingHandler[follow]{err: errX})
		}),
		onEvent(func(context.Context, follow) ([]events.Event, error) {
			follows.Add(1)
			return nil, nil
		}),
	)
	require.NoError(t, err)

	err = em.Send(t.Context(), incoming{})
	require.ErrorIs(t, err, errX)
	assert.Len(t, dispatchError(t, err).Failures, 3)
	assert.EqualValues(t, 3, follows.Load())

	require.ErrorIs(t, em.Send(t.Context(), follow{}), errX)
	var nilEM *mediator.EventMediator
	require.ErrorIs(t, nilEM.Send(t.Context(), incoming{}), mediator.ErrNilMediator)
}

func TestEventMediatorUnboundTypeIsHandlerNotFound(t *testing.T) {
	t.Parallel()
	type bound struct{}
	type unbound struct{}
	type note struct{}
	pub := &events.MemoryPublisher{}
	m := build(t, bootstrap.WithPublisher(pub), onEvent(func(context.Context, bound) ([]events.Event, error) { return nil, nil }))

	require.ErrorIs(t, m.Events().Send(t.Context(), unbound{}), mediator.ErrHandlerNotFound)
	require.ErrorIs(t, m.Events().Send(t.Context(), &bound{}), mediator.ErrHandlerNotFound,
		"events are routed by exact dynamic type")
	// An incoming notification with no in-process handler is a routing
	// mistake too, and is not published back.
	require.ErrorIs(t, m.Events().Send(t.Context(), events.NewNotification("n", note{})), mediator.ErrHandlerNotFound)
	assert.Empty(t, pub.Published())
}

func TestEventMediatorNilEventAndCancelledContext(t *testing.T) {
	t.Parallel()
	type ev struct{}
	var calls atomic.Int64
	m := build(t, onEvent(func(context.Context, ev) ([]events.Event, error) {
		calls.Add(1)
		return nil, nil
	}))
	require.ErrorIs(t, m.Events().Send(t.Context(), nil), mediator.ErrNilEvent)
	require.ErrorIs(t, m.Events().Send(t.Context(), (*ev)(nil)), mediator.ErrNilEvent)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, m.Events().Send(ctx, ev{}), context.Canceled)
	assert.Zero(t, calls.Load())
}

func TestEventMediatorIncomingNotificationIsHandledNotRepublished(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type placed struct{ ID int }
			pub := &events.MemoryPublisher{}
			var got atomic.Int64
			m := build(t, with(md.opts, bootstrap.WithPublisher(pub),
				onEvent(func(_ context.Context, n events.Notification[placed]) ([]events.Event, error) {
					got.Add(int64(n.Payload.ID))
					return nil, nil
				}),
			)...)

			require.NoError(t, m.Events().Send(t.Context(), events.NewNotification("order.placed", placed{ID: 9})))
			assert.EqualValues(t, 9, got.Load())
			assert.Empty(t, pub.Published(), "an incoming notification must not be published again")

			// Without a publisher an incoming notification is still handled.
			noPub := build(t, with(md.opts,
				onEvent(func(_ context.Context, n events.Notification[placed]) ([]events.Event, error) {
					got.Add(int64(n.Payload.ID))
					return nil, nil
				}),
			)...)
			require.NoError(t, noPub.Events().Send(t.Context(), events.NewNotification("order.placed", placed{ID: 1})))
			assert.EqualValues(t, 10, got.Load())
		})
	}
}

func TestEventMediatorNotificationFollowUpsArePublished(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type placed struct {
				ID    int
				Again bool
			}
			type shipped struct{ ID int }
			pub := &events.MemoryPublisher{}
			var placedHandled, shippedHandled atomic.Int64
			m := build(t, with(md.opts, bootstrap.WithPublisher(pub),
				onEvent(func(_ context.Context, n events.Notification[placed]) ([]events.Event, error) {
					placedHandled.Add(1)
					if n.Payload.Again {
						return nil, nil
					}
					// A follow-up of the incoming event's own type, and another.
					return []events.Event{
						events.NewNotification("order.placed.again", placed{ID: n.Payload.ID, Again: true}),
						events.NewNotification("order.shipped", shipped{ID: n.Payload.ID}),
					}, nil
				}),
				onEvent(func(context.Context, events.Notification[shipped]) ([]events.Event, error) {
					shippedHandled.Add(1)
					return nil, nil
				}),
			)...)

			require.NoError(t, m.Events().Send(t.Context(), events.NewNotification("order.placed", placed{ID: 3})))
			var names []string
			for _, p := range pub.Published() {
				names = append(names, p.EventName())
			}
			assert.ElementsMatch(t, []string{"order.placed.again", "order.shipped"}, names,
				"follow-ups are published, the incoming event is not")
			assert.EqualValues(t, 2, placedHandled.Load(), "follow-ups are also handled in process")
			assert.EqualValues(t, 1, shippedHandled.Load())
		})
	}
}
