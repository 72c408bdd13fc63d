// Package inboxtest is the conformance kit of inbox stores: [Run] checks
// every property of the inbox.Store contract as a subtest, for the memory
// store and the SQL stores in their own modules.
//
//	func TestInboxConformance(t *testing.T) {
//		inboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (inbox.Store, outbox.Transactor) {
//			t.Helper()
//			db := openTestDatabase(t) // a *postgres.DB on a fresh schema
//			s, err := postgres.NewInbox(db, postgres.InboxOptions{Clock: clock})
//			require.NoError(t, err)
//			require.NoError(t, s.EnsureSchema(t.Context()))
//			return s, db
//		})
//	}
//
// The subtests run in parallel, each with a store of its own, and control
// time through the clock passed to the factory. They never sleep.
package inboxtest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/inbox"
	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
)

// Factory returns a new, empty inbox store that reads the time from clock,
// and the Transactor of its database. Every call must return a store
// isolated from the stores of other calls, since subtests run in parallel.
type Factory func(t *testing.T, clock outbox.Clock) (inbox.Store, outbox.Transactor)

type harness struct {
	t     *testing.T
	ctx   context.Context
	store inbox.Store
	tx    outbox.Transactor
	clock *outboxtest.Clock
}

// record records (consumer, id) in a transaction of its own.
func (h *harness) record(consumer string, id uuid.UUID) bool {
	h.t.Helper()
	var first bool
	require.NoError(h.t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		var err error
		first, err = h.store.Record(ctx, consumer, id)
		return err
	}))
	return first
}

func (h *harness) seen(consumer string, id uuid.UUID) bool {
	h.t.Helper()
	ok, err := h.store.Seen(h.ctx, consumer, id)
	require.NoError(h.t, err)
	return ok
}

var errRollback = errors.New("inboxtest: roll back")

// Run runs the conformance subtests against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(h *harness)
	}{
		{"RecordRequiresTx", testRequiresTx},
		{"RecordAfterTxEnded", testAfterTxEnded},
		{"RecordArguments", testArguments},
		{"FirstThenDuplicate", testFirstThenDuplicate},
		{"ConsumersAreIndependent", testConsumers},
		{"TwiceInOneTx", testTwiceInOneTx},
		{"UncommittedNotSeen", testUncommitted},
		{"RollbackForgets", testRollback},
		{"WaitsForOpenTx", testWaitsForOpenTx},
		{"ConcurrentRedelivery", testConcurrentRedelivery},
		{"Purge", testPurge},
		{"Deduplicator", testDeduplicator},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clock := outboxtest.NewClock()
			s, tx := newStore(t, clock)
			require.NotNil(t, s, "factory returned a nil store")
			require.NotNil(t, tx, "factory returned a nil transactor")
			tt.fn(&harness{t: t, ctx: t.Context(), store: s, tx: tx, clock: clock})
		})
	}
}

func testRequiresTx(h *harness) {
	t := h.t
	_, err := h.store.Record(h.ctx, "c", uuid.New())
	require.ErrorIs(t, err, outbox.ErrNoTx)
}

func testAfterTxEnded(h *harness) {
	t := h.t
	var leaked context.Context
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		leaked = ctx
		return nil
	}))
	id := uuid.New()
	_, err := h.store.Record(leaked, "c", id)
	require.ErrorIs(t, err, outbox.ErrTxDone)
	assert.False(t, h.seen("c", id))
}

func testArguments(h *harness) {
	t := h.t
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		_, err := h.store.Record(ctx, "", uuid.New())
		require.ErrorIs(t, err, outbox.ErrInvalidArgument)
		_, err = h.store.Record(ctx, "c", uuid.Nil)
		require.ErrorIs(t, err, outbox.ErrInvalidArgument)
		return nil
	}))
}

func testFirstThenDuplicate(h *harness) {
	t := h.t
	id := uuid.New()
	assert.False(t, h.seen("c", id))
	assert.True(t, h.record("c", id), "first delivery")
	assert.True(t, h.seen("c", id))
	assert.False(t, h.record("c", id), "redelivery")
	assert.False(t, h.record("c", id), "and again")
}

func testConsumers(h *harness) {
	t := h.t
	id := uuid.New()
	assert.True(t, h.record("billing", id))
	assert.True(t, h.record("shipping", id), "each consumer processes the event once")
	assert.True(t, h.record("billing", uuid.New()))
	assert.False(t, h.record("shipping", id))
}

func testTwiceInOneTx(h *harness) {
	t := h.t
	id := uuid.New()
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		first, err := h.store.Record(ctx, "c", id)
		require.NoError(t, err)
		assert.True(t, first)
		first, err = h.store.Record(ctx, "c", id)
		require.NoError(t, err)
		assert.False(t, first, "the second record in one transaction is a duplicate")
		return nil
	}))
	assert.True(t, h.seen("c", id))
}

