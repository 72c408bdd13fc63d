// Package sagatest is the conformance kit of saga stores: [Run] checks
// every property of the saga.Store contract as a subtest, so that the
// memory store and the SQL stores (in their own modules) are held to the
// same rules, and ends with sagas driven by a real orchestrator over the
// store.
//
// A store's test calls Run with a factory:
//
//	func TestConformance(t *testing.T) {
//		sagatest.Run(t, func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor) {
//			t.Helper()
//			db := openTestDatabase(t) // a fresh database, schema or tables
//			s := postgres.NewSagaStore(db, postgres.SagaOptions{Clock: clock})
//			return s, s // the store, and the Transactor of its database
//		})
//	}
//
// The subtests run in parallel, each with a store of its own, and control
// time through the clock they pass the factory (a *[Clock] starting at a
// whole second): a store must read the time only from its clock. They
// never sleep. The Transactor may be nil for a store that cannot write in
// a transaction; the transaction subtests are then skipped. Times are
// compared as instants, so a store may return them in any location, but it
// must keep at least microsecond precision.
package sagatest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/gocqrs/cqrs/events/outbox"
	"github.com/gocqrs/cqrs/events/outbox/outboxtest"
	"github.com/gocqrs/cqrs/mediator/saga"
)

// Factory returns a new, empty store that reads the time from clock, and
// the Transactor of its database (nil if it has none). Every call must
// return a store isolated from the stores of other calls, since subtests
// run in parallel. Cleanup is the factory's (t.Cleanup).
type Factory func(t *testing.T, clock saga.Clock) (saga.Store, outbox.Transactor)

// Clock is a manual clock: it tells the time it was set to and moves only
// when told. It is safe for concurrent use.
type Clock = outboxtest.Clock

// NewClock returns a clock set to [Start].
func NewClock() *Clock { return outboxtest.NewClock() }

// Start is the time a [Clock] from [NewClock] starts at: a whole second in
// UTC.
func Start() time.Time { return outboxtest.Start() }

// Lease is the lease the subtests claim and renew with.
const Lease = 30 * time.Second

// Run runs the conformance subtests against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(k *kit)
	}{
		{"CreateLoad", testCreateLoad},
		{"CreateInvalid", testCreateInvalid},
		{"SaveVersions", testSaveVersions},
		{"SaveInvalid", testSaveInvalid},
		{"SaveLease", testSaveLease},
		{"TwoWriters", testTwoWriters},
		{"Transactions", testTransactions},
		{"StepLog", testStepLog},
		{"Claim", testClaim},
		{"ClaimAfterExpiry", testClaimAfterExpiry},
		{"ClaimConcurrent", testClaimConcurrent},
		{"ClaimInvalid", testClaimInvalid},
		{"Renew", testRenew},
		{"List", testList},
		{"ListRecoverable", testListRecoverable},
		{"Purge", testPurge},
		{"Engine", testEngine},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clock := NewClock()
			s, tx := newStore(t, clock)
			require.NotNil(t, s, "the factory returned a nil store")
			tc.fn(&kit{t: t, s: s, tx: tx, clock: clock})
		})
	}
}

// kit is what a subtest works with.
type kit struct {
	t     *testing.T
	s     saga.Store
	tx    outbox.Transactor
	clock *Clock
}

// NewRecord returns a running saga record named name with a new UUIDv7,
// state {"n":0} and no lease.
func NewRecord(name string) saga.Record {
	return saga.Record{
		ID:     uuid.Must(uuid.NewV7()),
		Name:   name,
		Status: saga.Running,
		State:  []byte(`{"n":0}`),
	}
}

// create creates rec and returns it as the store must have stored it.
func (k *kit) create(t *testing.T, rec saga.Record, lease time.Duration) saga.Record {
	t.Helper()
	require.NoError(t, k.s.Create(t.Context(), rec, lease))
	now := k.clock.Now()
	rec.Version, rec.Attempts, rec.CreatedAt, rec.UpdatedAt = 1, 0, now, now
	rec.LeaseUntil = time.Time{}
	if rec.LeaseOwner != "" {
		rec.LeaseUntil = now.Add(lease)
	}
	return rec
}

func (k *kit) load(t *testing.T, id uuid.UUID) saga.Record {
	t.Helper()
	rec, err := k.s.Load(t.Context(), id)
	require.NoError(t, err)
	return rec
}

