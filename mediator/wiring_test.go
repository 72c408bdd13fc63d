package mediator_test

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// wiringUpdate rewrites the golden file: go test ./mediator -run TestWiring -update
var wiringUpdate = flag.Bool("update", false, "rewrite the golden files in testdata")

// wiringGolden is the expected Mermaid diagram of wiringMediator.
const wiringGolden = "testdata/wiring.mmd"

// Requests: an order placed by a plain handler, a price answered by a chain,
// a quote answered by a primary with a fallback.
type (
	wiringPlaceOrder struct {
		requests.Returns[string]
	}
	wiringGetPrice struct {
		requests.Returns[int]
	}
	wiringGetQuote struct {
		requests.Returns[int]
	}
)

// Events: an order placed causes stock to be reserved, which causes a
// shipment to be scheduled; a price miss is emitted by the chain's last
// link.
type (
	wiringOrderPlaced     struct{}
	wiringStockReserved   struct{}
	wiringShipmentPlanned struct{}
	wiringPriceMissed     struct{}
	wiringQuoteServed     struct{}
)

type wiringPlaceOrderHandler struct{}

func (wiringPlaceOrderHandler) Handle(context.Context, wiringPlaceOrder) (string, []events.Event, error) {
	return "order-1", []events.Event{wiringOrderPlaced{}}, nil
}

func (wiringPlaceOrderHandler) EmittedEvents() []reflect.Type {
	return []reflect.Type{reflect.TypeFor[wiringOrderPlaced]()}
}

type (
	wiringPriceCache   struct{}
	wiringPriceDefault struct{}
)

func (wiringPriceCache) Handle(ctx context.Context, q wiringGetPrice, next func(context.Context, wiringGetPrice) (int, error)) (int, []events.Event, error) {
	res, err := next(ctx, q)
	return res, nil, err
}

func (wiringPriceDefault) Handle(context.Context, wiringGetPrice, func(context.Context, wiringGetPrice) (int, error)) (int, []events.Event, error) {
	return 10, []events.Event{wiringPriceMissed{}}, nil
}

func (wiringPriceDefault) EmittedEvents() []reflect.Type {
	return []reflect.Type{reflect.TypeFor[wiringPriceMissed]()}
}

type (
	wiringLiveQuotes   struct{}
	wiringCachedQuotes struct{}
)

func (wiringLiveQuotes) Handle(context.Context, wiringGetQuote) (int, []events.Event, error) {
	return 12, []events.Event{wiringQuoteServed{}}, nil
}

func (wiringLiveQuotes) EmittedEvents() []reflect.Type {
	return []reflect.Type{reflect.TypeFor[wiringQuoteServed]()}
}

func (wiringCachedQuotes) Handle(context.Context, wiringGetQuote) (int, []events.Event, error) {
	return 11, nil, nil
}

type (
	wiringReserveStock    struct{}
	wiringPlanShipment    struct{}
	wiringNotifyWarehouse struct{}
)

func (wiringReserveStock) Handle(context.Context, wiringOrderPlaced) ([]events.Event, error) {
	return []events.Event{wiringStockReserved{}}, nil
}

func (wiringReserveStock) EmittedEvents() []reflect.Type {
	return []reflect.Type{reflect.TypeFor[wiringStockReserved]()}
}

func (wiringPlanShipment) Handle(context.Context, wiringStockReserved) ([]events.Event, error) {
	return []events.Event{wiringShipmentPlanned{}}, nil
}

func (wiringPlanShipment) EmittedEvents() []reflect.Type {
	return []reflect.Type{reflect.TypeFor[wiringShipmentPlanned]()}
}

func (wiringNotifyWarehouse) Handle(context.Context, wiringOrderPlaced) ([]events.Event, error) {
	return nil, nil
}

// wiringAudit is global middleware; wiringTrace is event middleware.
type (
	wiringAudit struct{}
	wiringTrace struct{}
)

func (wiringAudit) WrapRequest(_ requests.Info, next requests.AnyHandlerFunc) requests.AnyHandlerFunc {
	return next
}

func (wiringTrace) WrapEvent(_ events.Invocation, next events.InvocationFunc) events.InvocationFunc {
	return next
}

func wiringCheckOrder(next requests.HandlerFunc[wiringPlaceOrder, string]) requests.HandlerFunc[wiringPlaceOrder, string] {
	return next
}

func wiringMediator(t *testing.T) *mediator.RequestMediator {
	t.Helper()
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithMiddleware(wiringAudit{}, wiringTrace{}),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler[wiringPlaceOrder](r, wiringPlaceOrderHandler{})
			requests.Use(r, wiringCheckOrder)
		}),
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindChainHandlers[wiringGetPrice](r, wiringPriceCache{}, wiringPriceDefault{})
			requests.BindFallbackHandlers[wiringGetQuote](r, wiringLiveQuotes{}, wiringCachedQuotes{}, requests.FallbackPolicy{})
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[wiringOrderPlaced](e, wiringReserveStock{})
			events.BindHandler[wiringOrderPlaced](e, wiringNotifyWarehouse{})
			events.BindHandler[wiringStockReserved](e, wiringPlanShipment{})
		}),
	)
	require.NoError(t, err)
	return m
}

func TestWiringMermaidMatchesGolden(t *testing.T) {
	t.Parallel()
	got := wiringMediator(t).Mermaid()
	path := filepath.FromSlash(wiringGolden)
	if *wiringUpdate {
		require.NoError(t, os.MkdirAll(filepath.Dir(path), 0o755))
		require.NoError(t, os.WriteFile(path, []byte(got), 0o644))
	}
	want, err := os.ReadFile(path)
	require.NoError(t, err, "run go test ./mediator -run TestWiring -update to create it")
	assert.Equal(t, string(want), got)
}

func TestWiringMermaidIsDeterministic(t *testing.T) {
	t.Parallel()
	first := wiringMediator(t).Mermaid()
	require.NotEmpty(t, first)
	for range 5 {
		assert.Equal(t, first, wiringMediator(t).Mermaid(), "a second bootstrap draws the same diagram")
	}
}

func TestWiringMermaidOfNilMediatorIsEmpty(t *testing.T) {
	t.Parallel()
	var m *mediator.RequestMediator
	assert.Empty(t, m.Mermaid())
}
