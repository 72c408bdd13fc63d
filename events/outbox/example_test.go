package outbox_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func envelope(name, key, payload string) wire.Envelope {
	return wire.Envelope{
		ID:          uuid.Must(uuid.NewV7()),
		Name:        name,
		Topic:       "orders",
		Key:         key,
		Timestamp:   time.Now().UTC(),
		ContentType: "application/json",
		Payload:     []byte(payload),
	}
}

func ExampleRelay() {
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	ctx, stop := context.WithCancel(context.Background())
	defer stop()

	// A command's writes and the events it emits commit in one transaction.
	err := store.InTx(ctx, func(ctx context.Context) error {
		// ... the command's own writes, with the transaction in ctx ...
		return store.Add(ctx,
			envelope("order.placed", "o-1", `{"id":"o-1"}`),
			envelope("order.placed", "o-2", `{"id":"o-2"}`),
			envelope("order.paid", "o-1", `{"id":"o-1"}`),
		)
	})
	if err != nil {
		panic(err)
	}

	// The relay hands each committed event to an in-process consumer (it
	// would decode it and call an EventMediator); this one stops the relay
	// after three events.
	delivered := 0
	sender := outbox.InProcessSender(func(ctx context.Context, env wire.Envelope) error {
		fmt.Println(env.Name, env.Key, string(env.Payload))
		if delivered++; delivered == 3 {
			stop()
		}
		return nil
	})
	cfg := outbox.DefaultRelayConfig()
	cfg.Logger = slog.New(slog.DiscardHandler)
	relay, err := outbox.NewRelay(store, sender, cfg)
	if err != nil {
		panic(err)
	}
	if err := relay.Run(ctx); err != nil {
		panic(err)
	}

	st, err := store.Stats(context.Background())
	if err != nil {
		panic(err)
	}
	fmt.Println("sent:", st.Sent, "pending:", st.Pending, "relay sent:", relay.Counters().Sent)
	// Output:
	// order.placed o-1 {"id":"o-1"}
	// order.placed o-2 {"id":"o-2"}
	// order.paid o-1 {"id":"o-1"}
	// sent: 3 pending: 0 relay sent: 3
}

func ExampleMemoryStore_InTx() {
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	ctx := context.Background()

	// The command fails: its events are rolled back with its writes.
	err := store.InTx(ctx, func(ctx context.Context) error {
		if err := store.Add(ctx, envelope("order.placed", "o-1", `{}`)); err != nil {
			return err
		}
		return errors.New("out of stock")
	})
	fmt.Println(err)

	// Without a transaction, nothing is written.
	err = store.Add(ctx, envelope("order.placed", "o-1", `{}`))
	fmt.Println(errors.Is(err, outbox.ErrNoTx))

	st, err := store.Stats(ctx)
	if err != nil {
		panic(err)
	}
	fmt.Println("pending:", st.Pending)
	// Output:
	// out of stock
	// true
	// pending: 0
}

// A notification event published by a mediator goes to the outbox in the
// handler's transaction: a Publisher that encodes it and calls Add.
func ExampleAdder() {
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	publisher := events.PublisherFunc(func(ctx context.Context, ev events.NotificationEvent) error {
		payload, err := json.Marshal(ev.EventPayload()) // package wire has the real codec
		if err != nil {
			return err
		}
		env := wire.Envelope{
			ID: ev.EventID(), Name: ev.EventName(), Topic: ev.EventTopic(), Timestamp: ev.EventTimestamp(),
			ContentType: "application/json", Payload: payload,
		}
		if k, ok := ev.(events.Keyed); ok {
			env.Key = k.EventKey()
		}
		return store.Add(ctx, env) // the handler's transaction is in ctx
	})

	ctx := context.Background()
	n := events.NewNotification("order.placed", map[string]string{"id": "o-1"}).WithKey("o-1")
	err := store.InTx(ctx, func(ctx context.Context) error { return publisher.Publish(ctx, n) })
	if err != nil {
		panic(err)
	}
	row, err := store.Get(ctx, n.ID)
	if err != nil {
		panic(err)
	}
	fmt.Println(row.State, row.Envelope.Name, row.Envelope.Key, string(row.Envelope.Payload))
	// Output: pending order.placed o-1 {"id":"o-1"}
}

// Operators list dead rows, fix the cause, and requeue them.
func ExampleAdmin() {
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	ctx := context.Background()
	err := store.InTx(ctx, func(ctx context.Context) error {
		return store.Add(ctx, envelope("order.placed", "o-1", `{}`), envelope("order.paid", "o-1", `{}`))
	})
	if err != nil {
		panic(err)
	}
	// A relay gives up on the first event: the topic does not exist.
	rows, err := store.Claim(ctx, "relay-1", 1, time.Minute)
	if err != nil {
		panic(err)
	}
	err = store.MarkFailed(ctx, "relay-1", outbox.Failure{ID: rows[0].Envelope.ID, Error: "unknown topic orders", Dead: true})
	if err != nil {
		panic(err)
	}

	st, _ := store.Stats(ctx)
	fmt.Println("dead:", st.Dead, "pending:", st.Pending)
	dead, _ := store.ListDead(ctx, 0, 100)
	for _, r := range dead {
		fmt.Println(r.Envelope.Name, r.Envelope.Key, r.State, r.Attempts, r.LastError)
	}
	// The dead row holds its key: the second event waits.
	rows, _ = store.Claim(ctx, "relay-1", 10, time.Minute)
	fmt.Println("claimable:", len(rows))

	// Once the topic exists, requeue: both events flow again, in order.
	n, _ := store.RequeueAllDead(ctx)
	fmt.Println("requeued:", n)
	rows, _ = store.Claim(ctx, "relay-1", 10, time.Minute)
	for _, r := range rows {
		fmt.Println(r.Envelope.Name, r.Attempts)
	}
	// Output:
	// dead: 1 pending: 1
	// order.placed o-1 dead 1 unknown topic orders
	// claimable: 0
	// requeued: 1
	// order.placed 0
	// order.paid 0
}
