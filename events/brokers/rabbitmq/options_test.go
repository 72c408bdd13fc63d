package rabbitmq_test

import (
	"errors"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
)

// joined returns the errors errors.Join put together.
func joined(t *testing.T, err error) []error {
	t.Helper()
	require.Error(t, err)
	j, ok := err.(interface{ Unwrap() []error })
	require.True(t, ok, "not joined: %v", err)
	for _, e := range j.Unwrap() {
		assert.ErrorIs(t, e, rabbitmq.ErrInvalidConfig)
	}
	return j.Unwrap()
}

func TestNewSenderValidates(t *testing.T) {
	t.Parallel()
	_, err := rabbitmq.NewSender(rabbitmq.SenderConfig{
		AMQP:            amqp.Config{Recovery: &amqp.Recovery{}},
		Channels:        -1,
		DeclareExchange: true,
	})
	errs := joined(t, err)
	assert.Len(t, errs, 4, "URL, Recovery, Channels, DeclareExchange: %v", err)

	_, err = rabbitmq.NewSender(rabbitmq.SenderConfig{URL: "http://secret@host/"})
	require.ErrorIs(t, err, rabbitmq.ErrInvalidConfig)
	assert.NotContains(t, err.Error(), "secret", "the URL is not repeated")

	s, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: defaultURL})
	require.NoError(t, err, "the defaults are valid")
	require.NotNil(t, s)
}

func TestNewSubscriberValidates(t *testing.T) {
	t.Parallel()
	_, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
		URL:      defaultURL,
		Prefetch: 70000,
		Topology: rabbitmq.Topology{
			QueueType:     "stream",
			DeliveryLimit: -2,
			Bindings:      []rabbitmq.Binding{{RoutingKey: "orders"}},
			RetryDelays:   []time.Duration{time.Second, time.Second, 1500 * time.Microsecond},
			QueueArgs:     amqp.Table{"x-queue-type": "classic"},
		},
		Reconnect: outbox.Backoff{Base: time.Second, Max: time.Millisecond},
	})
	errs := joined(t, err)
	// Queue, QueueType, DeliveryLimit twice (not quorum, below -1), the
	// binding, two delays, QueueArgs, Prefetch, Reconnect.
	assert.Len(t, errs, 10, "%v", err)

	_, err = rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: defaultURL, Topology: rabbitmq.Topology{Queue: "q", DeadLetterQueue: "q"}})
	require.ErrorIs(t, err, rabbitmq.ErrInvalidConfig)

	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: defaultURL, Topology: rabbitmq.Topology{Queue: "billing"}})
	require.NoError(t, err)
	topo := sub.Topology()
	assert.Equal(t, rabbitmq.QueueQuorum, topo.QueueType)
	assert.Equal(t, "billing.dlx", topo.DeadLetterExchange)
	assert.Equal(t, "billing.dlq", topo.DeadLetterQueue)
	assert.Equal(t, rabbitmq.DefaultRetryDelays(), topo.RetryDelays)
	assert.Equal(t, "billing.retry.30s", topo.RetryQueue(30*time.Second))
	assert.Equal(t, "billing.retry.5m", topo.RetryQueue(5*time.Minute))
	assert.Equal(t, "billing.retry.1h", topo.RetryQueue(time.Hour))
	assert.Equal(t, "billing.retry.250ms", topo.RetryQueue(250*time.Millisecond))
	assert.Equal(t, "billing.retry.1500ms", topo.RetryQueue(1500*time.Millisecond))
}

func TestNewPublisherValidates(t *testing.T) {
	t.Parallel()
	_, err := rabbitmq.NewPublisher(nil, nil)
	require.ErrorIs(t, err, rabbitmq.ErrInvalidConfig)
}

func TestReturnedError(t *testing.T) {
	t.Parallel()
	err := error(&rabbitmq.ReturnedError{RoutingKey: "orders", ReplyCode: 312, ReplyText: "NO_ROUTE"})
	assert.True(t, errors.Is(err, rabbitmq.ErrUnroutable))
	assert.Equal(t, `rabbitmq: message to exchange "(default)" with routing key "orders" returned: 312 NO_ROUTE`, err.Error())
}