func testUncommitted(h *harness) {
	t := h.t
	id := uuid.New()
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		first, err := h.store.Record(ctx, "c", id)
		require.NoError(t, err)
		assert.True(t, first)
		assert.False(t, h.seen("c", id), "not visible outside the transaction before it commits")
		return nil
	}))
	assert.True(t, h.seen("c", id))
}

func testRollback(h *harness) {
	t := h.t
	id := uuid.New()
	err := h.tx.InTx(h.ctx, func(ctx context.Context) error {
		if _, err := h.store.Record(ctx, "c", id); err != nil {
			return err
		}
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)
	assert.False(t, h.seen("c", id))
	assert.True(t, h.record("c", id), "a rolled-back record never existed")
}

// testWaitsForOpenTx records in one transaction, then records the same id
// from another goroutine while the first is open: the second learns the
// outcome of the first, whenever it runs.
func testWaitsForOpenTx(h *harness) {
	t := h.t
	for _, commit := range []bool{true, false} {
		id := uuid.New()
		result := make(chan bool, 1)
		err := h.tx.InTx(h.ctx, func(ctx context.Context) error {
			first, err := h.store.Record(ctx, "c", id)
			require.NoError(t, err)
			require.True(t, first)
			go func() {
				var first bool
				err := h.tx.InTx(h.ctx, func(ctx context.Context) error {
					var err error
					first, err = h.store.Record(ctx, "c", id)
					return err
				})
				assert.NoError(t, err)
				result <- first
			}()
			if commit {
				return nil
			}
			return errRollback
		})
		if commit {
			require.NoError(t, err)
			assert.False(t, <-result, "the first transaction committed: a duplicate")
		} else {
			require.ErrorIs(t, err, errRollback)
			assert.True(t, <-result, "the first transaction rolled back: the second is first")
		}
	}
}

func testConcurrentRedelivery(h *harness) {
	t := h.t
	const deliveries = 8
	id := uuid.New()
	var (
		applied, firsts atomic.Int32
		wg              sync.WaitGroup
	)
	d := inbox.Deduplicator{Consumer: "c", Store: h.store, Transactor: h.tx}
	for range deliveries {
		wg.Go(func() {
			dup, err := d.Process(h.ctx, id, func(context.Context) error {
				applied.Add(1)
				return nil
			})
			assert.NoError(t, err)
			if !dup {
				firsts.Add(1)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int32(1), applied.Load(), "exactly one delivery applies its effects")
	assert.Equal(t, int32(1), firsts.Load(), "the others are reported as duplicates")
}

func testPurge(h *harness) {
	t := h.t
	old := []uuid.UUID{uuid.New(), uuid.New(), uuid.New()}
	for _, id := range old {
		h.record("c", id)
	}
	h.clock.Advance(time.Hour)
	recent := uuid.New()
	h.record("c", recent)
	h.clock.Advance(time.Hour)

	_, err := h.store.Purge(h.ctx, h.clock.Now(), 0)
	require.ErrorIs(t, err, outbox.ErrInvalidArgument)
	cutoff := outboxtest.Start().Add(30 * time.Minute)
	n, err := h.store.Purge(h.ctx, cutoff, 2)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n)
	n, err = h.store.Purge(h.ctx, cutoff, 10)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	for _, id := range old {
		assert.False(t, h.seen("c", id))
	}
	assert.True(t, h.seen("c", recent), "records made after the cutoff are kept")
	assert.True(t, h.record("c", old[0]), "a purged event is processed again")
}

func testDeduplicator(h *harness) {
	t := h.t
	d := inbox.Deduplicator{Consumer: "c", Store: h.store, Transactor: h.tx}
	id := uuid.New()
	calls := 0
	boom := errors.New("handler failed")
	dup, err := d.Process(h.ctx, id, func(context.Context) error {
		calls++
		return boom
	})
	require.ErrorIs(t, err, boom)
	assert.False(t, dup)
	assert.False(t, h.seen("c", id), "a failed handler leaves no record")

	for range 2 {
		dup, err = d.Process(h.ctx, id, func(ctx context.Context) error {
			calls++
			return nil
		})
		require.NoError(t, err)
	}
	assert.True(t, dup, "the redelivery is recognised")
	assert.Equal(t, 2, calls, "the failed delivery, then one success")

	_, err = inbox.Deduplicator{Store: h.store, Transactor: h.tx}.Process(h.ctx, id, func(context.Context) error { return nil })
	require.ErrorIs(t, err, outbox.ErrInvalidArgument)
}
