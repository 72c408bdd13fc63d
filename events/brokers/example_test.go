package brokers_test

import (
	"context"
	"fmt"
	"log/slog"

	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// An event goes from a command's transaction to another service's handler:
// outbox, relay, broker, consumer, EventMediator.
func Example() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	quiet := slog.New(slog.DiscardHandler)

	// Producer and consumer share the event registrations.
	var reg wire.Registry
	if err := wire.Register[OrderPlaced](&reg, "order.placed"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}

	// The consuming service bills orders. This one stops after two.
	handled := 0
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[OrderPlaced]](
			func(ctx context.Context, ev events.Notification[OrderPlaced]) ([]events.Event, error) {
				lin, _ := events.LineageFrom(ctx)
				fmt.Println("billing", ev.Payload.ID, ev.Payload.Total, "correlation", lin.CorrelationID,
					"caused by the event:", lin.CausationID == ev.ID.String())
				if handled++; handled == 2 {
					stop()
				}
				return nil, nil
			}))
	}))
	if err != nil {
		panic(err)
	}

	// The producing service: a command writes its events to the outbox in
	// its transaction. Same key: they are delivered in order.
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	var enc wire.Encoder
	err = store.InTx(ctx, func(ctx context.Context) error {
		for _, p := range []OrderPlaced{{ID: "o-1", Total: 30}, {ID: "o-2", Total: 12}} {
			env, err := enc.Encode(events.NewNotification("order.placed", p).WithTopic("orders").WithKey("customer-7"))
			if err != nil {
				return err
			}
			env.CorrelationID = "request-42"
			if err := store.Add(ctx, env); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}

	// The relay sends to the broker; the consumer receives from it.
	broker := brokers.NewMemoryBroker()
	rcfg := outbox.DefaultRelayConfig()
	rcfg.Logger = quiet
	relay, err := outbox.NewRelay(store, broker, rcfg)
	if err != nil {
		panic(err)
	}
	ccfg := brokers.DefaultConfig()
	ccfg.Name = "billing"
	ccfg.Logger = quiet
	sub := broker.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "billing"})
	consumer, err := brokers.NewConsumer(sub, dec, em.Send, ccfg)
	if err != nil {
		panic(err)
	}

	var g errgroup.Group
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return consumer.Run(ctx) })
	if err := g.Wait(); err != nil {
		panic(err)
	}
	c := consumer.Counters()
	fmt.Println("handled:", c.Handled, "dead-lettered:", c.DeadLettered)
	// Output:
	// billing o-1 30 correlation request-42 caused by the event: true
	// billing o-2 12 correlation request-42 caused by the event: true
	// handled: 2 dead-lettered: 0
}

// A message that cannot be decoded is dead-lettered at once, and does not
// hold back the messages behind it.
func ExampleConsumer_deadLetter() {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	var reg wire.Registry
	if err := wire.Register[OrderPlaced](&reg, "order.placed"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}

	broker := brokers.NewMemoryBroker()
	var enc wire.Encoder
	bad, err := enc.Encode(events.NewNotification("order.placed", OrderPlaced{ID: "o-1"}).WithTopic("orders").WithKey("customer-7"))
	if err != nil {
		panic(err)
	}
	bad.Payload = []byte("not json")
	good, err := enc.Encode(events.NewNotification("order.placed", OrderPlaced{ID: "o-2"}).WithTopic("orders").WithKey("customer-7"))
	if err != nil {
		panic(err)
	}
	if err := broker.Send(ctx, []wire.Envelope{bad, good}); err != nil {
		panic(err)
	}

	cfg := brokers.DefaultConfig()
	cfg.Name = "billing"
	cfg.Logger = slog.New(slog.DiscardHandler)
	sub := broker.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "billing", DeadLetterTopic: "orders.billing.dlq"})
	consumer, err := brokers.NewConsumer(sub, dec, func(_ context.Context, ev events.Event) error {
		n, _ := ev.(events.Notification[OrderPlaced])
		fmt.Println("handled", n.Payload.ID)
		stop()
		return nil
	}, cfg)
	if err != nil {
		panic(err)
	}
	if err := consumer.Run(ctx); err != nil {
		panic(err)
	}

	for _, m := range broker.Messages("orders.billing.dlq") {
		fmt.Println("dead letter:", m.Headers[brokers.HeaderDeadLetterReason],
			"attempts", m.Headers[brokers.HeaderDeadLetterAttempts],
			"consumer", m.Headers[brokers.HeaderDeadLetterConsumer],
			"body", string(m.Body))
	}
	// Output:
	// handled o-2
	// dead letter: undecodable attempts 1 consumer billing body not json
}