func (k *kit) log(t *testing.T, id uuid.UUID) []saga.Entry {
	t.Helper()
	log, err := k.s.Log(t.Context(), id)
	require.NoError(t, err)
	return log
}

// checkpoint returns a checkpoint of rec moving it to status and step,
// with one entry.
func checkpoint(rec saga.Record, status saga.Status, step int, state string, entries ...saga.Entry) saga.Checkpoint {
	return saga.Checkpoint{ID: rec.ID, Version: rec.Version, Status: status, Step: step, State: []byte(state), Log: entries}
}

// entry returns a log entry with every field set.
func entry(step string, index int, outcome saga.Outcome, at time.Time, errs ...string) saga.Entry {
	return saga.Entry{
		Step: step, Index: index, Phase: saga.Forward, Outcome: outcome, Attempts: len(errs) + 1,
		Errors: errs, Owner: "driver-1", StartedAt: at.Add(-time.Second), FinishedAt: at,
	}
}

// EqualRecords reports the fields of want and got that differ, or "" if
// none does; times are compared as instants, nil and empty states alike.
func EqualRecords(want, got saga.Record) string {
	var diffs []string
	add := func(field string, w, g any) { diffs = append(diffs, fmt.Sprintf("%s: want %v, got %v", field, w, g)) }
	if want.ID != got.ID {
		add("ID", want.ID, got.ID)
	}
	if want.Name != got.Name {
		add("Name", want.Name, got.Name)
	}
	if want.Status != got.Status {
		add("Status", want.Status, got.Status)
	}
	if want.Step != got.Step {
		add("Step", want.Step, got.Step)
	}
	if string(want.State) != string(got.State) {
		add("State", string(want.State), string(got.State))
	}
	if want.Version != got.Version {
		add("Version", want.Version, got.Version)
	}
	if want.Attempts != got.Attempts {
		add("Attempts", want.Attempts, got.Attempts)
	}
	if want.LeaseOwner != got.LeaseOwner {
		add("LeaseOwner", want.LeaseOwner, got.LeaseOwner)
	}
	if !want.LeaseUntil.Equal(got.LeaseUntil) {
		add("LeaseUntil", want.LeaseUntil, got.LeaseUntil)
	}
	if !want.CreatedAt.Equal(got.CreatedAt) {
		add("CreatedAt", want.CreatedAt, got.CreatedAt)
	}
	if !want.UpdatedAt.Equal(got.UpdatedAt) {
		add("UpdatedAt", want.UpdatedAt, got.UpdatedAt)
	}
	return joinDiffs(diffs)
}

// EqualEntries is EqualRecords for log entries; Seq is not compared.
func EqualEntries(want, got saga.Entry) string {
	var diffs []string
	add := func(field string, w, g any) { diffs = append(diffs, fmt.Sprintf("%s: want %v, got %v", field, w, g)) }
	if want.Step != got.Step {
		add("Step", want.Step, got.Step)
	}
	if want.Index != got.Index {
		add("Index", want.Index, got.Index)
	}
	if want.Phase != got.Phase {
		add("Phase", want.Phase, got.Phase)
	}
	if want.Fallback != got.Fallback {
		add("Fallback", want.Fallback, got.Fallback)
	}
	if want.Outcome != got.Outcome {
		add("Outcome", want.Outcome, got.Outcome)
	}
	if want.Attempts != got.Attempts {
		add("Attempts", want.Attempts, got.Attempts)
	}
	if !slices.Equal(want.Errors, got.Errors) && (len(want.Errors) > 0 || len(got.Errors) > 0) {
		add("Errors", want.Errors, got.Errors)
	}
	if want.Owner != got.Owner {
		add("Owner", want.Owner, got.Owner)
	}
	if !want.StartedAt.Equal(got.StartedAt) {
		add("StartedAt", want.StartedAt, got.StartedAt)
	}
	if !want.FinishedAt.Equal(got.FinishedAt) {
		add("FinishedAt", want.FinishedAt, got.FinishedAt)
	}
	return joinDiffs(diffs)
}

func joinDiffs(diffs []string) string {
	out := ""
	for i, d := range diffs {
		if i > 0 {
			out += "; "
		}
		out += d
	}
	return out
}

func requireRecord(t *testing.T, want, got saga.Record) {
	t.Helper()
	if d := EqualRecords(want, got); d != "" {
		t.Fatalf("record %s differs: %s", want.ID, d)
	}
}

