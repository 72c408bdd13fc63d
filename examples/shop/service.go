package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// serviceOptions are what both services take from the command line.
type serviceOptions struct {
	Namespace   string
	Concurrency int
	RelayLease  time.Duration
	RelayPoll   time.Duration
	PollEvery   time.Duration
	Timeline    *timeline
	Broker      string // its name, in the timeline
	Logger      *slog.Logger
}

// service is what both services are made of: a database of their own, the
// topic they publish to and the one they consume, and the decoder of the
// shop's events.
type service struct {
	name  string
	db    *database
	opts  serviceOptions
	topic string // where its events go
	input string // the other service's topic
	tl    *timeline
	dec   *wire.Decoder
}

// newService creates the service's tables.
func newService(ctx context.Context, name, other string, db *database, opts serviceOptions, ddl []string) (service, error) {
	if err := db.ensure(ctx, ddl...); err != nil {
		return service{}, err
	}
	dec, err := newDecoder()
	if err != nil {
		return service{}, err
	}
	return service{
		name:  name,
		db:    db,
		opts:  opts,
		topic: topicOf(opts.Namespace, name),
		input: topicOf(opts.Namespace, other),
		tl:    opts.Timeline,
		dec:   dec,
	}, nil
}

// consume runs, until ctx is done, the consumer of the service's input
// topic (with the inbox in the handler's transaction if inboxed), its relay
// if relay, and the loops of more.
func (s *service) consume(ctx context.Context, tr *transport, handle func(context.Context, events.Event) error, inboxed, relay bool, more ...func(context.Context) error) error {
	sub, err := tr.subscriber(s.name, s.input)
	if err != nil {
		return err
	}
	cfg := brokers.DefaultConfig()
	cfg.Name = s.name
	cfg.MaxConcurrency = s.opts.Concurrency
	cfg.MaxInFlight = 4 * s.opts.Concurrency
	cfg.MaxDeliveries = 50
	cfg.Backoff = outbox.Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second, Jitter: 0.5}
	cfg.DrainTimeout = 5 * time.Second
	cfg.Logger = s.opts.Logger
	if inboxed {
		cfg.Inbox, cfg.Transactor = s.db.inbox, s.db.tx // deduplicated, in the handler's transaction
	}
	consumer, err := brokers.NewConsumer(sub, s.dec, receiving(s.tl, s.name, s.opts.Broker, handle), cfg)
	if err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return consumer.Run(ctx) })
	if relay {
		g.Go(func() error { return runRelay(ctx, s.name, s.db, tr, s.opts) })
	}
	for _, f := range more {
		g.Go(func() error { return f(ctx) })
	}
	return g.Wait()
}

// runRelay sends a service's outbox to the broker until ctx is done.
func runRelay(ctx context.Context, service string, db *database, tr *transport, o serviceOptions) error {
	cfg := outbox.DefaultRelayConfig()
	cfg.Owner = service + "-relay-" + uuid.NewString()
	cfg.BatchSize = 256
	cfg.Lease = o.RelayLease
	cfg.SendTimeout = min(10*time.Second, o.RelayLease/2)
	cfg.PollInterval = o.RelayPoll // relays in other processes than the writers find rows by polling
	cfg.Backoff = outbox.Backoff{Base: 100 * time.Millisecond, Max: 5 * time.Second, Jitter: 0.5}
	cfg.MaxAttempts = 100
	cfg.Logger = o.Logger
	sender := recordingSender{Sender: tr.sender, tl: o.Timeline, service: service, broker: o.Broker}
	r, err := outbox.NewRelay(db.outbox, sender, cfg)
	if err != nil {
		return err
	}
	return r.Run(ctx)
}

// relayOnly runs the relays of the given databases, for a relay process.
func relayOnly(ctx context.Context, dbs map[string]*database, tr *transport, o serviceOptions) error {
	g, ctx := errgroup.WithContext(ctx)
	for service, db := range dbs {
		g.Go(func() error { return runRelay(ctx, service, db, tr, o) })
	}
	return g.Wait()
}
