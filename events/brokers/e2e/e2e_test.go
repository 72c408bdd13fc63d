package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

const (
	// total is the number of events preloaded into the outbox.
	total = 10_000
	// keys is the number of event keys the events are spread over.
	keys = 50
	// eventName is the name the events are encoded and registered with.
	eventName = "e2e.item"
	// topic is the routing key of the events, bound to the queue.
	topic = "e2e.items"
	// consumerName keys the inbox records of every consumer process.
	consumerName = "e2e-consumer"
	// lease is the relays' lease: the rows a killed relay held are taken
	// over by another one once it expires.
	lease = 3 * time.Second
	// deadline bounds the whole run once the events are preloaded.
	deadline = 75 * time.Second
)

// Item is the payload of the events: its key and its place in the key.
type Item struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

// tables returns the names of the test's tables in schema.
func tables(schema string) (outboxTable, inboxTable, effects, deliveries, absorbed string) {
	return schema + ".outbox", schema + ".inbox", schema + ".effects", schema + ".deliveries", schema + ".absorbed"
}

// TestKilledRelayAndConsumer moves events from a PostgreSQL outbox, through
// a relay, a RabbitMQ exchange and queue, to a consumer that records each
// event in a PostgreSQL inbox and applies its effect (a row of the effects
// table) in the same transaction. The relay and the consumer each run in a
// process of their own, and each is killed with SIGKILL once mid-run and
// replaced: the consumer once a third of the effects are applied, the relay
// once half of the outbox is sent. Every effect must be applied exactly
// once, and nothing may be left pending or dead in the outbox; what the
// kills delivered twice must have been absorbed by the inbox.
func TestKilledRelayAndConsumer(t *testing.T) {
	pool := testPool(t)
	amqpURL := testBroker(t)
	ctx := t.Context()

	schema := newSchema(t, pool)
	outboxTable, inboxTable, effects, deliveries, absorbed := tables(schema)
	db, err := postgres.New(pool, postgres.Options{Logger: quiet})
	require.NoError(t, err)
	store, err := postgres.NewStore(db, postgres.StoreOptions{Table: outboxTable})
	require.NoError(t, err)
	require.NoError(t, store.EnsureSchema(ctx))
	in, err := postgres.NewInbox(db, postgres.InboxOptions{Table: inboxTable})
	require.NoError(t, err)
	require.NoError(t, in.EnsureSchema(ctx))
	for _, ddl := range []string{
		// No unique constraint on event_id: an effect applied twice shows.
		"CREATE TABLE " + effects + " (id bigserial PRIMARY KEY, event_id uuid NOT NULL, key text NOT NULL, seq int NOT NULL)",
		// Written outside the consumer's transactions.
		"CREATE TABLE " + deliveries + " (id bigserial PRIMARY KEY, event_id text NOT NULL)",
		"CREATE TABLE " + absorbed + " (id bigserial PRIMARY KEY, event_id uuid NOT NULL)",
	} {
		_, err := pool.Exec(ctx, ddl)
		require.NoError(t, err)
	}

	name := unique("cqrs-test.e2e.")
	topo := provision(t, amqpURL, rabbitmq.Topology{
		Queue:       name + ".q",
		Exchange:    name + ".x",
		Bindings:    []rabbitmq.Binding{{RoutingKey: topic}},
		RetryDelays: []time.Duration{100 * time.Millisecond, time.Second},
	})

	// Preload the outbox.
	enc, err := wire.NewEncoder(wire.EncoderOptions{})
	require.NoError(t, err)
	const perTx = 500
	for b := range total / perTx {
		envs := make([]wire.Envelope, perTx)
		for i := range envs {
			n := b*perTx + i
			key := "k" + strconv.Itoa(n%keys)
			ev := events.NewNotification(eventName, Item{Key: key, Seq: n / keys}).WithTopic(topic).WithKey(key)
			envs[i], err = enc.Encode(ev)
			require.NoError(t, err)
		}
		require.NoError(t, db.InTx(ctx, func(ctx context.Context) error { return store.Add(ctx, envs...) }))
	}

	env := []string{schemaEnv + "=" + schema, exchangeEnv + "=" + topo.Exchange, queueEnv + "=" + topo.Queue}
	start := time.Now()
	consumer := startChild(t, "consumer", "consumer-1", env...)
	relay := startChild(t, "relay", "relay-1", env...)

	count := func(query string) int64 {
		t.Helper()
		var n int64
		require.NoError(t, pool.QueryRow(ctx, query).Scan(&n))
		return n
	}
	var consumerKilled, relayKilled bool
	tick := time.NewTicker(20 * time.Millisecond) // polls the database
	defer tick.Stop()
	limit := time.After(deadline)
	for {
		applied := count("SELECT count(*) FROM " + effects)
		st, err := store.Stats(ctx)
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
			st, err := store.Stats(ctx)
			require.NoError(t, err)
			t.Logf("%v: killed relay-1 with %d rows sent, %d pending (%d under its lease)",
				time.Since(start).Round(time.Millisecond), st.Sent, st.Pending, st.Leased)
			require.Positive(t, st.Pending, "relay-1 was killed before it sent everything")
			relay = startChild(t, "relay", "relay-2", env...)
		}
		if consumerKilled && relayKilled && st.Sent == total && st.Pending == 0 &&
			count("SELECT count(DISTINCT event_id) FROM "+effects) == total {
			break
		}
		select {
		case <-tick.C:
		case <-limit:
			t.Fatalf("not done after %v: %d effects applied, outbox %+v, consumer killed %v, relay killed %v",
				deadline, applied, st, consumerKilled, relayKilled)
		}
	}
	elapsed := time.Since(start)
	relay.stop(t, 20*time.Second)
	consumer.stop(t, 20*time.Second)

	// Every effect exactly once, every row sent.
	assert.Equal(t, int64(total), count("SELECT count(*) FROM "+effects), "effects applied")
	assert.Equal(t, int64(total), count("SELECT count(DISTINCT event_id) FROM "+effects), "distinct effects")
	assert.Equal(t, int64(total), count("SELECT count(*) FROM "+inboxTable), "inbox records")
	st, err := store.Stats(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(total), st.Sent, "sent rows")
	assert.Zero(t, st.Pending, "pending rows")
	assert.Zero(t, st.Dead, "dead rows")
	assert.Zero(t, count("SELECT count(*) FROM (SELECT e.event_id FROM "+effects+" e LEFT JOIN "+outboxTable+
		" o ON o.event_id = e.event_id WHERE o.event_id IS NULL) x"), "effects of events not in the outbox")

	// What the kills delivered twice, the inbox absorbed.
	delivered := count("SELECT count(*) FROM " + deliveries)
	dups := count("SELECT count(*) FROM " + absorbed)
	assert.GreaterOrEqual(t, delivered, total+dups, "deliveries: each event handled once, plus each duplicate")
	var c brokers.Counters
	out := consumer.output()
	line, ok := strings.CutPrefix(out[strings.LastIndex(out, "COUNTERS "):], "COUNTERS ")
	require.True(t, ok, "consumer-2 printed its counters: %q", out)
	line, _, _ = strings.Cut(line, "\n")
	require.NoError(t, json.Unmarshal([]byte(line), &c))
	t.Logf("%d events in %v: %d deliveries, %d duplicates absorbed by the inbox (%d by consumer-2), %d deliveries lost to the kill; consumer-2 counters %+v",
		total, elapsed.Round(time.Millisecond), delivered, dups, c.Duplicates, delivered-total-dups, c)
	assert.Zero(t, c.DeadLettered, "dead letters")
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
	switch role {
	case "relay":
		runRelay(ctx, t, db, logger)
	case "consumer":
		runConsumer(ctx, t, db, pool, logger)
	default:
		t.Fatalf("unknown role %q", role)
	}
}

