package kafka_test

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kfake"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type OrderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

// Events go from a command's transaction to another service's handler:
// outbox, relay, Kafka, consumer. An in-process fake cluster stands in for
// Kafka here; a real one takes its seed brokers.
func Example() {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		panic(err)
	}
	defer cluster.Close()
	seeds := cluster.ListenAddrs()
	quiet := slog.New(slog.DiscardHandler)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// The producing service: its relay sends the outbox's events with a
	// Sender.
	sender, err := kafka.NewSender(kafka.SenderConfig{Brokers: seeds, Logger: quiet})
	if err != nil {
		panic(err)
	}
	defer sender.Close()
	err = kafka.EnsureTopics(ctx, sender.Client(),
		kafka.TopicSpec{Name: "orders", Partitions: 3},
		kafka.TopicSpec{Name: "orders.dlq", Partitions: 3})
	if err != nil {
		panic(err)
	}
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	var enc wire.Encoder
	err = store.InTx(ctx, func(ctx context.Context) error {
		for _, o := range []OrderPlaced{{ID: "o-1", Total: 30}, {ID: "o-2", Total: 12}} {
			// One key: one partition, delivered in order.
			env, err := enc.Encode(events.NewNotification("order.placed", o).WithTopic("orders").WithKey("customer-7"))
			if err != nil {
				return err
			}
			if err := store.Add(ctx, env); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		panic(err)
	}
	rcfg := outbox.DefaultRelayConfig()
	rcfg.Logger = quiet
	relay, err := outbox.NewRelay(store, sender, rcfg)
	if err != nil {
		panic(err)
	}

	// The consuming service: a consumer group on the topic.
	var reg wire.Registry
	if err := wire.Register[OrderPlaced](&reg, "order.placed"); err != nil {
		panic(err)
	}
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	if err != nil {
		panic(err)
	}
	sub, err := kafka.NewSubscriber(kafka.SubscriberConfig{Brokers: seeds, Topic: "orders", Group: "billing", Logger: quiet})
	if err != nil {
		panic(err)
	}
	handled := 0
	cfg := brokers.DefaultConfig()
	cfg.Name = "billing"
	cfg.Logger = quiet
	consumer, err := brokers.NewConsumer(sub, dec, func(_ context.Context, ev events.Event) error {
		n, ok := ev.(events.Notification[OrderPlaced])
		if !ok {
			return outbox.Permanent(fmt.Errorf("unexpected event %T", ev))
		}
		fmt.Println("billing", n.Payload.ID, n.Payload.Total, "key", n.Key)
		if handled++; handled == 2 {
			stop()
		}
		return nil
	}, cfg)
	if err != nil {
		panic(err)
	}

	var g errgroup.Group
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return consumer.Run(ctx) })
	if err := g.Wait(); err != nil {
		panic(err)
	}
	fmt.Println("handled:", consumer.Counters().Handled)
	// Output:
	// billing o-1 30 key customer-7
	// billing o-2 12 key customer-7
	// handled: 2
}
