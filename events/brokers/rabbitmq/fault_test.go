package rabbitmq_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/rabbitmq"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// Messages flow from a Sender to a Consumer, both through a proxy that
// cuts every connection three times along the way: every message is
// handled, none is lost.
func TestConnectionCutMidStream(t *testing.T) {
	t.Parallel()
	u := brokerURL(t)
	topo, topic := testTopology("fault", rabbitmq.QueueQuorum)
	provision(t, u, topo)
	p := newProxy(t, u)
	pu := proxied(t, p, u)

	sub, err := rabbitmq.NewSubscriber(rabbitmq.SubscriberConfig{
		URL: pu, Topology: topo, Declare: true, Prefetch: 32, Logger: quiet,
		Reconnect: outbox.Backoff{Base: time.Millisecond, Max: 20 * time.Millisecond},
	})
	require.NoError(t, err)
	var (
		mu    sync.Mutex
		count = make(map[uuid.UUID]int)
	)
	got := newHandled()
	cfg := consumerConfig()
	cfg.MaxConcurrency = 8
	cfg.MaxInFlight = 32
	c, err := brokers.NewConsumer(sub, newDecoder(t), func(ctx context.Context, ev events.Event) error {
		n, ok := ev.(events.Notification[orderPlaced])
		if !ok {
			return fmt.Errorf("unexpected %T", ev)
		}
		mu.Lock()
		count[n.ID]++
		mu.Unlock()
		got.add(ctx, n)
		return nil
	}, cfg)
	require.NoError(t, err)
	stop := run(t, c)

	const total, batch = 600, 20
	var sent []wire.Envelope
	for i := range total {
		sent = append(sent, encode(t, topic, "k-"+strconv.Itoa(i%7), i))
	}
	sender := newSender(t, pu, topo.Exchange)
	produced := make(chan error, 1)
	go func() { produced <- produce(t.Context(), sender, sent, batch) }()

	distinct := func(n int) func([]events.Notification[orderPlaced]) bool {
		return func(evs []events.Notification[orderPlaced]) bool {
			seen := make(map[uuid.UUID]bool, len(evs))
			for _, ev := range evs {
				seen[ev.ID] = true
			}
			return len(seen) >= n
		}
	}
	for _, at := range []int{total / 6, total / 2, 5 * total / 6} {
		got.wait(t, time.Minute, strconv.Itoa(at)+" events handled", distinct(at))
		opened := p.Accepted()
		p.Cut()
		waitOpened(t, p, opened, time.Minute)
	}
	select {
	case err := <-produced:
		require.NoError(t, err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the producer did not finish")
	}
	got.wait(t, time.Minute, "every event handled", distinct(total))
	require.NoError(t, stop())

	mu.Lock()
	defer mu.Unlock()
	for _, env := range sent {
		assert.GreaterOrEqual(t, count[env.ID], 1, "event %s was lost", env.ID)
	}
	counters := c.Counters()
	assert.GreaterOrEqual(t, counters.ReceiveErrors, uint64(1), "the consumer saw the connection go")
	assert.Zero(t, counters.DeadLettered)
	t.Logf("handled %d, received %d, duplicates handled %d, receive errors %d, settle errors %d",
		counters.Handled, counters.Received, counters.Handled-total, counters.ReceiveErrors, counters.SettleErrors)
}

// produce sends envs in batches as an outbox relay would: a failed record
// (and the later records of its key) is sent again, until every one is
// confirmed.
func produce(ctx context.Context, s outbox.Sender, envs []wire.Envelope, batch int) error {
	pending := envs
	for len(pending) > 0 {
		n := min(batch, len(pending))
		chunk := pending[:n]
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := s.Send(sctx, chunk)
		cancel()
		var failed []wire.Envelope
		if be, ok := errors.AsType[*outbox.BatchError](err); ok {
			for i, e := range be.Errs {
				if e != nil {
					if errors.Is(e, outbox.ErrPermanent) {
						return e
					}
					failed = append(failed, chunk[i])
				}
			}
		} else if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed = chunk
		}
		pending = append(failed, pending[n:]...)
	}
	return nil
}
