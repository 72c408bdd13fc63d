package nats_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func TestNewSubscriberValidates(t *testing.T) {
	t.Parallel()
	_, err := nats.NewSubscriber(nil, nats.SubscriberConfig{
		Topology: nats.Topology{
			Stream:            "a.b",
			DeadLetterSubject: "dead-letter.orders",
			Subjects:          []string{"orders.>", "bad subject", "dead-letter.>"},
			FilterSubjects:    []string{"orders.>.x"},
			AckWait:           time.Millisecond,
			MaxAckPending:     -1,
			MaxDeliver:        -2,
			Replicas:          -1,
		},
		PullBatch:        -1,
		PullExpiry:       time.Millisecond,
		ProgressInterval: -1,
	})
	require.ErrorIs(t, err, nats.ErrInvalidConfig)
	for _, want := range []string{
		"nil connection", "Topology.Stream", "Topology.Consumer", "Topology.DeadLetterStream",
		`"bad subject"`, "captures the dead-letter subject", "FilterSubjects", "AckWait", "MaxAckPending",
		"MaxDeliver", "Replicas", "PullBatch", "PullExpiry", "ProgressInterval",
	} {
		assert.Contains(t, err.Error(), want, "every problem is reported at once")
	}
	require.NoError(t, nats.Topology{Stream: "ORDERS", Consumer: "billing"}.Validate())
}

// TestProvisionIdempotent provisions one topology from several goroutines
// at once, and again: it exists once; an existing stream that does not
// capture the subjects is refused, not changed.
func TestProvisionIdempotent(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = topo.Provision(t.Context(), js) })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "provision %d", i)
	}
	require.NoError(t, topo.Provision(t.Context(), js), "again")

	info, err := js.Stream(t.Context(), topo.Stream+nats.DeadLetterStreamSuffix)
	require.NoError(t, err)
	assert.Equal(t, []string{nats.DeadLetterPrefix + "." + topo.Stream + ".>"}, info.CachedInfo().Config.Subjects)
	cons, err := js.Consumer(t.Context(), topo.Stream, topo.Consumer)
	require.NoError(t, err)
	c := cons.CachedInfo().Config
	assert.Equal(t, jetstream.AckExplicitPolicy, c.AckPolicy)
	assert.Equal(t, nats.DefaultAckWait, c.AckWait)
	assert.Equal(t, nats.DefaultMaxAckPending, c.MaxAckPending)

	other := topo
	other.Subjects = []string{topo.Stream + ".other"}
	require.ErrorIs(t, other.Provision(t.Context(), js), nats.ErrTopology)

	missing := topology(t, nc)
	missing.Subjects = nil
	require.ErrorIs(t, missing.Provision(t.Context(), js), nats.ErrTopology, "a stream to create needs subjects")
	require.ErrorIs(t, topo.Provision(t.Context(), nil), nats.ErrInvalidConfig)
}

// One filter subject works with every server (FilterSubject); the
// multi-filter field needs nats-server 2.10, and this package's tests also
// run against 2.9.
func TestProvisionWithOneFilterSubject(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	topo := topology(t, nc)
	topo.Subjects = []string{topo.Stream + ".>"}
	topo.FilterSubjects = []string{topo.Stream + ".orders"}
	require.NoError(t, topo.Provision(t.Context(), js))
	cons, err := js.Consumer(t.Context(), topo.Stream, topo.Consumer)
	require.NoError(t, err)
	c := cons.CachedInfo().Config
	filters := append([]string{c.FilterSubject}, c.FilterSubjects...)
	assert.Contains(t, filters, topo.Stream+".orders")
	require.NoError(t, topo.Provision(t.Context(), js), "again")
}

// TestSubscribeChecksTheConsumer refuses consumers a Source cannot use.
func TestSubscribeChecksTheConsumer(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	topo := topology(t, nc)
	provision(t, nc, topo)
	ctx := t.Context()

	subscribe := func(consumer string) error {
		tp := topo
		tp.Consumer = consumer
		tp.DeadLetterSubject = nats.DeadLetterPrefix + "." + topo.Stream + ".x"
		sub, err := nats.NewSubscriber(nc, nats.SubscriberConfig{Topology: tp, Logger: quiet})
		require.NoError(t, err)
		src, err := sub.Subscribe(ctx)
		if err == nil {
			require.NoError(t, src.Close(ctx))
		}
		return err
	}
	create := func(cfg jetstream.ConsumerConfig) {
		_, err := js.CreateConsumer(ctx, topo.Stream, cfg)
		require.NoError(t, err)
	}
	create(jetstream.ConsumerConfig{Durable: "none", AckPolicy: jetstream.AckNonePolicy})
	create(jetstream.ConsumerConfig{Durable: "unbounded", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: -1})
	create(jetstream.ConsumerConfig{Durable: "good", AckPolicy: jetstream.AckExplicitPolicy})

	assert.ErrorIs(t, subscribe("missing"), nats.ErrTopology)
	assert.ErrorIs(t, subscribe("none"), nats.ErrTopology)
	assert.ErrorIs(t, subscribe("unbounded"), nats.ErrTopology)
	assert.NoError(t, subscribe("good"))

	tp := topo
	tp.DeadLetterSubject = "nowhere." + topo.Stream
	sub, err := nats.NewSubscriber(nc, nats.SubscriberConfig{Topology: tp, Logger: quiet})
	require.NoError(t, err)
	_, err = sub.Subscribe(ctx)
	assert.ErrorIs(t, err, nats.ErrTopology, "no stream captures the dead-letter subject")

	tp.DeadLetterSubject, tp.Subjects = topo.Subjects[0], nil // NewSubscriber would see it
	sub, err = nats.NewSubscriber(nc, nats.SubscriberConfig{Topology: tp, Logger: quiet})
	require.NoError(t, err)
	_, err = sub.Subscribe(ctx)
	assert.ErrorIs(t, err, nats.ErrTopology, "the dead-letter subject is the consumer's own stream's")

	sub, err = nats.NewSubscriber(nc, nats.SubscriberConfig{Topology: topo, ProgressInterval: time.Hour, Logger: quiet})
	require.NoError(t, err)
	_, err = sub.Subscribe(ctx)
	assert.ErrorIs(t, err, nats.ErrTopology, "a progress interval longer than AckWait")
}

