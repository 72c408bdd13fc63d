package nats_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sync/errgroup"

	"github.com/gocqrs/cqrs/bootstrap"
	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/brokers/nats"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// handled records what a consumer's handler saw.
type handled struct {
	mu      sync.Mutex
	calls   []events.Notification[orderPlaced]
	lineage map[uuid.UUID]events.Lineage
	seen    map[uuid.UUID]int
	changed chan struct{}
}

func newHandled() *handled {
	return &handled{lineage: make(map[uuid.UUID]events.Lineage), seen: make(map[uuid.UUID]int), changed: make(chan struct{})}
}

func (h *handled) add(ctx context.Context, ev events.Notification[orderPlaced]) {
	lin, _ := events.LineageFrom(ctx)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, ev)
	h.lineage[ev.ID] = lin
	h.seen[ev.ID]++
	close(h.changed)
	h.changed = make(chan struct{})
}

// waitFor waits until cond holds for the distinct events seen, for at
// most timeout.
func (h *handled) waitFor(tb testing.TB, what string, timeout time.Duration, cond func(seen map[uuid.UUID]int) bool) {
	tb.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		h.mu.Lock()
		ok, ch, n := cond(h.seen), h.changed, len(h.seen)
		h.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-timer.C:
			tb.Fatalf("timed out waiting for %s (%d distinct events handled)", what, n)
		}
	}
}

// all reports whether every id has been seen.
func all(ids []uuid.UUID) func(map[uuid.UUID]int) bool {
	return func(seen map[uuid.UUID]int) bool {
		for _, id := range ids {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	}
}

// TestRoundTrip sends events from an outbox, through a relay calling the
// Sender, to a Consumer handing them to an EventMediator: every event is
// handled once (the inbox absorbs redeliveries), in order per key, and
// continues its correlation.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	nc := connect(t)
	topo := topology(t, nc)
	provision(t, nc, topo)

	// The producing service: a command writes its events to the outbox.
	store := outbox.NewMemoryStore(outbox.MemoryOptions{})
	const keys, perKey = 5, 20
	var ids []uuid.UUID
	var enc wire.Encoder
	require.NoError(t, store.InTx(t.Context(), func(ctx context.Context) error {
		for seq := range perKey {
			for k := range keys {
				ev := events.NewNotification("order.placed", orderPlaced{Order: fmt.Sprintf("o-%d", k), Seq: seq}).
					WithTopic(topo.Subjects[0]).WithKey(fmt.Sprintf("customer-%d", k))
				env, err := enc.Encode(ev)
				if err != nil {
					return err
				}
				env.CorrelationID, env.CausationID = "request-42", "request-42"
				if err := store.Add(ctx, env); err != nil {
					return err
				}
				ids = append(ids, ev.ID)
			}
		}
		return nil
	}))

	// The consuming service.
	got := newHandled()
	em, err := bootstrap.Events(nil, bootstrap.WithDomainEvents(func(m *events.Map) {
		events.BindHandler(m, events.HandlerFunc[events.Notification[orderPlaced]](
			func(ctx context.Context, ev events.Notification[orderPlaced]) ([]events.Event, error) {
				got.add(ctx, ev)
				return nil, nil
			}))
	}))
	require.NoError(t, err)
	in := inbox.NewMemoryStore(inbox.MemoryOptions{})
	ccfg := brokers.DefaultConfig()
	ccfg.Name, ccfg.MaxConcurrency, ccfg.Logger = "billing", 8, quiet
	ccfg.Inbox, ccfg.Transactor = in, in
	consumer, err := brokers.NewConsumer(newSubscriber(t, nc, topo, nats.SubscriberConfig{}), orderDecoder(t), em.Send, ccfg)
	require.NoError(t, err)

	rcfg := outbox.DefaultRelayConfig()
	rcfg.Logger, rcfg.BatchSize = quiet, 32
	relay, err := outbox.NewRelay(store, newSender(t, nc, nats.SenderConfig{}), rcfg)
	require.NoError(t, err)

	ctx, stop := context.WithCancel(context.Background())
	var g errgroup.Group
	g.Go(func() error { return relay.Run(ctx) })
	g.Go(func() error { return consumer.Run(ctx) })
	got.waitFor(t, "every event handled", 30*time.Second, all(ids))
	stop()
	require.NoError(t, g.Wait())

	got.mu.Lock()
	defer got.mu.Unlock()
	next := make(map[string]int)
	for _, ev := range got.calls {
		assert.Equal(t, next[ev.Key], ev.Payload.Seq, "key %s handled out of order", ev.Key)
		next[ev.Key] = ev.Payload.Seq + 1
		assert.Equal(t, events.Lineage{CorrelationID: "request-42", CausationID: ev.ID.String()}, got.lineage[ev.ID])
		assert.Equal(t, topo.Subjects[0], ev.Topic)
	}
	for _, id := range ids {
		assert.Equal(t, 1, got.seen[id], "event %s handled more than once", id)
	}
	st, err := store.Stats(t.Context())
	require.NoError(t, err)
	assert.Zero(t, st.Pending, "every row sent")
	c := consumer.Counters()
	assert.EqualValues(t, len(ids), c.Handled)
	assert.Zero(t, c.DeadLettered)
}