func requireLog(t *testing.T, want, got []saga.Entry) {
	t.Helper()
	require.Len(t, got, len(want), "log length")
	for i := range want {
		if d := EqualEntries(want[i], got[i]); d != "" {
			t.Fatalf("log entry %d differs: %s", i, d)
		}
		require.Positive(t, got[i].Seq, "entry %d: Seq", i)
		if i > 0 {
			require.Greater(t, got[i].Seq, got[i-1].Seq, "entry %d: Seq must grow", i)
		}
	}
}

func testCreateLoad(k *kit) {
	t := k.t
	ctx := t.Context()
	rec := NewRecord("orders")
	rec.Step, rec.LeaseOwner = 2, "driver-1"
	rec.Version, rec.Attempts = 7, 3                            // ignored
	rec.CreatedAt = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC) // ignored
	want := k.create(t, rec, Lease)
	requireRecord(t, want, k.load(t, rec.ID))
	assert.Empty(t, k.log(t, rec.ID), "a new saga has an empty log")

	unleased := NewRecord("orders")
	wantU := k.create(t, unleased, 0)
	requireRecord(t, wantU, k.load(t, unleased.ID))

	err := k.s.Create(ctx, NewRecord("orders"), Lease)
	require.NoError(t, err, "a lease with no owner is ignored")

	dup := NewRecord("other")
	dup.ID = rec.ID
	err = k.s.Create(ctx, dup, 0)
	require.ErrorIs(t, err, saga.ErrExists)
	requireRecord(t, want, k.load(t, rec.ID))

	_, err = k.s.Load(ctx, uuid.Must(uuid.NewV7()))
	require.ErrorIs(t, err, saga.ErrNotFound)
	_, err = k.s.Log(ctx, uuid.Must(uuid.NewV7()))
	require.ErrorIs(t, err, saga.ErrNotFound)

	// The caller owns what Load returns.
	got := k.load(t, rec.ID)
	got.State[0] = 'X'
	requireRecord(t, want, k.load(t, rec.ID))
}

func testCreateInvalid(k *kit) {
	t := k.t
	ctx := t.Context()
	for name, mutate := range map[string]func(*saga.Record, *time.Duration){
		"zero ID":         func(r *saga.Record, _ *time.Duration) { r.ID = uuid.Nil },
		"empty name":      func(r *saga.Record, _ *time.Duration) { r.Name = "" },
		"invalid status":  func(r *saga.Record, _ *time.Duration) { r.Status = 0 },
		"negative step":   func(r *saga.Record, _ *time.Duration) { r.Step = -1 },
		"owner, no lease": func(r *saga.Record, l *time.Duration) { r.LeaseOwner, *l = "driver-1", 0 },
	} {
		rec, lease := NewRecord("orders"), Lease
		mutate(&rec, &lease)
		err := k.s.Create(ctx, rec, lease)
		require.ErrorIs(t, err, saga.ErrInvalidArgument, name)
		if rec.ID != uuid.Nil {
			_, err = k.s.Load(ctx, rec.ID)
			require.ErrorIs(t, err, saga.ErrNotFound, "%s: nothing created", name)
		}
	}
}

func testSaveVersions(k *kit) {
	t := k.t
	ctx := t.Context()
	rec := NewRecord("orders")
	rec.LeaseOwner = "driver-1"
	want := k.create(t, rec, Lease)

	at := k.clock.Advance(time.Second)
	e1 := entry("reserve", 0, saga.Succeeded, at)
	cp := checkpoint(want, saga.Running, 1, `{"n":1}`, e1)
	cp.Owner, cp.Lease = "driver-1", Lease
	require.NoError(t, k.s.Save(ctx, cp))
	want.Version, want.Step, want.State, want.UpdatedAt, want.LeaseUntil = 2, 1, []byte(`{"n":1}`), at, at.Add(Lease)
	requireRecord(t, want, k.load(t, rec.ID))
	requireLog(t, []saga.Entry{e1}, k.log(t, rec.ID))

	at = k.clock.Advance(time.Second)
	e2 := entry("charge", 1, saga.StepFailed, at, "card declined")
	e2.Attempts = 2
	cp = checkpoint(want, saga.Compensating, 1, `{"n":2}`, e2)
	cp.Attempts = 4
	require.NoError(t, k.s.Save(ctx, cp))
	want.Version, want.Status, want.State, want.Attempts, want.UpdatedAt = 3, saga.Compensating, []byte(`{"n":2}`), 4, at
	want.LeaseOwner, want.LeaseUntil = "", time.Time{}
	requireRecord(t, want, k.load(t, rec.ID))
	requireLog(t, []saga.Entry{e1, e2}, k.log(t, rec.ID))

	// A writer that read version 2 is stale.
	k.clock.Advance(time.Second)
	stale := checkpoint(want, saga.Completed, 2, `{"n":9}`, entry("x", 2, saga.Succeeded, at))
	stale.Version = 2
	err := k.s.Save(ctx, stale)
	require.ErrorIs(t, err, saga.ErrConflict)
	var ce *saga.ConflictError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, rec.ID, ce.ID)
	assert.Equal(t, int64(2), ce.Version)
	requireRecord(t, want, k.load(t, rec.ID))
	requireLog(t, []saga.Entry{e1, e2}, k.log(t, rec.ID))

	// A writer from the future is stale too.
	stale.Version = 4
	require.ErrorIs(t, k.s.Save(ctx, stale), saga.ErrConflict)

	// A save with no entry changes the record only.
	cp = checkpoint(want, saga.Compensated, 0, `{"n":3}`)
	require.NoError(t, k.s.Save(ctx, cp))
	require.Len(t, k.log(t, rec.ID), 2)
	assert.Equal(t, saga.Compensated, k.load(t, rec.ID).Status)

	unknown := checkpoint(NewRecord("orders"), saga.Running, 1, `{}`)
	unknown.Version = 1
	require.ErrorIs(t, k.s.Save(ctx, unknown), saga.ErrNotFound)
}