// TestLeaseOutlivesAckWait holds a message three times as long as the
// consumer's AckWait: the server does not deliver it to another Source,
// and the Ack succeeds.
func TestLeaseOutlivesAckWait(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	topo.AckWait = time.Second
	provision(t, nc, topo)
	env := envelope(t, topo.Subjects[0], "k", 1)
	require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{env}))

	sub := newSubscriber(t, nc, topo, nats.SubscriberConfig{})
	a := subscribe(t, sub)
	m, err := a.Receive(t.Context())
	require.NoError(t, err)

	b := subscribe(t, sub)
	ctx, cancel := context.WithTimeout(t.Context(), 3*topo.AckWait)
	defer cancel()
	_, err = b.Receive(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "the held message went to another Source")

	require.NoError(t, m.Settler.Ack(t.Context()))
	require.ErrorIs(t, m.Settler.Ack(t.Context()), brokers.ErrSettled)
}

// TestRetryHonoursTheDelay redelivers a message no earlier than its delay.
func TestRetryHonoursTheDelay(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{envelope(t, topo.Subjects[0], "", 1)}))
	src := subscribe(t, newSubscriber(t, nc, topo, nats.SubscriberConfig{}))

	m, err := src.Receive(t.Context())
	require.NoError(t, err)
	const delay = 300 * time.Millisecond
	start := time.Now()
	require.NoError(t, m.Settler.Retry(t.Context(), delay))
	again, err := src.Receive(t.Context())
	require.NoError(t, err)
	assert.GreaterOrEqual(t, time.Since(start), delay, "redelivered before the delay")
	assert.Equal(t, m.Attempt+1, again.Attempt)
	require.NoError(t, again.Settler.Ack(t.Context()))
}

// TestDeadLetterTerminates checks that a dead-lettered message is gone from
// the consumer, on whichever server version: nothing is left pending.
func TestDeadLetterTerminates(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	env := envelope(t, topo.Subjects[0], "k", 1)
	require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{env}))
	sub := newSubscriber(t, nc, topo, nats.SubscriberConfig{})
	src := subscribe(t, sub)
	m, err := src.Receive(t.Context())
	require.NoError(t, err)
	d := brokers.DeadLetter{Reason: brokers.ReasonRejected, Err: errors.New("line one\nline two"), Attempts: 1, Topic: m.Topic}
	require.NoError(t, m.Settler.DeadLetter(t.Context(), d))

	js, err := jetstream.New(nc)
	require.NoError(t, err)
	cons, err := js.Consumer(t.Context(), topo.Stream, topo.Consumer)
	require.NoError(t, err)
	info, err := cons.Info(t.Context())
	require.NoError(t, err)
	assert.Zero(t, info.NumAckPending, "the original is terminated")

	dead := stored(t, nc, topo.Stream+nats.DeadLetterStreamSuffix)
	require.Len(t, dead, 1)
	assert.Equal(t, sub.Topology().DeadLetterSubject, dead[0].Subject)
	assert.Equal(t, "line one line two", dead[0].Header.Get(brokers.HeaderDeadLetterError), "NATS carries no line breaks")
	assert.Equal(t, env.ID.String(), dead[0].Header.Get(wire.HeaderEventID))
	assert.Equal(t, "k", dead[0].Header.Get(brokers.HeaderKey))
}

