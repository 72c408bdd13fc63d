package brokers_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events"
	"github.com/gocqrs/cqrs/events/brokers"
	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

func TestMaxBatchRequiresATransactor(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.MaxBatch = 8
	err := cfg.Validate()
	require.ErrorIs(t, err, brokers.ErrInvalidConfig)
	assert.Contains(t, err.Error(), "MaxBatch (8) requires a Transactor")
	cfg.MaxBatch = -1
	assert.ErrorContains(t, cfg.Validate(), "MaxBatch must be 0 or positive")
	cfg.MaxBatch, cfg.Transactor = 8, outbox.MemoryTransactor{}
	require.NoError(t, cfg.Validate())
}

// effects records, per event, the committed effects of its handler, and
// the transactions they committed in.
type effects struct {
	mu    sync.Mutex
	byID  map[string]int
	byKey map[string][]string
	txs   map[*outbox.MemoryTx]int
}

func newEffects() *effects {
	return &effects{byID: map[string]int{}, byKey: map[string][]string{}, txs: map[*outbox.MemoryTx]int{}}
}

// apply registers the effect of n, applied when its transaction commits.
func (e *effects) apply(ctx context.Context, n events.Notification[orderPlaced]) error {
	tx, ok := outbox.TxFromContext[*outbox.MemoryTx](ctx)
	if !ok {
		return fmt.Errorf("no transaction")
	}
	return tx.OnEnd(func(committed bool) {
		if !committed {
			return
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		e.byID[n.Payload.ID]++
		e.byKey[n.Key] = append(e.byKey[n.Key], n.Payload.ID)
		e.txs[tx]++
	})
}

// batchRun sends total events over keys keys, runs a consumer with
// MaxBatch 16 over an in-memory inbox until every event has an effect,
// and returns the effects and the consumer's counters.
func batchRun(t *testing.T, total, keys int, fail func(id string, call int) error) (*effects, brokers.Counters, []wire.Envelope) {
	t.Helper()
	h := newMemoryHarness(t)
	var envs []wire.Envelope
	for i := range total {
		envs = append(envs, envelope(t, fmt.Sprintf("k-%d", i%keys), fmt.Sprintf("o-%03d", i)))
	}
	h.send(envs...)
	h.send(envs[3], envs[7]) // two duplicates, absorbed by the inbox
	store := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg := testConfig()
	cfg.MaxConcurrency, cfg.MaxInFlight, cfg.MaxBatch = 2, 64, 16
	cfg.Inbox, cfg.Transactor = store, store
	eff := newEffects()
	var mu sync.Mutex
	calls := map[string]int{}
	done := newSignal()
	// The first handler calls wait until 40 messages were received: the
	// others then queue up for a slot, as behind slow transactions.
	received := newSignal()
	var count sync.Mutex
	seen := 0
	sub := brokers.SubscriberFunc(func(ctx context.Context) (brokers.Source, error) {
		src, err := h.sub.Subscribe(ctx)
		if err != nil {
			return nil, err
		}
		return receiveHook{Source: src, after: func() {
			count.Lock()
			defer count.Unlock()
			if seen++; seen == 40 {
				received.fire()
			}
		}}, nil
	})
	// The gate opens once 40 messages were received and a first handler
	// call holds a slot: the other messages are then waiting for the
	// other.
	busy, gate := newSignal(), newSignal()
	go func() {
		<-received.ch
		<-busy.ch
		gate.fire()
	}()
	started := 0
	c, err := brokers.NewConsumer(sub, newDecoder(t), func(ctx context.Context, ev events.Event) error {
		n, _ := ev.(events.Notification[orderPlaced])
		mu.Lock()
		calls[n.Payload.ID]++
		call := calls[n.Payload.ID]
		started++
		wait := started <= cfg.MaxConcurrency
		if started == 1 {
			busy.fire()
		}
		mu.Unlock()
		if wait {
			select {
			case <-gate.ch:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if fail != nil {
			if err := fail(n.Payload.ID, call); err != nil {
				return err
			}
		}
		if err := eff.apply(ctx, n); err != nil {
			return err
		}
		tx, _ := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		return tx.OnEnd(func(committed bool) {
			eff.mu.Lock()
			all := len(eff.byID) == total
			eff.mu.Unlock()
			if committed && all {
				done.fire()
			}
		})
	}, cfg)
	require.NoError(t, err)
	stop := runConsumer(t, c)
	waitFor(t, done.ch, "every event's effect")
	require.NoError(t, stop())
	return eff, c.Counters(), envs
}

// Messages waiting together are handled in shared transactions: every
// effect exactly once, in order per key, duplicates absorbed, fewer
// transactions than events. Whether messages wait together depends on when
// the workers run, so a run may form no batch; among ten runs, one must.
func TestBatchesShareATransaction(t *testing.T) {
	t.Parallel()
	const total, keys = 300, 12
	batched := false
	for run := 0; run < 10 && !batched; run++ {
		eff, cs, envs := batchRun(t, total, keys, nil)
		for i := range total {
			assert.Equal(t, 1, eff.byID[fmt.Sprintf("o-%03d", i)], "event %d", i)
		}
		for k := range keys {
			var want []string
			for i := k; i < total; i += keys {
				want = append(want, fmt.Sprintf("o-%03d", i))
			}
			assert.Equal(t, want, eff.byKey[envs[k].Key], "order of key %s", envs[k].Key)
		}
		assert.Zero(t, cs.BatchesRolledBack)
		t.Logf("run %d: %d events in %d transactions, %d of them batches", run, total, len(eff.txs), cs.Batches)
		batched = cs.Batches > 0 && len(eff.txs) < total
	}
	assert.True(t, batched, "no run formed a batch")
}

// A failure in a batch rolls it back; its messages are then handled one by
// one, so the others commit and the failing one is retried on its own.
func TestAFailureInABatchFallsBackToSingles(t *testing.T) {
	t.Parallel()
	const total, keys = 200, 10
	eff, cs, _ := batchRun(t, total, keys, func(id string, call int) error {
		if (id == "o-050" || id == "o-120") && call <= 2 {
			return errBoom
		}
		return nil
	})
	for i := range total {
		assert.Equal(t, 1, eff.byID[fmt.Sprintf("o-%03d", i)], "event %d", i)
	}
	t.Logf("%d batches, %d rolled back", cs.Batches, cs.BatchesRolledBack)
	assert.Positive(t, cs.Retried, "the failing events retried on their own")
	assert.Zero(t, cs.DeadLettered)
}

// receiveHook calls after once per message received.
type receiveHook struct {
	brokers.Source
	after func()
}

func (r receiveHook) Receive(ctx context.Context) (brokers.Message, error) {
	m, err := r.Source.Receive(ctx)
	if err == nil {
		r.after()
	}
	return m, err
}

// Stopping while messages wait for a slot to be batched releases them all;
// the next consumer applies every effect once.
func TestStopReleasesMessagesWaitingForABatch(t *testing.T) {
	t.Parallel()
	h := newMemoryHarness(t)
	const total = 60
	var envs []wire.Envelope
	for i := range total {
		envs = append(envs, envelope(t, fmt.Sprintf("k-%d", i%6), fmt.Sprintf("o-%03d", i)))
	}
	h.send(envs...)
	store := inbox.NewMemoryStore(inbox.MemoryOptions{})
	cfg := testConfig()
	cfg.MaxConcurrency, cfg.MaxInFlight, cfg.MaxBatch = 1, 32, 8
	cfg.Inbox, cfg.Transactor = store, store
	cfg.DrainTimeout = 0 // the blocked handler is cancelled at once
	eff := newEffects()

	received, holding := newSignal(), newSignal()
	var mu sync.Mutex
	seen := 0
	sub := brokers.SubscriberFunc(func(ctx context.Context) (brokers.Source, error) {
		src, err := h.sub.Subscribe(ctx)
		if err != nil {
			return nil, err
		}
		return receiveHook{Source: src, after: func() {
			mu.Lock()
			defer mu.Unlock()
			if seen++; seen == 20 {
				received.fire()
			}
		}}, nil
	})
	first, err := brokers.NewConsumer(sub, newDecoder(t), func(ctx context.Context, ev events.Event) error {
		holding.fire()
		<-ctx.Done() // holds the only slot until the consumer stops
		return ctx.Err()
	}, cfg)
	require.NoError(t, err)
	stop := runConsumer(t, first)
	waitFor(t, received.ch, "20 messages received")
	waitFor(t, holding.ch, "the slot held")
	require.NoError(t, stop())
	cs := first.Counters()
	assert.Zero(t, cs.Handled)
	assert.Positive(t, cs.Released)

	done := newSignal()
	second := h.consumer(cfg, func(ctx context.Context, ev events.Event) error {
		n, _ := ev.(events.Notification[orderPlaced])
		if err := eff.apply(ctx, n); err != nil {
			return err
		}
		tx, _ := outbox.TxFromContext[*outbox.MemoryTx](ctx)
		return tx.OnEnd(func(committed bool) {
			eff.mu.Lock()
			all := len(eff.byID) == total
			eff.mu.Unlock()
			if committed && all {
				done.fire()
			}
		})
	})
	stop2 := runConsumer(t, second)
	waitFor(t, done.ch, "every effect, by the next consumer")
	require.NoError(t, stop2())
	for _, env := range envs {
		n, err := wire.DecodeAs[orderPlaced](newDecoder(t), env)
		require.NoError(t, err)
		assert.Equal(t, 1, eff.byID[n.Payload.ID], "event %s", n.Payload.ID)
	}
}
