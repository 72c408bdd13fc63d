package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

type orderPlaced struct {
	ID    string `json:"id"`
	Total int    `json:"total"`
}

const orderPlacedName = "order.placed"

func newDecoder(tb testing.TB) *wire.Decoder {
	tb.Helper()
	var reg wire.Registry
	require.NoError(tb, wire.Register[orderPlaced](&reg, orderPlacedName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(tb, err)
	return dec
}

// consumerConfig is a quiet consumer configuration with fast retries.
func consumerConfig() brokers.Config {
	cfg := brokers.DefaultConfig()
	cfg.Name = "test"
	cfg.MaxConcurrency = 4
	cfg.MaxInFlight = 16
	cfg.Backoff = outbox.Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond}
	cfg.Logger = quiet
	return cfg
}

// handled collects the events a handler saw and lets a test wait for a
// condition on them.
type handled struct {
	mu      sync.Mutex
	events  []events.Notification[orderPlaced]
	ctxs    []context.Context
	changed chan struct{}
}

func newHandled() *handled { return &handled{changed: make(chan struct{})} }

func (h *handled) add(ctx context.Context, ev events.Notification[orderPlaced]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, ev)
	h.ctxs = append(h.ctxs, ctx)
	close(h.changed)
	h.changed = make(chan struct{})
}

// wait waits until cond holds, for at most timeout.
func (h *handled) wait(tb testing.TB, timeout time.Duration, what string, cond func([]events.Notification[orderPlaced]) bool) []events.Notification[orderPlaced] {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		h.mu.Lock()
		evs, ch := append([]events.Notification[orderPlaced](nil), h.events...), h.changed
		h.mu.Unlock()
		if cond(evs) {
			return evs
		}
		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("timed out waiting for %s (%d events handled)", what, len(evs))
		}
	}
}

// run runs c until the returned stop is called or the test ends.
func run(tb testing.TB, c *brokers.Consumer) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var (
		once sync.Once
		err  error
	)
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				err = errors.New("Run did not return")
			}
		})
		return err
	}
	tb.Cleanup(func() { _ = stop() })
	return stop
}

type traceKey struct{}

// Publisher → RabbitMQ → Consumer → EventMediator, with the lineage and
// the trace context carried across.
func TestPublisherToEventMediator(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("mediator", rabbitmq.QueueQuorum)
	sub := provision(t, u, topo)

	got := newHandled()
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[orderPlaced]](
			func(ctx context.Context, ev events.Notification[orderPlaced]) ([]events.Event, error) {
				got.add(ctx, ev)
				return nil, nil
			}))
	}))
	require.NoError(t, err)
	cfg := consumerConfig()
	cfg.Extract = func(ctx context.Context, h map[string]string) context.Context {
		return context.WithValue(ctx, traceKey{}, h[wire.HeaderTraceparent])
	}
	c, err := brokers.NewConsumer(sub, newDecoder(t), em.Send, cfg)
	require.NoError(t, err)
	run(t, c)

	const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	pub, err := rabbitmq.NewPublisher(newSender(t, u, topo.Exchange), nil, rabbitmq.WithStamp(func(_ context.Context, env *wire.Envelope) {
		env.SetHeader(wire.HeaderTraceparent, traceparent)
	}))
	require.NoError(t, err)
	ctx := events.WithLineage(t.Context(), events.Lineage{CorrelationID: "request-42", CausationID: "command-7"})
	sent := []events.Notification[orderPlaced]{
		events.NewNotification(orderPlacedName, orderPlaced{ID: "o-1", Total: 30}).WithTopic(topic).WithKey("customer-7"),
		events.NewNotification(orderPlacedName, orderPlaced{ID: "o-2", Total: 12}).WithTopic(topic).WithKey("customer-7"),
	}
	for _, ev := range sent {
		require.NoError(t, pub.Publish(ctx, ev))
	}

	evs := got.wait(t, 30*time.Second, "both events", func(evs []events.Notification[orderPlaced]) bool { return len(evs) >= 2 })
	for i, ev := range evs[:2] {
		assert.Equal(t, sent[i].ID, ev.ID, "event %d, in order", i)
		assert.Equal(t, sent[i].Payload, ev.Payload)
		assert.Equal(t, topic, ev.Topic)
		assert.Equal(t, "customer-7", ev.Key)
		assert.True(t, sent[i].Timestamp.Truncate(time.Microsecond).Equal(ev.Timestamp))
	}
	got.mu.Lock()
	defer got.mu.Unlock()
	for i, ctx := range got.ctxs[:2] {
		lin, ok := events.LineageFrom(ctx)
		require.True(t, ok)
		assert.Equal(t, events.Lineage{CorrelationID: "request-42", CausationID: sent[i].ID.String()}, lin)
		assert.Equal(t, traceparent, ctx.Value(traceKey{}))
	}
}

