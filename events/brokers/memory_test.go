package brokers_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func subscribe(t *testing.T, s brokers.Subscriber) brokers.Source {
	t.Helper()
	src, err := s.Subscribe(t.Context())
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

func payloadID(t *testing.T, m brokers.Message) string {
	t.Helper()
	n, err := wire.DecodeAs[orderPlaced](newDecoder(t), wire.Envelope{Payload: m.Body, ContentType: wire.ContentTypeJSON})
	require.NoError(t, err)
	return n.Payload.ID
}

func TestMemorySendBatchErrors(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	noTopic := envelope(t, "k1", "o-1")
	noTopic.Topic = ""
	reserved := envelope(t, "k3", "o-4")
	reserved.Headers = map[string]string{wire.HeaderEventName: "x"}
	envs := []wire.Envelope{noTopic, envelope(t, "k1", "o-2"), envelope(t, "k2", "o-3"), reserved}
	err := b.Send(t.Context(), envs)
	var be *outbox.BatchError
	require.ErrorAs(t, err, &be)
	require.Len(t, be.Errs, 4)
	assert.ErrorIs(t, be.Errs[0], outbox.ErrPermanent, "no topic")
	assert.ErrorIs(t, be.Errs[1], outbox.ErrNotAttempted, "behind a failed record of its key")
	assert.NoError(t, be.Errs[2], "another key goes on")
	assert.ErrorIs(t, be.Errs[3], outbox.ErrPermanent, "headers that cannot be made")
	assert.ErrorIs(t, be.Errs[3], wire.ErrReservedHeader)
	require.Len(t, b.Messages("orders"), 1)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err = b.Send(ctx, []wire.Envelope{envelope(t, "k", "o-5")})
	require.ErrorAs(t, err, &be)
	assert.ErrorIs(t, be.Errs[0], context.Canceled)
	assert.Len(t, b.Messages("orders"), 1)
}

func TestMemoryPublishAndMessages(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	require.Error(t, b.Publish(t.Context(), brokers.MemoryMessage{Body: []byte("x")}), "no topic")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, b.Publish(ctx, brokers.MemoryMessage{Topic: "t"}), context.Canceled)

	m := brokers.MemoryMessage{Topic: "t", Key: "k", Headers: map[string]string{"h": "1"}, Body: []byte("body")}
	require.NoError(t, b.Publish(t.Context(), m))
	m.Headers["h"], m.Body[0] = "2", 'B'
	got := b.Messages("t")
	require.Len(t, got, 1)
	assert.Equal(t, "1", got[0].Headers["h"], "the broker keeps its own copy")
	assert.Equal(t, "body", string(got[0].Body))
	got[0].Body[0] = 'X'
	assert.Equal(t, "body", string(b.Messages("t")[0].Body), "Messages returns copies")
	assert.Nil(t, b.Messages("unknown"))
}

func TestMemorySubscribeValidation(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	for name, s := range map[string]brokers.MemorySubscription{
		"no topic":         {},
		"dead-letter loop": {Topic: "t", DeadLetterTopic: "t"},
		"negative bound":   {Topic: "t", MaxUnacked: -1},
	} {
		_, err := b.Subscriber(s).Subscribe(t.Context())
		assert.Error(t, err, name)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := b.Subscriber(brokers.MemorySubscription{Topic: "t"}).Subscribe(ctx)
	require.ErrorIs(t, err, context.Canceled)

	sub := b.Subscriber(brokers.MemorySubscription{Topic: "t"})
	assert.Equal(t, brokers.MemorySubscription{Topic: "t", Group: brokers.DefaultMemoryGroup, DeadLetterTopic: "t.dlq"}, sub.Subscription())
}

func TestMemoryGroupsAndCompetingSources(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	billing := b.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "billing"})
	shipping := b.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "shipping"})
	require.NoError(t, b.Send(t.Context(), []wire.Envelope{envelope(t, "a", "o-1"), envelope(t, "b", "o-2")}))

	// Two Sources of one group share its messages.
	b1, b2 := subscribe(t, billing), subscribe(t, billing)
	m1, m2 := receive(t, b1), receive(t, b2)
	assert.Equal(t, []string{"o-1", "o-2"}, []string{payloadID(t, m1), payloadID(t, m2)})
	require.NoError(t, m1.Settler.Ack(t.Context()))
	require.NoError(t, m2.Settler.Ack(t.Context()))

	// Another group receives every message, from the start.
	s := subscribe(t, shipping)
	assert.Equal(t, "o-1", payloadID(t, receive(t, s)))
	assert.Equal(t, "o-2", payloadID(t, receive(t, s)))
}

