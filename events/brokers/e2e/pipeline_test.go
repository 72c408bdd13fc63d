package e2e_test

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/postgres"
	"github.com/gocqrs/cqrs/events/wire"
)

const (
	// total is the number of events of the fault tests.
	total = 10_000
	// keys is the number of event keys the events are spread over.
	keys = 50
	// eventName is the name the events are encoded and registered with.
	eventName = "e2e.item"
	// consumerName keys the inbox records of every consumer.
	consumerName = "e2e-consumer"
)

// Item is the payload of the events: its key and its place in the key,
// and, for the latency benchmark, when it was committed.
type Item struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
	// At is the commit time, in Unix nanoseconds, taken just before the
	// transaction that adds the event commits.
	At int64 `json:"at,omitempty"`
}

// fixture is the database side of a run, in a schema of its own: the
// outbox, the inbox, and the consumer's tables.
type fixture struct {
	pool  *pgxpool.Pool
	db    *postgres.DB
	store *postgres.Store
	inbox *postgres.Inbox

	schema string
	// outboxTable and inboxTable are the stores' tables. effects is the
	// consumer's: a row per event handled, written in the handler's
	// transaction, with no unique constraint on event_id, so that an
	// effect applied twice shows. deliveries and absorbed are written
	// outside the consumer's transactions: a row per message received,
	// and per duplicate the inbox reported.
	outboxTable, inboxTable, effects, deliveries, absorbed string
}

// openFixture returns the fixture of an existing schema.
func openFixture(tb testing.TB, pool *pgxpool.Pool, db *postgres.DB, schema string) *fixture {
	tb.Helper()
	f := &fixture{
		pool: pool, db: db, schema: schema,
		outboxTable: schema + ".outbox", inboxTable: schema + ".inbox", effects: schema + ".effects",
		deliveries: schema + ".deliveries", absorbed: schema + ".absorbed",
	}
	var err error
	f.store, err = postgres.NewStore(db, postgres.StoreOptions{Table: f.outboxTable})
	require.NoError(tb, err)
	f.inbox, err = postgres.NewInbox(db, postgres.InboxOptions{Table: f.inboxTable})
	require.NoError(tb, err)
	return f
}

// newFixture creates a schema of its own for tb (dropped when tb ends)
// and the fixture's tables in it.
func newFixture(tb testing.TB, pool *pgxpool.Pool) *fixture {
	tb.Helper()
	db, err := postgres.New(pool, postgres.Options{Logger: quiet})
	require.NoError(tb, err)
	f := openFixture(tb, pool, db, newSchema(tb, pool))
	ctx := context.Background()
	require.NoError(tb, f.store.EnsureSchema(ctx))
	require.NoError(tb, f.inbox.EnsureSchema(ctx))
	for _, ddl := range []string{
		"CREATE TABLE " + f.effects + " (id bigserial PRIMARY KEY, event_id uuid NOT NULL, key text NOT NULL, seq int NOT NULL)",
		"CREATE TABLE " + f.deliveries + " (id bigserial PRIMARY KEY, event_id text NOT NULL)",
		"CREATE TABLE " + f.absorbed + " (id bigserial PRIMARY KEY, event_id uuid NOT NULL)",
	} {
		_, err := pool.Exec(ctx, ddl)
		require.NoError(tb, err)
	}
	return f
}

// item returns the n-th event of a run, of topic.
func item(enc *wire.Encoder, topic string, n int, at int64) (wire.Envelope, error) {
	key := "k" + strconv.Itoa(n%keys)
	ev := events.NewNotification(eventName, Item{Key: key, Seq: n / keys, At: at}).WithTopic(topic).WithKey(key)
	return enc.Encode(ev)
}

// preload adds n events of topic to the outbox, 500 a transaction.
func (f *fixture) preload(tb testing.TB, topic string, n int) {
	tb.Helper()
	enc, err := wire.NewEncoder(wire.EncoderOptions{})
	require.NoError(tb, err)
	const perTx = 500
	for start := 0; start < n; start += perTx {
		envs := make([]wire.Envelope, min(perTx, n-start))
		for i := range envs {
			envs[i], err = item(enc, topic, start+i, 0)
			require.NoError(tb, err)
		}
		require.NoError(tb, f.db.InTx(context.Background(), func(ctx context.Context) error { return f.store.Add(ctx, envs...) }))
	}
}

// count runs a query returning one number.
func (f *fixture) count(tb testing.TB, query string) int64 {
	tb.Helper()
	var n int64
	require.NoError(tb, f.pool.QueryRow(context.Background(), query).Scan(&n))
	return n
}