func testSaveInvalid(k *kit) {
	t := k.t
	ctx := t.Context()
	want := k.create(t, NewRecord("orders"), 0)
	for name, mutate := range map[string]func(*saga.Checkpoint){
		"zero ID":         func(c *saga.Checkpoint) { c.ID = uuid.Nil },
		"zero version":    func(c *saga.Checkpoint) { c.Version = 0 },
		"invalid status":  func(c *saga.Checkpoint) { c.Status = 9 },
		"negative step":   func(c *saga.Checkpoint) { c.Step = -1 },
		"negative tries":  func(c *saga.Checkpoint) { c.Attempts = -1 },
		"owner, no lease": func(c *saga.Checkpoint) { c.Owner, c.Lease = "driver-1", 0 },
		"invalid phase":   func(c *saga.Checkpoint) { c.Log[0].Phase = 0 },
		"invalid outcome": func(c *saga.Checkpoint) { c.Log[0].Outcome = 0 },
	} {
		cp := checkpoint(want, saga.Running, 1, `{}`, entry("a", 0, saga.Succeeded, k.clock.Now()))
		mutate(&cp)
		require.ErrorIs(t, k.s.Save(ctx, cp), saga.ErrInvalidArgument, name)
	}
	requireRecord(t, want, k.load(t, want.ID))
	assert.Empty(t, k.log(t, want.ID))
}

func testSaveLease(k *kit) {
	t := k.t
	ctx := t.Context()
	want := k.create(t, NewRecord("orders"), 0)
	at := k.clock.Advance(time.Minute)
	cp := checkpoint(want, saga.Running, 0, `{}`)
	cp.Owner, cp.Lease = "driver-2", 10*time.Second
	require.NoError(t, k.s.Save(ctx, cp))
	got := k.load(t, want.ID)
	assert.Equal(t, "driver-2", got.LeaseOwner)
	assert.True(t, got.LeaseUntil.Equal(at.Add(10*time.Second)), "LeaseUntil %v", got.LeaseUntil)

	cp = checkpoint(got, saga.Running, 0, `{}`)
	cp.Lease = time.Hour // ignored without an owner
	require.NoError(t, k.s.Save(ctx, cp))
	got = k.load(t, want.ID)
	assert.Empty(t, got.LeaseOwner)
	assert.True(t, got.LeaseUntil.IsZero(), "LeaseUntil %v", got.LeaseUntil)
}

