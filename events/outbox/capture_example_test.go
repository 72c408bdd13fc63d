package outbox_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/mediator"
	"github.com/gocqrs/cqrs/requests"
)

type PlaceOrder struct {
	requests.Returns[string]
	Item string
}

type OrderPlaced struct{ Item string }

type Confirmed struct{ Item string }

// The whole path of an event: Send → the handler's transaction → the
// outbox → the relay → the EventMediator of a consumer (here the same
// process) → its handler, with the correlation carried along.
func ExampleCapture() {
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	capture, err := outbox.NewCapture(outbox.MemoryTransactor{}, store, nil)
	if err != nil {
		panic(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	m, err := bootstrap.Bootstrap(nil, bootstrap.WithOutbox(capture),
		bootstrap.WithCommands(func(r *requests.Map) {
			requests.BindHandler(r, requests.Func(func(ctx context.Context, c PlaceOrder) (string, []events.Event, error) {
				// ... save the order with the transaction in ctx ...
				fmt.Println("handler: order saved, in a transaction")
				return "o-1", []events.Event{
					events.NewNotification("order.placed", OrderPlaced{Item: c.Item}).WithKey("o-1"),
					Confirmed{Item: c.Item}, // a domain event: dispatched after the commit
				}, nil
			}))
		}),
		bootstrap.WithDomainEvents(func(e *events.Map) {
			events.BindHandler(e, events.HandlerFunc[Confirmed](func(context.Context, Confirmed) ([]events.Event, error) {
				fmt.Println("domain event: after the commit")
				return nil, nil
			}))
			events.BindHandler(e, events.HandlerFunc[events.Notification[OrderPlaced]](func(ctx context.Context, n events.Notification[OrderPlaced]) ([]events.Event, error) {
				lin, _ := events.LineageFrom(ctx)
				fmt.Println("consumer: order placed:", n.Payload.Item, "correlated:", lin.CorrelationID != "")
				stop()
				return nil, nil
			}))
		}))
	if err != nil {
		panic(err)
	}

	id, err := mediator.Send(ctx, m, PlaceOrder{Item: "book"})
	fmt.Println("Send returned", id, err)

	var reg wire.Registry
	if err := wire.Register[OrderPlaced](&reg, "order.placed"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}
	cfg := outbox.DefaultRelayConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, outbox.InProcessSender(outbox.Decode(dec, m.Events().Send)), cfg)
	if err != nil {
		panic(err)
	}
	_ = relay.Run(ctx) // returns once the consumer has stopped it
	fmt.Println("sent:", relay.Counters().Sent)
	// Output:
	// handler: order saved, in a transaction
	// domain event: after the commit
	// Send returned o-1 <nil>
	// consumer: order placed: book correlated: true
	// sent: 1
}
