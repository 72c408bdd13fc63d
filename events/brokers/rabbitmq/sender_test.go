package rabbitmq_test

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func encode(tb testing.TB, topic, key string, seq int) wire.Envelope {
	tb.Helper()
	var enc wire.Encoder
	env, err := enc.Encode(events.NewNotification(orderPlacedName, orderPlaced{ID: strconv.Itoa(seq), Total: seq}).WithTopic(topic).WithKey(key))
	require.NoError(tb, err)
	return env
}

// batchErrs returns the per-record errors of Send's result.
func batchErrs(t *testing.T, err error, n int) []error {
	t.Helper()
	if err == nil {
		return make([]error, n)
	}
	be, ok := errors.AsType[*outbox.BatchError](err)
	require.True(t, ok, "Send returned %v, not a BatchError", err)
	require.Len(t, be.Errs, n)
	return be.Errs
}

// A record no queue takes fails for good; the later records of its key are
// not sent; other keys go on, each in order.
func TestSendPerRecord(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("records", rabbitmq.QueueClassic)
	sub := provision(t, u, topo)
	nowhere := topic + ".unbound"

	noTopic := encode(t, topic, "k-4", 9)
	noTopic.Topic = ""
	reserved := encode(t, topic, "k-5", 10)
	reserved.Headers = map[string]string{"Event-Name": "x"}
	envs := []wire.Envelope{
		encode(t, topic, "k-1", 1),   // 0 sent
		encode(t, nowhere, "k-1", 2), // 1 unroutable
		encode(t, topic, "k-1", 3),   // 2 not attempted
		encode(t, topic, "k-2", 4),   // 3 sent
		encode(t, topic, "k-2", 5),   // 4 sent, after 3
		encode(t, nowhere, "", 6),    // 5 unroutable, holds nothing
		encode(t, topic, "", 7),      // 6 sent
		encode(t, topic, "k-2", 8),   // 7 sent, after 4
		noTopic,                      // 8 permanent
		reserved,                     // 9 permanent
		encode(t, topic, "k-5", 11),  // 10 not attempted
	}
	errs := batchErrs(t, newSender(t, u, topo.Exchange).Send(t.Context(), envs), len(envs))
	for _, i := range []int{0, 3, 4, 6, 7} {
		assert.NoError(t, errs[i], "record %d", i)
	}
	for _, i := range []int{1, 5} {
		assert.ErrorIs(t, errs[i], outbox.ErrPermanent, "record %d", i)
		var re *rabbitmq.ReturnedError
		if assert.ErrorAs(t, errs[i], &re, "record %d", i) {
			assert.Equal(t, nowhere, re.RoutingKey)
			assert.EqualValues(t, 312, re.ReplyCode)
		}
	}
	for _, i := range []int{8, 9} {
		assert.ErrorIs(t, errs[i], outbox.ErrPermanent, "record %d", i)
	}
	assert.ErrorIs(t, errs[9], wire.ErrReservedHeader)
	for _, i := range []int{2, 10} {
		assert.ErrorIs(t, errs[i], outbox.ErrNotAttempted, "record %d", i)
	}

	// The queue holds the sent records, each key in order.
	src, err := sub.Subscribe(t.Context())
	require.NoError(t, err)
	defer func() { require.NoError(t, src.Close(context.Background())) }()
	perKey := make(map[string][]string)
	for range 5 {
		m, err := src.Receive(t.Context())
		require.NoError(t, err)
		env, err := wire.FromHeaders(m.Headers)
		require.NoError(t, err)
		dec, err := wire.DecodeAs[orderPlaced](newDecoder(t), wire.Envelope{ID: env.ID, Name: env.Name, Timestamp: env.Timestamp, ContentType: env.ContentType, Payload: m.Body})
		require.NoError(t, err)
		perKey[m.Key] = append(perKey[m.Key], dec.Payload.ID)
		require.NoError(t, m.Settler.Ack(t.Context()))
	}
	assert.Equal(t, map[string][]string{"k-1": {"1"}, "k-2": {"4", "5", "8"}, "": {"7"}}, perKey)
}

