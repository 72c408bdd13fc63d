// Package outboxtest is the conformance kit of outbox stores: [Run] checks
// every property of the outbox.Store contract as a subtest, so that the
// memory store and the SQL stores (in their own modules) are held to the
// same rules.
//
// A store's test calls Run with a factory:
//
//	func TestConformance(t *testing.T) {
//		outboxtest.Run(t, func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor) {
//			t.Helper()
//			db := openTestDatabase(t) // a *postgres.DB on a fresh schema
//			s, err := postgres.NewStore(db, postgres.StoreOptions{Clock: clock})
//			require.NoError(t, err)
//			require.NoError(t, s.EnsureSchema(t.Context()))
//			return s, db
//		})
//	}
//
// The subtests run in parallel, each with a store of its own, and control
// time through the clock they pass the factory: a store must read the time
// only from its clock. They never sleep. Some read the store from outside a
// transaction that is still open, or write from two transactions at once,
// so the store must allow that (SQLite: WAL mode, several connections and a
// busy timeout). The "Relays" subtest runs three relays over the store,
// with a 5ms poll as the fallback for stores without a Notifier.
package outboxtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/wire"
)

// Factory returns a new, empty store that reads the time from clock, and the
// Transactor of its database. Every call must return a store isolated from
// the stores of other calls, since subtests run in parallel. Cleanup is the
// factory's (t.Cleanup).
type Factory func(t *testing.T, clock outbox.Clock) (outbox.Store, outbox.Transactor)

// Lease is the lease the subtests claim with.
const Lease = 30 * time.Second

// NewEnvelope returns an envelope with a new UUIDv7 ID, the given key and
// body, every other field set, and a timestamp that every database stores
// exactly (whole microseconds, UTC).
func NewEnvelope(key, body string) wire.Envelope {
	id := uuid.Must(uuid.NewV7())
	return wire.Envelope{
		ID:            id,
		Name:          "outboxtest.happened",
		Topic:         "outboxtest",
		Key:           key,
		Timestamp:     time.Now().UTC().Truncate(time.Microsecond),
		CorrelationID: "corr-" + body,
		CausationID:   "cause-" + body,
		ContentType:   "application/json",
		Headers:       map[string]string{"traceparent": "00-" + id.String(), "x-body": body},
		Payload:       []byte(`{"body":` + strconv.Quote(body) + `}`),
	}
}

// EqualEnvelopes reports whether a and b carry the same event: every field
// equal, timestamps equal as instants, nil and empty headers or payloads
// alike.
func EqualEnvelopes(a, b wire.Envelope) bool {
	return a.ID == b.ID && a.Name == b.Name && a.Topic == b.Topic && a.Key == b.Key &&
		a.Timestamp.Equal(b.Timestamp) && a.CorrelationID == b.CorrelationID &&
		a.CausationID == b.CausationID && a.ContentType == b.ContentType &&
		maps.Equal(a.Headers, b.Headers) && bytes.Equal(a.Payload, b.Payload)
}

type harness struct {
	t     *testing.T
	ctx   context.Context
	store outbox.Store
	tx    outbox.Transactor
	clock *Clock
}

func setup(t *testing.T, newStore Factory) *harness {
	t.Helper()
	t.Parallel()
	clock := NewClock()
	s, tx := newStore(t, clock)
	require.NotNil(t, s, "factory returned a nil store")
	require.NotNil(t, tx, "factory returned a nil transactor")
	return &harness{t: t, ctx: t.Context(), store: s, tx: tx, clock: clock}
}

// add commits envs in one transaction.
func (h *harness) add(envs ...wire.Envelope) {
	h.t.Helper()
	require.NoError(h.t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		return h.store.Add(ctx, envs...)
	}))
}

// envs returns n envelopes with the given key.
func envs(key string, n int) []wire.Envelope {
	out := make([]wire.Envelope, n)
	for i := range out {
		out[i] = NewEnvelope(key, key+"-"+strconv.Itoa(i))
	}
	return out
}

func (h *harness) claim(owner string, limit int) []outbox.Row {
	h.t.Helper()
	rows, err := h.store.Claim(h.ctx, owner, limit, Lease)
	require.NoError(h.t, err)
	return rows
}

func (h *harness) get(id uuid.UUID) outbox.Row {
	h.t.Helper()
	r, err := h.store.Get(h.ctx, id)
	require.NoError(h.t, err)
	return r
}

func (h *harness) stats() outbox.Stats {
	h.t.Helper()
	st, err := h.store.Stats(h.ctx)
	require.NoError(h.t, err)
	return st
}

func (h *harness) notFound(id uuid.UUID) {
	h.t.Helper()
	_, err := h.store.Get(h.ctx, id)
	require.ErrorIs(h.t, err, outbox.ErrNotFound)
}

func ids(rows []outbox.Row) []uuid.UUID {
	out := make([]uuid.UUID, len(rows))
	for i, r := range rows {
		out[i] = r.Envelope.ID
	}
	return out
}

func envIDs(envs ...wire.Envelope) []uuid.UUID {
	out := make([]uuid.UUID, len(envs))
	for i, e := range envs {
		out[i] = e.ID
	}
	return out
}