func TestMemoryRedeliveryOrderAndDelay(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	sub := b.Subscriber(brokers.MemorySubscription{Topic: "orders"})
	require.NoError(t, b.Send(t.Context(), []wire.Envelope{envelope(t, "k", "o-1"), envelope(t, "k", "o-2"), envelope(t, "k", "o-3")}))
	src := subscribe(t, sub)

	first := receive(t, src)
	require.NoError(t, first.Settler.Retry(t.Context(), time.Hour))
	// Not due for an hour: the next message comes first.
	second := receive(t, src)
	assert.Equal(t, "o-2", payloadID(t, second))
	// A message due at once goes before the ones never delivered.
	require.NoError(t, second.Settler.Retry(t.Context(), 0))
	again := receive(t, src)
	assert.Equal(t, "o-2", payloadID(t, again))
	assert.Equal(t, 2, again.Attempt)
	assert.Equal(t, "k", again.OrderKey)
	require.NoError(t, again.Settler.Ack(t.Context()))
	assert.Equal(t, "o-3", payloadID(t, receive(t, src)))
}

func TestMemoryMaxUnacked(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	sub := b.Subscriber(brokers.MemorySubscription{Topic: "orders", MaxUnacked: 1})
	require.NoError(t, b.Send(t.Context(), []wire.Envelope{envelope(t, "a", "o-1"), envelope(t, "b", "o-2")}))
	src := subscribe(t, sub)
	m := receive(t, src)

	// The Source holds its maximum: Receive waits (here until its context
	// ends).
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := src.Receive(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// Settling one makes room, and wakes a waiting Receive.
	got := make(chan brokers.Message, 1)
	go func() {
		m, err := src.Receive(t.Context())
		if err == nil {
			got <- m
		}
		close(got)
	}()
	require.NoError(t, m.Settler.Ack(t.Context()))
	next, ok := <-got
	require.True(t, ok)
	assert.Equal(t, "o-2", payloadID(t, next))
}

func TestMemorySettleRules(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	sub := b.Subscriber(brokers.MemorySubscription{Topic: "orders"})
	require.NoError(t, b.Send(t.Context(), []wire.Envelope{envelope(t, "a", "o-1"), envelope(t, "b", "o-2")}))
	src := subscribe(t, sub)
	m := receive(t, src)

	done, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, m.Settler.Ack(done), context.Canceled, "a settle whose context is done does nothing")
	require.NoError(t, m.Settler.DeadLetter(t.Context(), brokers.DeadLetter{Reason: brokers.ReasonRejected, Attempts: 1, Topic: "orders"}))
	require.ErrorIs(t, m.Settler.Retry(t.Context(), 0), brokers.ErrSettled)
	dead := b.Messages("orders.dlq")
	require.Len(t, dead, 1)
	assert.Equal(t, "rejected", dead[0].Headers[brokers.HeaderDeadLetterReason])
	assert.Equal(t, "a", dead[0].Key)

	held := receive(t, src)
	require.NoError(t, src.Close(t.Context()))
	require.NoError(t, src.Close(t.Context()), "Close twice is harmless")
	require.ErrorIs(t, held.Settler.Ack(t.Context()), brokers.ErrClosed)
	_, err := src.Receive(t.Context())
	require.ErrorIs(t, err, brokers.ErrClosed)

	// The message held by the closed Source is delivered again.
	again := receive(t, subscribe(t, sub))
	assert.Equal(t, "o-2", payloadID(t, again))
	assert.Equal(t, 2, again.Attempt)
}

func TestMemoryReceiveHonoursContext(t *testing.T) {
	t.Parallel()
	b := brokers.NewMemoryBroker()
	src := subscribe(t, b.Subscriber(brokers.MemorySubscription{Topic: "orders"}))
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := src.Receive(ctx)
		errc <- err
	}()
	cancel()
	require.ErrorIs(t, <-errc, context.Canceled)

	// A Receive waiting for a delayed message wakes when it is due.
	require.NoError(t, b.Send(t.Context(), []wire.Envelope{envelope(t, "k", "o-1")}))
	m := receive(t, src)
	require.NoError(t, m.Settler.Retry(t.Context(), time.Millisecond))
	again := receive(t, src)
	assert.Equal(t, 2, again.Attempt)
	assert.False(t, errors.Is(again.Settler.Ack(t.Context()), brokers.ErrSettled))
}
