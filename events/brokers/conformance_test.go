package brokers_test

import (
	"testing"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/brokertest"
)

// memoryTransport provisions a fresh MemoryBroker per subtest.
func memoryTransport(maxUnacked int) brokertest.Transport {
	return brokertest.Transport{
		Features: brokertest.Features{CountsRedeliveries: true},
		NewTopic: func(t *testing.T) brokertest.Topic {
			t.Helper()
			b := brokers.NewMemoryBroker()
			sub := b.Subscriber(brokers.MemorySubscription{Topic: "orders", Group: "billing", MaxUnacked: maxUnacked})
			return brokertest.Topic{
				Name:        "orders",
				Sender:      b,
				Subscriber:  sub,
				DeadLetters: b.Subscriber(brokers.MemorySubscription{Topic: sub.Subscription().DeadLetterTopic, Group: "operators"}),
			}
		},
	}
}

func TestMemoryConformance(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, memoryTransport(0))
}

// With a prefetch bound, as JetStream's MaxAckPending or RabbitMQ's QoS.
func TestMemoryConformanceBounded(t *testing.T) {
	t.Parallel()
	brokertest.Run(t, memoryTransport(16))
}