// fail records a failure of the row, claimed by owner, with the delay given.
func (h *harness) fail(owner string, id uuid.UUID, delay time.Duration, dead bool) {
	h.t.Helper()
	require.NoError(h.t, h.store.MarkFailed(h.ctx, owner, outbox.Failure{ID: id, Error: "boom " + id.String(), Delay: delay, Dead: dead}))
}

// kill claims the rows one by one as owner "killer" and marks them dead;
// each must be the only claimable row when it is claimed.
func (h *harness) kill(envs ...wire.Envelope) {
	h.t.Helper()
	for _, e := range envs {
		rows := h.claim("killer", 1)
		require.Equal(h.t, envIDs(e), ids(rows), "claim before killing")
		h.fail("killer", e.ID, 0, true)
	}
}

func requireLeaseError(t *testing.T, err error, owner string, want ...uuid.UUID) {
	t.Helper()
	require.ErrorIs(t, err, outbox.ErrLeaseLost)
	le, ok := errors.AsType[*outbox.LeaseError](err)
	require.True(t, ok, "error %v is not a *outbox.LeaseError", err)
	assert.Equal(t, owner, le.Owner)
	assert.ElementsMatch(t, want, le.IDs)
}

// assertStats compares stats, times as instants.
func assertStats(t *testing.T, want, got outbox.Stats) {
	t.Helper()
	assert.True(t, want.OldestPending.Equal(got.OldestPending), "OldestPending: got %v, want %v", got.OldestPending, want.OldestPending)
	want.OldestPending, got.OldestPending = time.Time{}, time.Time{}
	assert.Equal(t, want, got)
}

var errRollback = errors.New("outboxtest: roll back")

// Run runs the conformance subtests against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(h *harness)
	}{
		{"AddRequiresTx", testAddRequiresTx},
		{"AddValidates", testAddValidates},
		{"AddAfterTxEnded", testAddAfterTxEnded},
		{"AddThenClaimInCommitOrder", testAddThenClaim},
		{"DuplicateIDSkipped", testDuplicateID},
		{"StoreCopiesEnvelopes", testCopies},
		{"UncommittedInvisible", testUncommittedInvisible},
		{"RollbackLeavesNoRow", testRollback},
		{"PanicRollsBack", testPanicRollsBack},
		{"CancelledContextRollsBack", testCancelledRollsBack},
		{"NestedTxJoins", testNestedTx},
		{"ClaimArguments", testClaimArguments},
		{"ClaimLimitAndLease", testClaimLimitAndLease},
		{"LeaseExpiry", testLeaseExpiry},
		{"PerKeyOrder", testPerKeyOrder},
		{"SameKeyInOneClaim", testSameKeyInOneClaim},
		{"EmptyKeyUnordered", testEmptyKey},
		{"FailureBackoffHoldsOnlyItsKey", testFailureHoldsKey},
		{"MarkFailedArguments", testMarkFailedArguments},
		{"DeadHoldsKey", testDeadHoldsKey},
		{"RequeueAllDead", testRequeueAll},
		{"DeleteDeadReleasesKey", testDeleteDead},
		{"ListDeadPages", testListDead},
		{"MarkRequiresLease", testMarkRequiresLease},
		{"StaleOwnerRejected", testStaleOwner},
		{"ExpiredLeaseStillMarkable", testExpiredLeaseMarkable},
		{"Release", testRelease},
		{"Retention", testRetention},
		{"Stats", testStats},
		{"GetNotFound", testGetNotFound},
		{"ConcurrentClaimers", testConcurrentClaimers},
		{"Notifier", testNotifier},
		{"Relays", testRelays},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(setup(t, newStore))
		})
	}
}

func testAddRequiresTx(h *harness) {
	t := h.t
	err := h.store.Add(h.ctx, NewEnvelope("k", "x"))
	require.ErrorIs(t, err, outbox.ErrNoTx)
	assertStats(t, outbox.Stats{}, h.stats())
}

func testAddValidates(h *harness) {
	t := h.t
	good := NewEnvelope("k", "good")
	noID := NewEnvelope("k", "no id")
	noID.ID = uuid.Nil
	noName := NewEnvelope("k", "no name")
	noName.Name = ""
	err := h.tx.InTx(h.ctx, func(ctx context.Context) error {
		err := h.store.Add(ctx, good, noID, noName)
		require.ErrorIs(t, err, outbox.ErrInvalidEnvelope)
		return nil
	})
	require.NoError(t, err)
	h.notFound(good.ID)
	assertStats(t, outbox.Stats{}, h.stats())
}

func testAddAfterTxEnded(h *harness) {
	t := h.t
	var leaked context.Context
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		leaked = ctx
		return nil
	}))
	e := NewEnvelope("k", "late")
	err := h.store.Add(leaked, e)
	require.ErrorIs(t, err, outbox.ErrTxDone)
	h.notFound(e.ID)
}

