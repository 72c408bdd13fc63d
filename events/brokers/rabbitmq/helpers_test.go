package rabbitmq_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// urlEnv names the environment variable with the URL of the test broker.
const urlEnv = "RABBITMQ_URL"

const defaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// quiet discards the logs of the code under test.
var quiet = slog.New(slog.DiscardHandler)

// brokerURL returns the URL of the test broker once it answers, or skips
// tb (fails it when CI is set: CI must run these tests).
func brokerURL(tb testing.TB) string {
	tb.Helper()
	u := testenv.URL(urlEnv, defaultURL)
	conn, err := amqp.DialConfig(u, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		testenv.Unavailable(tb, "RabbitMQ", urlEnv, defaultURL, err)
	}
	_ = conn.Close()
	return u
}

// unique returns a name no other test uses.
func unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "cqrs-test." + prefix + "." + hex.EncodeToString(b[:])
}

// adminConn opens a connection for the test's own use (topology cleanup,
// raw publishing and consuming), closed when tb ends.
func adminConn(tb testing.TB, u string) *amqp.Connection {
	tb.Helper()
	conn, err := amqp.Dial(u)
	require.NoError(tb, err)
	tb.Cleanup(func() { _ = conn.Close() })
	return conn
}

// testTopology returns a topology with unique names: a queue bound to a
// fresh exchange with routing key topic, and short delay tiers.
func testTopology(prefix string, qt rabbitmq.QueueType) (rabbitmq.Topology, string) {
	name := unique(prefix)
	topic := name + ".events"
	return rabbitmq.Topology{
		Queue:       name + ".q",
		QueueType:   qt,
		Exchange:    name + ".x",
		Bindings:    []rabbitmq.Binding{{RoutingKey: topic}},
		RetryDelays: []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second},
	}, topic
}

// provision declares topo on the broker at u and deletes it when tb ends.
func provision(tb testing.TB, u string, topo rabbitmq.Topology) *rabbitmq.Subscriber {
	tb.Helper()
	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{URL: u, Topology: topo, Logger: quiet})
	require.NoError(tb, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tb.Cleanup(func() { teardown(tb, u, sub.Topology()) })
	require.NoError(tb, sub.Declare(ctx))
	return sub
}

// teardown deletes what topo declares.
func teardown(tb testing.TB, u string, topo rabbitmq.Topology) {
	tb.Helper()
	conn, err := amqp.Dial(u)
	if err != nil {
		tb.Errorf("teardown: %v", err)
		return
	}
	defer func() { _ = conn.Close() }()
	ch, err := conn.Channel()
	if err != nil {
		tb.Errorf("teardown: %v", err)
		return
	}
	queues := []string{topo.Queue, topo.DeadLetterQueue}
	for _, d := range topo.RetryDelays {
		queues = append(queues, topo.RetryQueue(d))
	}
	for _, q := range queues {
		if _, err := ch.QueueDelete(q, false, false, false); err != nil {
			tb.Errorf("teardown: deleting queue %s: %v", q, err)
			return
		}
	}
	for _, x := range []string{topo.Exchange, topo.DeadLetterExchange} {
		if x == "" {
			continue
		}
		if err := ch.ExchangeDelete(x, false, false); err != nil {
			tb.Errorf("teardown: deleting exchange %s: %v", x, err)
			return
		}
	}
}

// newSender returns a Sender to exchange, closed when tb ends.
func newSender(tb testing.TB, u, exchange string) *rabbitmq.Sender {
	tb.Helper()
	s, err := rabbitmq.NewSender(rabbitmq.SenderConfig{URL: u, Exchange: exchange, Logger: quiet})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, s.Close(context.Background())) })
	return s
}

// newProxy starts a proxy to the broker of u; it stops when tb ends.
func newProxy(tb testing.TB, u string) *testenv.Proxy {
	tb.Helper()
	parsed, err := url.Parse(u)
	require.NoError(tb, err)
	return testenv.NewProxy(tb, parsed.Host)
}

// proxied returns u with p's address.
func proxied(tb testing.TB, p *testenv.Proxy, u string) string {
	tb.Helper()
	parsed, err := url.Parse(u)
	require.NoError(tb, err)
	parsed.Host = p.Addr()
	return parsed.String()
}

// waitOpened waits until p has accepted more than n connections in all.
func waitOpened(tb testing.TB, p *testenv.Proxy, n int, timeout time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := p.WaitAccepted(ctx, n+1); err != nil {
		tb.Fatalf("proxy: no new connection within %v", timeout)
	}
}
