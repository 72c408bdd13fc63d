package requests_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/dig"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/di"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/internal/registry"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// placeOrder is a command answered by the new order's ID.
type placeOrder struct {
	requests.Returns[string]
	Item string
	Qty  int
}

// orderPlaced is the event placeOrder emits.
type orderPlaced struct {
	ID   string
	Item string
}

// stockLow is a second event placeOrder emits when the quantity is large.
type stockLow struct{ Item string }

// countOrders is a query.
type countOrders struct {
	requests.Returns[int]
}

// cancelOrder is a command answered by nothing.
type cancelOrder struct {
	requests.Returns[requests.Unit]
	ID string
}

type orderStore struct{ prefix string }

type placeOrderHandler struct{ store *orderStore }

func newPlaceOrderHandler(s *orderStore) *placeOrderHandler { return &placeOrderHandler{store: s} }

var errNoItem = errors.New("no item")

func (h *placeOrderHandler) Handle(_ context.Context, req placeOrder) (string, []events.Event, error) {
	if req.Item == "" {
		// Events returned with an error are never dispatched; return none.
		return "", nil, errNoItem
	}
	id := h.store.prefix + req.Item
	evs := []events.Event{orderPlaced{ID: id, Item: req.Item}}
	if req.Qty > 10 {
		evs = append(evs, stockLow{Item: req.Item})
	}
	return id, evs, nil
}

type otherPlaceOrderHandler struct{}

func (otherPlaceOrderHandler) Handle(context.Context, placeOrder) (string, []events.Event, error) {
	return "other", nil, nil
}

type countOrdersHandler struct{}

func newCountOrdersHandler() countOrdersHandler { return countOrdersHandler{} }

func (countOrdersHandler) Handle(context.Context, countOrders) (int, []events.Event, error) {
	return 3, nil, nil
}

func storeContainer(t *testing.T, prefix string) *dig.Container {
	t.Helper()
	c := dig.New()
	require.NoError(t, c.Provide(func() *orderStore { return &orderStore{prefix: prefix} }))
	return c
}

func TestHandlerReturnsEmittedEvents(t *testing.T) {
	t.Parallel()
	h := newPlaceOrderHandler(&orderStore{prefix: "o-"})

	id, evs, err := h.Handle(t.Context(), placeOrder{Item: "book", Qty: 20})

	require.NoError(t, err)
	assert.Equal(t, "o-book", id)
	assert.Equal(t, []events.Event{orderPlaced{ID: "o-book", Item: "book"}, stockLow{Item: "book"}}, evs)
}

func TestHandlerReturnsNoEventsOnError(t *testing.T) {
	t.Parallel()
	h := newPlaceOrderHandler(&orderStore{})

	id, evs, err := h.Handle(t.Context(), placeOrder{})

	require.ErrorIs(t, err, errNoItem)
	assert.Empty(t, id)
	assert.Empty(t, evs)
}

func TestBindResolvesConstructorAtBootstrap(t *testing.T) {
	t.Parallel()
	m, err := bootstrap.Bootstrap(storeContainer(t, "dig-"),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[placeOrder](r, newPlaceOrderHandler)
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.Bind[countOrders](r, newCountOrdersHandler)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[orderPlaced](func(context.Context, orderPlaced) ([]events.Event, error) {
				return nil, nil
			}))
		}),
	)
	require.NoError(t, err)

	id, err := mediator.Send(t.Context(), m, placeOrder{Item: "pen"})
	require.NoError(t, err)
	assert.Equal(t, "dig-pen", id)

	n, err := mediator.Send(t.Context(), m, countOrders{})
	require.NoError(t, err)
	assert.Equal(t, 3, n)
}

func TestBindDuplicateRequestTypeIsReported(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(storeContainer(t, ""),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[placeOrder](r, newPlaceOrderHandler)
			requests.BindHandler[placeOrder](r, otherPlaceOrderHandler{})
		}),
	)

	require.ErrorIs(t, err, registry.ErrDuplicate)
	// The diagnostic names the request type and both bindings.
	assert.Contains(t, err.Error(), "placeOrder")
	assert.Contains(t, err.Error(), "newPlaceOrderHandler")
	assert.Contains(t, err.Error(), "otherPlaceOrderHandler")
}