func testAddThenClaim(h *harness) {
	t := h.t
	first := []wire.Envelope{NewEnvelope("a", "1"), NewEnvelope("", "2"), NewEnvelope("b", "3")}
	first[1].Headers, first[1].Payload = nil, nil
	h.add(first...)
	t1 := h.clock.Now()
	h.clock.Advance(time.Second)
	second := []wire.Envelope{NewEnvelope("a", "4"), NewEnvelope("c", "5")}
	h.add(second...)
	all := append(append([]wire.Envelope(nil), first...), second...)

	// The rows are visible with their state before any claim.
	r := h.get(first[0].ID)
	assert.Equal(t, outbox.Pending, r.State)
	assert.Zero(t, r.Attempts)
	assert.Empty(t, r.LastError)
	assert.Empty(t, r.LeaseOwner)
	assert.True(t, r.LeaseUntil.IsZero(), "LeaseUntil %v", r.LeaseUntil)
	assert.True(t, r.SentAt.IsZero(), "SentAt %v", r.SentAt)
	assert.True(t, r.AddedAt.Equal(t1), "AddedAt %v, want %v", r.AddedAt, t1)
	assert.False(t, r.NextAttemptAt.After(t1), "NextAttemptAt %v after AddedAt", r.NextAttemptAt)

	now := h.clock.Now()
	rows := h.claim("A", 10)
	require.Len(t, rows, len(all))
	var last int64
	for i, r := range rows {
		assert.True(t, EqualEnvelopes(all[i], r.Envelope), "row %d: got %+v, want %+v", i, r.Envelope, all[i])
		assert.Greater(t, r.Seq, last, "row %d: Seq must increase in commit order", i)
		last = r.Seq
		assert.Equal(t, outbox.Pending, r.State)
		assert.Equal(t, "A", r.LeaseOwner)
		assert.True(t, r.LeaseUntil.Equal(now.Add(Lease)), "row %d: LeaseUntil %v, want %v", i, r.LeaseUntil, now.Add(Lease))
	}
	assert.True(t, rows[3].AddedAt.Equal(now), "AddedAt of the second transaction's rows")
	got := h.get(first[0].ID)
	assert.Equal(t, "A", got.LeaseOwner)
	assert.Equal(t, rows[0].Seq, got.Seq)
}

func testDuplicateID(h *harness) {
	t := h.t
	e := NewEnvelope("k", "original")
	h.add(e)
	again := NewEnvelope("k", "impostor")
	again.ID = e.ID
	other := NewEnvelope("k", "other")
	h.add(again, other, other)

	rows := h.claim("A", 10)
	require.Len(t, rows, 2, "the duplicates are skipped")
	assert.True(t, EqualEnvelopes(e, rows[0].Envelope), "the first envelope added wins")
	assert.True(t, EqualEnvelopes(other, rows[1].Envelope))
}

func testCopies(h *harness) {
	t := h.t
	e := NewEnvelope("k", "x")
	want := e
	want.Headers, want.Payload = maps.Clone(e.Headers), bytes.Clone(e.Payload)
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		if err := h.store.Add(ctx, e); err != nil {
			return err
		}
		e.Headers["x-body"] = "changed after Add"
		e.Payload[0] = '!'
		return nil
	}))
	rows := h.claim("A", 1)
	require.Len(t, rows, 1)
	assert.True(t, EqualEnvelopes(want, rows[0].Envelope), "the store keeps what was added: %+v", rows[0].Envelope)
	rows[0].Envelope.Headers["x-body"] = "changed after Claim"
	rows[0].Envelope.Payload[0] = '?'
	assert.True(t, EqualEnvelopes(want, h.get(e.ID).Envelope), "a returned row is a copy")
}

func testUncommittedInvisible(h *harness) {
	t := h.t
	e := NewEnvelope("k", "x")
	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		if err := h.store.Add(ctx, e); err != nil {
			return err
		}
		// Read outside the transaction.
		_, err := h.store.Get(h.ctx, e.ID)
		require.ErrorIs(t, err, outbox.ErrNotFound)
		st, err := h.store.Stats(h.ctx)
		require.NoError(t, err)
		assert.Zero(t, st.Pending)
		return nil
	}))
	assert.Equal(t, int64(1), h.stats().Pending)
}

