package benchmarks_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// watermill v1.5.1 components/cqrs over its in-memory pubsub/gochannel,
// with its JSON marshaler and no logging. Watermill is asynchronous: Send and
// Publish return once the message is handed to the Pub/Sub, and the handlers
// run later on the router's goroutines. So the handlers signal the
// benchmark through a channel, and an iteration is a full round trip: send,
// then wait until every handler has run.

// wmCommands is a CommandBus with a CommandProcessor holding one handler of
// Query, which sends its Reply on replies.
type wmCommands struct {
	bus     *cqrs.CommandBus
	replies chan Reply
}

// wmEvents is an EventBus with an EventProcessor holding 4 no-op handlers of
// Event, each of which signals handled once it has run.
type wmEvents struct {
	bus     *cqrs.EventBus
	handled chan struct{}
}

var (
	wmLogger    = watermill.NopLogger{}
	wmMarshaler = cqrs.JSONMarshaler{}
)

// newWatermillCommands starts a router with the command processor; it is
// closed when b ends.
func newWatermillCommands(b *testing.B) *wmCommands {
	b.Helper()
	pubSub, router := newWatermillRouter(b)
	w := &wmCommands{replies: make(chan Reply, 1)}
	processor, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) {
			return p.CommandName, nil
		},
		SubscriberConstructor: func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return pubSub, nil
		},
		Marshaler: wmMarshaler,
		Logger:    wmLogger,
	})
	if err != nil {
		b.Fatal(err)
	}
	err = processor.AddHandlers(cqrs.NewCommandHandler("query", func(_ context.Context, q *Query) error {
		w.replies <- answer(q.ID)
		return nil
	}))
	if err != nil {
		b.Fatal(err)
	}
	w.bus, err = cqrs.NewCommandBusWithConfig(pubSub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(p cqrs.CommandBusGeneratePublishTopicParams) (string, error) {
			return p.CommandName, nil
		},
		Marshaler: wmMarshaler,
		Logger:    wmLogger,
	})
	if err != nil {
		b.Fatal(err)
	}
	runWatermill(b, pubSub, router)
	return w
}

// newWatermillEvents starts a router with the event processor; it is closed
// when b ends.
func newWatermillEvents(b *testing.B) *wmEvents {
	b.Helper()
	pubSub, router := newWatermillRouter(b)
	w := &wmEvents{handled: make(chan struct{}, fanOut)}
	processor, err := cqrs.NewEventProcessorWithConfig(router, cqrs.EventProcessorConfig{
		GenerateSubscribeTopic: func(p cqrs.EventProcessorGenerateSubscribeTopicParams) (string, error) {
			return p.EventName, nil
		},
		// One subscription per handler: the GoChannel delivers every
		// message to every subscriber of its topic.
		SubscriberConstructor: func(cqrs.EventProcessorSubscriberConstructorParams) (message.Subscriber, error) {
			return pubSub, nil
		},
		Marshaler: wmMarshaler,
		Logger:    wmLogger,
	})
	if err != nil {
		b.Fatal(err)
	}
	for i := range fanOut {
		err := processor.AddHandlers(cqrs.NewEventHandler(fmt.Sprintf("noop-%d", i), func(context.Context, *Event) error {
			w.handled <- struct{}{}
			return nil
		}))
		if err != nil {
			b.Fatal(err)
		}
	}
	w.bus, err = cqrs.NewEventBusWithConfig(pubSub, cqrs.EventBusConfig{
		GeneratePublishTopic: func(p cqrs.GenerateEventPublishTopicParams) (string, error) {
			return p.EventName, nil
		},
		Marshaler: wmMarshaler,
		Logger:    wmLogger,
	})
	if err != nil {
		b.Fatal(err)
	}
	runWatermill(b, pubSub, router)
	return w
}

func newWatermillRouter(b *testing.B) (*gochannel.GoChannel, *message.Router) {
	b.Helper()
	pubSub := gochannel.NewGoChannel(gochannel.Config{}, wmLogger)
	router, err := message.NewRouter(message.RouterConfig{}, wmLogger)
	if err != nil {
		b.Fatal(err)
	}
	return pubSub, router
}

// runWatermill runs router until b ends, then closes it and pubSub and waits
// for Run to return. It returns once the router's handlers have subscribed,
// so no message sent afterwards is lost.
func runWatermill(b *testing.B, pubSub *gochannel.GoChannel, router *message.Router) {
	b.Helper()
	done := make(chan error, 1)
	go func() { done <- router.Run(context.Background()) }()
	select {
	case <-router.Running():
	case err := <-done:
		b.Fatalf("watermill router stopped before running: %v", err)
	}
	b.Cleanup(func() {
		if err := router.Close(); err != nil {
			b.Error(err)
		}
		if err := <-done; err != nil {
			b.Error(err)
		}
		if err := pubSub.Close(); err != nil {
			b.Error(err)
		}
	})
}