func testTwoWriters(k *kit) {
	t := k.t
	ctx := t.Context()
	want := k.create(t, NewRecord("orders"), 0)
	const writers = 8
	errs := make([]error, writers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range writers {
		wg.Go(func() {
			<-start
			cp := checkpoint(want, saga.Running, 1, fmt.Sprintf(`{"writer":%d}`, i), entry(fmt.Sprintf("w%d", i), 0, saga.Succeeded, k.clock.Now()))
			errs[i] = k.s.Save(ctx, cp)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		if err == nil {
			require.Equal(t, -1, winner, "writers %d and %d both saved version 1", winner, i)
			winner = i
			continue
		}
		require.ErrorIs(t, err, saga.ErrConflict, "writer %d", i)
	}
	require.NotEqual(t, -1, winner, "no writer succeeded")
	got := k.load(t, want.ID)
	assert.Equal(t, int64(2), got.Version)
	assert.JSONEq(t, fmt.Sprintf(`{"writer":%d}`, winner), string(got.State))
	log := k.log(t, want.ID)
	require.Len(t, log, 1, "only the winner's entry is appended")
	assert.Equal(t, fmt.Sprintf("w%d", winner), log[0].Step)
}

func testTransactions(k *kit) {
	t := k.t
	if k.tx == nil {
		t.Skip("the store has no Transactor")
	}
	ctx := t.Context()
	want := k.create(t, NewRecord("orders"), 0)
	rollback := errors.New("rollback")

	// Rolled back: nothing changes.
	err := k.tx.InTx(ctx, func(ctx context.Context) error {
		require.NoError(t, k.s.Save(ctx, checkpoint(want, saga.Running, 1, `{"n":1}`, entry("a", 0, saga.Succeeded, k.clock.Now()))))
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	requireRecord(t, want, k.load(t, want.ID))
	assert.Empty(t, k.log(t, want.ID))

	// Committed: applied, and invisible until then.
	e := entry("a", 0, saga.Succeeded, k.clock.Now())
	err = k.tx.InTx(ctx, func(ctx context.Context) error {
		if err := k.s.Save(ctx, checkpoint(want, saga.Running, 1, `{"n":1}`, e)); err != nil {
			return err
		}
		requireRecord(t, want, k.load(t, want.ID)) // outside the transaction
		return nil
	})
	require.NoError(t, err)
	got := k.load(t, want.ID)
	assert.Equal(t, int64(2), got.Version)
	assert.Equal(t, 1, got.Step)
	requireLog(t, []saga.Entry{e}, k.log(t, want.ID))

	// Two saves in one transaction chain their versions.
	err = k.tx.InTx(ctx, func(ctx context.Context) error {
		if err := k.s.Save(ctx, checkpoint(got, saga.Running, 2, `{"n":2}`, e)); err != nil {
			return err
		}
		got.Version++
		return k.s.Save(ctx, checkpoint(got, saga.Completed, 3, `{"n":3}`, e))
	})
	require.NoError(t, err)
	got = k.load(t, want.ID)
	assert.Equal(t, int64(4), got.Version)
	assert.Equal(t, saga.Completed, got.Status)
	require.Len(t, k.log(t, want.ID), 3)

	// A create rolled back never existed.
	rec := NewRecord("orders")
	err = k.tx.InTx(ctx, func(ctx context.Context) error {
		require.NoError(t, k.s.Create(ctx, rec, 0))
		return rollback
	})
	require.ErrorIs(t, err, rollback)
	_, err = k.s.Load(ctx, rec.ID)
	require.ErrorIs(t, err, saga.ErrNotFound)

	// A create committed exists.
	require.NoError(t, k.tx.InTx(ctx, func(ctx context.Context) error { return k.s.Create(ctx, rec, 0) }))
	k.load(t, rec.ID)
}

func testStepLog(k *kit) {
	t := k.t
	ctx := t.Context()
	a := k.create(t, NewRecord("orders"), 0)
	b := k.create(t, NewRecord("orders"), 0)
	var wantA, wantB []saga.Entry
	for i := range 5 {
		at := k.clock.Advance(time.Second)
		ea := saga.Entry{
			Step: fmt.Sprintf("step-%d", i), Index: i, Phase: saga.Compensation, Fallback: i%2 == 0,
			Outcome: saga.Outcome(1 + i%4), Attempts: i + 1, Errors: []string{"first", fmt.Sprintf("second %d", i)},
			Owner: "driver-a", StartedAt: at.Add(-1500 * time.Millisecond), FinishedAt: at,
		}
		eb := entry(fmt.Sprintf("b-%d", i), i, saga.Succeeded, at)
		ea2 := entry("extra", i, saga.Interrupted, at)
		require.NoError(t, k.s.Save(ctx, checkpoint(a, saga.Running, i, `{}`, ea, ea2)))
		require.NoError(t, k.s.Save(ctx, checkpoint(b, saga.Running, i, `{}`, eb)))
		a.Version++
		b.Version++
		wantA = append(wantA, ea, ea2)
		wantB = append(wantB, eb)
	}
	requireLog(t, wantA, k.log(t, a.ID))
	requireLog(t, wantB, k.log(t, b.ID))
}

// due creates a saga that Claim may take, updated at the clock's now.
func (k *kit) due(t *testing.T, name string, status saga.Status) saga.Record {
	t.Helper()
	rec := NewRecord(name)
	rec.Status = status
	return k.create(t, rec, 0)
}

func ids(recs []saga.Record) []uuid.UUID {
	out := make([]uuid.UUID, len(recs))
	for i, r := range recs {
		out[i] = r.ID
	}
	return out
}

func testClaim(k *kit) {
	t := k.t
	ctx := t.Context()
	// In UpdatedAt order: c (created first), a, d.
	c := k.due(t, "orders", saga.Running)
	k.clock.Advance(time.Second)
	a := k.due(t, "orders", saga.Running)
	k.clock.Advance(time.Second)
	d := k.due(t, "orders", saga.Compensating)
	k.clock.Advance(time.Second)
	leased := NewRecord("orders")
	leased.LeaseOwner = "driver-1"
	k.create(t, leased, Lease) // alive
	for _, st := range []saga.Status{saga.Completed, saga.Compensated, saga.Failed, saga.Halted} {
		k.due(t, "orders", st)
	}
	other := k.due(t, "payments", saga.Running)
	now := k.clock.Advance(time.Second)

	got, err := k.s.Claim(ctx, "recoverer-1", []string{"orders"}, 2, Lease)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{c.ID, a.ID}, ids(got), "least recently updated first, limit respected")
	for i, want := range []saga.Record{c, a} {
		want.LeaseOwner, want.LeaseUntil = "recoverer-1", now.Add(Lease)
		want.Attempts, want.Version, want.UpdatedAt = 1, 2, now
		requireRecord(t, want, got[i])
		requireRecord(t, want, k.load(t, want.ID))
	}

	got, err = k.s.Claim(ctx, "recoverer-2", []string{"orders"}, 10, Lease)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{d.ID}, ids(got), "claimed sagas and live leases are skipped; terminal sagas never claimed")
	assert.Equal(t, saga.Compensating, got[0].Status)

	got, err = k.s.Claim(ctx, "recoverer-2", []string{"orders"}, 10, Lease)
	require.NoError(t, err)
	require.Empty(t, got)

	got, err = k.s.Claim(ctx, "recoverer-2", []string{"payments", "shipping"}, 10, Lease)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{other.ID}, ids(got), "names filter")

	more := k.due(t, "shipping", saga.Running)
	got, err = k.s.Claim(ctx, "recoverer-2", nil, 10, Lease)
	require.NoError(t, err)
	require.Equal(t, []uuid.UUID{more.ID}, ids(got), "no names: every definition")
}

func testClaimAfterExpiry(k *kit) {
	t := k.t
	ctx := t.Context()
	rec := NewRecord("orders")
	rec.LeaseOwner = "driver-1"
	k.create(t, rec, Lease)

	k.clock.Advance(Lease - time.Second)
	got, err := k.s.Claim(ctx, "recoverer-1", nil, 10, Lease)
	require.NoError(t, err)
	require.Empty(t, got, "a live lease is never claimed")

	k.clock.Advance(time.Second) // LeaseUntil == now: expired
	got, err = k.s.Claim(ctx, "recoverer-1", nil, 10, Lease)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, 1, got[0].Attempts)
	assert.Equal(t, int64(2), got[0].Version)

	// The driver that lost it can no longer write or renew.
	stale := checkpoint(rec, saga.Running, 1, `{}`)
	stale.Version = 1
	require.ErrorIs(t, k.s.Save(ctx, stale), saga.ErrConflict)
	require.ErrorIs(t, k.s.Renew(ctx, rec.ID, "driver-1", Lease), saga.ErrLeaseLost)

	k.clock.Advance(Lease)
	got, err = k.s.Claim(ctx, "recoverer-2", nil, 10, Lease)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, 2, got[0].Attempts, "each claim counts an attempt")
	assert.Equal(t, "recoverer-2", got[0].LeaseOwner)

	// A checkpoint resets the attempts it is given.
	cp := checkpoint(got[0], saga.Running, 1, `{}`)
	cp.Owner, cp.Lease = "recoverer-2", Lease
	require.NoError(t, k.s.Save(ctx, cp))
	assert.Equal(t, 0, k.load(t, rec.ID).Attempts)
}