// With AllowUnroutable, RabbitMQ drops what no queue takes.
func TestSendAllowUnroutable(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("unroutable", rabbitmq.QueueClassic)
	provision(t, u, topo)
	s, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: u, Exchange: topo.Exchange, AllowUnroutable: true, Logger: quiet})
	require.NoError(t, err)
	defer func() { require.NoError(t, s.Close(context.Background())) }()
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{encode(t, topic+".unbound", "k", 1)}))
}

// Once ctx is done nothing is sent, and every record says so.
func TestSendCancelled(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("cancelled", rabbitmq.QueueClassic)
	provision(t, u, topo)
	s := newSender(t, u, topo.Exchange)
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 0)}), "connected")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Send(ctx, []wire.Envelope{encode(t, topic, "k", 1), encode(t, topic, "", 2)})
	require.ErrorIs(t, err, context.Canceled)
	// The Sender works afterwards.
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 3)}))
}

// A publish to an exchange that does not exist fails (RabbitMQ closes the
// channel) without harming the next Send.
func TestSendMissingExchange(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("missing", rabbitmq.QueueClassic)
	provision(t, u, topo)
	missing := newSender(t, u, unique("missing"))
	errs := batchErrs(t, missing.Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 1), encode(t, topic, "k", 2)}), 2)
	assert.ErrorIs(t, errs[0], rabbitmq.ErrConnectionLost)
	assert.ErrorContains(t, errs[0], "NOT_FOUND")
	assert.ErrorIs(t, errs[1], outbox.ErrNotAttempted)

	s := newSender(t, u, topo.Exchange)
	for range 3 { // a fresh channel each time the previous one was closed
		require.NoError(t, s.Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 1)}))
	}
}

// A closed Sender refuses to send.
func TestSendAfterClose(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	s, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: u, Exchange: unique("closed"), DeclareExchange: true, Logger: quiet})
	require.NoError(t, err)
	require.NoError(t, s.Close(context.Background()))
	require.NoError(t, s.Close(context.Background()), "Close twice")
	require.ErrorIs(t, s.Send(t.Context(), []wire.Envelope{encode(t, "t", "", 1)}), rabbitmq.ErrClosed)
	pub, err := rabbitmq.NewPublisher(s, nil)
	require.NoError(t, err)
	require.ErrorIs(t, pub.Publish(t.Context(), events.NewNotification(orderPlacedName, orderPlaced{}).WithTopic("t")), rabbitmq.ErrClosed)
}

// The Publisher reports a record's own error.
func TestPublisherUnroutable(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("pub", rabbitmq.QueueClassic)
	provision(t, u, topo)
	pub, err := rabbitmq.NewPublisher(newSender(t, u, topo.Exchange), nil)
	require.NoError(t, err)
	err = pub.Publish(t.Context(), events.NewNotification(orderPlacedName, orderPlaced{}).WithTopic(topic+".unbound"))
	require.ErrorIs(t, err, rabbitmq.ErrUnroutable)
	require.ErrorIs(t, err, outbox.ErrPermanent)
	require.NoError(t, pub.Publish(t.Context(), events.NewNotification(orderPlacedName, orderPlaced{}).WithTopic(topic)))
	err = pub.Publish(t.Context(), events.NewNotification("", orderPlaced{}).WithTopic(topic))
	require.ErrorIs(t, err, wire.ErrInvalidEvent)
	_ = brokers.HeaderKey
}

// A Send whose confirmations do not come returns once its context ends;
// the next Send dials again.
func TestSendReturnsWhenBrokerStalls(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("stall", rabbitmq.QueueClassic)
	provision(t, u, topo)
	p := newProxy(t, u)
	s := newSender(t, proxied(t, p, u), topo.Exchange)
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 1)}))

	p.Hold()
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	errs := batchErrs(t, s.Send(ctx, []wire.Envelope{encode(t, topic, "k", 2), encode(t, topic, "k", 3)}), 2)
	assert.Less(t, time.Since(start), 10*time.Second, "Send returned promptly")
	assert.ErrorIs(t, errs[0], context.DeadlineExceeded)
	assert.ErrorIs(t, errs[1], outbox.ErrNotAttempted)
	p.Resume()

	opened := p.Accepted()
	require.NoError(t, s.Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 4)}))
	assert.Greater(t, p.Accepted(), opened, "a new connection")
}
