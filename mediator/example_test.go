package mediator_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

// examplePriceQuery is a query answered by a price in cents.
type examplePriceQuery struct {
	requests.Returns[int]
	Item string
}

type examplePriceHandler struct{ prices map[string]int }

func (h examplePriceHandler) Handle(_ context.Context, q examplePriceQuery) (int, []events.Event, error) {
	p, ok := h.prices[q.Item]
	if !ok {
		return 0, nil, fmt.Errorf("no price for %q", q.Item)
	}
	return p, nil, nil
}

func ExampleSend() {
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithQueries(func(r *requests.Map) {
			requests.BindHandler[examplePriceQuery](r, examplePriceHandler{prices: map[string]int{"book": 1250}})
		}),
	)
	if err != nil {
		panic(err)
	}

	// price is an int: the response type comes from examplePriceQuery.
	price, err := mediator.Send(context.Background(), m, examplePriceQuery{Item: "book"})
	fmt.Println(price, err)

	_, err = mediator.Send(context.Background(), m, examplePriceQuery{Item: "lamp"})
	fmt.Println(err)
	// Output:
	// 1250 <nil>
	// no price for "lamp"
}

// examplePlaceOrder is a command that answers with the new order's number.
type examplePlaceOrder struct {
	requests.Returns[int]
	Item string
}

// exampleOrderPlaced is emitted by the examplePlaceOrder handler.
type exampleOrderPlaced struct {
	Order int
	Item  string
}

// exampleStockReserved is a follow-up emitted by an event handler.
type exampleStockReserved struct{ Item string }

func ExampleSend_events() {
	place := requests.HandlerFunc[examplePlaceOrder, int](
		func(_ context.Context, cmd examplePlaceOrder) (int, []events.Event, error) {
			fmt.Println("placing order for", cmd.Item)
			return 7, []events.Event{exampleOrderPlaced{Order: 7, Item: cmd.Item}}, nil
		})

	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, place)
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			// Two handlers of one event run in bind order.
			events.BindHandler(e, events.HandlerFunc[exampleOrderPlaced](
				func(_ context.Context, ev exampleOrderPlaced) ([]events.Event, error) {
					fmt.Println("emailing confirmation of order", ev.Order)
					return nil, nil
				}))
			events.BindHandler(e, events.HandlerFunc[exampleOrderPlaced](
				func(_ context.Context, ev exampleOrderPlaced) ([]events.Event, error) {
					fmt.Println("reserving stock for order", ev.Order)
					// A follow-up event, dispatched after this handler returns.
					return []events.Event{exampleStockReserved{Item: ev.Item}}, nil
				}))
			events.BindHandler(e, events.HandlerFunc[exampleStockReserved](
				func(_ context.Context, ev exampleStockReserved) ([]events.Event, error) {
					fmt.Println("stock reserved:", ev.Item)
					return nil, nil
				}))
		}),
		// One event at a time, so the output is deterministic.
		bootstrap.WithConcurrentEventHandling(false),
	)
	if err != nil {
		panic(err)
	}

	order, err := mediator.Send(context.Background(), m, examplePlaceOrder{Item: "book"})
	// Every event, follow-ups included, was handled before Send returned.
	fmt.Println("order", order, "err", err)
	// Output:
	// placing order for book
	// emailing confirmation of order 7
	// reserving stock for order 7
	// stock reserved: book
	// order 7 err <nil>
}

// exampleShipmentArrived is received from a message broker.
type exampleShipmentArrived struct {
	Shipment string
	Items    int
}

func ExampleEventMediator_Send() {
	em, err := bootstrap.Events(nil,
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[exampleShipmentArrived](
				func(_ context.Context, ev exampleShipmentArrived) ([]events.Event, error) {
					fmt.Printf("shelving %d items of %s\n", ev.Items, ev.Shipment)
					return nil, nil
				}))
		}),
	)
	if err != nil {
		panic(err)
	}

	// A broker consumer hands each received event to the EventMediator.
	err = em.Send(context.Background(), exampleShipmentArrived{Shipment: "S-1", Items: 3})
	fmt.Println(err)

	// An event no handler is bound to is a routing mistake, reported.
	err = em.Send(context.Background(), exampleOrderPlaced{Order: 1})
	fmt.Println(errors.Is(err, mediator.ErrHandlerNotFound))
	// Output:
	// shelving 3 items of S-1
	// <nil>
	// true
}

// exampleAuditHandler fails to handle exampleOrderPlaced.
type exampleAuditHandler struct{}

var errExampleAuditDown = errors.New("audit log unavailable")

func (exampleAuditHandler) Handle(context.Context, exampleOrderPlaced) ([]events.Event, error) {
	return nil, errExampleAuditDown
}

func ExampleDispatchError() {
	m, err := bootstrap.Bootstrap(nil,
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.HandlerFunc[examplePlaceOrder, int](
				func(_ context.Context, cmd examplePlaceOrder) (int, []events.Event, error) {
					return 42, []events.Event{exampleOrderPlaced{Order: 42, Item: cmd.Item}}, nil
				}))
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler[exampleOrderPlaced](e, exampleAuditHandler{})
			events.BindHandler(e, events.HandlerFunc[exampleOrderPlaced](
				func(context.Context, exampleOrderPlaced) ([]events.Event, error) {
					fmt.Println("the other handler still runs")
					return nil, nil
				}))
		}),
		bootstrap.WithConcurrentEventHandling(false),
	)
	if err != nil {
		panic(err)
	}

	order, err := mediator.Send(context.Background(), m, examplePlaceOrder{Item: "pen"})

	// The command succeeded, so its response is valid even though an event
	// handler failed.
	fmt.Println("order", order)
	var de *mediator.DispatchError
	if errors.As(err, &de) {
		fmt.Println("failures:", len(de.Failures))
	}
	var he *mediator.HandlerError
	if errors.As(err, &he) {
		fmt.Println("event:", he.EventType)
		fmt.Println("handler:", he.Handler)
		fmt.Println("cause:", he.Err)
	}
	fmt.Println(errors.Is(err, errExampleAuditDown))
	// Output:
	// the other handler still runs
	// order 42
	// failures: 1
	// event: mediator_test.exampleOrderPlaced
	// handler: mediator_test.exampleAuditHandler
	// cause: audit log unavailable
	// true
}
