package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
)

// killDeadline bounds each run of TestKilledRelayAndConsumer once the
// events are preloaded.
const killDeadline = 75 * time.Second

// TestKilledRelayAndConsumer moves events from a PostgreSQL outbox, through
// a relay and a broker, to a consumer that records each event in a
// PostgreSQL inbox and applies its effect (a row of the effects table) in
// the same transaction, once per broker:
//
//   - rabbitmq: an exchange and a quorum queue of the server of
//     RABBITMQ_URL;
//   - nats: a JetStream stream (file storage) and durable consumer of the
//     server of NATS_URL;
//   - kafka: a topic of 8 partitions and a consumer group of a kfake
//     cluster run by the test process, which the helper processes reach
//     over TCP.
//
// The relay and the consumer each run in a process of their own, and each
// is killed with SIGKILL once mid-run and replaced: the consumer once a
// third of the effects are applied, the relay once half of the outbox is
// sent. Every effect must be applied exactly once, and nothing may be left
// pending or dead in the outbox; what the kills delivered twice must have
// been absorbed by the inbox.
func TestKilledRelayAndConsumer(t *testing.T) {
	for _, tc := range []struct {
		broker string
		setup  func(t *testing.T) endpoint
	}{
		{brokerRabbitMQ, func(t *testing.T) endpoint {
			t.Helper()
			return rabbitEndpoint(t, "")
		}},
		// What the killed consumer held comes back after AckWait.
		{brokerNATS, func(t *testing.T) endpoint {
			t.Helper()
			return natsEndpoint(t, natsServerURL(t), 3*time.Second, 0)
		}},
		// What the killed consumer held is reassigned after the session
		// timeout.
		{brokerKafka, func(t *testing.T) endpoint {
			t.Helper()
			return kafkaEndpoint(t, 3*time.Second)
		}},
	} {
		t.Run(tc.broker, func(t *testing.T) {
			pool := testPool(t)
			ep := tc.setup(t)
			f := newFixture(t, pool)
			f.preload(t, ep.Topic, total)
			ctx := t.Context()

			env := []string{schemaEnv + "=" + f.schema, ep.env()}
			start := time.Now()
			consumer := startChild(t, "consumer", "consumer-1", env...)
			relay := startChild(t, "relay", "relay-1", env...)

			var consumerKilled, relayKilled bool
			tick := time.NewTicker(20 * time.Millisecond) // polls the database
			defer tick.Stop()
			limit := time.After(killDeadline)
			for {
				applied := f.count(t, "SELECT count(*) FROM "+f.effects)
				st, err := f.store.Stats(ctx)
				require.NoError(t, err)
				if !consumerKilled && applied >= total/3 {
					consumer.kill(t)
					consumerKilled = true
					t.Logf("%v: killed consumer-1 with %d effects applied", time.Since(start).Round(time.Millisecond), applied)
					consumer = startChild(t, "consumer", "consumer-2", env...)
				}
				// Killed while it holds a lease: rows it claimed (and perhaps
				// published without marking them) wait for that lease to expire.
				if !relayKilled && st.Sent >= total/2 && st.Leased > 0 {
					relay.kill(t)
					relayKilled = true
					st, err := f.store.Stats(ctx)
					require.NoError(t, err)
					t.Logf("%v: killed relay-1 with %d rows sent, %d pending (%d under its lease)",
						time.Since(start).Round(time.Millisecond), st.Sent, st.Pending, st.Leased)
					require.Positive(t, st.Pending, "relay-1 was killed before it sent everything")
					relay = startChild(t, "relay", "relay-2", env...)
				}
				if consumerKilled && relayKilled && st.Sent == total && st.Pending == 0 && f.applied(t) == total {
					break
				}
				select {
				case <-tick.C:
				case <-limit:
					t.Fatalf("not done after %v: %d effects applied, outbox %+v, consumer killed %v, relay killed %v",
						killDeadline, applied, st, consumerKilled, relayKilled)
				}
			}
			elapsed := time.Since(start)
			relay.stop(t, 20*time.Second)
			consumer.stop(t, 20*time.Second)

			f.checkExactlyOnce(t, total)

			// What the kills delivered twice, the inbox absorbed.
			delivered := f.count(t, "SELECT count(*) FROM "+f.deliveries)
			dups := f.count(t, "SELECT count(*) FROM "+f.absorbed)
			assert.GreaterOrEqual(t, delivered, total+dups, "deliveries: each event handled once, plus each duplicate")
			var c brokers.Counters
			out := consumer.output()
			line, ok := strings.CutPrefix(out[strings.LastIndex(out, "COUNTERS "):], "COUNTERS ")
			require.True(t, ok, "consumer-2 printed its counters: %q", out)
			line, _, _ = strings.Cut(line, "\n")
			require.NoError(t, json.Unmarshal([]byte(line), &c))
			t.Logf("%s: %d events in %v: %d deliveries, %d duplicates absorbed by the inbox (%d by consumer-2), %d deliveries lost to the kill; consumer-2 counters %+v",
				ep.Broker, total, elapsed.Round(time.Millisecond), delivered, dups, c.Duplicates, delivered-total-dups, c)
			assert.Zero(t, c.DeadLettered, "dead letters")
		})
	}
}

// TestHelperProcess is the relay or consumer process of
// TestKilledRelayAndConsumer, by roleEnv. It runs until its stdin is
// closed (or it is killed); the consumer then prints its counters.
func TestHelperProcess(t *testing.T) {
	role := os.Getenv(roleEnv)
	if role == "" {
		t.Skip("a helper process of TestKilledRelayAndConsumer")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})).
		With("process", os.Getenv(ownerEnv))
	pool, err := openPool(ctx, 16)
	require.NoError(t, err)
	defer pool.Close()
	db, err := postgres.New(pool, postgres.Options{Logger: logger})
	require.NoError(t, err)
	f := openFixture(t, pool, db, os.Getenv(schemaEnv))
	ep := endpointFromEnv(t)
	switch role {
	case "relay":
		sender, closeSender, err := ep.sender(ctx, logger)
		require.NoError(t, err)
		defer closeSender()
		relay := f.newRelay(t, sender, os.Getenv(ownerEnv), faultRelay, logger)
		require.NoError(t, relay.Run(ctx))
	case "consumer":
		sub, closeSub, err := ep.subscriber(logger)
		require.NoError(t, err)
		defer closeSub()
		c := f.newConsumer(t, sub, consumerTuning{MaxConcurrency: 8, Count: true}, logger)
		require.NoError(t, c.Run(ctx))
		b, err := json.Marshal(c.Counters())
		require.NoError(t, err)
		fmt.Fprintln(os.Stdout, "COUNTERS "+string(b))
	default:
		t.Fatalf("unknown role %q", role)
	}
}