// applied returns the number of distinct events whose effect is applied.
func (f *fixture) applied(tb testing.TB) int64 {
	tb.Helper()
	return f.count(tb, "SELECT count(DISTINCT event_id) FROM "+f.effects)
}

// checkExactlyOnce asserts that each of the n events of the outbox was
// sent and its effect applied exactly once, and that nothing is left
// pending or dead.
func (f *fixture) checkExactlyOnce(tb testing.TB, n int) {
	tb.Helper()
	assert.Equal(tb, int64(n), f.count(tb, "SELECT count(*) FROM "+f.effects), "effects applied")
	assert.Equal(tb, int64(n), f.applied(tb), "distinct effects")
	assert.Equal(tb, int64(n), f.count(tb, "SELECT count(*) FROM "+f.inboxTable), "inbox records")
	st, err := f.store.Stats(context.Background())
	require.NoError(tb, err)
	assert.Equal(tb, int64(n), st.Sent, "sent rows")
	assert.Zero(tb, st.Pending, "pending rows")
	assert.Zero(tb, st.Dead, "dead rows")
	assert.Zero(tb, f.count(tb, "SELECT count(*) FROM (SELECT e.event_id FROM "+f.effects+" e LEFT JOIN "+f.outboxTable+
		" o ON o.event_id = e.event_id WHERE o.event_id IS NULL) x"), "effects of events not in the outbox")
}

// relayTuning are the relay settings a run varies.
type relayTuning struct {
	BatchSize    int
	Lease        time.Duration
	SendTimeout  time.Duration
	PollInterval time.Duration
	// Stages, if set, collects the time spent claiming, sending and
	// marking.
	Stages *stages
}

// faultRelay is the relays' tuning in the fault tests: a short lease, so
// that the rows a killed relay held are taken over soon, and a short poll
// interval, which finds them.
var faultRelay = relayTuning{BatchSize: 50, Lease: 3 * time.Second, SendTimeout: 2 * time.Second, PollInterval: 100 * time.Millisecond}

// newRelay returns a relay of the fixture's outbox to sender.
func (f *fixture) newRelay(tb testing.TB, sender outbox.Sender, owner string, tune relayTuning, logger *slog.Logger) *outbox.Relay {
	tb.Helper()
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner = owner
	cfg.BatchSize = tune.BatchSize
	cfg.Lease = tune.Lease
	cfg.SendTimeout = tune.SendTimeout
	cfg.PollInterval = tune.PollInterval
	cfg.Backoff = outbox.Backoff{Base: 100 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	cfg.MaxAttempts = 1000 // a broker down for a while kills no row
	cfg.Logger = logger
	var store outbox.Store = f.store
	if tune.Stages != nil {
		store, sender = timedStore{Store: f.store, s: tune.Stages}, timedSender{Sender: sender, s: tune.Stages}
		cfg.Notifier = f.store
	}
	relay, err := outbox.NewRelay(store, sender, cfg)
	require.NoError(tb, err)
	return relay
}

// consumerTuning are the consumer settings a run varies.
type consumerTuning struct {
	MaxConcurrency int
	MaxInFlight    int
	// MaxBatch is Config.MaxBatch.
	MaxBatch int
	// Count records every delivery and every duplicate absorbed in the
	// fixture's tables (a write each, outside the consumer's
	// transactions).
	Count bool
	// Handled, if set, is called by the handler after it applied the
	// effect, before its transaction commits.
	Handled func(Item)
	// Stages, if set, collects the time spent in transactions and
	// acknowledgements.
	Stages *stages
	// NoDatabase runs the consumer without inbox and transaction, with a
	// handler that applies no effect: what the broker and the runtime
	// cost alone.
	NoDatabase bool
}

// newConsumer returns a consumer of sub that applies each event's effect
// (a row of the effects table) in the transaction of its inbox record.
func (f *fixture) newConsumer(tb testing.TB, sub brokers.Subscriber, tune consumerTuning, logger *slog.Logger) *brokers.Consumer {
	tb.Helper()
	var reg wire.Registry
	require.NoError(tb, wire.Register[Item](&reg, eventName))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(tb, err)
	em, err := bootstrap.Events(nil, bootstrap.WithLogger(logger), bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[Item]](
			func(ctx context.Context, ev events.Notification[Item]) ([]events.Event, error) {
				if tune.NoDatabase {
					if tune.Handled != nil {
						tune.Handled(ev.Payload)
					}
					return nil, nil
				}
				tx, ok := postgres.PgxTx(ctx)
				if !ok {
					return nil, outbox.Permanent(fmt.Errorf("no transaction in the handler's context"))
				}
				l := postgres.TxLock(ctx)
				l.Lock()
				defer l.Unlock()
				_, err := tx.Exec(ctx, "INSERT INTO "+f.effects+" (event_id, key, seq) VALUES ($1, $2, $3)",
					ev.ID, ev.Payload.Key, ev.Payload.Seq)
				if err == nil && tune.Handled != nil {
					tune.Handled(ev.Payload)
				}
				return nil, err
			}))
	}))
	require.NoError(tb, err)

	cfg := brokers.DefaultConfig()
	cfg.Name = consumerName
	cfg.MaxConcurrency = tune.MaxConcurrency
	cfg.MaxInFlight = tune.MaxInFlight
	cfg.MaxBatch = tune.MaxBatch
	cfg.Inbox = f.inbox
	cfg.Transactor = f.db
	cfg.MaxDeliveries = 1000 // a broker down for a while dead-letters nothing
	cfg.Backoff = outbox.Backoff{Base: 50 * time.Millisecond, Max: time.Second, Jitter: 0.5}
	cfg.DrainTimeout = 5 * time.Second
	cfg.SettleTimeout = 5 * time.Second
	cfg.Logger = logger
	if tune.Stages != nil {
		cfg.Transactor = timedTransactor{Transactor: f.db, s: tune.Stages}
		sub = timedSubscriber{Subscriber: sub, s: tune.Stages}
	}
	if tune.NoDatabase {
		cfg.Inbox, cfg.Transactor = nil, nil
	}
	if tune.Count {
		cfg.Inbox = countingInbox{Inbox: f.inbox, pool: f.pool, table: f.absorbed}
		sub = countingSubscriber{sub: sub, pool: f.pool, table: f.deliveries}
	}
	c, err := brokers.NewConsumer(sub, dec, em.Send, cfg)
	require.NoError(tb, err)
	return c
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