// What other clients see: a persistent message with the event's id as
// message-id, its metadata as properties and headers.
func TestSenderMessage(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("message", rabbitmq.QueueClassic)
	provision(t, u, topo)
	var enc wire.Encoder
	env, err := enc.Encode(events.NewNotification(orderPlacedName, orderPlaced{ID: "o-1"}).WithTopic(topic).WithKey("customer-7"))
	require.NoError(t, err)
	env.CorrelationID, env.CausationID = "corr-1", "cause-1"
	env.SetHeader(wire.HeaderTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	env.SetHeader(brokers.HeaderKey, "not-the-key") // the envelope's Key wins
	require.NoError(t, newSender(t, u, topo.Exchange).Send(t.Context(), []wire.Envelope{env}))

	ch, err := adminConn(t, u).Channel()
	require.NoError(t, err)
	d, ok, err := ch.Get(topo.Queue, true)
	require.NoError(t, err)
	require.True(t, ok, "the message is in the queue")
	assert.Equal(t, amqp.Persistent, d.DeliveryMode)
	assert.Equal(t, env.ID.String(), d.MessageId)
	assert.Equal(t, "corr-1", d.CorrelationId)
	assert.Equal(t, orderPlacedName, d.Type)
	assert.Equal(t, "application/json", d.ContentType)
	assert.Equal(t, env.Timestamp.Unix(), d.Timestamp.Unix())
	assert.Equal(t, topo.Exchange, d.Exchange)
	assert.Equal(t, topic, d.RoutingKey)
	assert.Equal(t, env.Payload, d.Body)
	want, err := wire.ToHeaders(env)
	require.NoError(t, err)
	want[brokers.HeaderKey] = "customer-7"
	gotHeaders := make(map[string]string, len(d.Headers))
	for k, v := range d.Headers {
		s, ok := v.(string)
		require.True(t, ok, "header %s is a %T", k, v)
		gotHeaders[k] = s
	}
	assert.Equal(t, want, gotHeaders)
}

// A python-cqrs service publishes the bare JSON body, no header and no
// property, with routing key = topic, to a direct exchange of its own.
func TestPythonCqrsBareBody(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	conn := adminConn(t, u)
	ch, err := conn.Channel()
	require.NoError(t, err)
	pyExchange := unique("python")
	require.NoError(t, ch.ExchangeDeclare(pyExchange, amqp.ExchangeDirect, false, true, false, false, nil))
	t.Cleanup(func() { _ = ch.ExchangeDelete(pyExchange, false, false) })

	topo, _ := testTopology("python", rabbitmq.QueueQuorum)
	topo.Bindings = []rabbitmq.Binding{{Exchange: pyExchange, RoutingKey: "orders"}}
	sub := provision(t, u, topo)

	got := newHandled()
	c, err := brokers.NewConsumer(sub, newDecoder(t), func(ctx context.Context, ev events.Event) error {
		n, ok := ev.(events.Notification[orderPlaced])
		if !ok {
			return fmt.Errorf("unexpected %T", ev)
		}
		got.add(ctx, n)
		return nil
	}, consumerConfig())
	require.NoError(t, err)
	run(t, c)

	id := uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"event_id":%q,"event_timestamp":"2024-05-01T12:34:56.123456","event_name":%q,"topic":"orders","payload":{"id":"o-9","total":5}}`,
		id, orderPlacedName)
	require.NoError(t, ch.PublishWithContext(t.Context(), pyExchange, "orders", false, false, amqp.Publishing{Body: []byte(body)}))

	evs := got.wait(t, 30*time.Second, "the python event", func(evs []events.Notification[orderPlaced]) bool { return len(evs) >= 1 })
	ev := evs[0]
	assert.Equal(t, id, ev.ID)
	assert.Equal(t, orderPlaced{ID: "o-9", Total: 5}, ev.Payload)
	assert.Equal(t, "orders", ev.Topic)
	assert.Equal(t, time.Date(2024, 5, 1, 12, 34, 56, 123456000, time.UTC), ev.Timestamp)
	got.mu.Lock()
	lin, _ := events.LineageFrom(got.ctxs[0])
	got.mu.Unlock()
	assert.Equal(t, events.Lineage{CorrelationID: id.String(), CausationID: id.String()}, lin)
}