func testRollback(h *harness) {
	t := h.t
	e := NewEnvelope("k", "x")
	err := h.tx.InTx(h.ctx, func(ctx context.Context) error {
		if err := h.store.Add(ctx, e, NewEnvelope("", "y")); err != nil {
			return err
		}
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)
	h.notFound(e.ID)
	assert.Empty(t, h.claim("A", 10))
	assertStats(t, outbox.Stats{}, h.stats())

	// The same envelope can be added after the rollback.
	h.add(e)
	assert.Equal(t, envIDs(e), ids(h.claim("A", 10)))
}

func testPanicRollsBack(h *harness) {
	t := h.t
	e := NewEnvelope("k", "x")
	require.PanicsWithValue(t, "outboxtest panic", func() {
		_ = h.tx.InTx(h.ctx, func(ctx context.Context) error {
			if err := h.store.Add(ctx, e); err != nil {
				return err
			}
			panic("outboxtest panic")
		})
	})
	h.notFound(e.ID)
}

func testCancelledRollsBack(h *harness) {
	t := h.t
	e := NewEnvelope("k", "x")
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	err := h.tx.InTx(ctx, func(ctx context.Context) error {
		if err := h.store.Add(ctx, e); err != nil {
			return err
		}
		cancel()
		return nil
	})
	require.Error(t, err, "a transaction whose context is done does not commit")
	h.notFound(e.ID)
}

func testNestedTx(h *harness) {
	t := h.t
	a, b := NewEnvelope("k", "a"), NewEnvelope("k", "b")
	err := h.tx.InTx(h.ctx, func(ctx context.Context) error {
		if err := h.store.Add(ctx, a); err != nil {
			return err
		}
		if err := h.tx.InTx(ctx, func(ctx context.Context) error { return h.store.Add(ctx, b) }); err != nil {
			return err
		}
		_, err := h.store.Get(h.ctx, b.ID)
		require.ErrorIs(t, err, outbox.ErrNotFound, "the inner InTx joined the outer transaction and did not commit")
		return errRollback
	})
	require.ErrorIs(t, err, errRollback)
	h.notFound(a.ID)
	h.notFound(b.ID)

	require.NoError(t, h.tx.InTx(h.ctx, func(ctx context.Context) error {
		if err := h.store.Add(ctx, a); err != nil {
			return err
		}
		return h.tx.InTx(ctx, func(ctx context.Context) error { return h.store.Add(ctx, b) })
	}))
	assert.Equal(t, envIDs(a, b), ids(h.claim("A", 10)))
}

func testClaimArguments(h *harness) {
	t := h.t
	h.add(NewEnvelope("k", "x"))
	for _, c := range []struct {
		owner string
		limit int
		lease time.Duration
	}{{"", 1, Lease}, {"A", 0, Lease}, {"A", -1, Lease}, {"A", 1, 0}, {"A", 1, -time.Second}} {
		rows, err := h.store.Claim(h.ctx, c.owner, c.limit, c.lease)
		require.ErrorIs(t, err, outbox.ErrInvalidArgument, "Claim(%q, %d, %v)", c.owner, c.limit, c.lease)
		assert.Empty(t, rows)
	}
	assert.Len(t, h.claim("A", 1), 1, "the invalid claims leased nothing")
}

func testClaimLimitAndLease(h *harness) {
	t := h.t
	es := envs("", 5)
	h.add(es...)
	assert.Equal(t, envIDs(es[:2]...), ids(h.claim("A", 2)))
	assert.Equal(t, envIDs(es[2:]...), ids(h.claim("B", 10)))
	assert.Empty(t, h.claim("C", 10), "every row is leased")
	st := h.stats()
	assert.Equal(t, int64(5), st.Pending)
	assert.Equal(t, int64(5), st.Leased)
}

func testLeaseExpiry(h *harness) {
	t := h.t
	es := envs("k", 3)
	h.add(es...)
	require.Len(t, h.claim("A", 10), 3)
	h.clock.Advance(Lease - time.Second)
	assert.Empty(t, h.claim("B", 10), "the lease is still valid")
	h.clock.Advance(time.Second)
	now := h.clock.Now()
	rows := h.claim("B", 10)
	require.Equal(t, envIDs(es...), ids(rows), "rows of an owner that died are claimable once the lease expired")
	for _, r := range rows {
		assert.Equal(t, "B", r.LeaseOwner)
		assert.True(t, r.LeaseUntil.Equal(now.Add(Lease)))
		assert.Zero(t, r.Attempts, "an expired lease is not a failed attempt")
	}
	assert.Equal(t, int64(3), h.stats().Leased)
}

func testPerKeyOrder(h *harness) {
	t := h.t
	a1, b1, a2, b2 := NewEnvelope("a", "1"), NewEnvelope("b", "1"), NewEnvelope("a", "2"), NewEnvelope("b", "2")
	for _, e := range []wire.Envelope{a1, b1, a2, b2} {
		h.add(e)
	}
	assert.Equal(t, envIDs(a1), ids(h.claim("A", 1)))
	assert.Equal(t, envIDs(b1, b2), ids(h.claim("B", 10)), "a2 waits for a1, leased by A")
	assert.Empty(t, h.claim("C", 10))
	require.NoError(t, h.store.MarkSent(h.ctx, "A", a1.ID))
	assert.Equal(t, envIDs(a2), ids(h.claim("C", 10)), "a2 is claimable once a1 is sent")
}

func testSameKeyInOneClaim(h *harness) {
	t := h.t
	es := envs("k", 3)
	h.add(es...)
	assert.Equal(t, envIDs(es[:2]...), ids(h.claim("A", 2)), "a claim may return consecutive rows of one key, in order")
	assert.Empty(t, h.claim("B", 10), "the third waits for the first two")
	require.NoError(t, h.store.MarkSent(h.ctx, "A", es[0].ID, es[1].ID))
	assert.Equal(t, envIDs(es[2]), ids(h.claim("B", 10)))
}

func testEmptyKey(h *harness) {
	t := h.t
	es := envs("", 3)
	h.add(es...)
	assert.Equal(t, envIDs(es[0]), ids(h.claim("A", 1)))
	assert.Equal(t, envIDs(es[1]), ids(h.claim("B", 1)), "rows without a key are not held by earlier ones")
	h.fail("A", es[0].ID, time.Hour, false)
	h.fail("B", es[1].ID, 0, true)
	assert.Equal(t, envIDs(es[2]), ids(h.claim("C", 10)), "nor by failed or dead ones")
}

func testFailureHoldsKey(h *harness) {
	t := h.t
	a1, a2, b1, e1 := NewEnvelope("a", "1"), NewEnvelope("a", "2"), NewEnvelope("b", "1"), NewEnvelope("", "1")
	h.add(a1, a2, b1, e1)
	assert.Equal(t, envIDs(a1), ids(h.claim("A", 1)))
	failedAt := h.clock.Now()
	h.fail("A", a1.ID, time.Minute, false)

	r := h.get(a1.ID)
	assert.Equal(t, outbox.Pending, r.State)
	assert.Equal(t, 1, r.Attempts)
	assert.Equal(t, "boom "+a1.ID.String(), r.LastError)
	assert.True(t, r.NextAttemptAt.Equal(failedAt.Add(time.Minute)), "NextAttemptAt %v", r.NextAttemptAt)
	assert.Empty(t, r.LeaseOwner)

	assert.Equal(t, envIDs(b1, e1), ids(h.claim("B", 10)), "a failing row holds back only its own key")
	require.NoError(t, h.store.MarkSent(h.ctx, "B", b1.ID, e1.ID))
	h.clock.Advance(time.Minute - time.Second)
	assert.Empty(t, h.claim("C", 10), "a1 is not due yet, and a2 waits for it")
	h.clock.Advance(time.Second)
	assert.Equal(t, envIDs(a1, a2), ids(h.claim("C", 10)))
	h.fail("C", a1.ID, time.Second, false)
	assert.Equal(t, 2, h.get(a1.ID).Attempts)
}

func testMarkFailedArguments(h *harness) {
	t := h.t
	e := NewEnvelope("k", "x")
	h.add(e)
	h.claim("A", 1)
	err := h.store.MarkFailed(h.ctx, "A", outbox.Failure{ID: e.ID, Error: "x"}, outbox.Failure{ID: uuid.Nil})
	require.ErrorIs(t, err, outbox.ErrInvalidArgument)
	err = h.store.MarkFailed(h.ctx, "A", outbox.Failure{ID: e.ID, Delay: -time.Second})
	require.ErrorIs(t, err, outbox.ErrInvalidArgument)
	r := h.get(e.ID)
	assert.Zero(t, r.Attempts, "nothing applied")
	assert.Equal(t, "A", r.LeaseOwner)
}

func testDeadHoldsKey(h *harness) {
	t := h.t
	a1, a2, b1 := NewEnvelope("a", "1"), NewEnvelope("a", "2"), NewEnvelope("b", "1")
	h.add(a1, a2, b1)
	assert.Equal(t, envIDs(a1), ids(h.claim("A", 1)))
	h.fail("A", a1.ID, 0, true)

	r := h.get(a1.ID)
	assert.Equal(t, outbox.Dead, r.State)
	assert.Equal(t, 1, r.Attempts)
	assert.Equal(t, "boom "+a1.ID.String(), r.LastError)
	assert.Empty(t, r.LeaseOwner)

	assert.Equal(t, envIDs(b1), ids(h.claim("B", 10)), "the dead row holds its key; other keys flow")
	require.NoError(t, h.store.MarkSent(h.ctx, "B", b1.ID))
	h.clock.Advance(24 * time.Hour)
	assert.Empty(t, h.claim("B", 10), "a dead row holds its key however long it waits")
	st := h.stats()
	assert.Equal(t, int64(1), st.Dead)
	assert.Equal(t, int64(1), st.Pending)

	n, err := h.store.Requeue(h.ctx, a1.ID, b1.ID, uuid.New())
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "only dead rows are requeued")
	r = h.get(a1.ID)
	assert.Equal(t, outbox.Pending, r.State)
	assert.Zero(t, r.Attempts, "requeue resets the attempts")
	assert.Equal(t, "boom "+a1.ID.String(), r.LastError, "requeue keeps the last error")
	assert.False(t, r.NextAttemptAt.After(h.clock.Now()), "a requeued row is due at once")
	assert.Equal(t, envIDs(a1, a2), ids(h.claim("C", 10)))
	assert.Zero(t, h.stats().Dead)
}

