package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
)

// transport is the broker between the services: each service's relay
// sends with Sender, and each service consumes its input topic with a
// Subscriber. Close releases the connections.
type transport struct {
	name       string
	sender     outbox.Sender
	subscriber func(service, topic string) (brokers.Subscriber, error)
	close      func()
}

// transportOptions chooses the broker.
type transportOptions struct {
	NATS, RabbitMQ, Kafka string
	// Namespace starts every subject, topic, stream, queue and exchange
	// name, so that several shops (or tests) can share one broker.
	Namespace string
	// AckWait is the NATS consumers' AckWait and the bound of a killed
	// consumer's messages' return.
	AckWait time.Duration
	Logger  *slog.Logger
}

// natsStream is the name of the JetStream stream of a topic.
func natsStream(topic string) string {
	return strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(topic))
}

// topicOf is the topic a service's events are published to.
func topicOf(namespace, service string) string { return namespace + "." + service }

func openTransport(ctx context.Context, o transportOptions) (*transport, error) {
	switch {
	case o.RabbitMQ != "":
		return openRabbitMQ(ctx, o)
	case o.Kafka != "":
		return openKafka(ctx, o)
	default:
		return openNATS(ctx, o)
	}
}

func openNATS(ctx context.Context, o transportOptions) (*transport, error) {
	nc, err := natsgo.Connect(o.NATS,
		natsgo.Name("shop"),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(100*time.Millisecond),
		natsgo.ReconnectBufSize(-1),
		natsgo.Timeout(5*time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("nats %s: %w", o.NATS, err)
	}
	sender, err := nats.NewSender(nc, nats.SenderConfig{MaxPending: 1024})
	if err != nil {
		nc.Close()
		return nil, err
	}
	// One stream per topic, each read by one durable consumer (servers
	// before 2.10 have no consumer with several filter subjects).
	topology := func(service, topic string) nats.Topology {
		return nats.Topology{
			Stream:        natsStream(topic),
			Consumer:      service,
			Subjects:      []string{topic},
			AckWait:       o.AckWait,
			MaxAckPending: 1024,
		}
	}
	// Provision both streams now, so that no relay publishes to a subject
	// no stream captures yet.
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	for _, s := range [][2]string{{"inventory", topicOf(o.Namespace, "orders")}, {"orders", topicOf(o.Namespace, "inventory")}} {
		if err := topology(s[0], s[1]).Provision(ctx, js); err != nil {
			nc.Close()
			return nil, err
		}
	}
	t := &transport{
		name:   "NATS JetStream at " + o.NATS,
		sender: sender,
		close:  nc.Close,
		subscriber: func(service, topic string) (brokers.Subscriber, error) {
			return nats.NewSubscriber(nc, nats.SubscriberConfig{
				Topology:  topology(service, topic),
				Provision: true,
				PullBatch: 256,
				Logger:    o.Logger,
			})
		},
	}
	return t, nil
}

func openRabbitMQ(ctx context.Context, o transportOptions) (*transport, error) {
	subscriber := func(service, topic string) (*rabbitmq.Subscriber, error) {
		return rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
			URL: o.RabbitMQ,
			Topology: rabbitmq.Topology{
				Queue:       o.Namespace + ".svc." + service,
				Exchange:    o.Namespace,
				Bindings:    []rabbitmq.Binding{{RoutingKey: topic}},
				RetryDelays: []time.Duration{100 * time.Millisecond, time.Second},
			},
			Declare:  true,
			Prefetch: 256,
			Logger:   o.Logger,
		})
	}
	// Declare both services' queues now: a relay's message that no queue
	// is bound for yet would be returned, unroutable, and its row dead.
	for _, s := range [][2]string{{"inventory", topicOf(o.Namespace, "orders")}, {"orders", topicOf(o.Namespace, "inventory")}} {
		sub, err := subscriber(s[0], s[1])
		if err != nil {
			return nil, err
		}
		if err := sub.Declare(ctx); err != nil {
			return nil, err
		}
	}
	sender, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: o.RabbitMQ, Exchange: o.Namespace, DeclareExchange: true, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	return &transport{
		name:   "RabbitMQ at " + redact(o.RabbitMQ),
		sender: sender,
		close: func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = sender.Close(ctx)
		},
		subscriber: func(service, topic string) (brokers.Subscriber, error) {
			return subscriber(service, topic)
		},
	}, nil
}

func openKafka(ctx context.Context, o transportOptions) (*transport, error) {
	addrs := strings.Split(o.Kafka, ",")
	sender, err := kafka.NewSender(kafka.SenderConfig{Brokers: addrs, Logger: o.Logger})
	if err != nil {
		return nil, err
	}
	// Create both topics now, so that no relay sends to a topic that does
	// not exist yet.
	var topics []kafka.TopicSpec
	for _, s := range []string{"orders", "inventory"} {
		t := topicOf(o.Namespace, s)
		topics = append(topics, kafka.TopicSpec{Name: t, Partitions: 8}, kafka.TopicSpec{Name: t + ".dlq", Partitions: 8})
	}
	if err := kafka.EnsureTopics(ctx, sender.Client(), topics...); err != nil {
		sender.Close()
		return nil, err
	}
	return &transport{
		name:   "Kafka at " + o.Kafka,
		sender: sender,
		close:  sender.Close,
		subscriber: func(service, topic string) (brokers.Subscriber, error) {
			return kafka.NewSubscriber(kafka.SubscriberConfig{
				Brokers:      addrs,
				Topic:        topic,
				Group:        o.Namespace + "." + service,
				CreateTopics: true,
				Logger:       o.Logger,
			})
		},
	}, nil
}

// redact hides the password of a URL for printing.
func redact(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	userinfo, host, ok := strings.Cut(rest, "@")
	if !ok {
		return u
	}
	user, _, _ := strings.Cut(userinfo, ":")
	return scheme + "://" + user + ":***@" + host
}

// embeddedNATS is a NATS server with JetStream run inside the process, for
// the zero-setup default: it stores in dir and listens on addr
// ("127.0.0.1:0" picks a free port).
type embeddedNATS struct {
	srv *server.Server
	url string
}

func startEmbeddedNATS(addr, dir string) (*embeddedNATS, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS address %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS address %q: %w", addr, err)
	}
	if p == 0 {
		p = server.RANDOM_PORT
	}
	srv, err := server.NewServer(&server.Options{
		Host:      host,
		Port:      p,
		JetStream: true,
		StoreDir:  dir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("the embedded NATS server did not start")
	}
	tcp, ok := srv.Addr().(*net.TCPAddr)
	if !ok {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("the embedded NATS server does not listen on TCP")
	}
	return &embeddedNATS{srv: srv, url: fmt.Sprintf("nats://%s", net.JoinHostPort(host, strconv.Itoa(tcp.Port)))}, nil
}

func (e *embeddedNATS) stop() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