func runRelay(ctx context.Context, t *testing.T, db *postgres.DB, logger *slog.Logger) {
	t.Helper()
	outboxTable, _, _, _, _ := tables(os.Getenv(schemaEnv))
	store, err := postgres.NewStore(db, postgres.StoreOptions{Table: outboxTable})
	require.NoError(t, err)
	sender, err := rabbitmq.NewSender(rabbitmq.SenderOptions{URL: rabbitURL(), Exchange: os.Getenv(exchangeEnv), Logger: logger})
	require.NoError(t, err)
	defer func() { _ = sender.Close(context.Background()) }()
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner = os.Getenv(ownerEnv)
	cfg.BatchSize = 50
	cfg.Lease = lease
	cfg.SendTimeout = 2 * time.Second
	cfg.PollInterval = 100 * time.Millisecond // finds the rows whose lease expired
	cfg.Backoff = outbox.Backoff{Base: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	cfg.Logger = logger
	relay, err := outbox.NewRelay(store, sender, cfg)
	require.NoError(t, err)
	require.NoError(t, relay.Run(ctx))
}

func runConsumer(ctx context.Context, t *testing.T, db *postgres.DB, pool *pgxpool.Pool, logger *slog.Logger) {
	t.Helper()
	_, inboxTable, effects, deliveries, absorbed := tables(os.Getenv(schemaEnv))
	in, err := postgres.NewInbox(db, postgres.InboxOptions{Table: inboxTable})
	require.NoError(t, err)

	var reg wire.Registry
	require.NoError(t, wire.Register[Item](&reg, eventName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(t, err)
	em, err := bootstrap.Events(nil, bootstrap.WithLogger(logger), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[Item]](
			func(ctx context.Context, ev events.Notification[Item]) ([]events.Event, error) {
				tx, ok := postgres.PgxTx(ctx)
				if !ok {
					return nil, outbox.Permanent(fmt.Errorf("no transaction in the handler's context"))
				}
				l := postgres.TxLock(ctx)
				l.Lock()
				defer l.Unlock()
				_, err := tx.Exec(ctx, "INSERT INTO "+effects+" (event_id, key, seq) VALUES ($1, $2, $3)",
					ev.ID, ev.Payload.Key, ev.Payload.Seq)
				return nil, err
			}))
	}))
	require.NoError(t, err)

	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberOptions{
		URL: rabbitURL(),
		Topology: rabbitmq.Topology{
			Queue:       os.Getenv(queueEnv),
			Exchange:    os.Getenv(exchangeEnv),
			Bindings:    []rabbitmq.Binding{{RoutingKey: topic}},
			RetryDelays: []time.Duration{100 * time.Millisecond, time.Second},
		},
		Prefetch: 64,
		Logger:   logger,
	})
	require.NoError(t, err)
	cfg := brokers.DefaultConfig()
	cfg.Name = consumerName
	cfg.MaxConcurrency = 8
	cfg.Inbox = countingInbox{Inbox: in, pool: pool, table: absorbed}
	cfg.Transactor = db
	cfg.Backoff = outbox.Backoff{Base: 50 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	cfg.DrainTimeout = 5 * time.Second
	cfg.Logger = logger
	c, err := brokers.NewConsumer(countingSubscriber{sub: sub, pool: pool, table: deliveries}, dec, em.Send, cfg)
	require.NoError(t, err)
	require.NoError(t, c.Run(ctx))
	b, err := json.Marshal(c.Counters())
	require.NoError(t, err)
	fmt.Fprintln(os.Stdout, "COUNTERS "+string(b))
}

