package e2e_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/cqrs/events/brokers/kafka"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// rabbitEndpoint provisions a fresh exchange and queue on the RabbitMQ
// server of RABBITMQ_URL (or skips tb), deleted when tb ends. Clients
// reach the server at url, or at RABBITMQ_URL if url is empty (a proxy's
// URL in front of it).
func rabbitEndpoint(tb testing.TB, url string) endpoint {
	tb.Helper()
	u := testBroker(tb)
	name := unique("cqrs-test.e2e.")
	e := endpoint{Broker: brokerRabbitMQ, URL: u, Name: name + ".x", Group: name + ".q", Topic: "e2e.items"}
	provision(tb, u, e.rabbitTopology())
	if url != "" {
		e.URL = url
	}
	return e
}

// natsServerURL returns the URL of the NATS server of NATS_URL once it
// answers with JetStream, or skips tb.
func natsServerURL(tb testing.TB) string {
	tb.Helper()
	u := natsURL()
	nc, err := natsgo.Connect(u, natsgo.Timeout(5*time.Second))
	if err == nil {
		defer nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var js jetstream.JetStream
		if js, err = jetstream.New(nc); err == nil {
			_, err = js.AccountInfo(ctx)
		}
	}
	if err != nil {
		testenv.Unavailable(tb, "NATS with JetStream", natsEnv, defaultNATSURL, err)
	}
	return u
}

// natsEndpoint provisions a fresh stream (on file storage), its durable
// consumer and its dead-letter stream on the NATS server at url, deleted
// when tb ends if the server is still up. ackWait and maxAckPending are
// the consumer's (0: the adapter's default).
func natsEndpoint(tb testing.TB, url string, ackWait time.Duration, maxAckPending int) endpoint {
	tb.Helper()
	name := strings.ToUpper(unique("E2E_"))
	e := endpoint{
		Broker: brokerNATS, URL: url, Name: name, Group: "e2e", Topic: strings.ToLower(name) + ".items",
		AckWait: ackWait, MaxAckPending: maxAckPending,
	}
	nc, err := natsgo.Connect(url, natsgo.Timeout(5*time.Second))
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(tb, err)
	tb.Cleanup(func() {
		if !nc.IsConnected() {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []string{name, name + nats.DeadLetterStreamSuffix} {
			_ = js.DeleteStream(ctx, s)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(tb, e.natsTopology().Provision(ctx, js))
	return e
}

// kafkaPartitions is the partition count of the Kafka topics.
const kafkaPartitions = 8

// kafkaEndpoint starts an in-process kfake cluster (closed when tb ends)
// holding a fresh topic and its dead-letter topic, and returns the
// endpoint of the topic. The cluster listens on a loopback TCP port, which
// helper processes reach too. With KAFKA_BROKERS set, tb is skipped: these
// tests fault the cluster they run.
func kafkaEndpoint(tb testing.TB, sessionTimeout time.Duration, opts ...kfake.Opt) endpoint {
	tb.Helper()
	if os.Getenv(kafkaEnv) != "" {
		tb.Skipf("runs its own in-process kfake cluster; %s is set", kafkaEnv)
	}
	topic := unique("e2e.items.")
	c, err := kfake.NewCluster(append([]kfake.Opt{
		kfake.NumBrokers(1),
		kfake.SeedTopics(kafkaPartitions, topic, topic+kafka.DefaultDeadLetterSuffix),
		kfake.GroupMinSessionTimeout(time.Second),
	}, opts...)...)
	require.NoError(tb, err)
	tb.Cleanup(c.Close)
	return endpoint{
		Broker: brokerKafka, URL: strings.Join(c.ListenAddrs(), ","),
		Name: topic, Group: "e2e", Topic: topic, SessionTimeout: sessionTimeout,
	}
}
