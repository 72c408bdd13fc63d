package rabbitmq_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func subscribe(t *testing.T, sub brokers.Subscriber) brokers.Source {
	t.Helper()
	src, err := sub.Subscribe(t.Context())
	require.NoError(t, err)
	t.Cleanup(func() { _ = src.Close(context.Background()) })
	return src
}

func receive(t *testing.T, src brokers.Source) brokers.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	m, err := src.Receive(ctx)
	require.NoError(t, err)
	return m
}

// A delay longer than the longest tier goes round the delay queue as many
// times as needed; the message comes back with its topic, its headers and
// one more attempt.
func TestRetryLongerThanLongestTier(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("long", rabbitmq.QueueQuorum)
	topo.RetryDelays = []time.Duration{20 * time.Millisecond}
	sub := provision(t, u, topo)
	sent := encode(t, topic, "k-1", 1)
	sent.SetHeader("x-tenant", "acme")
	require.NoError(t, newSender(t, u, topo.Exchange).Send(t.Context(), []wire.Envelope{sent}))

	src := subscribe(t, sub)
	first := receive(t, src)
	const delay = 150 * time.Millisecond
	start := time.Now()
	require.NoError(t, first.Settler.Retry(t.Context(), delay))
	second := receive(t, src)
	assert.GreaterOrEqual(t, time.Since(start), delay, "delivered no earlier than the delay")
	assert.Equal(t, first.Attempt+1, second.Attempt)
	assert.Equal(t, topic, second.Topic)
	assert.Equal(t, "k-1", second.Key)
	assert.Equal(t, first.Headers, second.Headers, "no bookkeeping header shows")
	assert.Equal(t, sent.Payload, second.Body)
	require.NoError(t, second.Settler.Ack(t.Context()))
}

// A lost connection: settles of what it delivered fail, Receive reports it
// once, then reconnects; RabbitMQ delivers the unacknowledged messages
// again.
func TestSourceReconnects(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("reconnect", rabbitmq.QueueQuorum)
	provision(t, u, topo)
	p := newProxy(t, u)
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
		URL: proxied(t, p, u), Topology: topo, Logger: quiet,
		Prefetch:  1, // nothing but the first message is buffered when the connection is cut
		Reconnect: outbox.Backoff{Base: time.Millisecond, Max: 10 * time.Millisecond},
	})
	require.NoError(t, err)
	sent := []wire.Envelope{encode(t, topic, "k-1", 1), encode(t, topic, "k-2", 2)}
	require.NoError(t, newSender(t, u, topo.Exchange).Send(t.Context(), sent))

	src := subscribe(t, sub)
	first := receive(t, src)
	opened := p.Accepted()
	p.Cut()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = src.Receive(ctx)
	require.ErrorIs(t, err, rabbitmq.ErrConnectionLost, "Receive reports the lost connection")
	require.ErrorIs(t, first.Settler.Ack(ctx), rabbitmq.ErrConnectionLost, "Ack on a lost connection")
	require.ErrorIs(t, first.Settler.DeadLetter(ctx, brokers.DeadLetter{Reason: brokers.ReasonRejected}), rabbitmq.ErrConnectionLost)
	require.ErrorIs(t, first.Settler.Retry(ctx, time.Second), rabbitmq.ErrConnectionLost)

	seen := make(map[string]int)
	for len(seen) < 2 {
		m := receive(t, src)
		env, err := wire.FromHeaders(m.Headers)
		require.NoError(t, err)
		seen[env.ID.String()] = m.Attempt
		require.NoError(t, m.Settler.Ack(ctx))
	}
	assert.Greater(t, p.Accepted(), opened, "reconnected")
	assert.Equal(t, 2, seen[sent[0].ID.String()], "the message delivered before the cut, counted by the quorum queue")
}

// A queue deleted under a Source ends its subscription for good: Receive
// reports the lost consumer, then a permanent error.
func TestSourceQueueDeleted(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, _ := testTopology("deleted", rabbitmq.QueueClassic)
	sub := provision(t, u, topo)
	src := subscribe(t, sub)
	ch, err := adminConn(t, u).Channel()
	require.NoError(t, err)
	_, err = ch.QueueDelete(topo.Queue, false, false, false)
	require.NoError(t, err)

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	_, err = src.Receive(ctx)
	require.ErrorIs(t, err, rabbitmq.ErrConnectionLost)
	_, err = src.Receive(ctx)
	require.ErrorIs(t, err, outbox.ErrPermanent)
	assert.ErrorContains(t, err, "NOT_FOUND")
}

// Subscribe fails when the queue does not exist, or the broker cannot be
// reached.
func TestSubscribeFails(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: u, Topology: rabbitmq.Topology{Queue: unique("absent")}, Logger: quiet})
	require.NoError(t, err)
	_, err = sub.Subscribe(t.Context())
	require.ErrorContains(t, err, "NOT_FOUND")

	p := newProxy(t, u)
	down := proxied(t, p, u)
	p.Close() // nothing listens there any more
	sub, err = rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: down, Topology: rabbitmq.Topology{Queue: "q"}, Logger: quiet})
	require.NoError(t, err)
	_, err = sub.Subscribe(t.Context())
	require.Error(t, err)
	require.Error(t, sub.Declare(t.Context()))
}

// A dead letter no queue takes is an error, and the message stays
// unsettled: it can be dead-lettered again, or retried.
func TestDeadLetterUnroutable(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("dlunbound", rabbitmq.QueueQuorum)
	sub := provision(t, u, topo)
	ch, err := adminConn(t, u).Channel()
	require.NoError(t, err)
	require.NoError(t, ch.QueueUnbind(topo.Queue+rabbitmq.DeadLetterQueueSuffix, "#", topo.Queue+rabbitmq.DeadLetterExchangeSuffix, nil))
	require.NoError(t, newSender(t, u, topo.Exchange).Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 1)}))

	src := subscribe(t, sub)
	m := receive(t, src)
	d := brokers.DeadLetter{Reason: brokers.ReasonRejected, Attempts: 1, Topic: m.Topic}
	err = m.Settler.DeadLetter(t.Context(), d)
	require.ErrorIs(t, err, rabbitmq.ErrUnroutable)
	require.ErrorIs(t, m.Settler.DeadLetter(t.Context(), d), rabbitmq.ErrUnroutable, "still unsettled")
	require.NoError(t, m.Settler.Retry(t.Context(), 10*time.Millisecond))
	again := receive(t, src)
	assert.Equal(t, m.Attempt+1, again.Attempt)
	require.NoError(t, again.Settler.Ack(t.Context()))
}

// When the delayed copy cannot be published, the message is requeued at
// once rather than held.
func TestRetryWithoutDelayQueue(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("nodelay", rabbitmq.QueueQuorum)
	sub := provision(t, u, topo)
	ch, err := adminConn(t, u).Channel()
	require.NoError(t, err)
	for _, d := range topo.RetryDelays {
		_, err := ch.QueueDelete(topo.RetryQueue(d), false, false, false)
		require.NoError(t, err)
	}
	require.NoError(t, newSender(t, u, topo.Exchange).Send(t.Context(), []wire.Envelope{encode(t, topic, "k", 1)}))

	src := subscribe(t, sub)
	m := receive(t, src)
	err = m.Settler.Retry(t.Context(), time.Minute)
	require.ErrorIs(t, err, rabbitmq.ErrUnroutable)
	require.ErrorIs(t, m.Settler.Ack(t.Context()), brokers.ErrSettled, "requeued")
	again := receive(t, src)
	assert.Equal(t, m.Attempt+1, again.Attempt)
	require.NoError(t, again.Settler.Ack(t.Context()))
}