func TestBindDuplicateAcrossCommandsAndQueries(t *testing.T) {
	t.Parallel()

	_, err := bootstrap.Bootstrap(storeContainer(t, ""),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[placeOrder](r, newPlaceOrderHandler)
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler[placeOrder](r, otherPlaceOrderHandler{})
		}),
	)

	require.ErrorIs(t, err, registry.ErrDuplicate)
	assert.Contains(t, err.Error(), "newPlaceOrderHandler")
	assert.Contains(t, err.Error(), "otherPlaceOrderHandler")
}

func TestBindWrongConstructorTypeIsReported(t *testing.T) {
	t.Parallel()
	cases := map[string]any{
		"handler of another request": newCountOrdersHandler,
		"not a function":             otherPlaceOrderHandler{},
		"nil":                        nil,
		"three results":              func() (*placeOrderHandler, int, error) { return nil, 0, nil },
		"variadic":                   func(...*orderStore) *placeOrderHandler { return nil },
	}
	for name, ctor := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var m requests.Map
			requests.Bind[placeOrder](&m, ctor)
			assert.Equal(t, 0, m.Len(), "a rejected binding is not counted")

			_, err := bootstrap.Bootstrap(storeContainer(t, ""),
				bootstrap.WithCommands(func(r *requests.Map) { requests.Bind[placeOrder](r, ctor) }),
			)

			require.ErrorIs(t, err, di.ErrInvalidConstructor)
			assert.Contains(t, err.Error(), "placeOrder")
		})
	}
}

func TestBindHandlerNilIsReported(t *testing.T) {
	t.Parallel()
	cases := map[string]requests.Handler[placeOrder, string]{
		"nil interface":   nil,
		"nil pointer":     (*placeOrderHandler)(nil),
		"nil HandlerFunc": requests.HandlerFunc[placeOrder, string](nil),
	}
	for name, h := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var m requests.Map
			requests.BindHandler(&m, h)
			assert.Equal(t, 0, m.Len(), "a nil handler is not bound")

			med, err := bootstrap.Bootstrap(nil,
				bootstrap.WithCommands(func(r *requests.Map) { requests.BindHandler(r, h) }),
			)

			require.Error(t, err)
			assert.Nil(t, med)
			assert.Contains(t, err.Error(), "placeOrder")
			assert.Contains(t, err.Error(), "nil handler")
		})
	}
}

func TestBindConstructorErrorIsReportedByBootstrap(t *testing.T) {
	t.Parallel()
	errBroken := errors.New("store unreachable")

	_, err := bootstrap.Bootstrap(storeContainer(t, ""),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.Bind[placeOrder](r, func(*orderStore) (*placeOrderHandler, error) { return nil, errBroken })
		}),
	)

	require.ErrorIs(t, err, errBroken)
	assert.Contains(t, err.Error(), "placeOrder")
}

func TestLenCountsBoundRequestTypes(t *testing.T) {
	t.Parallel()
	var m requests.Map
	assert.Equal(t, 0, m.Len())

	requests.Bind[placeOrder](&m, newPlaceOrderHandler)
	assert.Equal(t, 1, m.Len())

	requests.BindHandler[countOrders](&m, countOrdersHandler{})
	assert.Equal(t, 2, m.Len())

	requests.BindHandler[placeOrder](&m, otherPlaceOrderHandler{}) // duplicate
	assert.Equal(t, 2, m.Len(), "a duplicate binding is not counted")

	requests.Bind[cancelOrder](&m, 42) // invalid constructor
	assert.Equal(t, 2, m.Len(), "an invalid binding is not counted")
}

func TestBindOnNilMapPanics(t *testing.T) {
	t.Parallel()

	assert.Panics(t, func() { requests.Bind[placeOrder](nil, newPlaceOrderHandler) })
	assert.Panics(t, func() { requests.BindHandler[placeOrder](nil, otherPlaceOrderHandler{}) })
	assert.Panics(t, func() { (*requests.Map)(nil).Len() })
}