func testClaimConcurrent(k *kit) {
	t := k.t
	ctx := t.Context()
	const sagas, claimers = 24, 6
	want := make(map[uuid.UUID]bool, sagas)
	for range sagas {
		want[k.due(t, "orders", saga.Running).ID] = true
	}
	var (
		mu     sync.Mutex
		got    = make(map[uuid.UUID]string)
		errs   []error
		wg     sync.WaitGroup
		start  = make(chan struct{})
		double []uuid.UUID
	)
	for i := range claimers {
		owner := fmt.Sprintf("recoverer-%d", i)
		wg.Go(func() {
			<-start
			for {
				recs, err := k.s.Claim(ctx, owner, []string{"orders"}, 1+i%2, Lease)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for _, r := range recs {
					if _, dup := got[r.ID]; dup {
						double = append(double, r.ID)
					}
					got[r.ID] = owner
				}
				mu.Unlock()
				if err != nil || len(recs) == 0 {
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	require.Empty(t, errs)
	require.Empty(t, double, "sagas claimed twice while leased")
	require.Len(t, got, sagas)
	for id, owner := range got {
		require.True(t, want[id])
		assert.Equal(t, owner, k.load(t, id).LeaseOwner)
	}
}

func testClaimInvalid(k *kit) {
	t := k.t
	ctx := t.Context()
	k.due(t, "orders", saga.Running)
	for name, call := range map[string]func() error{
		"empty owner": func() error { _, err := k.s.Claim(ctx, "", nil, 1, Lease); return err },
		"zero limit":  func() error { _, err := k.s.Claim(ctx, "r", nil, 0, Lease); return err },
		"zero lease":  func() error { _, err := k.s.Claim(ctx, "r", nil, 1, 0); return err },
	} {
		require.ErrorIs(t, call(), saga.ErrInvalidArgument, name)
	}
	got, err := k.s.Claim(ctx, "r", nil, 1, Lease)
	require.NoError(t, err)
	require.Len(t, got, 1, "invalid claims claimed nothing")
}

func testRenew(k *kit) {
	t := k.t
	ctx := t.Context()
	rec := NewRecord("orders")
	rec.LeaseOwner = "driver-1"
	want := k.create(t, rec, Lease)

	at := k.clock.Advance(Lease / 2)
	require.NoError(t, k.s.Renew(ctx, rec.ID, "driver-1", Lease))
	want.LeaseUntil = at.Add(Lease)
	requireRecord(t, want, k.load(t, rec.ID)) // version and UpdatedAt unchanged

	require.ErrorIs(t, k.s.Renew(ctx, rec.ID, "driver-2", Lease), saga.ErrLeaseLost)

	// Expired but not claimed: still driver-1's.
	at = k.clock.Advance(2 * Lease)
	require.NoError(t, k.s.Renew(ctx, rec.ID, "driver-1", Lease))
	want.LeaseUntil = at.Add(Lease)
	requireRecord(t, want, k.load(t, rec.ID))

	// Released: nobody's.
	require.NoError(t, k.s.Save(ctx, checkpoint(want, saga.Running, 0, `{}`)))
	require.ErrorIs(t, k.s.Renew(ctx, rec.ID, "driver-1", Lease), saga.ErrLeaseLost)

	// Ended: nobody's.
	ended := NewRecord("orders")
	ended.LeaseOwner = "driver-1"
	e := k.create(t, ended, Lease)
	cp := checkpoint(e, saga.Completed, 1, `{}`)
	cp.Owner, cp.Lease = "driver-1", Lease
	require.NoError(t, k.s.Save(ctx, cp))
	require.ErrorIs(t, k.s.Renew(ctx, ended.ID, "driver-1", Lease), saga.ErrLeaseLost)

	require.ErrorIs(t, k.s.Renew(ctx, uuid.Must(uuid.NewV7()), "driver-1", Lease), saga.ErrNotFound)
	require.ErrorIs(t, k.s.Renew(ctx, rec.ID, "", Lease), saga.ErrInvalidArgument)
	require.ErrorIs(t, k.s.Renew(ctx, rec.ID, "driver-1", 0), saga.ErrInvalidArgument)
}

func testList(k *kit) {
	t := k.t
	ctx := t.Context()
	var all []saga.Record
	for i := range 7 {
		name := "orders"
		if i%3 == 0 {
			name = "payments"
		}
		st := saga.Running
		if i%2 == 0 {
			st = saga.Failed
		}
		all = append(all, k.due(t, name, st))
	}
	slices.SortFunc(all, func(a, b saga.Record) int { return compareIDs(a.ID, b.ID) })

	got, err := k.s.List(ctx, saga.Filter{Limit: 100})
	require.NoError(t, err)
	require.Equal(t, ids(all), ids(got), "every saga, in ID order")
	for i := range all {
		requireRecord(t, all[i], got[i])
	}

	var pages []uuid.UUID
	after := uuid.Nil
	for {
		page, err := k.s.List(ctx, saga.Filter{After: after, Limit: 3})
		require.NoError(t, err)
		require.LessOrEqual(t, len(page), 3)
		if len(page) == 0 {
			break
		}
		pages = append(pages, ids(page)...)
		after = page[len(page)-1].ID
	}
	require.Equal(t, ids(all), pages, "paging with After")

	got, err = k.s.List(ctx, saga.Filter{Statuses: []saga.Status{saga.Failed}, Names: []string{"payments"}, Limit: 100})
	require.NoError(t, err)
	var want []uuid.UUID
	for _, r := range all {
		if r.Status == saga.Failed && r.Name == "payments" {
			want = append(want, r.ID)
		}
	}
	require.Equal(t, want, ids(got), "filters")

	_, err = k.s.List(ctx, saga.Filter{})
	require.ErrorIs(t, err, saga.ErrInvalidArgument)
}

func testListRecoverable(k *kit) {
	t := k.t
	ctx := t.Context()
	released := k.due(t, "orders", saga.Running)
	compensating := k.due(t, "orders", saga.Compensating)
	k.due(t, "orders", saga.Failed)
	k.due(t, "orders", saga.Completed)
	alive := NewRecord("orders")
	alive.LeaseOwner = "driver-1"
	k.create(t, alive, Lease)
	expiring := NewRecord("orders")
	expiring.LeaseOwner = "driver-2"
	k.create(t, expiring, Lease/2)
	k.clock.Advance(Lease / 2)

	got, err := k.s.List(ctx, saga.Filter{Recoverable: true, Limit: 100})
	require.NoError(t, err)
	want := []uuid.UUID{released.ID, compensating.ID, expiring.ID}
	slices.SortFunc(want, compareIDs)
	require.Equal(t, want, ids(got), "active sagas without a live lease")
	claimed, err := k.s.Claim(ctx, "r", nil, 100, Lease)
	require.NoError(t, err)
	require.ElementsMatch(t, want, ids(claimed), "what Claim takes")
	got, err = k.s.List(ctx, saga.Filter{Recoverable: true, Limit: 100})
	require.NoError(t, err)
	require.Empty(t, got)
}

func compareIDs(a, b uuid.UUID) int {
	for i := range a {
		if a[i] != b[i] {
			if a[i] < b[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func testPurge(k *kit) {
	t := k.t
	ctx := t.Context()
	old := map[saga.Status][]saga.Record{}
	for _, st := range []saga.Status{saga.Completed, saga.Compensated, saga.Completed, saga.Failed, saga.Halted, saga.Running, saga.Compensating} {
		rec := k.due(t, "orders", st)
		require.NoError(t, k.s.Save(ctx, checkpoint(rec, st, 0, `{}`, entry("a", 0, saga.Succeeded, k.clock.Now()))))
		old[st] = append(old[st], rec)
	}
	cutoff := k.clock.Advance(time.Hour)
	recent := k.due(t, "orders", saga.Completed)

	n, err := k.s.Purge(ctx, cutoff, 2)
	require.NoError(t, err)
	require.Equal(t, int64(2), n, "limit")
	n, err = k.s.Purge(ctx, cutoff, 100)
	require.NoError(t, err)
	require.Equal(t, int64(1), n)
	n, err = k.s.Purge(ctx, cutoff, 100)
	require.NoError(t, err)
	require.Zero(t, n)

	for st, recs := range old {
		for _, r := range recs {
			_, err := k.s.Load(ctx, r.ID)
			_, lerr := k.s.Log(ctx, r.ID)
			if st == saga.Completed || st == saga.Compensated {
				require.ErrorIs(t, err, saga.ErrNotFound, "%v purged", st)
				require.ErrorIs(t, lerr, saga.ErrNotFound, "%v: log purged", st)
			} else {
				require.NoError(t, err, "%v kept", st)
				require.NoError(t, lerr)
			}
		}
	}
	k.load(t, recent.ID)

	_, err = k.s.Purge(ctx, cutoff, 0)
	require.ErrorIs(t, err, saga.ErrInvalidArgument)
}
