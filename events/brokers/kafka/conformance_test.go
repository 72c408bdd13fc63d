package kafka_test

import (
	"testing"

	"github.com/gocqrs/cqrs/events/brokers/brokertest"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
)

// Kafka keeps no delivery count, and the idempotent producer deduplicates
// only its own retries: neither feature is declared.
func TestConformance(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	sender := c.sender(t)
	brokertest.Run(t, brokertest.Transport{
		NewTopic: func(t *testing.T) brokertest.Topic {
			t.Helper()
			topic := c.topic(t, 16)
			dlq := topic + kafka.DefaultDeadLetterSuffix
			return brokertest.Topic{
				Name:        topic,
				Sender:      sender,
				Subscriber:  c.subscriber(t, kafka.SubscriberConfig{Topic: topic, Group: "g-" + topic}),
				DeadLetters: c.subscriber(t, kafka.SubscriberConfig{Topic: dlq, Group: "operators-" + topic, DeadLetterTopic: dlq + ".dlq"}),
			}
		},
	})
}
