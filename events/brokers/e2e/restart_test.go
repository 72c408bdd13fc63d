package e2e_test

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/gocqrs/cqrs/events/brokers/nats/natstest"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// restartRun is one broker fault test: events preloaded into the outbox,
// relayed by one relay and handled by one consumer, both in process,
// while fault breaks the broker or the connections to it.
func restartRun(t *testing.T, ep endpoint, fault func(t *testing.T, p *pipeline, f *fixture)) {
	t.Helper()
	f := newFixture(t, testPool(t))
	f.preload(t, ep.Topic, total)
	start := time.Now()
	p := startPipeline(t, f, ep, 1, faultRelay, &consumerTuning{MaxConcurrency: 8}, quiet)
	fault(t, p, f)
	waitUntil(t, "every event sent and applied", func() bool { return p.sent() == total && f.applied(t) == total })
	elapsed := time.Since(start)
	p.stop(t)

	f.checkExactlyOnce(t, total)
	rc, cc := p.relayCounters(), p.consumer.Counters()
	t.Logf("%s: %d events in %v; relay %+v; consumer %+v", ep.Broker, total, elapsed.Round(time.Millisecond), rc, cc)
	assert.Equal(t, uint64(total), rc.Sent, "rows marked sent once each")
	assert.Zero(t, rc.Dead, "dead rows")
	assert.Zero(t, rc.LeaseLost, "leases lost")
	assert.Zero(t, cc.DeadLettered, "dead letters")
	assert.Equal(t, uint64(total), cc.Handled, "handled: once per event, the rest absorbed by the inbox")
	assert.GreaterOrEqual(t, cc.Received, cc.Handled+cc.Duplicates, "received")
	// The Kafka Source reports a lost connection only when it has no
	// record left to hand out: until then it goes on with the records the
	// client had fetched, which it can still acknowledge.
	if ep.Broker != brokerKafka {
		assert.Positive(t, cc.ReceiveErrors, "the consumer's Source reported the outage")
	}
}

// midStream waits until the relay has sent n rows, and logs the fault
// about to come with the progress so far.
func midStream(t *testing.T, p *pipeline, f *fixture, n int, what string) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("%d rows sent", n), func() bool { return p.sent() >= n })
	t.Logf("%s with %d rows sent, %d effects applied", what, p.sent(), f.applied(t))
}

// TestBrokerRestart breaks the broker mid-stream while a relay sends
// 10,000 events from a PostgreSQL outbox and a consumer handles them into
// a PostgreSQL inbox, both in the test process:
//
//   - nats: an embedded nats-server (JetStream, file storage in a
//     temporary directory) is shut down, and started again on the same
//     port with the same store directory once both the relay and the
//     consumer have seen it gone;
//   - rabbitmq: every connection to the server of RABBITMQ_URL, which the
//     clients reach through a TCP proxy, is cut; then the proxy refuses
//     connections until the clients have tried a few times; then every
//     connection is cut again;
//   - kafka: the same, through a proxy in front of a kfake cluster.
//
// Every event must be sent once and its effect applied exactly once (the
// inbox absorbs the redeliveries the faults cause), nothing may be
// dead-lettered, and no goroutine may be left behind (TestMain).
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	t.Run(brokerNATS, func(t *testing.T) {
		t.Parallel()
		testPool(t) // skips early without PostgreSQL
		srv := natstest.Run(t)
		ep := natsEndpoint(t, srv.URL(), 2*time.Second, 0)
		restartRun(t, ep, func(t *testing.T, p *pipeline, f *fixture) {
			t.Helper()
			midStream(t, p, f, total/3, "stopping the server")
			failed, receiveErrors := p.relayCounters().Failed, p.consumer.Counters().ReceiveErrors
			srv.Stop()
			waitUntil(t, "the relay and the consumer saw the server gone", func() bool {
				return (p.relayCounters().Failed > failed || p.sent() == total) && p.consumer.Counters().ReceiveErrors > receiveErrors
			})
			srv.Start()
			t.Logf("server started again with %d rows sent, %d effects applied", p.sent(), f.applied(t))
		})
	})
	t.Run(brokerRabbitMQ, func(t *testing.T) {
		t.Parallel()
		testPool(t)
		u := testBroker(t)
		pu, err := url.Parse(u)
		require.NoError(t, err)
		px := testenv.NewProxy(t, pu.Host)
		pu.Host = px.Addr()
		cutRun(t, px, rabbitEndpoint(t, pu.String()))
	})
	t.Run(brokerKafka, func(t *testing.T) {
		t.Parallel()
		testPool(t)
		px := testenv.NewProxy(t, "")
		ep := kafkaEndpoint(t, 0, kfake.ListenFn(px.Listen))
		require.Equal(t, px.Addr(), ep.URL, "kfake advertises the proxy")
		cutRun(t, px, ep)
	})
}

// cutRun is restartRun with connection faults through px: every
// connection cut a quarter of the way, the broker unreachable half way
// until the clients have been refused three times, every connection cut
// again three quarters of the way.
func cutRun(t *testing.T, px *testenv.Proxy, ep endpoint) {
	t.Helper()
	restartRun(t, ep, func(t *testing.T, p *pipeline, f *fixture) {
		t.Helper()
		midStream(t, p, f, total/4, "cutting every connection")
		px.Cut()
		midStream(t, p, f, total/2, "refusing connections")
		px.SetDown(true)
		ctx, cancel := context.WithTimeout(t.Context(), waitDeadline)
		defer cancel()
		require.NoError(t, px.WaitRefused(ctx, px.Refused()+3), "clients try to reconnect")
		px.SetDown(false)
		t.Logf("accepting connections again with %d rows sent, %d effects applied", p.sent(), f.applied(t))
		waitUntil(t, "three quarters applied", func() bool { return f.applied(t) >= 3*total/4 })
		t.Logf("cutting every connection with %d rows sent, %d effects applied", p.sent(), f.applied(t))
		px.Cut()
	})
}