func testRequeueAll(h *harness) {
	t := h.t
	a, b, c := NewEnvelope("a", "1"), NewEnvelope("b", "1"), NewEnvelope("", "1")
	h.add(a, b, c)
	h.kill(a, b, c)
	assert.Equal(t, int64(3), h.stats().Dead)
	n, err := h.store.RequeueAllDead(h.ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(3), n)
	assertStats(t, outbox.Stats{Pending: 3, OldestPending: h.clock.Now(), Lag: 0}, h.stats())
	assert.Equal(t, envIDs(a, b, c), ids(h.claim("A", 10)))
	n, err = h.store.RequeueAllDead(h.ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
}

func testDeleteDead(h *harness) {
	t := h.t
	a1, a2 := NewEnvelope("a", "1"), NewEnvelope("a", "2")
	h.add(a1, a2)
	h.kill(a1)
	n, err := h.store.DeleteDead(h.ctx, a2.ID)
	require.NoError(t, err)
	assert.Zero(t, n, "a pending row is not deleted")
	n, err = h.store.DeleteDead(h.ctx, a1.ID, uuid.New())
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	h.notFound(a1.ID)
	assert.Equal(t, envIDs(a2), ids(h.claim("A", 10)), "deleting the dead row releases its key")
}

func testListDead(h *harness) {
	t := h.t
	es := envs("", 5)
	h.add(es...)
	h.add(NewEnvelope("", "alive"))
	for range es {
		rows := h.claim("A", 1)
		require.Len(t, rows, 1)
		h.fail("A", rows[0].Envelope.ID, 0, true)
	}
	var got []uuid.UUID
	var after int64
	for range 4 {
		page, err := h.store.ListDead(h.ctx, after, 2)
		require.NoError(t, err)
		if len(page) == 0 {
			break
		}
		assert.LessOrEqual(t, len(page), 2)
		for _, r := range page {
			assert.Equal(t, outbox.Dead, r.State)
			assert.Greater(t, r.Seq, after)
			after = r.Seq
			got = append(got, r.Envelope.ID)
		}
	}
	assert.Equal(t, envIDs(es...), got)
	_, err := h.store.ListDead(h.ctx, 0, 0)
	require.ErrorIs(t, err, outbox.ErrInvalidArgument)
}

func testMarkRequiresLease(h *harness) {
	t := h.t
	x, y := NewEnvelope("", "x"), NewEnvelope("", "y")
	h.add(x, y)
	assert.Equal(t, envIDs(x), ids(h.claim("A", 1)))
	unknown := uuid.New()

	requireLeaseError(t, h.store.MarkSent(h.ctx, "B", x.ID), "B", x.ID)
	requireLeaseError(t, h.store.MarkFailed(h.ctx, "B", outbox.Failure{ID: x.ID, Error: "x"}), "B", x.ID)
	requireLeaseError(t, h.store.Release(h.ctx, "B", x.ID), "B", x.ID)
	requireLeaseError(t, h.store.MarkSent(h.ctx, "A", y.ID), "A", y.ID)
	r := h.get(x.ID)
	assert.Equal(t, outbox.Pending, r.State, "refused marks change nothing")
	assert.Equal(t, "A", r.LeaseOwner)
	assert.Zero(t, r.Attempts)

	// A mark applies to the rows the owner holds and reports the others.
	requireLeaseError(t, h.store.MarkSent(h.ctx, "A", x.ID, unknown), "A", unknown)
	sentAt := h.clock.Now()
	r = h.get(x.ID)
	assert.Equal(t, outbox.Sent, r.State)
	assert.True(t, r.SentAt.Equal(sentAt))
	assert.Empty(t, r.LeaseOwner)
	assert.True(t, r.LeaseUntil.IsZero())

	requireLeaseError(t, h.store.MarkSent(h.ctx, "A", x.ID), "A", x.ID)
	requireLeaseError(t, h.store.Release(h.ctx, "A", x.ID), "A", x.ID)
	assert.Equal(t, outbox.Sent, h.get(x.ID).State)
}

func testStaleOwner(h *harness) {
	t := h.t
	x := NewEnvelope("k", "x")
	h.add(x)
	require.Len(t, h.claim("A", 1), 1)
	h.clock.Advance(Lease + time.Second)
	require.Len(t, h.claim("B", 1), 1, "B takes over the expired lease")

	requireLeaseError(t, h.store.MarkSent(h.ctx, "A", x.ID), "A", x.ID)
	requireLeaseError(t, h.store.MarkFailed(h.ctx, "A", outbox.Failure{ID: x.ID, Error: "late"}), "A", x.ID)
	requireLeaseError(t, h.store.Release(h.ctx, "A", x.ID), "A", x.ID)
	r := h.get(x.ID)
	assert.Equal(t, outbox.Pending, r.State)
	assert.Equal(t, "B", r.LeaseOwner)
	assert.Zero(t, r.Attempts)

	require.NoError(t, h.store.MarkSent(h.ctx, "B", x.ID))
	assert.Equal(t, outbox.Sent, h.get(x.ID).State)
}

func testExpiredLeaseMarkable(h *harness) {
	t := h.t
	x := NewEnvelope("k", "x")
	h.add(x)
	require.Len(t, h.claim("A", 1), 1)
	h.clock.Advance(Lease + time.Second)
	require.NoError(t, h.store.MarkSent(h.ctx, "A", x.ID), "an expired lease nobody took over still lets its owner mark")
	assert.Equal(t, outbox.Sent, h.get(x.ID).State)
}

func testRelease(h *harness) {
	t := h.t
	es := envs("k", 2)
	h.add(es...)
	rows := h.claim("A", 10)
	require.Len(t, rows, 2)
	require.NoError(t, h.store.Release(h.ctx, "A", envIDs(es...)...))
	r := h.get(es[0].ID)
	assert.Empty(t, r.LeaseOwner)
	assert.True(t, r.LeaseUntil.IsZero())
	assert.Zero(t, r.Attempts, "a release is not an attempt")
	assert.True(t, r.NextAttemptAt.Equal(rows[0].NextAttemptAt), "a release keeps NextAttemptAt")
	assert.Equal(t, envIDs(es...), ids(h.claim("B", 10)), "released rows are claimable at once")
}

func testRetention(h *harness) {
	t := h.t
	old := envs("", 3)
	h.add(old...)
	require.Len(t, h.claim("A", 10), 3)
	require.NoError(t, h.store.MarkSent(h.ctx, "A", envIDs(old...)...))
	h.clock.Advance(time.Hour)
	recent, pending, dead := NewEnvelope("", "recent"), NewEnvelope("", "pending"), NewEnvelope("", "dead")
	h.add(recent)
	require.Len(t, h.claim("A", 10), 1)
	require.NoError(t, h.store.MarkSent(h.ctx, "A", recent.ID))
	h.add(dead)
	h.kill(dead)
	h.add(pending)
	h.clock.Advance(time.Hour)

	_, err := h.store.DeleteSent(h.ctx, h.clock.Now(), 0)
	require.ErrorIs(t, err, outbox.ErrInvalidArgument)

	cutoff := Start().Add(30 * time.Minute)
	n, err := h.store.DeleteSent(h.ctx, cutoff, 2)
	require.NoError(t, err)
	assert.Equal(t, int64(2), n, "the limit bounds one call")
	assert.Equal(t, int64(2), h.stats().Sent, "one old row and the recent one are left")
	n, err = h.store.DeleteSent(h.ctx, cutoff, 10)
	require.NoError(t, err)
	assert.Equal(t, int64(1), n)
	for _, e := range old {
		h.notFound(e.ID)
	}
	assert.Equal(t, outbox.Sent, h.get(recent.ID).State, "rows sent after the cutoff are kept")
	assert.Equal(t, outbox.Dead, h.get(dead.ID).State, "dead rows are not deleted by retention")
	assert.Equal(t, outbox.Pending, h.get(pending.ID).State)
	st := h.stats()
	assert.Equal(t, int64(1), st.Sent)

	// A deleted envelope may be added again.
	h.add(old[0])
	assert.Equal(t, outbox.Pending, h.get(old[0].ID).State)
}

func testStats(h *harness) {
	t := h.t
	assertStats(t, outbox.Stats{}, h.stats())
	t0 := h.clock.Now()
	es := envs("", 2)
	h.add(es...)
	h.clock.Advance(5 * time.Minute)
	late := NewEnvelope("", "late")
	h.add(late)
	assert.Equal(t, envIDs(es[0]), ids(h.claim("A", 1)))
	assertStats(t, outbox.Stats{Pending: 3, Leased: 1, OldestPending: t0, Lag: 5 * time.Minute}, h.stats())

	require.NoError(t, h.store.MarkSent(h.ctx, "A", es[0].ID))
	assert.Equal(t, envIDs(es[1]), ids(h.claim("A", 1)))
	h.fail("A", es[1].ID, 0, true)
	h.clock.Advance(time.Minute)
	assertStats(t, outbox.Stats{Pending: 1, Sent: 1, Dead: 1, OldestPending: t0.Add(5 * time.Minute), Lag: time.Minute}, h.stats())

	require.Len(t, h.claim("A", 1), 1)
	h.clock.Advance(Lease)
	st := h.stats()
	assert.Equal(t, int64(1), st.Pending)
	assert.Zero(t, st.Leased, "an expired lease does not count")
}

func testGetNotFound(h *harness) {
	h.notFound(uuid.New())
}

// testConcurrentClaimers claims and marks from several goroutines at once
// and checks that no row is claimed twice and that no row is claimed while
// an earlier row of its key is unsent.
func testConcurrentClaimers(h *harness) {
	t := h.t
	const (
		workers = 6
		keys    = 5
		perKey  = 30
		unkeyed = 30
	)
	var all []wire.Envelope
	prev := make(map[uuid.UUID]uuid.UUID) // row -> the row before it with the same key
	last := make(map[string]uuid.UUID)
	for i := range perKey {
		var batch []wire.Envelope
		for k := range keys {
			batch = append(batch, NewEnvelope("key-"+strconv.Itoa(k), strconv.Itoa(i)))
		}
		batch = append(batch, NewEnvelope("", strconv.Itoa(i)))
		for _, e := range batch {
			if p, ok := last[e.Key]; ok && e.Key != "" {
				prev[e.ID] = p
			}
			last[e.Key] = e.ID
		}
		h.add(batch...)
		all = append(all, batch...)
	}
	total := len(all)
	require.Equal(t, keys*perKey+unkeyed, total)

	var (
		mu      sync.Mutex
		claimed = make(map[uuid.UUID]string)
		sent    = make(map[uuid.UUID]bool)
		errs    []error
		wg      sync.WaitGroup
	)
	report := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		errs = append(errs, fmt.Errorf(format, args...))
	}
	done := func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(sent) == total || len(errs) > 0
	}
	for w := range workers {
		owner := "worker-" + strconv.Itoa(w)
		wg.Go(func() {
			for range 100 * total {
				if done() {
					return
				}
				rows, err := h.store.Claim(h.ctx, owner, 1+w, Lease)
				if err != nil {
					report("%s: claim: %w", owner, err)
					return
				}
				mu.Lock()
				inBatch := make(map[uuid.UUID]bool)
				for _, r := range rows {
					id := r.Envelope.ID
					if other, dup := claimed[id]; dup {
						errs = append(errs, fmt.Errorf("row %s claimed by %s and %s", id, other, owner))
					}
					claimed[id] = owner
					if p, ok := prev[id]; ok && !sent[p] && !inBatch[p] {
						errs = append(errs, fmt.Errorf("%s claimed row %s (key %s) while the row before it was unsent", owner, id, r.Envelope.Key))
					}
					inBatch[id] = true
					// Recorded before MarkSent, so that a claim that sees
					// the row sent always finds it recorded.
					sent[id] = true
				}
				mu.Unlock()
				if len(rows) == 0 {
					runtime.Gosched() // rows are held by other workers
					continue
				}
				if err := h.store.MarkSent(h.ctx, owner, ids(rows)...); err != nil {
					report("%s: mark sent: %w", owner, err)
					return
				}
			}
		})
	}
	wg.Wait()
	require.NoError(t, errors.Join(errs...))
	assert.Len(t, claimed, total)
	st := h.stats()
	assert.Equal(t, int64(total), st.Sent)
	assert.Zero(t, st.Pending)
}

