package nats_test

import (
	"context"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	cqrsnats "github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// An event goes from a command's outbox, through a relay and JetStream, to
// another service's EventMediator. It needs a NATS server with JetStream on
// the default URL.
func Example() {
	ctx, stop := context.WithTimeout(context.Background(), time.Minute)
	defer stop()

	// Never give up reconnecting; buffer nothing while disconnected.
	nc, err := natsgo.Connect(natsgo.DefaultURL, natsgo.MaxReconnects(-1), natsgo.ReconnectBufSize(-1))
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	// Producer and consumer share the event registrations.
	var reg wire.Registry
	if err := wire.Register[OrderPlaced](&reg, "order.placed"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}

	// The stream ORDERS captures orders.>; billing is its durable
	// consumer. Provision creates them, and the dead-letter stream, if
	// missing: for development. In production they exist already.
	topo := cqrsnats.Topology{
		Stream:   "ORDERS",
		Consumer: "billing",
		Subjects: []string{"orders.>"},
		Storage:  jetstream.FileStorage,
	}

	// The producing service: its command writes the event to the outbox,
	// and a relay sends the outbox to JetStream.
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	var enc wire.Encoder
	err = store.InTx(ctx, func(ctx context.Context) error {
		ev := events.NewNotification("order.placed", OrderPlaced{ID: "o-1", Total: 30}).
			WithTopic("orders.placed").WithKey("customer-7")
		env, err := enc.Encode(ev)
		if err != nil {
			return err
		}
		return store.Add(ctx, env)
	})
	if err != nil {
		panic(err)
	}
	sender, err := cqrsnats.NewSender(nc, cqrsnats.SenderConfig{})
	if err != nil {
		panic(err)
	}
	relay, err := outbox.NewRelay(store, sender, outbox.DefaultRelayConfig())
	if err != nil {
		panic(err)
	}

	// The consuming service: its EventMediator handles the event, once,
	// thanks to the inbox, and the consumer acknowledges it.
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[OrderPlaced]](
			func(ctx context.Context, ev events.Notification[OrderPlaced]) ([]events.Event, error) {
				fmt.Println("billing", ev.Payload.ID, ev.Payload.Total)
				stop()
				return nil, nil
			}))
	}))
	if err != nil {
		panic(err)
	}
	sub, err := cqrsnats.NewSubscriber(nc, cqrsnats.SubscriberConfig{Topology: topo, Provision: true})
	if err != nil {
		panic(err)
	}
	in := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg := brokers.DefaultConfig()
	cfg.Name, cfg.MaxConcurrency = "billing", 8
	cfg.Inbox, cfg.Transactor = in, in
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

// Provision creates a stream, its durable consumer and its dead-letter
// stream, unless they exist: for development and tests.
func ExampleTopology_Provision() {
	nc, err := natsgo.Connect(natsgo.DefaultURL)
	if err != nil {
		panic(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		panic(err)
	}
	topo := cqrsnats.Topology{
		Stream:        "ORDERS",
		Consumer:      "billing",
		Subjects:      []string{"orders.>"},
		AckWait:       time.Minute,
		MaxAckPending: 512,
	}
	if err := topo.Provision(context.Background(), js); err != nil {
		panic(err)
	}
	// Dead letters go to "dead-letter.ORDERS.billing", in the stream
	// ORDERS_DEAD_LETTER.
}