// waitDeadline bounds each wait for the pipeline's progress.
const waitDeadline = 3 * time.Minute

// pipeline is relays and a consumer of a fixture running in the test
// process.
type pipeline struct {
	relays   []*outbox.Relay
	consumer *brokers.Consumer
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	errs     chan error
	closers  []func()
}

// startPipeline starts n relays of f's outbox, each with a Sender of its
// own on ep, and, unless ct is nil, a consumer of ep into f's inbox.
func startPipeline(tb testing.TB, f *fixture, ep endpoint, n int, rt relayTuning, ct *consumerTuning, logger *slog.Logger) *pipeline {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &pipeline{cancel: cancel, errs: make(chan error, n+1)}
	tb.Cleanup(func() { p.stop(tb) })
	for i := range n {
		sender, closeSender, err := ep.sender(ctx, logger)
		require.NoError(tb, err)
		p.closers = append(p.closers, closeSender)
		p.relays = append(p.relays, f.newRelay(tb, sender, fmt.Sprintf("relay-%d", i+1), rt, logger))
	}
	if ct != nil {
		sub, closeSub, err := ep.subscriber(logger)
		require.NoError(tb, err)
		p.closers = append(p.closers, closeSub)
		p.consumer = f.newConsumer(tb, sub, *ct, logger)
	}
	for _, r := range p.relays {
		p.wg.Go(func() { p.errs <- r.Run(ctx) })
	}
	if p.consumer != nil {
		p.wg.Go(func() { p.errs <- p.consumer.Run(ctx) })
	}
	return p
}

// stop stops the relays and the consumer, waits for them, and closes
// their clients. It may be called more than once.
func (p *pipeline) stop(tb testing.TB) {
	tb.Helper()
	p.cancel()
	p.wg.Wait()
	for len(p.errs) > 0 {
		assert.NoError(tb, <-p.errs, "Run")
	}
	for _, c := range p.closers {
		c()
	}
	p.closers = nil
}

// sent returns the rows the relays marked sent.
func (p *pipeline) sent() int {
	n := 0
	for _, r := range p.relays {
		n += int(r.Counters().Sent)
	}
	return n
}

// relayCounters adds up the relays' counters.
func (p *pipeline) relayCounters() outbox.RelayCounters {
	var c outbox.RelayCounters
	for _, r := range p.relays {
		rc := r.Counters()
		c.Batches += rc.Batches
		c.Sent += rc.Sent
		c.Failed += rc.Failed
		c.Dead += rc.Dead
		c.Released += rc.Released
		c.LeaseLost += rc.LeaseLost
		c.StoreErrors += rc.StoreErrors
	}
	return c
}

// waitUntil polls cond every 10ms until it holds, and fails tb if it does
// not within waitDeadline.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(waitDeadline)
	defer limit.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-limit.C:
			tb.Fatalf("not %s within %v", what, waitDeadline)
		}
	}
}
