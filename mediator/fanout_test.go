package mediator_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
)

func TestSequentialOrderIsEmissionOrderBindOrderBreadthFirst(t *testing.T) {
	t.Parallel()
	modes := []fanoutMode{
		{"concurrency disabled", []bootstrap.Option{
			bootstrap.WithConcurrentEventHandling(false), bootstrap.WithMaxConcurrentEventHandlers(8),
		}},
		{"limit 1", []bootstrap.Option{
			bootstrap.WithConcurrentEventHandling(true), bootstrap.WithMaxConcurrentEventHandlers(1),
		}},
		{"limit 1, parallel handlers", []bootstrap.Option{
			bootstrap.WithMaxConcurrentEventHandlers(1), bootstrap.WithEventHandlerOrder(mediator.Parallel),
		}},
	}
	for _, md := range modes {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{ Name string }
			children := map[string][]events.Event{
				"A":  {ev{"A1"}, ev{"A2"}},
				"B":  {ev{"B1"}},
				"A1": {ev{"A11"}},
			}
			var order trail
			m := build(t, with(md.opts, emitter(),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					order.add(e.Name)
					return children[e.Name], nil
				}),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					order.add(e.Name + "/2")
					return nil, nil
				}),
			)...)

			res, err := sendEvents(t.Context(), m, ev{"A"}, ev{"B"})
			require.NoError(t, err)
			assert.Equal(t, "ok", res)
			assert.Equal(t, []string{
				"A", "A/2", "B", "B/2", // level 1, emission order, handlers in bind order
				"A1", "A1/2", "A2", "A2/2", "B1", "B1/2", // level 2, in the order returned
				"A11", "A11/2", // level 3
			}, order.get())
		})
	}
}

func TestSendReturnsOnlyAfterEveryEventAndFollowUpIsHandled(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{ Depth int }
			var handled atomic.Int64
			m := build(t, with(md.opts, emitter(),
				onEvent(func(_ context.Context, e ev) ([]events.Event, error) {
					handled.Add(1)
					if e.Depth < 3 {
						return []events.Event{ev{e.Depth + 1}, ev{e.Depth + 1}}, nil
					}
					return nil, nil
				}),
			)...)
			_, err := sendEvents(t.Context(), m, ev{1}, ev{1}, ev{1})
			require.NoError(t, err)
			// 3 at depth 1, 6 at depth 2, 12 at depth 3.
			assert.EqualValues(t, 21, handled.Load())
		})
	}
}

func TestNotificationGoesToPublisherAndBoundHandlers(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type placed struct{ ID int }
			pub := &events.MemoryPublisher{}
			var got atomic.Pointer[events.Notification[placed]]
			m := build(t, with(md.opts, emitter(), bootstrap.WithPublisher(pub),
				onEvent(func(_ context.Context, n events.Notification[placed]) ([]events.Event, error) {
					got.Store(&n)
					return nil, nil
				}),
			)...)

			n := events.NewNotification("order.placed", placed{ID: 7})
			res, err := sendEvents(t.Context(), m, n)
			require.NoError(t, err)
			assert.Equal(t, "ok", res)

			published := pub.Published()
			require.Len(t, published, 1)
			assert.Equal(t, n.ID, published[0].EventID())
			assert.Equal(t, "order.placed", published[0].EventName())
			assert.Equal(t, placed{ID: 7}, published[0].EventPayload())
			require.NotNil(t, got.Load(), "the handler bound to the notification type must run")
			assert.Equal(t, n.ID, got.Load().ID)
		})
	}
}

func TestNotificationIsPublishedBeforeItsHandlersInSequentialMode(t *testing.T) {
	t.Parallel()
	type placed struct{}
	var order trail
	pub := events.PublisherFunc(func(_ context.Context, e events.NotificationEvent) error {
		order.add("publish " + e.EventName())
		return nil
	})
	m := build(t, emitter(), bootstrap.WithPublisher(pub), bootstrap.WithConcurrentEventHandling(false),
		onEvent(func(_ context.Context, n events.Notification[placed]) ([]events.Event, error) {
			order.add("handle " + n.Name)
			return nil, nil
		}),
	)
	_, err := sendEvents(t.Context(), m, events.NewNotification("a", placed{}), events.NewNotification("b", placed{}))
	require.NoError(t, err)
	assert.Equal(t, []string{"publish a", "handle a", "publish b", "handle b"}, order.get())
}

