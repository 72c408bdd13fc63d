package nats_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/brokers/nats/natstest"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
	"github.com/gocqrs/cqrs/internal/testenv"
)

// reconnecting are the options of a client that keeps reconnecting,
// quickly, and buffers nothing while disconnected.
func reconnecting() []natsgo.Option {
	return []natsgo.Option{
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(20 * time.Millisecond),
		natsgo.ReconnectJitter(0, 0),
		natsgo.ReconnectBufSize(-1),
		natsgo.Timeout(2 * time.Second),
	}
}

func dial(tb testing.TB, url string, opts ...natsgo.Option) *natsgo.Conn {
	tb.Helper()
	nc, err := natsgo.Connect(url, opts...)
	require.NoError(tb, err)
	tb.Cleanup(nc.Close)
	return nc
}

// statuses reports the connection statuses of nc.
func statuses(tb testing.TB, nc *natsgo.Conn) <-chan natsgo.Status {
	tb.Helper()
	ch := nc.StatusChanged(natsgo.CONNECTED, natsgo.RECONNECTING)
	tb.Cleanup(func() { nc.RemoveStatusListener(ch) })
	return ch
}

func waitStatus(tb testing.TB, ch <-chan natsgo.Status, want natsgo.Status) {
	tb.Helper()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	for {
		select {
		case st := <-ch:
			if st == want {
				return
			}
		case <-timer.C:
			tb.Fatalf("the connection did not become %v", want)
		}
	}
}

// stream is a relay and a consumer moving events from an outbox through
// the server, for the fault tests.
type stream struct {
	ids   []uuid.UUID
	got   *handled
	c     *brokers.Consumer
	stop  context.CancelFunc
	group *errgroup.Group
}

// flow adds n events (over 8 keys) to an outbox, and starts a relay
// sending them with a Sender on pub and a consumer receiving them with a
// Subscriber of topo on sub. The consumer's handler records the events.
func flow(t *testing.T, pub, sub *natsgo.Conn, topo nats.Topology, n int) *stream {
	t.Helper()
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	var enc wire.Encoder
	s := &stream{got: newHandled()}
	require.NoError(t, store.InTx(t.Context(), func(ctx context.Context) error {
		for i := range n {
			key := fmt.Sprintf("k-%d", i%8)
			ev := events.NewNotification("order.placed", orderPlaced{Order: key, Seq: i / 8}).WithTopic(topo.Subjects[0]).WithKey(key)
			env, err := enc.Encode(ev)
			if err != nil {
				return err
			}
			s.ids = append(s.ids, ev.ID)
			if err := store.Add(ctx, env); err != nil {
				return err
			}
		}
		return nil
	}))
	rcfg := outbox.DefaultRelayConfig()
	rcfg.Logger, rcfg.BatchSize, rcfg.PollInterval = quiet, 16, 20*time.Millisecond
	rcfg.Backoff = outbox.Backoff{Base: 20 * time.Millisecond, Max: 200 * time.Millisecond}
	rcfg.MaxAttempts = 1000
	relay, err := outbox.NewRelay(store, newSender(t, pub, nats.SenderConfig{AckTimeout: 2 * time.Second}), rcfg)
	require.NoError(t, err)

	ccfg := brokers.DefaultConfig()
	ccfg.Name, ccfg.MaxConcurrency, ccfg.MaxInFlight, ccfg.Logger = "fault", 4, 32, quiet
	ccfg.Backoff = outbox.Backoff{Base: 10 * time.Millisecond, Max: 100 * time.Millisecond}
	ccfg.SettleTimeout = 5 * time.Second
	handler := func(ctx context.Context, ev events.Event) error {
		n, ok := ev.(events.Notification[orderPlaced])
		if !ok {
			return fmt.Errorf("unexpected %T", ev)
		}
		s.got.add(ctx, n)
		return nil
	}
	subscriber := newSubscriber(t, sub, topo, nats.SubscriberConfig{PullExpiry: 2 * time.Second})
	s.c, err = brokers.NewConsumer(subscriber, orderDecoder(t), handler, ccfg)
	require.NoError(t, err)

	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	s.group = new(errgroup.Group)
	s.group.Go(func() error { return relay.Run(ctx) })
	s.group.Go(func() error { return s.c.Run(ctx) })
	t.Cleanup(func() { _ = s.end() })
	return s
}

func (s *stream) end() error {
	s.stop()
	return s.group.Wait()
}

// atLeast returns a condition: at least n distinct events handled.
func atLeast(n int) func(map[uuid.UUID]int) bool {
	return func(seen map[uuid.UUID]int) bool { return len(seen) >= n }
}

// check asserts that every event was handled, and reports the duplicates.
func (s *stream) check(t *testing.T) {
	t.Helper()
	s.got.mu.Lock()
	defer s.got.mu.Unlock()
	dups := 0
	for _, id := range s.ids {
		require.Positive(t, s.got.seen[id], "event %s was lost", id)
		dups += s.got.seen[id] - 1
	}
	t.Logf("%d events handled, %d duplicates (redelivered after a lost settle, absorbed by an inbox in production)", len(s.ids), dups)
}