func testNotifier(h *harness) {
	t := h.t
	n, ok := h.store.(outbox.Notifier)
	if !ok {
		t.Skip("the store does not implement outbox.Notifier")
	}
	woken := make(chan struct{}, 1)
	ctx, cancel := context.WithCancel(h.ctx)
	defer cancel()
	watchErr := make(chan error, 1)
	go func() {
		watchErr <- n.Watch(ctx, func() {
			select {
			case woken <- struct{}{}:
			default:
			}
		})
	}()
	<-woken // Watch calls wake once it is watching.
	// Drain any spurious wake, then commit.
	select {
	case <-woken:
	default:
	}
	h.add(NewEnvelope("k", "x"))
	<-woken
	cancel()
	require.NoError(t, <-watchErr)
}

// testRelays runs several relays over the store and checks that every
// envelope is delivered exactly once (no lease expires and no send fails),
// and the envelopes of each key in commit order.
func testRelays(h *harness) {
	t := h.t
	const (
		relays = 3
		txs    = 40
		perTx  = 10
		total  = txs * perTx
	)
	var (
		mu        sync.Mutex
		delivered = make(map[uuid.UUID]int)
		order     = make(map[string][]uuid.UUID)
		allDone   = make(chan struct{})
	)
	sender := outbox.InProcessSender(func(_ context.Context, env wire.Envelope) error {
		mu.Lock()
		defer mu.Unlock()
		delivered[env.ID]++
		order[env.Key] = append(order[env.Key], env.ID)
		if len(delivered) == total && delivered[env.ID] == 1 {
			close(allDone)
		}
		return nil
	})
	ctx, cancel := context.WithCancel(h.ctx)
	var wg sync.WaitGroup
	for i := range relays {
		cfg := outbox.DefaultRelayConfig()
		cfg.Owner = "relay-" + strconv.Itoa(i)
		cfg.BatchSize = 7
		cfg.PollInterval = 5 * time.Millisecond // a fallback for stores without a Notifier
		cfg.Clock = h.clock
		cfg.RetainSent = 0
		cfg.Logger = slog.New(slog.DiscardHandler)
		r, err := outbox.NewRelay(h.store, sender, cfg)
		require.NoError(t, err)
		wg.Go(func() {
			if err := r.Run(ctx); err != nil {
				t.Errorf("relay %d: %v", i, err)
			}
		})
	}
	want := make(map[string][]uuid.UUID)
	for i := range txs {
		batch := make([]wire.Envelope, perTx)
		for j := range batch {
			key := ""
			if j%5 != 0 {
				key = "key-" + strconv.Itoa((i+j)%7)
			}
			batch[j] = NewEnvelope(key, strconv.Itoa(i*perTx+j))
			want[key] = append(want[key], batch[j].ID)
		}
		h.add(batch...)
	}
	<-allDone
	cancel()
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, delivered, total)
	for id, n := range delivered {
		assert.Equal(t, 1, n, "envelope %s delivered %d times", id, n)
	}
	for key, ids := range want {
		if key == "" {
			assert.ElementsMatch(t, ids, order[key])
			continue
		}
		assert.Equal(t, ids, order[key], "key %s delivered out of order", key)
	}
	st := h.stats()
	assert.Equal(t, int64(total), st.Sent)
	assert.Zero(t, st.Pending)
}