// countingInbox records, outside the consumer's transaction, each event
// the inbox reports as a duplicate.
type countingInbox struct {
	*postgres.Inbox
	pool  *pgxpool.Pool
	table string
}

func (i countingInbox) Record(ctx context.Context, consumer string, id uuid.UUID) (bool, error) {
	first, err := i.Inbox.Record(ctx, consumer, id)
	if err == nil && !first {
		if _, err := i.pool.Exec(ctx, "INSERT INTO "+i.table+" (event_id) VALUES ($1)", id); err != nil {
			return false, err
		}
	}
	return first, err
}

// countingSubscriber records, outside the consumer's transactions, each
// message its sources receive, by the envelope's event ID.
type countingSubscriber struct {
	sub   brokers.Subscriber
	pool  *pgxpool.Pool
	table string
}

func (s countingSubscriber) Subscribe(ctx context.Context) (brokers.Source, error) {
	src, err := s.sub.Subscribe(ctx)
	if err != nil {
		return nil, err
	}
	return countingSource{Source: src, s: s}, nil
}

type countingSource struct {
	brokers.Source
	s countingSubscriber
}

func (c countingSource) Receive(ctx context.Context) (brokers.Message, error) {
	msg, err := c.Source.Receive(ctx)
	if err != nil {
		return msg, err
	}
	if _, err := c.s.pool.Exec(ctx, "INSERT INTO "+c.s.table+" (event_id) VALUES ($1)", msg.Headers[wire.HeaderEventID]); err != nil {
		_ = msg.Settler.Retry(context.WithoutCancel(ctx), 0)
		return brokers.Message{}, err
	}
	return msg, nil
}