// TestConnectionCutMidStream cuts every connection, the relay's and the
// consumer's, three times while events flow through a proxy: every event
// is handled, none is lost.
func TestConnectionCutMidStream(t *testing.T) {
	t.Parallel()
	e := natstest.Run(t)
	p := testenv.NewProxy(t, e.Addr())
	pub := dial(t, "nats://"+p.Addr(), reconnecting()...)
	sub := dial(t, "nats://"+p.Addr(), reconnecting()...)
	topo := topology(t, pub)
	topo.AckWait = 2 * time.Second // what a lost settle leaves comes back within it
	provision(t, pub, topo)
	subStatus := statuses(t, sub)

	const total = 800
	s := flow(t, pub, sub, topo, total)
	for _, at := range []int{total / 8, total / 3, total * 2 / 3} {
		s.got.waitFor(t, fmt.Sprintf("%d events handled", at), 30*time.Second, atLeast(at))
		p.Cut()
		waitStatus(t, subStatus, natsgo.RECONNECTING)
		waitStatus(t, subStatus, natsgo.CONNECTED)
	}
	s.got.waitFor(t, "every event handled", 60*time.Second, all(s.ids))
	require.NoError(t, s.end())
	s.check(t)
	c := s.c.Counters()
	assert.Positive(t, c.ReceiveErrors, "the Source reports the lost connection")
	assert.Zero(t, c.DeadLettered)
}

// TestBrokerRestartMidStream stops the server and starts it again, with its
// data, while events flow: every event is handled, none is lost.
func TestBrokerRestartMidStream(t *testing.T) {
	t.Parallel()
	e := natstest.Run(t)
	pub := dial(t, e.URL(), reconnecting()...)
	sub := dial(t, e.URL(), reconnecting()...)
	topo := topology(t, pub)
	topo.Storage = jetstream.FileStorage // kept across the restart
	topo.AckWait = 2 * time.Second
	provision(t, pub, topo)
	subStatus := statuses(t, sub)

	const total = 600
	s := flow(t, pub, sub, topo, total)
	s.got.waitFor(t, "a third of the events handled", 30*time.Second, atLeast(total/3))
	e.Stop()
	waitStatus(t, subStatus, natsgo.RECONNECTING)
	e.Start()
	waitStatus(t, subStatus, natsgo.CONNECTED)
	s.got.waitFor(t, "every event handled after the restart", 60*time.Second, all(s.ids))
	require.NoError(t, s.end())
	s.check(t)
	assert.Positive(t, s.c.Counters().ReceiveErrors, "the Source reports the lost connection")
}

// TestSettleWhileDisconnected settles a message while the connection is
// down: the settle fails at once, the Source reports the loss once, and
// the server delivers the message again once the client is back.
func TestSettleWhileDisconnected(t *testing.T) {
	t.Parallel()
	e := natstest.Run(t)
	p := testenv.NewProxy(t, e.Addr())
	nc := dial(t, "nats://"+p.Addr(), reconnecting()...)
	topo := topology(t, nc)
	topo.AckWait = time.Second
	provision(t, nc, topo)
	st := statuses(t, nc)
	require.NoError(t, newSender(t, nc, nats.SenderConfig{}).Send(t.Context(), []wire.Envelope{envelope(t, topo.Subjects[0], "k", 1)}))
	src := subscribe(t, newSubscriber(t, nc, topo, nats.SubscriberConfig{}))
	m, err := src.Receive(t.Context())
	require.NoError(t, err)

	p.SetDown(true)
	waitStatus(t, st, natsgo.RECONNECTING)
	err = m.Settler.Ack(t.Context())
	require.ErrorIs(t, err, nats.ErrDisconnected)
	se, ok := errors.AsType[*nats.SettleError](err)
	require.True(t, ok, "a *SettleError, got %v", err)
	assert.Equal(t, "ack", se.Op)
	_, err = src.Receive(t.Context())
	require.ErrorIs(t, err, nats.ErrDisconnected, "Receive reports the loss")
	require.NotErrorIs(t, err, outbox.ErrPermanent, "a transient error")

	p.SetDown(false)
	waitStatus(t, st, natsgo.CONNECTED)
	again, err := src.Receive(t.Context())
	require.NoError(t, err)
	assert.Equal(t, m.Body, again.Body, "the message whose Ack failed is delivered again")
	assert.Greater(t, again.Attempt, m.Attempt)
	require.NoError(t, again.Settler.Ack(t.Context()))
}

// TestConnectionClosed ends the subscription for good once its connection
// is closed.
func TestConnectionClosed(t *testing.T) {
	t.Parallel()
	e := natstest.Run(t)
	nc := dial(t, e.URL())
	topo := topology(t, nc)
	provision(t, nc, topo)
	src, err := newSubscriber(t, nc, topo, nats.SubscriberConfig{}).Subscribe(t.Context())
	require.NoError(t, err)
	nc.Close()
	_, err = src.Receive(t.Context())
	require.ErrorIs(t, err, outbox.ErrPermanent)
	require.ErrorIs(t, err, natsgo.ErrConnectionClosed)
	require.NoError(t, src.Close(t.Context()))
	_, err = src.Receive(t.Context())
	require.ErrorIs(t, err, brokers.ErrClosed)
}