func TestHandlerFuncCallsFunction(t *testing.T) {
	t.Parallel()
	var gotCtx context.Context
	var gotReq cancelOrder
	f := requests.HandlerFunc[cancelOrder, requests.Unit](func(ctx context.Context, req cancelOrder) (requests.Unit, []events.Event, error) {
		gotCtx, gotReq = ctx, req
		return requests.Unit{}, []events.Event{"cancelled " + req.ID}, nil
	})
	ctx := context.WithValue(t.Context(), ctxKey{}, "marker")

	res, evs, err := f.Handle(ctx, cancelOrder{ID: "42"})

	require.NoError(t, err)
	assert.Equal(t, requests.Unit{}, res)
	assert.Equal(t, []events.Event{"cancelled 42"}, evs)
	assert.Equal(t, cancelOrder{ID: "42"}, gotReq)
	assert.Equal(t, "marker", gotCtx.Value(ctxKey{}))
}

type ctxKey struct{}

func TestHandlerFuncThroughMediator(t *testing.T) {
	t.Parallel()
	var cancelled []string
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[cancelOrder, requests.Unit](
				func(_ context.Context, req cancelOrder) (requests.Unit, []events.Event, error) {
					cancelled = append(cancelled, req.ID)
					return requests.Unit{}, nil, nil
				}))
		}),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, cancelOrder{ID: "a"})
	require.NoError(t, err)
	_, err = mediator.Send(t.Context(), m, cancelOrder{ID: "b"})
	require.NoError(t, err)

	assert.Equal(t, []string{"a", "b"}, cancelled)
}

func TestRequestsAreMatchedByExactStaticType(t *testing.T) {
	t.Parallel()
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler[placeOrder](r, otherPlaceOrderHandler{})
		}),
	)
	require.NoError(t, err)

	// *placeOrder also satisfies Request[string] (through the embedded
	// marker), but no handler is bound to it.
	_, err = mediator.Send(t.Context(), m, &placeOrder{Item: "x"})

	require.ErrorIs(t, err, mediator.ErrHandlerNotFound)
}

func TestEmittedEventsAreDispatchedBeforeSendReturns(t *testing.T) {
	t.Parallel()
	var got []events.Event
	record := func(_ context.Context, e events.Event) { got = append(got, e) }
	m, err := bootstrap.Bootstrap(storeContainer(t, "o-"),
		bootstrap.WithCommands(func(r *requests.Map) { requests.Bind[placeOrder](r, newPlaceOrderHandler) }),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[orderPlaced](func(ctx context.Context, ev orderPlaced) ([]events.Event, error) {
				record(ctx, ev)
				return nil, nil
			}))
			events.BindHandler(e, events.HandlerFunc[stockLow](func(ctx context.Context, ev stockLow) ([]events.Event, error) {
				record(ctx, ev)
				return nil, nil
			}))
		}),
		bootstrap.WithConcurrentEventHandling(false),
	)
	require.NoError(t, err)

	_, err = mediator.Send(t.Context(), m, placeOrder{Item: "ink", Qty: 11})

	require.NoError(t, err)
	assert.Equal(t, []events.Event{orderPlaced{ID: "o-ink", Item: "ink"}, stockLow{Item: "ink"}}, got)
}

func TestHandlerErrorDiscardsEvents(t *testing.T) {
	t.Parallel()
	dispatched := 0
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[placeOrder, string](
				func(context.Context, placeOrder) (string, []events.Event, error) {
					return "ignored", []events.Event{orderPlaced{ID: "x"}}, errNoItem
				}))
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[orderPlaced](func(context.Context, orderPlaced) ([]events.Event, error) {
				dispatched++
				return nil, nil
			}))
		}),
	)
	require.NoError(t, err)

	id, err := mediator.Send(t.Context(), m, placeOrder{Item: "x"})

	require.ErrorIs(t, err, errNoItem)
	assert.Empty(t, id, "the zero response comes with the error")
	assert.Equal(t, 0, dispatched, "events returned with an error are not dispatched")
}
