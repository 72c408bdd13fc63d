package kafka_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// handled records the events an EventMediator's handler received and lets
// a test wait for them.
type handled struct {
	mu      sync.Mutex
	events  []events.Notification[payload]
	lineage []events.Lineage
	changed chan struct{}
}

func newHandled() *handled { return &handled{changed: make(chan struct{})} }

func (h *handled) add(ctx context.Context, ev events.Notification[payload]) {
	lin, _ := events.LineageFrom(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
	h.lineage = append(h.lineage, lin)
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitFor waits until cond holds for the events handled, and returns them.
func (h *handled) waitFor(t *testing.T, what string, cond func([]events.Notification[payload]) bool) []events.Notification[payload] {
	t.Helper()
	timer := time.NewTimer(60 * time.Second)
	defer timer.Stop()
	for {
		h.mu.Lock()
		evs, ch := append([]events.Notification[payload](nil), h.events...), h.changed
		h.mu.Unlock()
		if cond(evs) {
			return evs
		}
		select {
		case <-ch:
		case <-timer.C:
			require.FailNow(t, "timed out waiting for "+what, "%d events handled", len(evs))
		}
	}
}

// allOf holds once every id was handled at least once.
func allOf(ids []uuid.UUID) func([]events.Notification[payload]) bool {
	return func(evs []events.Notification[payload]) bool {
		seen := make(map[uuid.UUID]bool, len(evs))
		for _, ev := range evs {
			seen[ev.ID] = true
		}
		for _, id := range ids {
			if !seen[id] {
				return false
			}
		}
		return true
	}
}

// eventMediator returns an EventMediator whose handler of the test events
// records them in h, failing each event's first attempt when flaky says
// so.
func eventMediator(t *testing.T, h *handled, flaky func(events.Notification[payload]) error) func(context.Context, events.Event) error {
	t.Helper()
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[payload]](
			func(ctx context.Context, ev events.Notification[payload]) ([]events.Event, error) {
				if flaky != nil {
					if err := flaky(ev); err != nil {
						return nil, err
					}
				}
				h.add(ctx, ev)
				return nil, nil
			}))
	}))
	require.NoError(t, err)
	return em.Send
}

// consumerConfig is a consumer configuration with quick retries and quiet
// logs.
func consumerConfig(c *cluster) brokers.Config {
	cfg := brokers.DefaultConfig()
	cfg.Name = "billing"
	cfg.MaxConcurrency = 4
	cfg.Backoff = outbox.Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond}
	cfg.Logger = c.log
	return cfg
}

// An event goes from a command's transaction to another service's
// EventMediator: outbox, relay, Kafka Sender, Kafka Subscriber, Consumer;
// in order per key, every event once (the inbox absorbs redeliveries),
// lineage kept.
func TestRoundTripThroughOutboxAndConsumer(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 4)
	const keys, perKey = 5, 20

	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	var (
		enc wire.Encoder
		ids []uuid.UUID
	)
	require.NoError(t, store.InTx(t.Context(), func(ctx context.Context) error {
		for seq := range perKey {
			for k := range keys {
				env, err := enc.Encode(events.NewNotification(eventName, payload{Seq: seq}).WithTopic(topic).WithKey("order-" + strconv.Itoa(k)))
				if err != nil {
					return err
				}
				env.CorrelationID = "request-1"
				ids = append(ids, env.ID)
				if err := store.Add(ctx, env); err != nil {
					return err
				}
			}
		}
		return nil
	}))

	rcfg := outbox.DefaultRelayConfig()
	rcfg.Logger = c.log
	relay, err := outbox.NewRelay(store, c.sender(t), rcfg)
	require.NoError(t, err)

	h := newHandled()
	var (
		mu     sync.Mutex
		failed = make(map[uuid.UUID]bool)
	)
	flaky := func(ev events.Notification[payload]) error {
		mu.Lock()
		defer mu.Unlock()
		if ev.Payload.Seq%7 == 3 && !failed[ev.ID] {
			failed[ev.ID] = true
			return fmt.Errorf("transient failure of %d", ev.Payload.Seq)
		}
		return nil
	}
	cfg := consumerConfig(c)
	mem := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg.Inbox, cfg.Transactor = mem, mem
	consumer, err := brokers.NewConsumer(c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: "billing-" + topic}),
		decoder(t), eventMediator(t, h, flaky), cfg)
	require.NoError(t, err)

	ctx, stop := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return consumer.Run(ctx) })
	evs := h.waitFor(t, "every event handled", allOf(ids))
	stop()
	require.NoError(t, g.Wait())

	last := make(map[string]int)
	count := make(map[uuid.UUID]int)
	for _, ev := range evs {
		count[ev.ID]++
		prev, ok := last[ev.Key]
		assert.True(t, !ok || ev.Payload.Seq == prev+1, "key %s: %d after %d", ev.Key, ev.Payload.Seq, prev)
		last[ev.Key] = ev.Payload.Seq
		assert.Equal(t, topic, ev.Topic)
	}
	for _, id := range ids {
		assert.Equal(t, 1, count[id], "event %s handled once", id)
	}
	h.mu.Lock()
	for _, lin := range h.lineage {
		assert.Equal(t, "request-1", lin.CorrelationID)
	}
	h.mu.Unlock()
	assert.Zero(t, consumer.Counters().DeadLettered)
}

// python-cqrs publishes to Kafka the bare JSON body of an event, with no
// key and no headers: the consumer decodes it from the body.
func TestPythonCQRSBareBody(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	topic := c.topic(t, 1)
	id := uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"event_id":%q,"event_timestamp":"2024-05-01T12:34:56.123456","event_name":%q,"topic":%q,"payload":{"seq":7,"note":"from python"}}`,
		id, eventName, topic)
	c.produce(t, topic, 0, nil, body)

	h := newHandled()
	consumer, err := brokers.NewConsumer(c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: "billing-" + topic}),
		decoder(t), eventMediator(t, h, nil), consumerConfig(c))
	require.NoError(t, err)
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Run(ctx) }()
	evs := h.waitFor(t, "the python event handled", allOf([]uuid.UUID{id}))
	stop()
	require.NoError(t, <-done)

	ev := evs[0]
	assert.Equal(t, payload{Seq: 7, Note: "from python"}, ev.Payload)
	assert.Equal(t, eventName, ev.Name)
	assert.Equal(t, topic, ev.Topic)
	assert.Empty(t, ev.Key)
	assert.Equal(t, time.Date(2024, 5, 1, 12, 34, 56, 123456000, time.UTC), ev.Timestamp, "a naive timestamp is UTC")
	h.mu.Lock()
	assert.Equal(t, events.Lineage{CorrelationID: id.String(), CausationID: id.String()}, h.lineage[0])
	h.mu.Unlock()
}
