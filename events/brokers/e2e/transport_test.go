package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
)

// The brokers of the end-to-end tests.
const (
	brokerRabbitMQ = "rabbitmq"
	brokerNATS     = "nats"
	brokerKafka    = "kafka"
)

// endpoint says where the events of one run go and come from, on one
// broker: enough for a relay's Sender and a consumer's Subscriber, in the
// test process or in a helper process (it travels as JSON in endpointEnv).
type endpoint struct {
	// Broker is brokerRabbitMQ, brokerNATS or brokerKafka.
	Broker string
	// URL is the AMQP URL, the NATS URL, or the Kafka seed brokers
	// (comma-separated).
	URL string
	// Name is the RabbitMQ exchange, the NATS stream or the Kafka topic.
	Name string
	// Group is the RabbitMQ queue, the NATS durable consumer or the Kafka
	// consumer group.
	Group string
	// Topic is the events' topic: the RabbitMQ routing key, the NATS
	// subject or the Kafka topic.
	Topic string
	// AckWait is the NATS consumer's AckWait: what a killed consumer held
	// comes back after it.
	AckWait time.Duration
	// MaxAckPending is the NATS consumer's bound of unacknowledged
	// messages (0: the adapter's default).
	MaxAckPending int
	// PullBatch is the NATS Sources' pull batch (0: the adapter's
	// default).
	PullBatch int
	// SessionTimeout is the Kafka group session timeout: a killed
	// consumer's partitions are reassigned after it.
	SessionTimeout time.Duration
}

// endpointEnv carries the endpoint to the helper processes.
const endpointEnv = "E2E_ENDPOINT"

func (e endpoint) env() string {
	b, err := json.Marshal(e)
	if err != nil {
		panic(err)
	}
	return endpointEnv + "=" + string(b)
}

func endpointFromEnv(tb testing.TB) endpoint {
	tb.Helper()
	var e endpoint
	require.NoError(tb, json.Unmarshal([]byte(os.Getenv(endpointEnv)), &e), "%s", endpointEnv)
	return e
}

// rabbitTopology is the topology of a RabbitMQ endpoint.
func (e endpoint) rabbitTopology() rabbitmq.Topology {
	return rabbitmq.Topology{
		Queue:       e.Group,
		Exchange:    e.Name,
		Bindings:    []rabbitmq.Binding{{RoutingKey: e.Topic}},
		RetryDelays: []time.Duration{100 * time.Millisecond, time.Second},
	}
}

// natsTopology is the topology of a NATS endpoint: a file stream, so that
// it outlives a restart of the server.
func (e endpoint) natsTopology() nats.Topology {
	return nats.Topology{
		Stream:        e.Name,
		Consumer:      e.Group,
		Subjects:      []string{e.Topic},
		AckWait:       e.AckWait,
		MaxAckPending: e.MaxAckPending,
		Storage:       jetstream.FileStorage,
	}
}

// natsOptions are the options of a NATS client that never gives up
// reconnecting, reconnects quickly, and buffers nothing while
// disconnected.
func natsOptions() []natsgo.Option {
	return []natsgo.Option{
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(50 * time.Millisecond),
		natsgo.ReconnectJitter(0, 0),
		natsgo.ReconnectBufSize(-1),
		natsgo.Timeout(2 * time.Second),
	}
}

// kafkaOptions are the Kafka clients' options: quick heartbeats and
// retries, and the endpoint's session timeout.
func (e endpoint) kafkaOptions() []kgo.Opt {
	opts := []kgo.Opt{
		kgo.HeartbeatInterval(200 * time.Millisecond),
		kgo.RetryBackoffFn(func(int) time.Duration { return 50 * time.Millisecond }),
		kgo.MetadataMinAge(100 * time.Millisecond),
	}
	if e.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(e.SessionTimeout))
	}
	return opts
}

// sender returns the relay's Sender on the endpoint, and what closes it.
func (e endpoint) sender(ctx context.Context, logger *slog.Logger) (outbox.Sender, func(), error) {
	switch e.Broker {
	case brokerRabbitMQ:
		s, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: e.URL, Exchange: e.Name, Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return s, func() { _ = s.Close(context.WithoutCancel(ctx)) }, nil
	case brokerNATS:
		nc, err := natsgo.Connect(e.URL, natsOptions()...)
		if err != nil {
			return nil, nil, err
		}
		s, err := nats.NewSender(nc, nats.SenderConfig{AckTimeout: 2 * time.Second})
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return s, nc.Close, nil
	case brokerKafka:
		s, err := kafka.NewSender(kafka.SenderConfig{Brokers: strings.Split(e.URL, ","), ClientOptions: e.kafkaOptions(), Logger: logger})
		if err != nil {
			return nil, nil, err
		}
		return s, s.Close, nil
	default:
		return nil, nil, fmt.Errorf("unknown broker %q", e.Broker)
	}
}

// subscriber returns the consumer's Subscriber on the endpoint, and what
// closes it. The topology must exist (provisioned by the test).
func (e endpoint) subscriber(logger *slog.Logger) (brokers.Subscriber, func(), error) {
	switch e.Broker {
	case brokerRabbitMQ:
		s, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
			URL:       e.URL,
			Topology:  e.rabbitTopology(),
			Prefetch:  64,
			Reconnect: outbox.Backoff{Base: 20 * time.Millisecond, Max: 500 * time.Millisecond, Jitter: 0.5},
			Logger:    logger,
		})
		if err != nil {
			return nil, nil, err
		}
		return s, func() {}, nil
	case brokerNATS:
		nc, err := natsgo.Connect(e.URL, natsOptions()...)
		if err != nil {
			return nil, nil, err
		}
		s, err := nats.NewSubscriber(nc, nats.SubscriberConfig{
			Topology:  e.natsTopology(),
			PullBatch: e.PullBatch,
			Logger:    logger,
		})
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		return s, nc.Close, nil
	case brokerKafka:
		s, err := kafka.NewSubscriber(kafka.SubscriberConfig{
			Brokers:       strings.Split(e.URL, ","),
			ClientOptions: e.kafkaOptions(),
			Topic:         e.Topic,
			Group:         e.Group,
			Logger:        logger,
		})
		if err != nil {
			return nil, nil, err
		}
		return s, func() {}, nil
	default:
		return nil, nil, fmt.Errorf("unknown broker %q", e.Broker)
	}
}