func TestNotificationWithoutPublisherIsDispatchError(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type placed struct{}
			type other struct{}
			var handled, others atomic.Int64
			m := build(t, with(md.opts, emitter(),
				onEvent(func(context.Context, events.Notification[placed]) ([]events.Event, error) {
					handled.Add(1)
					return nil, nil
				}),
				onEvent(func(context.Context, other) ([]events.Event, error) {
					others.Add(1)
					return nil, nil
				}),
			)...)

			res, err := sendEvents(t.Context(), m, events.NewNotification("x", placed{}), other{})
			assert.Equal(t, "ok", res, "the response is valid despite the dispatch failure")
			require.ErrorIs(t, err, mediator.ErrNoPublisher)
			de := dispatchError(t, err)
			require.Len(t, de.Failures, 1)
			var he *mediator.HandlerError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, reflect.TypeFor[events.Notification[placed]](), he.EventType)
			assert.Contains(t, he.Handler, "publisher")
			assert.EqualValues(t, 1, handled.Load(), "the in-process handler still runs")
			assert.EqualValues(t, 1, others.Load())
		})
	}
}

func TestPublisherErrorIsReportedAsHandlerError(t *testing.T) {
	t.Parallel()
	errBroker := errors.New("broker down")
	type placed struct{}
	m := build(t, emitter(), bootstrap.WithPublisher(events.PublisherFunc(
		func(context.Context, events.NotificationEvent) error { return errBroker })))
	res, err := sendEvents(t.Context(), m, events.NewNotification("x", placed{}))
	assert.Equal(t, "ok", res)
	require.ErrorIs(t, err, errBroker)
	var he *mediator.HandlerError
	require.ErrorAs(t, err, &he)
	assert.Contains(t, he.Handler, "publisher")
	assert.Equal(t, reflect.TypeFor[events.Notification[placed]](), he.EventType)
}

func TestNilEventIsErrNilEventAndOthersStillRun(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type ev struct{}
			type ptrEv struct{}
			var handled, ptrHandled atomic.Int64
			pub := &events.MemoryPublisher{}
			m := build(t, with(md.opts, emitter(), bootstrap.WithPublisher(pub),
				onEvent(func(context.Context, ev) ([]events.Event, error) {
					handled.Add(1)
					return nil, nil
				}),
				onEvent(func(context.Context, *ptrEv) ([]events.Event, error) {
					ptrHandled.Add(1)
					return nil, nil
				}),
			)...)

			res, err := sendEvents(t.Context(), m,
				ev{},
				nil,                                 // untyped nil
				(*ev)(nil),                          // typed nil of a type with no handler
				(*ptrEv)(nil),                       // typed nil of a type with a handler
				(*events.Notification[string])(nil), // must not reach the publisher
				ev{},
			)
			assert.Equal(t, "ok", res)
			require.ErrorIs(t, err, mediator.ErrNilEvent)
			de := dispatchError(t, err)
			assert.Len(t, de.Failures, 4)
			for _, f := range de.Failures {
				require.ErrorIs(t, f, mediator.ErrNilEvent)
			}
			assert.Zero(t, de.NotStarted)
			assert.EqualValues(t, 2, handled.Load(), "the other events still run")
			assert.Zero(t, ptrHandled.Load())
			assert.Empty(t, pub.Published(), "a nil notification is not published")
		})
	}
}

func TestEventWithoutHandlerIsLoggedAtWarnNotAnError(t *testing.T) {
	t.Parallel()
	for _, md := range fanoutModes() {
		t.Run(md.name, func(t *testing.T) {
			t.Parallel()
			type orphan struct{}
			type ev struct{}
			rec := &logRecorder{}
			var handled atomic.Int64
			m := build(t, with(md.opts, emitter(), bootstrap.WithLogger(slog.New(rec)),
				onEvent(func(context.Context, ev) ([]events.Event, error) {
					handled.Add(1)
					return []events.Event{orphan{}}, nil // a follow-up nobody listens to
				}),
			)...)

			res, err := sendEvents(t.Context(), m, orphan{}, ev{})
			require.NoError(t, err)
			assert.Equal(t, "ok", res)
			assert.EqualValues(t, 1, handled.Load())

			recs := rec.records()
			require.Len(t, recs, 2, "one warning per unhandled event")
			for _, r := range recs {
				assert.Equal(t, slog.LevelWarn, r.Level)
				var typ string
				r.Attrs(func(a slog.Attr) bool {
					if a.Key == "event_type" {
						typ = a.Value.String()
					}
					return true
				})
				assert.Equal(t, reflect.TypeFor[orphan]().String(), typ)
			}
		})
	}
}
