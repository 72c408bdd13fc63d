package events_test

import (
	"context"
	"fmt"

	"github.com/gocqrs/cqrs/events"
)

// OrderShipped is the payload of a notification event.
type OrderShipped struct {
	OrderID string
	Carrier string
}

func ExampleNewNotification() {
	n := events.NewNotification("order.shipped", OrderShipped{OrderID: "o-17", Carrier: "post"})

	fmt.Println(n.Name)
	fmt.Println(n.Topic)
	fmt.Println("ID version:", n.ID.Version())
	fmt.Println("UTC:", n.Timestamp.Location())
	fmt.Println(n.Payload.OrderID)

	// WithTopic returns a copy sent elsewhere.
	fmt.Println(n.WithTopic("shipping").Topic, n.Topic)
	// Output:
	// order.shipped
	// output_topic
	// ID version: VERSION_7
	// UTC: UTC
	// o-17
	// shipping output_topic
}

func ExampleMemoryPublisher() {
	var p events.MemoryPublisher
	ctx := context.Background()

	for _, id := range []string{"o-1", "o-2"} {
		if err := p.Publish(ctx, events.NewNotification("order.shipped", OrderShipped{OrderID: id})); err != nil {
			panic(err)
		}
	}

	// Take returns the published events in order and forgets them.
	for _, ev := range p.Take() {
		fmt.Println(ev.EventName(), ev.EventTopic(), ev.EventPayload())
	}
	fmt.Println("left:", len(p.Published()))

	// With Deliver set, events are handed over instead of kept.
	direct := &events.MemoryPublisher{
		Deliver: func(_ context.Context, ev events.NotificationEvent) error {
			fmt.Println("delivered", ev.EventName())
			return nil
		},
	}
	if err := direct.Publish(ctx, events.NewNotification("order.cancelled", OrderShipped{OrderID: "o-3"})); err != nil {
		panic(err)
	}
	fmt.Println("kept:", len(direct.Published()))
	// Output:
	// order.shipped output_topic {o-1 }
	// order.shipped output_topic {o-2 }
	// left: 0
	// delivered order.cancelled
	// kept: 0
}