// TestBareBody consumes what python-cqrs publishes, a JSON body and no
// header at all, through a Consumer and an EventMediator.
func TestBareBody(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	id := uuid.Must(uuid.NewV7())
	body := fmt.Sprintf(`{"event_id":%q,"event_timestamp":"2024-05-01T12:34:56.123456","event_name":"order.placed",`+
		`"topic":%q,"payload":{"order":"o-7","seq":7}}`, id, topo.Subjects[0])
	_, err = js.PublishMsg(t.Context(), &natsgo.Msg{Subject: topo.Subjects[0], Data: []byte(body)})
	require.NoError(t, err)

	got := make(chan events.Notification[orderPlaced], 1)
	run := startConsumer(t, newSubscriber(t, nc, topo, nats.SubscriberConfig{}), nil,
		func(_ context.Context, ev events.Notification[orderPlaced]) error {
			got <- ev
			return nil
		})
	select {
	case ev := <-got:
		assert.Equal(t, id, ev.ID)
		assert.Equal(t, orderPlaced{Order: "o-7", Seq: 7}, ev.Payload)
		assert.Equal(t, time.Date(2024, 5, 1, 12, 34, 56, 123456000, time.UTC), ev.Timestamp)
		assert.Equal(t, topo.Subjects[0], ev.Topic)
		assert.Empty(t, ev.Key, "python-cqrs sends no key")
	case <-time.After(30 * time.Second):
		t.Fatal("the bare event was not handled")
	}
	require.NoError(t, run.stop())
	assert.EqualValues(t, 1, run.c.Counters().Handled)
}

// subscribe opens a Source of sub, closed when tb ends.
func subscribe(tb testing.TB, sub brokers.Subscriber) brokers.Source {
	tb.Helper()
	src, err := sub.Subscribe(tb.Context())
	require.NoError(tb, err)
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		assert.NoError(tb, src.Close(ctx))
	})
	return src
}

// orderDecoder decodes order.placed.
func orderDecoder(tb testing.TB) *wire.Decoder {
	tb.Helper()
	var reg wire.Registry
	require.NoError(tb, wire.Register[orderPlaced](&reg, "order.placed"))
	dec, err := wire.NewDecoder(&reg, wire.DecoderOptions{})
	require.NoError(tb, err)
	return dec
}

// consumerRun is a brokers.Consumer running in the background.
type consumerRun struct {
	c      *brokers.Consumer
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// startConsumer runs a consumer of sub, decoding order.placed, whose
// handler is handle, until stop or the end of the test. cfg nil takes a
// test configuration.
func startConsumer(tb testing.TB, sub brokers.Subscriber, cfg *brokers.Config,
	handle func(context.Context, events.Notification[orderPlaced]) error,
) *consumerRun {
	tb.Helper()
	if cfg == nil {
		c := brokers.DefaultConfig()
		c.Name = "test"
		c.MaxConcurrency = 4
		c.Backoff = outbox.Backoff{Base: 5 * time.Millisecond, Max: 50 * time.Millisecond}
		c.Logger = quiet
		cfg = &c
	}
	c, err := brokers.NewConsumer(sub, orderDecoder(tb), func(ctx context.Context, ev events.Event) error {
		n, ok := ev.(events.Notification[orderPlaced])
		if !ok {
			return fmt.Errorf("unexpected %T", ev)
		}
		return handle(ctx, n)
	}, *cfg)
	require.NoError(tb, err)
	ctx, cancel := context.WithCancel(context.Background())
	r := &consumerRun{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- c.Run(ctx) }()
	tb.Cleanup(func() {
		if err := r.stop(); err != nil && !strings.Contains(err.Error(), "did not return") {
			tb.Logf("consumer: %v", err)
		}
	})
	return r
}

func (r *consumerRun) stop() error {
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(time.Minute):
			r.err = errors.New("the consumer did not return")
		}
	})
	return r.err
}

// TestConsumerDeleted deletes the consumer under an open Source: with
// Provision the Source provisions it again and goes on; without, the
// subscription ends for good.
func TestConsumerDeleted(t *testing.T) {
	t.Parallel()
	for _, prov := range []bool{true, false} {
		t.Run(fmt.Sprintf("provision=%v", prov), func(t *testing.T) {
			t.Parallel()
			nc := connect(t)
			js, err := jetstream.New(nc)
			require.NoError(t, err)
			topo := topology(t, nc)
			provision(t, nc, topo)
			sub, err := nats.NewSubscriber(nc, nats.SubscriberConfig{Topology: topo, Provision: prov, Logger: quiet})
			require.NoError(t, err)
			src := subscribe(t, sub)
			require.NoError(t, js.DeleteConsumer(t.Context(), topo.Stream, topo.Consumer))

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if !prov {
				for {
					_, err := src.Receive(ctx)
					require.Error(t, err)
					if errors.Is(err, outbox.ErrPermanent) {
						require.ErrorIs(t, err, nats.ErrTopology)
						return
					}
					require.NoError(t, ctx.Err(), "no permanent error")
				}
			}
			env := envelope(t, topo.Subjects[0], "k", 1)
			require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{env}))
			for {
				m, err := src.Receive(ctx)
				if err != nil {
					require.NoError(t, ctx.Err(), "the Source did not resume: %v", err)
					require.NotErrorIs(t, err, outbox.ErrPermanent)
					continue
				}
				assert.Equal(t, env.Payload, m.Body)
				require.NoError(t, m.Settler.Ack(t.Context()))
				return
			}
		})
	}
}
