package rabbitmq_test

import (
	"context"
	"log"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// A service relays its outbox to RabbitMQ and consumes the events another
// service publishes there. It needs a broker, so it has no output to check.
func Example() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	url := os.Getenv("RABBITMQ_URL") // amqp://user:password@host:5672/vhost

	var reg wire.Registry
	if err := wire.Register[OrderPlaced](&reg, "order.placed"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}

	// Producing: the relay sends what committed transactions wrote to the
	// outbox, with routing key = the event's topic.
	sender, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: url, Exchange: "events"})
	if err != nil {
		panic(err)
	}
	defer func() { _ = sender.Close(context.Background()) }()
	store := outbox.NewMemoryStore(outbox.MemoryOptions{}) // a database's outbox in production
	relay, err := outbox.NewRelay(store, sender, outbox.DefaultRelayConfig())
	if err != nil {
		panic(err)
	}

	// Consuming: the billing service's queue receives "orders.*".
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
		URL: url,
		Topology: rabbitmq.Topology{
			Queue:                "billing",
			Exchange:             "events",
			Bindings:             []rabbitmq.Binding{{RoutingKey: "orders.*"}},
			SingleActiveConsumer: true, // one process at a time: keys stay in order
			DeliveryLimit:        50,   // above MaxDeliveries plus restarts
			RetryDelays:          []time.Duration{time.Second, 10 * time.Second, time.Minute},
		},
		Prefetch: 32,
	})
	if err != nil {
		panic(err)
	}
	// Creates the exchange, billing, billing.dlx, billing.dlq and
	// billing.retry.{1s,10s,1m}, or checks they exist as declared.
	if err := sub.Declare(ctx); err != nil {
		panic(err)
	}
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[OrderPlaced]](
			func(ctx context.Context, ev events.Notification[OrderPlaced]) ([]events.Event, error) {
				log.Println("billing order", ev.Payload.ID)
				return nil, nil
			}))
	}))
	if err != nil {
		panic(err)
	}
	cfg := brokers.DefaultConfig()
	cfg.Name = "billing"
	cfg.MaxConcurrency = 8 // at most Prefetch messages in flight: 4 × 8
	consumer, err := brokers.NewConsumer(sub, dec, em.Send, cfg)
	if err != nil {
		panic(err)
	}

	var g errgroup.Group
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return consumer.Run(ctx) })
	if err := g.Wait(); err != nil {
		panic(err)
	}
}

// Publishing straight to RabbitMQ, without an outbox: Publish returns once
// RabbitMQ has confirmed the event, or the error.
func ExamplePublisher() {
	ctx := context.Background()
	sender, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: os.Getenv("RABBITMQ_URL"), Exchange: "events"})
	if err != nil {
		panic(err)
	}
	defer func() { _ = sender.Close(ctx) }()
	pub, err := rabbitmq.NewPublisher(sender, nil)
	if err != nil {
		panic(err)
	}
	ev := events.NewNotification("order.placed", OrderPlaced{ID: "o-1", Total: 30}).
		WithTopic("orders.placed").WithKey("customer-7")
	if err := pub.Publish(ctx, ev); err != nil {
		panic(err) // matches outbox.ErrPermanent if no queue is bound to orders.placed
	}
}
