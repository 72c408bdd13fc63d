package rabbitmq_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/brokertest"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
)

// rabbitTransport provisions, per subtest, a fresh exchange, a queue of
// type qt bound to it, its dead-letter exchange and queue and its delay
// queues, all deleted when the subtest ends.
func rabbitTransport(t *testing.T, qt rabbitmq.QueueType) brokertest.Transport {
	t.Helper()
	u := brokerURL(t)
	return brokertest.Transport{
		// Quorum queues count every redelivery (x-delivery-count), a
		// release by Close included; classic queues do not.
		Features: brokertest.Features{CountsRedeliveries: qt == rabbitmq.QueueQuorum},
		NewTopic: func(t *testing.T) brokertest.Topic {
			t.Helper()
			topo, topic := testTopology("kit", qt)
			provision(t, u, topo)
			sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
				URL: u, Topology: topo, Declare: true, Prefetch: 32, Logger: quiet,
			})
			require.NoError(t, err)
			dead, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
				URL: u, Topology: rabbitmq.Topology{Queue: sub.Topology().DeadLetterQueue, QueueType: qt}, Logger: quiet,
			})
			require.NoError(t, err)
			return brokertest.Topic{
				Name:        topic,
				Sender:      newSender(t, u, topo.Exchange),
				Subscriber:  sub,
				DeadLetters: dead,
			}
		},
	}
}

func TestConformanceQuorum(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, rabbitTransport(t, rabbitmq.QueueQuorum))
}

func TestConformanceClassic(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, rabbitTransport(t, rabbitmq.QueueClassic))
}
